//! SPDK JSON configuration files: parsing (comments allowed), applying through the RPC method
//! table, saving, and `--persist`.

mod apply;
pub(crate) mod parse;
pub(crate) mod persist;
pub(crate) mod save;

pub use apply::{apply, ApplyOptions};
pub use parse::parse_config;
pub use persist::Persister;
pub use save::save_config;

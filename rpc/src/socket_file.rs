//! The socket file: stale-file handling, binding with the final mode already set, and removal
//! of only our own file.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ErrorKind, RpcServerError};

/// Longest socket path `bind(2)` accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Identity (device, inode) of the socket file we created.
pub(crate) type FileId = (u64, u64);

fn file_id(path: &Path) -> io::Result<FileId> {
    let md = fs::symlink_metadata(path)?;
    Ok((md.dev(), md.ino()))
}

/// Removes a stale socket file at `path` (one nobody listens on). Fails if another process is
/// listening there, or if `path` is something other than a socket.
fn clear_stale(path: &Path) -> Result<(), RpcServerError> {
    let what = || format!("rpc socket '{}'", path.display());
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RpcServerError::os(format!("{}: stat", what()), e)),
        Ok(md) if !md.file_type().is_socket() => Err(RpcServerError::new(
            ErrorKind::InvalidPath,
            format!("{}: the path exists and is not a socket", what()),
        )),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(RpcServerError::new(
                ErrorKind::AddressInUse,
                format!("{}: another process is listening on it", what()),
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!("{}: removing stale socket file", what());
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RpcServerError::os(
                        format!("{}: removing stale file", what()),
                        e,
                    )),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(RpcServerError::os(
                format!("{}: probing for a listener", what()),
                e,
            )),
        },
    }
}

/// A unique temporary name beside `path`, if one fits in a socket address.
fn temp_name(path: &Path) -> Option<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".rpc.{}.{n}.tmp", std::process::id()));
    (tmp.as_os_str().len() <= MAX_SOCKET_PATH).then_some(tmp)
}

/// Binds a listening socket at `path` with permissions `mode`.
///
/// The socket is bound under a temporary name, chmod-ed, then renamed into place, so no
/// client can connect while it still has the umask's permissions.
pub(crate) fn bind(path: &Path, mode: u32) -> Result<(UnixListener, FileId), RpcServerError> {
    let what = || format!("rpc socket '{}'", path.display());
    if path.as_os_str().len() > MAX_SOCKET_PATH || path.file_name().is_none() {
        return Err(RpcServerError::new(
            ErrorKind::InvalidPath,
            format!(
                "{}: not a file path of at most {MAX_SOCKET_PATH} bytes",
                what()
            ),
        ));
    }
    clear_stale(path)?;
    let chmod = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(mode));
    let bind_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::AddrInUse {
            RpcServerError::new(
                ErrorKind::AddressInUse,
                format!("{}: address in use", what()),
            )
        } else if e.kind() == io::ErrorKind::NotFound {
            RpcServerError::new(
                ErrorKind::InvalidPath,
                format!("{}: directory missing", what()),
            )
        } else {
            RpcServerError::os(format!("{}: bind", what()), e)
        }
    };
    let listener = match temp_name(path) {
        Some(tmp) => {
            let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
            if let Err(e) = chmod(&tmp).and_then(|()| fs::rename(&tmp, path)) {
                let _ = fs::remove_file(&tmp);
                return Err(RpcServerError::os(
                    format!("{}: chmod and rename", what()),
                    e,
                ));
            }
            listener
        }
        None => {
            let listener = UnixListener::bind(path).map_err(bind_err)?;
            if let Err(e) = chmod(path) {
                let _ = fs::remove_file(path);
                return Err(RpcServerError::os(format!("{}: chmod", what()), e));
            }
            listener
        }
    };
    let id = file_id(path).map_err(|e| RpcServerError::os(format!("{}: stat", what()), e))?;
    Ok((listener, id))
}

/// Removes the socket file at `path` if it is still the one we created.
pub(crate) fn remove_if_ours(path: &Path, id: FileId) {
    if file_id(path).is_ok_and(|cur| cur == id) {
        if let Err(e) = fs::remove_file(path) {
            tracing::warn!("rpc socket '{}': removing: {e}", path.display());
        }
    }
}

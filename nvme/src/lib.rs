//! Ferrite's userspace NVMe driver.
//!
//! - [`spec`]: queue entries, opcodes, command builders, status codes with their names.
//! - [`regs`]: controller registers and the two traits the driver is written against: [`Bar`]
//!   (MMIO) and [`Dma`] (memory the controller reaches, virtual→IOVA translation).
//! - [`prp`]: PRP1/PRP2/PRP-list construction for any segment layout.
//! - [`qpair`]: a queue pair (rings, phase, batched doorbells, slot table, bounce buffers).
//! - [`identify`]: Identify Controller / Namespace parsing.
//! - [`ctrlr`]: the controller: reset and enable, admin commands, I/O queue creation,
//!   abort and reset.
//! - [`vfio`]: a PCI function bound to vfio-pci: container, group, BAR0 mapping, IOMMU-mapped
//!   DMA memory with an IOVA allocator.
//! - [`model`]: an in-memory model of a controller (registers, rings, a RAM disk) that the
//!   unit tests and the bdev module's tests drive the driver against.
//!
//! Thread contract: a [`Controller`] may be shared between threads (its admin queue is behind
//! a lock, used on the control path only); each [`QueuePair`] belongs to one thread.

pub mod ctrlr;
mod error;
pub mod identify;
pub mod model;
pub mod prp;
pub mod qpair;
pub mod regs;
pub mod spec;
pub mod table;
pub mod vfio;

pub use ctrlr::{Controller, CtrlrOpts};
pub use error::{ErrorKind, NvmeError, Result};
pub use qpair::{DataDir, QpStats, QueuePair};
pub use regs::{Bar, Dma, DmaRegion};
pub use spec::{Sqe, Status};

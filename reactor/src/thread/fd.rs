//! Fds registered by a lightweight thread: a reactor sleeping with the thread wakes when one
//! becomes readable.

use std::os::fd::RawFd;

use super::current_inner;
use crate::error::{ErrorKind, ReactorError, Result};

/// Registers `fd` so that a reactor sleeping with this thread wakes when it becomes readable.
/// Calling thread only; the registration follows the thread if it moves. Dropping the
/// returned guard unregisters it.
pub fn register_fd(fd: RawFd) -> Result<FdRegistration> {
    let t = current_inner()
        .ok_or_else(|| ReactorError::new(ErrorKind::WrongThread, "register_fd outside a thread"))?;
    t.fds.borrow_mut().push(fd);
    t.fds_changed.set(true);
    Ok(FdRegistration {
        fd,
        thread: t.shared.id,
    })
}

/// Keeps an fd registered with the calling thread's reactor; see [`register_fd`].
#[derive(Debug)]
pub struct FdRegistration {
    fd: RawFd,
    thread: u64,
}

impl Drop for FdRegistration {
    fn drop(&mut self) {
        if let Some(t) = current_inner() {
            if t.shared.id == self.thread {
                let mut fds = t.fds.borrow_mut();
                if let Some(p) = fds.iter().position(|f| *f == self.fd) {
                    fds.swap_remove(p);
                    t.fds_changed.set(true);
                }
            }
        }
    }
}

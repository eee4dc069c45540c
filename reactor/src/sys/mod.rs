//! Operating-system specifics: eventfd, epoll, pinning, core discovery. Nothing else in the
//! crate calls libc directly.

mod epoll;
mod eventfd;

pub use epoll::Epoll;
pub use eventfd::EventFd;

/// Indices of the cores this process may run on.
pub fn online_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Pins the calling OS thread to `core`. Returns false if the kernel refused.
pub fn pin_current(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

//! A failing file under a uring bdev: with the process's file size limit (RLIMIT_FSIZE) below
//! the offset, the kernel refuses writes with EFBIG; the I/O fails with an I/O error (never a
//! panic or a hang), on tmpfs through the memory-copy path and on the disk through the ring,
//! and the bdev keeps working for I/O within the limit. A binary of its own: the limit is
//! process-wide.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../aio/tests/common/mod.rs"]
mod common;

use common::*;
use ferrite_bdev::IoStatus;
use ferrite_reactor::PollMode;
use ferrite_uring::UringOpts;

/// Sets RLIMIT_FSIZE (soft limit only) and returns the previous limits.
fn set_fsize_limit(bytes: u64) -> libc::rlimit {
    // SAFETY: getrlimit/setrlimit read and write one live rlimit struct; results are checked.
    unsafe {
        let mut old: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &new), 0);
        old
    }
}

#[test]
fn writes_refused_by_the_kernel_fail_with_an_io_error() {
    // Without this the kernel would kill the process with SIGXFSZ instead of failing the write.
    // SAFETY: setting a signal's disposition to "ignore" involves no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "uring-efbig");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("UringEfbig{k}");
        let o = UringOpts {
            name: name.clone(),
            filename: path.clone(),
            ..Default::default()
        };
        env.app(move || ferrite_uring::create(&o)).unwrap();
        let kind = info(&name)["driver_specific"]["uring"]["io_path"].clone();
        let w = &env.workers[1];
        let data = random_bytes(4096, 3);
        let old = set_fsize_limit(64 << 10);
        let refused = io(w, &name, Op::write(1024, data.clone()));
        let allowed = io(w, &name, Op::write(8, data.clone()));
        // SAFETY: restores the limits read above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &old) }, 0);
        assert_eq!(refused.status, IoStatus::Failed, "{label} ({kind})");
        assert_eq!(allowed.status, IoStatus::Success, "{label} ({kind})");
        let back = io(w, &name, Op::Read { off: 8, blocks: 8 });
        assert_eq!(back.status, IoStatus::Success, "{label} ({kind})");
        assert!(back.data == data, "{label}: data not read back");
        env.delete(ferrite_uring::delete, &name).unwrap();
    }
}

//! Signals: SIGINT and SIGTERM are blocked in every thread (the mask is set before any thread
//! starts) and taken synchronously by the main thread with `sigtimedwait`.

/// Blocks SIGINT, SIGTERM and SIGPIPE in the calling thread and every thread it starts later.
pub fn block() {
    // SAFETY: sigset_t is plain data; the calls only read/write these locals and the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        // Writes to a closed RPC peer must return EPIPE, not kill the target.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Waits up to `ms` milliseconds for SIGINT or SIGTERM; returns the signal number if one came.
pub fn wait(ms: u64) -> Option<i32> {
    // SAFETY: as above; sigtimedwait writes only into `info`, which lives on our stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let ts = libc::timespec {
            tv_sec: (ms / 1000) as libc::time_t,
            tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
        };
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let s = libc::sigtimedwait(&set, &mut info, &ts);
        if s > 0 {
            Some(s)
        } else {
            None
        }
    }
}

/// The signal's name for logs.
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

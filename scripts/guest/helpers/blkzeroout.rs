//! `blkzeroout DEV OFFSET LEN`: the kernel's BLKZEROOUT ioctl on a block device (busybox has no
//! tool for it). Built statically by build-guest.sh with plain rustc (no crates) for the guest.
use std::os::unix::io::AsRawFd;

/// `_IO(0x12, 127)` from linux/fs.h.
const BLKZEROOUT: u64 = 0x127f;

extern "C" {
    fn ioctl(fd: i32, request: u64, ...) -> i32;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: blkzeroout DEV OFFSET LEN");
        std::process::exit(2);
    }
    let num = |s: &str| -> u64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("not a number: {s}");
            std::process::exit(2)
        })
    };
    let range: [u64; 2] = [num(&args[2]), num(&args[3])];
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&args[1])
        .unwrap_or_else(|e| {
            eprintln!("open {}: {e}", args[1]);
            std::process::exit(1)
        });
    // SAFETY: BLKZEROOUT reads two u64 (start, length) from the pointer, which points to a live
    // array of two u64; the fd is open for the whole call.
    let rc = unsafe { ioctl(f.as_raw_fd(), BLKZEROOUT, range.as_ptr()) };
    if rc != 0 {
        eprintln!("BLKZEROOUT: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

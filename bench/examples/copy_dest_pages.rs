//! Does the page size of the destination slow a malloc read served to a vhost-user client?
//! A malloc bdev's read copies 4 KiB from random offsets of its memory (anonymous, transparent
//! huge pages where the kernel allows them) into the client's buffer, which a vhost-user
//! target sees through its mapping of the client's memfd (4 KiB pages unless the memfd is
//! hugetlb or shmem THP is on). This copies `BS`-byte blocks from a `REGION_MIB` source into
//! `NBUF` rotating destination buffers `STRIDE` bytes apart, once in a shared memfd mapping and
//! once in anonymous THP memory, alternating for `ROUNDS` rounds of one second, and prints the
//! time per copy of each, with the machine's huge page settings.
//!
//! `cargo run --release -p ferrite-bench --example copy_dest_pages -- [BS] [REGION_MIB] [NBUF] [STRIDE] [ROUNDS]`

use std::time::Instant;

/// A private anonymous (`fd` None) or shared memfd mapping of `len` bytes, filled with `fill`.
fn map(len: usize, memfd: bool, fill: u8) -> *mut u8 {
    let (flags, fd) = if memfd {
        // SAFETY: a valid C string; the result is checked.
        let fd = unsafe { libc::memfd_create(c"copy-dest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is the memfd just created.
        assert_eq!(unsafe { libc::ftruncate(fd, len as libc::off_t) }, 0);
        (libc::MAP_SHARED, fd)
    } else {
        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
    };
    // SAFETY: a new mapping, no address hint; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    if !memfd {
        // SAFETY: advice on the mapping just made (ignored where THP is off).
        unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    }
    // SAFETY: `len` writable bytes at `p`.
    unsafe { std::ptr::write_bytes(p as *mut u8, fill, len) };
    p as *mut u8
}

fn setting(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("({e})"))
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let bs = *a.first().unwrap_or(&4096);
    let region = *a.get(1).unwrap_or(&256) << 20;
    let nbuf = *a.get(2).unwrap_or(&32);
    let stride = (*a.get(3).unwrap_or(&4096)).max(bs);
    let rounds = *a.get(4).unwrap_or(&5);
    println!(
        "shmem THP: {}",
        setting("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
    );
    println!(
        "anon THP:  {}",
        setting("/sys/kernel/mm/transparent_hugepage/enabled")
    );
    let huge = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for l in huge
        .lines()
        .filter(|l| l.starts_with("HugePages_Total") || l.starts_with("HugePages_Free"))
    {
        println!("{l}");
    }
    let src = map(region, false, 0x5a);
    let dlen = nbuf * stride;
    let dst = [map(dlen, true, 1), map(dlen, false, 1)];
    let names = ["memfd (shared, shmem pages)", "anonymous (THP)"];
    let blocks = (region / bs) as u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut per: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (m, &d) in dst.iter().enumerate() {
            let mut n: usize = 0;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < 1.0 {
                for _ in 0..4096 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let b = ((u128::from(x) * u128::from(blocks)) >> 64) as usize;
                    // SAFETY: block `b` lies in the source region; buffer `n % nbuf` lies in
                    // the destination mapping (`nbuf * stride` bytes, `stride >= bs`).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.add(b * bs),
                            d.add((n % nbuf) * stride),
                            bs,
                        )
                    };
                    n += 1;
                }
                std::hint::black_box(d);
            }
            let ns = start.elapsed().as_secs_f64() / n as f64 * 1e9;
            println!(
                "round {round}: destination {}: {ns:.0} ns per copy",
                names[m]
            );
            per[m].push(ns);
        }
    }
    for (m, v) in per.iter_mut().enumerate() {
        v.sort_by(f64::total_cmp);
        println!(
            "median, destination {}: {:.0} ns per copy",
            names[m],
            v[v.len() / 2]
        );
    }
}

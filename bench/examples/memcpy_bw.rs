//! Single-core memcpy bandwidth for the malloc comparison: copies `BS`-byte blocks from random
//! block offsets of a `REGION`-byte region into one destination buffer (what a malloc bdev's
//! random read does), for `SECS` seconds, and prints blocks/s and GB/s.
//!
//! `cargo run --release -p ferrite-bench --example memcpy_bw -- [BS] [REGION_MIB] [SECS]`

use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let bs = *args.first().unwrap_or(&4096) as usize;
    let region = (*args.get(1).unwrap_or(&128) as usize) << 20;
    let secs = *args.get(2).unwrap_or(&5) as f64;
    let src = vec![0x5au8; region];
    let mut dst = vec![0u8; bs];
    let blocks = (region / bs) as u64;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n: u64 = 0;
    let start = Instant::now();
    loop {
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = ((u128::from(x) * u128::from(blocks)) >> 64) as usize;
            dst.copy_from_slice(&src[b * bs..(b + 1) * bs]);
            std::hint::black_box(&mut dst);
        }
        n += 4096;
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "memcpy {bs} B blocks from a {} MiB region: {:.0} blocks/s, {:.2} GB/s",
        region >> 20,
        n as f64 / t,
        n as f64 * bs as f64 / t / 1e9
    );
}

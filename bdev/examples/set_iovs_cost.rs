//! Instruction cost of [`BdevIo::set_iovs`] for one and for three segments, and of an
//! `alloc_io` + `free_io` pair on a lightweight thread (a test harness thread), for callgrind:
//!
//! ```text
//! cargo build --release -p ferrite-bdev --example set_iovs_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/set_iovs_cost
//! callgrind_annotate --inclusive=yes cg.out | grep set_iovs_cost::
//! ```
//!
//! Each `set_*` and `alloc_free` function is called 100,000 times: its inclusive count /
//! 100,000 is the cost of one call, the call itself and `black_box` included.

use ferrite_bdev::{BdevIo, IoVec};

const CALLS: usize = 100_000;

#[inline(never)]
fn set_one(io: &mut BdevIo, v: &[IoVec]) {
    // SAFETY: the segments point into `buf` in `main`, which outlives every use of `io`;
    // the I/O is never submitted.
    unsafe { io.set_iovs(std::hint::black_box(v)) };
}

#[inline(never)]
fn set_three(io: &mut BdevIo, v: &[IoVec]) {
    // SAFETY: as in `set_one`.
    unsafe { io.set_iovs(std::hint::black_box(v)) };
}

#[inline(never)]
fn alloc_free() {
    if let Some(io) = ferrite_bdev::alloc_io() {
        ferrite_bdev::free_io(std::hint::black_box(io));
    }
}

fn main() {
    let mut io = Box::<BdevIo>::default();
    let mut buf = vec![0u8; 4096];
    let v = [IoVec {
        base: buf.as_mut_ptr(),
        len: 1024,
    }; 3];
    for _ in 0..CALLS {
        set_one(&mut io, &v[..1]);
        set_three(&mut io, &v[..3]);
    }
    println!("{} segments", io.iovs().len());
    let mut h = ferrite_reactor::harness::Harness::new(1, 0);
    h.on(0, || {
        for _ in 0..CALLS {
            alloc_free();
        }
    });
}

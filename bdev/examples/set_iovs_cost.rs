//! Instruction cost of [`BdevIo::set_iovs`] for one and for three segments, for callgrind
//! (no reactor needed):
//!
//! ```text
//! cargo build --release -p ferrite-bdev --example set_iovs_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/examples/set_iovs_cost
//! callgrind_annotate --inclusive=yes cg.out | grep set_iovs_cost::
//! ```
//!
//! Each `set_*` function is called 100,000 times: its inclusive count / 100,000 is the cost
//! of one call, the call itself and `black_box` included.

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
}

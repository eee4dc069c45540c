//! The driver against the in-memory controller model: init, queue wrap and phase flips, PRP
//! lists, bounce buffers, back-pressure, status propagation, fused compare-and-write, abort of
//! timed-out commands, reset with commands in flight, and no allocation on the I/O path.
#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;

use ferrite_nvme::model::{Model, ModelConfig};
use ferrite_nvme::spec::{self, io};
use ferrite_nvme::{Controller, CtrlrOpts, DataDir, Dma, ErrorKind, Status};
use ferrite_reactor::alloc_count::{self, CountingAlloc};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

fn setup(cfg: ModelConfig, opts: CtrlrOpts) -> (Arc<Model>, Controller) {
    let m = Model::new(cfg);
    let c = Controller::init(m.clone(), m.dma(), opts).unwrap();
    (m, c)
}

/// Page-aligned buffer registered with the model's DMA table (as the bdev pool would be).
fn dma_buf(m: &Model, len: usize) -> ferrite_nvme::DmaRegion {
    m.dma().alloc(len, 4096).unwrap()
}

fn seg(r: &ferrite_nvme::DmaRegion, off: usize, len: usize) -> (*const u8, usize) {
    // SAFETY: test buffers are large enough for every offset used.
    (unsafe { r.vaddr.add(off) } as *const u8, len)
}

fn fill(r: &ferrite_nvme::DmaRegion, byte: u8) {
    // SAFETY: the region is r.len bytes of memory we own.
    unsafe { std::ptr::write_bytes(r.vaddr, byte, r.len) };
}

fn bytes(r: &ferrite_nvme::DmaRegion) -> &[u8] {
    // SAFETY: as above; the controller is done with it when this is called.
    unsafe { std::slice::from_raw_parts(r.vaddr, r.len) }
}

fn reap_all(qp: &mut ferrite_nvme::QueuePair) -> Vec<(u64, Status)> {
    let mut out = Vec::new();
    qp.process_completions(usize::MAX, |c, s, _, _| out.push((c, s)));
    out
}

#[test]
fn init_identify_namespaces_with_doorbell_stride() {
    let cfg = ModelConfig {
        namespaces: vec![(1, 100), (3, 200)],
        dstrd: 2,
        ..ModelConfig::default()
    };
    let (_m, c) = setup(cfg, CtrlrOpts::default());
    assert_eq!(c.data().serial, "MODEL001");
    assert!(c.data().compare_and_write());
    assert_eq!(c.cap().doorbell_stride(), 16);
    assert_eq!(c.granted_io_queues(), 4);
    assert_eq!(c.max_transfer(), 128 * 1024);
    assert_eq!(c.active_namespaces().unwrap(), vec![1, 3]);
    assert_eq!(c.namespace(3).unwrap().unwrap().nsze, 200);
    assert!(c.namespace(2).is_err());
    // Every granted queue pair can be created, then no more.
    let qps: Vec<_> = (0..4).map(|_| c.create_io_qpair().unwrap()).collect();
    let e = c.create_io_qpair().err().unwrap();
    assert_eq!(e.kind(), ferrite_nvme::ErrorKind::Busy);
    for q in qps {
        c.delete_io_qpair(q, |_, _| panic!("nothing outstanding"));
    }
    assert_eq!(c.io_queues_in_use(), 0);
}

#[test]
fn write_read_with_prp_lists_and_wrap() {
    let opts = CtrlrOpts {
        io_entries: 4,
        ..CtrlrOpts::default()
    };
    let (m, c) = setup(ModelConfig::default(), opts);
    let mut qp = c.create_io_qpair().unwrap();
    let buf = dma_buf(&m, 64 * 1024);
    // Many rounds through a 4-entry ring: the phase flips every 4 completions.
    for round in 0..50u64 {
        fill(&buf, round as u8);
        // 3 segments: a half page at the end of a page, 2 full pages, a partial last page.
        let segs = [
            seg(&buf, 2048, 2048),
            seg(&buf, 8192, 8192),
            seg(&buf, 20480, 1024),
        ];
        let lba = (round % 10) * 32;
        qp.submit(
            spec::rw(io::WRITE, 1, lba, 22),
            DataDir::ToDevice,
            segs.iter().copied(),
            round,
            0,
        )
        .unwrap();
        qp.ring();
        assert_eq!(reap_all(&mut qp), vec![(round, Status::SUCCESS)]);
        let mut disk = vec![0u8; 22 * 512];
        m.read_disk(1, lba as usize * 512, &mut disk);
        assert!(disk.iter().all(|&b| b == round as u8), "round {round}");
        fill(&buf, 0xee);
        qp.submit(
            spec::rw(io::READ, 1, lba, 22),
            DataDir::FromDevice,
            segs.iter().copied(),
            1000 + round,
            0,
        )
        .unwrap();
        qp.ring();
        assert_eq!(reap_all(&mut qp), vec![(1000 + round, Status::SUCCESS)]);
        assert!(bytes(&buf)[2048..4096].iter().all(|&b| b == round as u8));
        assert!(bytes(&buf)[8192..16384].iter().all(|&b| b == round as u8));
        assert!(bytes(&buf)[20480..21504].iter().all(|&b| b == round as u8));
        assert_eq!(bytes(&buf)[0], 0xee);
    }
    assert_eq!(qp.stats().bounced, 0);
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn unmapped_or_unexpressible_data_is_bounced() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    let mut qp = c.create_io_qpair().unwrap();
    // Ordinary heap memory the controller cannot reach.
    let heap = vec![0x5au8; 4096];
    let s = [(heap.as_ptr(), 4096usize)];
    qp.submit(
        spec::rw(io::WRITE, 1, 8, 8),
        DataDir::ToDevice,
        s.iter().copied(),
        1,
        0,
    )
    .unwrap();
    qp.ring();
    assert_eq!(reap_all(&mut qp), vec![(1, Status::SUCCESS)]);
    let mut disk = vec![0u8; 4096];
    m.read_disk(1, 8 * 512, &mut disk);
    assert!(disk.iter().all(|&b| b == 0x5a));
    // A read into a layout PRP cannot express (second segment not page aligned).
    let buf = dma_buf(&m, 16384);
    let segs = [seg(&buf, 0, 512), seg(&buf, 4096 + 512, 3584)];
    qp.submit(
        spec::rw(io::READ, 1, 8, 8),
        DataDir::FromDevice,
        segs.iter().copied(),
        2,
        0,
    )
    .unwrap();
    qp.ring();
    let mut copied = 0;
    qp.process_completions(8, |c, s, _, data| {
        assert_eq!((c, s), (2, Status::SUCCESS));
        let d = data.unwrap();
        assert_eq!(d.len(), 4096);
        assert!(d.iter().all(|&b| b == 0x5a));
        copied = d.len();
    });
    assert_eq!(copied, 4096);
    assert_eq!(qp.stats().bounced, 2);
    // Larger than a bounce buffer and not expressible: refused as invalid.
    let big = vec![0u8; 256 * 1024];
    let r = qp.submit(
        spec::rw(io::READ, 1, 0, 512),
        DataDir::FromDevice,
        [(big.as_ptr(), big.len())].into_iter(),
        3,
        0,
    );
    assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn back_pressure_when_the_queue_is_full() {
    let opts = CtrlrOpts {
        io_entries: 8,
        ..CtrlrOpts::default()
    };
    let (m, c) = setup(ModelConfig::default(), opts);
    m.set_auto(false);
    let mut qp = c.create_io_qpair().unwrap();
    let mut n = 0;
    while qp
        .submit(spec::flush(1), DataDir::None, std::iter::empty(), n, 0)
        .is_ok()
    {
        n += 1;
    }
    assert_eq!(n, 7, "entries - 1 outstanding");
    assert_eq!(qp.stats().full, 1);
    qp.ring();
    assert_eq!(m.queued(), 7);
    assert!(reap_all(&mut qp).is_empty());
    m.step_queue(qp.qid(), 3);
    let got = reap_all(&mut qp);
    assert_eq!(got.len(), 3);
    // Three slots free again.
    for i in 0..3 {
        qp.submit(
            spec::flush(1),
            DataDir::None,
            std::iter::empty(),
            100 + i,
            0,
        )
        .unwrap();
    }
    assert_eq!(
        qp.submit(spec::flush(1), DataDir::None, std::iter::empty(), 200, 0)
            .unwrap_err()
            .kind(),
        ErrorKind::QueueFull
    );
    qp.ring();
    m.step();
    assert_eq!(reap_all(&mut qp).len(), 7);
    // One doorbell per batch: 2 submission rings + 2 completion rings.
    assert_eq!(qp.stats().doorbells, 4);
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn statuses_compare_and_fused_compare_and_write() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    let mut qp = c.create_io_qpair().unwrap();
    let buf = dma_buf(&m, 8192);
    m.inject(io::READ, Status::new(2, 0x81), 1);
    qp.submit(
        spec::rw(io::READ, 1, 0, 1),
        DataDir::FromDevice,
        [seg(&buf, 0, 512)].into_iter(),
        1,
        0,
    )
    .unwrap();
    qp.submit(
        spec::rw(io::READ, 1, 4096, 1),
        DataDir::FromDevice,
        [seg(&buf, 0, 512)].into_iter(),
        2,
        0,
    )
    .unwrap();
    qp.ring();
    let r = reap_all(&mut qp);
    assert_eq!(r[0].1.name(), "Unrecovered Read Error");
    assert_eq!(r[1].1.name(), "LBA Out of Range");

    // Compare against zeroes: equal, then different.
    fill(&buf, 0);
    qp.submit(
        spec::compare(1, 0, 1),
        DataDir::ToDevice,
        [seg(&buf, 0, 512)].into_iter(),
        3,
        0,
    )
    .unwrap();
    qp.ring();
    // (the model executes at the doorbell: the first compare saw zeroes)
    fill(&buf, 1);
    qp.submit(
        spec::compare(1, 0, 1),
        DataDir::ToDevice,
        [seg(&buf, 0, 512)].into_iter(),
        4,
        0,
    )
    .unwrap();
    qp.ring();
    let r = reap_all(&mut qp);
    assert_eq!(r, vec![(3, Status::SUCCESS), (4, Status::COMPARE_FAILURE)]);

    // Fused compare-and-write: the compare matches (zeroes), the write lands.
    let cmp = dma_buf(&m, 4096);
    let data = dma_buf(&m, 4096);
    fill(&data, 0x77);
    let (a, b) = spec::compare_and_write(1, 2, 1);
    qp.submit_fused(
        a,
        [seg(&cmp, 0, 512)].into_iter(),
        b,
        [seg(&data, 0, 512)].into_iter(),
        5,
        0,
    )
    .unwrap();
    qp.ring();
    assert_eq!(reap_all(&mut qp), vec![(5, Status::SUCCESS)]);
    let mut d = [0u8; 512];
    m.read_disk(1, 1024, &mut d);
    assert!(d.iter().all(|&b| b == 0x77));
    // Again with the old (zero) compare data: miscompare, nothing written.
    fill(&data, 0x99);
    let (a, b) = spec::compare_and_write(1, 2, 1);
    qp.submit_fused(
        a,
        [seg(&cmp, 0, 512)].into_iter(),
        b,
        [seg(&data, 0, 512)].into_iter(),
        6,
        0,
    )
    .unwrap();
    qp.ring();
    assert_eq!(reap_all(&mut qp), vec![(6, Status::COMPARE_FAILURE)]);
    m.read_disk(1, 1024, &mut d);
    assert!(d.iter().all(|&b| b == 0x77));
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn timed_out_command_is_aborted() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    m.set_auto(false);
    let mut qp = c.create_io_qpair().unwrap();
    qp.submit(spec::flush(1), DataDir::None, std::iter::empty(), 7, 100)
        .unwrap();
    qp.ring();
    assert_eq!(qp.check_timeouts(150, 100, |_| panic!("not yet")), 0);
    let mut aborted = Vec::new();
    assert_eq!(qp.check_timeouts(1000, 100, |cid| aborted.push(cid)), 1);
    for cid in &aborted {
        assert!(c.abort(qp.qid(), *cid));
    }
    // Only once per command.
    assert_eq!(qp.check_timeouts(5000, 100, |_| panic!("twice")), 0);
    assert!(!c.poll_admin());
    m.step();
    assert_eq!(reap_all(&mut qp), vec![(7, Status::ABORT_REQUESTED)]);
    assert_eq!(Status::ABORT_REQUESTED.name(), "Command Abort Requested");
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn reset_with_commands_in_flight() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    m.set_auto(false);
    let mut qp = c.create_io_qpair().unwrap();
    let buf = dma_buf(&m, 4096);
    for i in 0..5 {
        qp.submit(
            spec::rw(io::WRITE, 1, i, 1),
            DataDir::ToDevice,
            [seg(&buf, 0, 512)].into_iter(),
            i,
            0,
        )
        .unwrap();
    }
    qp.ring();
    m.set_fatal();
    assert!(c.poll_admin(), "fatal status noticed");
    c.disable().unwrap();
    // Disabled: admin commands are refused at once (`QueueDown`), not after the admin
    // timeout, so a channel created or dropped during a reset does not spin on its reactor.
    let Err(e) = c.create_io_qpair() else {
        panic!("a queue pair created on a disabled controller")
    };
    assert_eq!(e.kind(), ErrorKind::QueueDown, "{e}");
    assert!(e.message().contains("disabled"), "{e}");
    let mut failed = Vec::new();
    qp.fail_all(Status::ABORTED_SQ_DELETION, |ck, s| failed.push((ck, s)));
    assert_eq!(failed.len(), 5);
    assert!(failed.iter().all(|f| f.1 == Status::ABORTED_SQ_DELETION));
    assert_eq!(
        qp.submit(spec::flush(1), DataDir::None, std::iter::empty(), 9, 0)
            .unwrap_err()
            .kind(),
        ErrorKind::QueueDown
    );
    c.enable().unwrap();
    c.recreate_io_qpair(&mut qp).unwrap();
    m.set_auto(true);
    fill(&buf, 3);
    qp.submit(
        spec::rw(io::WRITE, 1, 0, 1),
        DataDir::ToDevice,
        [seg(&buf, 0, 512)].into_iter(),
        10,
        0,
    )
    .unwrap();
    qp.ring();
    assert_eq!(reap_all(&mut qp), vec![(10, Status::SUCCESS)]);
    // Nothing written before the reset is acknowledged; what was written after is there.
    let mut d = [0u8; 512];
    m.read_disk(1, 0, &mut d);
    assert!(d.iter().all(|&b| b == 3));
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn io_path_does_not_allocate() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    let mut qp = c.create_io_qpair().unwrap();
    let buf = dma_buf(&m, 128 * 1024);
    let heap = vec![0u8; 4096];
    let run = |qp: &mut ferrite_nvme::QueuePair, rounds: u64| {
        for i in 0..rounds {
            // 32 pages: a PRP list; and a bounced write.
            let segs = [seg(&buf, 0, 128 * 1024)];
            qp.submit(
                spec::rw(io::WRITE, 1, 0, 256),
                DataDir::ToDevice,
                segs.into_iter(),
                i,
                0,
            )
            .unwrap();
            qp.submit(
                spec::rw(io::READ, 1, 0, 8),
                DataDir::FromDevice,
                [(heap.as_ptr(), 4096)].into_iter(),
                i,
                0,
            )
            .unwrap();
            qp.submit(spec::flush(1), DataDir::None, std::iter::empty(), i, 0)
                .unwrap();
            qp.ring();
            let mut n = 0;
            qp.process_completions(usize::MAX, |_, s, _, _| {
                assert!(s.is_success());
                n += 1;
            });
            assert_eq!(n, 3);
        }
    };
    run(&mut qp, 10);
    alloc_count::start();
    run(&mut qp, 500);
    alloc_count::stop();
    assert_eq!(alloc_count::take(), 0, "allocations on the I/O path");
    c.delete_io_qpair(qp, |_, _| {});
}

#[test]
fn surprise_removal_is_detected() {
    let (m, c) = setup(ModelConfig::default(), CtrlrOpts::default());
    let mut qp = c.create_io_qpair().unwrap();
    m.set_auto(false);
    qp.submit(spec::flush(1), DataDir::None, std::iter::empty(), 1, 0)
        .unwrap();
    qp.ring();
    assert!(!c.poll_admin() && !c.is_gone());
    m.remove();
    assert!(c.poll_admin(), "fatal");
    assert!(c.is_gone());
    // Nothing completes; the owner fails what is outstanding.
    assert!(reap_all(&mut qp).is_empty());
    let mut failed = Vec::new();
    c.delete_io_qpair(qp, |ck, s| failed.push((ck, s)));
    assert_eq!(failed, vec![(1, Status::ABORTED_SQ_DELETION)]);
    let e = c.enable().unwrap_err();
    assert!(e.message().contains("gone"), "{e}");
}

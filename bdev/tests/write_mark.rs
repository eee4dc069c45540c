//! Write marks: which opens and claims count as write access given to someone else since a
//! mark, a read-only open that does not, another writer open at mark time, and a bdev
//! registered again (a new bdev: counted from its registration).
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use common::null64;

use ferrite_bdev::{ClaimKind, Desc};
use ferrite_reactor::harness::Harness;

fn open(h: &mut Harness, name: &str, write: bool) -> Desc {
    h.on(0, || Desc::open(name, write, |_| {}).unwrap())
}

fn delete(h: &mut Harness, name: &str) {
    h.on(0, || ferrite_null::delete(name, |r| r.unwrap()));
    h.run_until_idle();
}

#[test]
fn write_access_given_to_anyone_else_breaks_the_mark() {
    let mut h = Harness::new(1, 5);
    null64(&mut h, "wm0");
    let me = open(&mut h, "wm0", true);
    me.claim(ClaimKind::ExclusiveWrite, "test").unwrap();
    let mark = me.write_mark().unwrap();
    // Kept: nothing happened since.
    assert!(me.sole_writer_since(Some(&mark)));
    drop(me);

    // Read-only opens and a read-only claim give no write access.
    let ro = open(&mut h, "wm0", false);
    ro.claim(ClaimKind::ReadManyWriteNone, "reader").unwrap();
    drop(ro);
    let back = open(&mut h, "wm0", true);
    assert!(back.sole_writer_since(Some(&mark)));
    // A second writer while we hold it: not alone any more, and no mark to take.
    let other = open(&mut h, "wm0", true);
    assert!(!back.sole_writer_since(Some(&mark)));
    assert!(back.write_mark().is_none());
    drop(other);
    // Gone again, but the other writer came and went meanwhile.
    assert!(!back.sole_writer_since(Some(&mark)));
    let mark = back.write_mark().unwrap();
    drop(back);

    // Someone opened it for writing while we were away.
    drop(open(&mut h, "wm0", true));
    let back = open(&mut h, "wm0", true);
    assert!(!back.sole_writer_since(Some(&mark)));
    let mark = back.write_mark().unwrap();
    drop(back);

    // A claim that promotes a read-only descriptor is write access too.
    let c = open(&mut h, "wm0", false);
    c.claim(ClaimKind::ReadManyWriteOne, "other").unwrap();
    drop(c);
    let back = open(&mut h, "wm0", false);
    assert!(!back.sole_writer_since(Some(&mark)));
    // A read-only descriptor asking: no grant since the mark means true.
    let mark = back.write_mark().unwrap();
    assert!(back.sole_writer_since(Some(&mark)));
    drop(back);
    delete(&mut h, "wm0");

    // Registered again: a new bdev, counted from its registration whatever the old mark.
    null64(&mut h, "wm0");
    let fresh = open(&mut h, "wm0", true);
    assert!(fresh.sole_writer_since(Some(&mark)));
    assert!(fresh.sole_writer_since(None));
    drop(fresh);
    let again = open(&mut h, "wm0", true);
    assert!(!again.sole_writer_since(None));
    drop(again);
    delete(&mut h, "wm0");
}

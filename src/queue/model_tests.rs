//! Loom models of the ring's sleep/wake protocol, with the real `WaitWord` and `advance`: one
//! producer and one consumer over a two-slot ring (so both the "full" and the "empty" sleeps
//! happen), and a consumer told to stop by a producer leaving. A lost wakeup shows as loom's
//! deadlock report; a data race on a slot as loom's causality error.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release model_tests` (CI does).

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::ring::{advance, read};
use crate::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::spin::Spin;
use crate::sync::wait_word::{WaitWord, Waited};

const CAP: u64 = 2;

struct Ring {
    tail: AtomicU64,
    head: AtomicU64,
    data: WaitWord,
    space: WaitWord,
    slots: [UnsafeCell<u64>; CAP as usize],
    producers: AtomicU32,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            data: WaitWord::new(0),
            space: WaitWord::new(0),
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            producers: AtomicU32::new(1),
        }
    }

    fn put(&self, v: u64) {
        let t = self.tail.load(Ordering::Relaxed);
        let w = self.space.wait_until(
            &Spin::new(),
            None,
            |sync| t - read(&self.head, sync) < CAP,
            || false,
        );
        assert_eq!(w, Waited::Ready);
        // SAFETY: the slot is free (head is past it) and only this producer writes.
        self.slots[(t % CAP) as usize].with_mut(|p| unsafe { *p = v });
        advance(&self.tail, t + 1, &self.data);
    }

    /// `None` when the producers are gone and the ring is empty.
    fn get(&self) -> Option<u64> {
        let h = self.head.load(Ordering::Relaxed);
        let w = self.data.wait_until(
            &Spin::new(),
            None,
            |sync| read(&self.tail, sync) > h,
            || self.producers.load(Ordering::Acquire) == 0,
        );
        if w == Waited::Stopped {
            return None;
        }
        // SAFETY: the slot is published (tail is past it) and only this consumer reads it.
        let v = self.slots[(h % CAP) as usize].with(|p| unsafe { *p });
        advance(&self.head, h + 1, &self.space);
        Some(v)
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

#[test]
fn full_and_empty_sleeps_lose_no_wakeup() {
    model(|| {
        let r = Arc::new(Ring::new());
        let p = r.clone();
        let producer = thread::spawn(move || {
            for v in 1..=3 {
                p.put(v);
            }
        });
        for v in 1..=3 {
            assert_eq!(r.get(), Some(v));
        }
        producer.join().unwrap();
    });
}

#[test]
fn a_leaving_producer_wakes_the_consumer() {
    model(|| {
        let r = Arc::new(Ring::new());
        let p = r.clone();
        let producer = thread::spawn(move || {
            p.put(7);
            p.producers.fetch_sub(1, Ordering::AcqRel);
            p.data.notify_all_unconditionally();
        });
        assert_eq!(r.get(), Some(7));
        assert_eq!(r.get(), None);
        producer.join().unwrap();
    });
}

#[test]
fn one_wake_one_flag() {
    model(|| {
        let r = Arc::new(Ring::new());
        let p = r.clone();
        let t = thread::spawn(move || {
            advance(&p.tail, 1, &p.data);
        });
        let w = r
            .data
            .wait_until(&Spin::new(), None, |sync| read(&r.tail, sync) > 0, || false);
        assert_eq!(w, Waited::Ready);
        t.join().unwrap();
    });
}

#[test]
fn two_wakes_two_flags() {
    model(|| {
        let r = Arc::new(Ring::new());
        let p = r.clone();
        let t = thread::spawn(move || {
            advance(&p.tail, 1, &p.data);
            advance(&p.tail, 2, &p.data);
        });
        for i in 0..2 {
            let w = r
                .data
                .wait_until(&Spin::new(), None, |sync| read(&r.tail, sync) > i, || false);
            assert_eq!(w, Waited::Ready);
        }
        t.join().unwrap();
    });
}

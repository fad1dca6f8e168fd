//! Loom models of a [`Future`]'s completion protocol: every interleaving (up to the preemption
//! bound) of the real `future.rs` code, on loom's mutex and condition variable
//! (`futures/shim.rs`). A lost wake-up (of a blocked `result`, an `.await`er's waker or a
//! `wait`/`as_completed` signal) shows up as loom's deadlock error; a callback run twice or a
//! value taken twice fails an assertion. The races: completion against waker registration,
//! against a blocked and a timed `result`, against `cancel`, against `add_done_callback`, and
//! against `wait`/`as_completed`.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --lib --release
//! model_tests` (CI does).

use crate::atomic::Ordering;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use loom::thread;

use super::future::{Future, Inner};
use super::{
    AsCompletedTimeoutError, ResultTimeoutError, ReturnWhen, as_completed, as_completed_timeout,
    wait,
};
use crate::error::ErrorKind;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn pending() -> (Arc<Inner<u32>>, Future<u32>) {
    let inner = Inner::<u32>::new();
    let f = Future::from_inner(inner.clone());
    (inner, f)
}

#[test]
fn awaiter_is_woken_by_completion() {
    // The waker registered by `poll` and the completion race: either `poll` sees the value, or
    // its waker is in the list the completer takes.
    model(|| {
        let (inner, f) = pending();
        let t = thread::spawn(move || inner.finish(Ok(7)));
        assert_eq!(loom::future::block_on(f).unwrap(), 7);
        t.join().unwrap();
    });
}

#[test]
fn blocked_and_timed_results_race_completion() {
    // One thread blocks in `result`, one waits with a deadline that may pass at any step; the
    // value is taken exactly once, the blocked one is never left asleep, a timed-out one
    // leaves the value in place.
    model(|| {
        let (inner, f) = pending();
        let f = Arc::new(f);
        let f1 = f.clone();
        let blocked = thread::spawn(move || f1.result());
        let f2 = f.clone();
        let timed = thread::spawn(move || f2.result_timeout(Duration::from_secs(1)));
        inner.finish(Ok(7));
        let a = blocked.join().unwrap();
        let b = timed.join().unwrap();
        match (a, b) {
            (Ok(7), Err(ResultTimeoutError::Timeout)) => {}
            (Ok(7), Err(ResultTimeoutError::Failed(e))) => {
                assert_eq!(e.kind(), ErrorKind::ResultTaken)
            }
            (Err(e), Ok(7)) => assert_eq!(e.kind(), ErrorKind::ResultTaken),
            (a, b) => panic!("value taken twice or lost: {a:?} / {b:?}"),
        }
        assert!(f.done());
    });
}

#[test]
fn timed_result_then_blocked_result_after_timeout() {
    // A waiter that timed out must not leave the sleeper count wrong: a later blocked
    // `result` is still woken by the completion.
    model(|| {
        let (inner, f) = pending();
        let f = Arc::new(f);
        let f1 = f.clone();
        let waiter = thread::spawn(move || {
            let first = f1.exception_deadline(Instant::now() + Duration::from_secs(1));
            (first, f1.result())
        });
        inner.finish(Ok(3));
        let (first, second) = waiter.join().unwrap();
        assert!(
            matches!(first, Ok(None) | Err(ResultTimeoutError::Timeout)),
            "a success has no exception: {first:?}"
        );
        assert_eq!(second.unwrap(), 3, "exception() never takes the value");
    });
}

#[test]
fn cancel_races_the_worker_start() {
    // CPython's meaning of `cancel`: true exactly when the call never runs. The worker runs the
    // real `Inner::run` (what a thread executor's job does); an awaiter and a done callback
    // watch the outcome and each hear of it exactly once.
    model(|| {
        let (inner, f) = pending();
        let ran = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        f.add_done_callback(move |f| {
            assert!(f.done());
            c.fetch_add(1, Ordering::SeqCst);
        });
        let r = ran.clone();
        let worker = thread::spawn(move || {
            inner.run(|| {
                r.fetch_add(1, Ordering::SeqCst);
                7
            })
        });
        let awaiter = thread::spawn({
            let g = Future::from_inner(f.inner.clone());
            move || loom::future::block_on(g)
        });
        let cancelled = f.cancel();
        worker.join().unwrap();
        let awaited = awaiter.join().unwrap();
        let ran = ran.load(Ordering::SeqCst);
        assert_eq!(
            cancelled,
            ran == 0,
            "cancel is true exactly when the call never ran"
        );
        assert_eq!(f.cancelled(), cancelled);
        assert!(f.done());
        match awaited {
            Ok(7) => assert!(!cancelled),
            Err(e) => assert!(cancelled && e.kind() == ErrorKind::Cancelled, "{e:?}"),
            Ok(v) => panic!("unexpected value {v}"),
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the callback runs exactly once"
        );
    });
}

#[test]
fn callback_added_while_completing_runs_once() {
    // Registration against completion: the callback lands in the list the completer takes,
    // or sees the final state and runs at once: never both, never neither.
    model(|| {
        let (inner, f) = pending();
        let n = Arc::new(AtomicUsize::new(0));
        let t = thread::spawn(move || inner.finish(Ok(1)));
        let n1 = n.clone();
        f.add_done_callback(move |f| {
            assert!(f.done());
            n1.fetch_add(1, Ordering::SeqCst);
        });
        t.join().unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn wait_all_completed_hears_both_completions() {
    model(|| {
        let (a, fa) = pending();
        let (b, fb) = pending();
        let ta = thread::spawn(move || a.finish(Ok(1)));
        let tb = thread::spawn(move || b.finish(Ok(2)));
        let (done, not_done) = wait([&fa, &fb], ReturnWhen::AllCompleted);
        assert_eq!((done.len(), not_done.len()), (2, 0));
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

#[test]
fn as_completed_yields_each_once() {
    model(|| {
        let (a, fa) = pending();
        let (b, fb) = pending();
        let ta = thread::spawn(move || a.finish(Ok(1)));
        b.finish(Ok(2));
        let got: Vec<u32> = as_completed([&fa, &fb, &fa])
            .map(|f| f.result().unwrap())
            .collect();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2], "each future exactly once: {got:?}");
        ta.join().unwrap();
    });
}

#[test]
fn as_completed_timeout_races_completion() {
    // The deadline may pass at any step: the future is yielded, or it comes back unfinished
    // in the timeout error (and is yielded no more).
    model(|| {
        let (a, fa) = pending();
        let ta = thread::spawn(move || a.finish(Ok(1)));
        let mut it = as_completed_timeout([&fa], Duration::from_secs(1));
        match it.next() {
            Some(Ok(f)) => assert!(f.done()),
            Some(Err(AsCompletedTimeoutError::Timeout(left))) => {
                assert_eq!(left.len(), 1);
                assert!(left[0].same(&fa));
            }
            None => panic!("one future: one item"),
        }
        assert!(it.next().is_none());
        ta.join().unwrap();
    });
}

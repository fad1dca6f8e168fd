//! Unit tests on threads: every state transition, callbacks, wakers, `wait`, `as_completed`.

use crate::atomic::Ordering;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::future::Inner;
use super::*;
use crate::ErrorKind;

const LONG: Duration = Duration::from_secs(30);

fn gate() -> (Arc<Barrier>, Arc<Barrier>) {
    let b = Arc::new(Barrier::new(2));
    (b.clone(), b)
}

#[test]
fn pending_running_finished() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (start, start2) = gate();
    let (stop, stop2) = gate();
    let f = ex
        .submit_closure(move || {
            start2.wait();
            stop2.wait();
            5
        })
        .unwrap();
    start.wait();
    assert!(f.running() && !f.done() && !f.cancelled());
    assert!(!f.cancel(), "a running call cannot be cancelled");
    stop.wait();
    assert_eq!(f.result_timeout(LONG).unwrap(), 5);
    assert!(f.done() && !f.running() && !f.cancelled());
    assert!(!f.cancel());
    assert_eq!(f.result().unwrap_err().kind(), ErrorKind::ResultTaken);
    assert!(f.exception().unwrap().is_none());
}

#[test]
fn pending_cancelled_never_runs() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (start, start2) = gate();
    let (stop, stop2) = gate();
    let blocker = ex
        .submit_closure(move || {
            start2.wait();
            stop2.wait();
        })
        .unwrap();
    start.wait();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = ex
        .submit_closure(move || r.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    assert!(!queued.running() && !queued.done());
    assert!(queued.cancel());
    assert!(queued.cancel(), "cancel of a cancelled future is true");
    assert!(queued.cancelled() && queued.done() && !queued.running());
    assert_eq!(queued.exception().unwrap_err().kind(), ErrorKind::Cancelled);
    assert_eq!(queued.result().unwrap_err().kind(), ErrorKind::Cancelled);
    stop.wait();
    blocker.result_timeout(LONG).unwrap();
    ex.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn panic_is_an_exception() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let f = ex.submit_closure(|| -> u8 { panic!("boom") }).unwrap();
    let e = f.exception_timeout(LONG).unwrap().unwrap();
    assert_eq!(e.kind(), ErrorKind::Panicked);
    assert!(e.to_string().contains("boom") || format!("{e:?}").contains("boom"));
    assert!(f.done() && !f.cancelled());
    match f.result_timeout(LONG) {
        Err(ResultTimeoutError::Failed(e)) => assert_eq!(e.kind(), ErrorKind::Panicked),
        other => panic!("expected the panic, got {other:?}"),
    }
}

#[test]
fn timeouts_leave_the_call_going() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (stop, stop2) = gate();
    let f = ex.submit_closure(move || stop2.wait()).unwrap();
    assert!(matches!(
        f.result_timeout(Duration::from_millis(10)),
        Err(ResultTimeoutError::Timeout)
    ));
    assert!(matches!(
        f.exception_timeout(Duration::from_millis(10)),
        Err(ResultTimeoutError::Timeout)
    ));
    let deadline = std::time::Instant::now() + Duration::from_millis(10);
    assert!(matches!(
        f.result_deadline(deadline),
        Err(ResultTimeoutError::Timeout)
    ));
    assert!(matches!(
        f.exception_deadline(deadline),
        Err(ResultTimeoutError::Timeout)
    ));
    assert_eq!(
        crate::Error::from(ResultTimeoutError::Timeout).kind(),
        ErrorKind::Timeout
    );
    stop.wait();
    f.result_timeout(LONG).unwrap();
}

#[test]
fn callbacks_once_before_and_after_and_panics_caught() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (stop, stop2) = gate();
    let f = ex.submit_closure(move || stop2.wait()).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    f.add_done_callback(move |f| {
        assert!(f.done());
        n1.fetch_add(1, Ordering::SeqCst);
    });
    f.add_done_callback(|_| panic!("callback boom"));
    stop.wait();
    f.result_timeout(LONG).unwrap();
    ex.shutdown(true, false);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(f.callback_panics(), ["callback boom"]);
    let n2 = n.clone();
    f.add_done_callback(move |_| {
        n2.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(
        n.load(Ordering::SeqCst),
        2,
        "runs at once when already done"
    );
}

#[test]
fn resolves_exactly_once() {
    let inner = Inner::<u8>::new();
    let f = Future::from_inner(inner.clone());
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    f.add_done_callback(move |_| {
        n1.fetch_add(1, Ordering::SeqCst);
    });
    inner.finish(Ok(1));
    inner.finish(Ok(2));
    inner.finish(Err(crate::Error::new(ErrorKind::Cancelled, "late")));
    assert!(
        !inner.cancel_pending("late"),
        "a finished future cannot be cancelled"
    );
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(!f.cancelled());
    assert_eq!(f.result().unwrap(), 1);
}

#[test]
fn many_threads_wait_on_one_future() {
    let inner = Inner::<u8>::new();
    let f = Arc::new(Future::from_inner(inner.clone()));
    let waiters: Vec<_> = (0..8)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f.exception_timeout(LONG).unwrap().is_none())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    inner.finish(Ok(3));
    for w in waiters {
        assert!(w.join().unwrap());
    }
}

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn poll_registers_a_waker_woken_once() {
    let inner = Inner::<u8>::new();
    let mut f = Future::from_inner(inner.clone());
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let mut cx = Context::from_waker(&waker);
    let pinned = std::pin::Pin::new(&mut f);
    assert!(std::future::Future::poll(pinned, &mut cx).is_pending());
    assert!(std::future::Future::poll(std::pin::Pin::new(&mut f), &mut cx).is_pending());
    inner.finish(Ok(9));
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    match std::future::Future::poll(std::pin::Pin::new(&mut f), &mut cx) {
        Poll::Ready(Ok(9)) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn wait_modes() {
    let a = Inner::<u8>::new();
    let b = Inner::<u8>::new();
    let fa = Future::from_inner(a.clone());
    let fb = Future::from_inner(b.clone());
    let short = Duration::from_millis(20);
    match wait_timeout([&fa, &fb, &fa], short, ReturnWhen::AllCompleted) {
        Err(WaitTimeoutError::Timeout { done, not_done }) => {
            assert_eq!((done.len(), not_done.len()), (0, 2), "duplicates once")
        }
        Ok(_) => panic!("nothing is done: must time out"),
    }
    a.finish(Ok(1));
    let (d, nd) = wait_timeout([&fa, &fb], LONG, ReturnWhen::FirstCompleted).unwrap();
    assert_eq!((d.len(), nd.len()), (1, 1));
    assert!(d[0].same(&fa));
    let (d, nd) = wait([&fa, &fb], ReturnWhen::FirstCompleted);
    assert_eq!((d.len(), nd.len()), (1, 1));
    match wait_timeout([&fa, &fb], short, ReturnWhen::FirstException) {
        Err(WaitTimeoutError::Timeout { done, not_done }) => assert_eq!(
            (done.len(), not_done.len()),
            (1, 1),
            "a success is not an exception: waits to the timeout"
        ),
        Ok(_) => panic!("no exception yet: must time out"),
    }
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        b.finish(Err(crate::Error::new(ErrorKind::Panicked, "x")));
    });
    let deadline = std::time::Instant::now() + LONG;
    let (d, nd) = wait_deadline([&fa, &fb], deadline, ReturnWhen::FirstException).unwrap();
    assert_eq!((d.len(), nd.len()), (2, 0));
    waker.join().unwrap();
    let (d, nd) = wait([&fa, &fb], ReturnWhen::AllCompleted);
    assert_eq!((d.len(), nd.len()), (2, 0));
}

#[test]
fn as_completed_modes() {
    let a = Inner::<u8>::new();
    let b = Inner::<u8>::new();
    let c = Inner::<u8>::new();
    let fa = Future::from_inner(a.clone());
    let fb = Future::from_inner(b.clone());
    let fc = Future::from_inner(c.clone());
    c.finish(Ok(3));
    let mut it = as_completed_timeout([&fa, &fb, &fc, &fc], Duration::from_millis(50));
    assert!(it.next().unwrap().unwrap().same(&fc), "already done first");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        b.finish(Ok(2));
    });
    assert!(it.next().unwrap().unwrap().same(&fb));
    t.join().unwrap();
    match it.next() {
        Some(Err(AsCompletedTimeoutError::Timeout(left))) => {
            assert_eq!(left.len(), 1);
            assert!(left[0].same(&fa), "the unfinished future comes back");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(it.next().is_none());
    a.finish(Ok(1));
    let order: Vec<_> = as_completed([&fa, &fb, &fc])
        .map(|f| f.result().unwrap())
        .collect();
    assert_eq!(order.len(), 3);
    let deadline = std::time::Instant::now() + LONG;
    assert_eq!(as_completed_deadline([&fa, &fb, &fc], deadline).count(), 3);
}

#[test]
fn map_in_order_bounded_and_timeout() {
    let ex = ThreadPoolExecutor::new(2).unwrap();
    let out: Vec<u64> = ex
        .map(|x: u64| x * 2, 0..100)
        .unwrap()
        .collect::<crate::Result<_>>()
        .unwrap();
    assert_eq!(out, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    // An endless input: only a bounded number of calls are ever submitted ahead.
    let first: Vec<u64> = ex
        .map(|x: u64| x, 0..)
        .unwrap()
        .take(5)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(first, [0, 1, 2, 3, 4]);
    // Timed: the first result not ready is `Timeout`, the calls not started are cancelled
    // and the iterator ends (it does not go on yielding a timeout per item).
    let nap = |ms: u64| -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    };
    let mut slow = ex
        .map_timeout(nap, [0u64, 300, 300, 300, 0], Duration::from_millis(100), 1)
        .unwrap();
    assert_eq!(slow.next().unwrap().unwrap(), 0);
    assert!(matches!(slow.next(), Some(Err(MapTimeoutError::Timeout))));
    assert!(slow.next().is_none(), "the iterator ends at the timeout");
    assert!(slow.next().is_none());
    // A failed call is `Failed` with the call's error, and the iteration goes on.
    let check = |x: u8| -> u8 {
        assert!(x != 1, "one is refused");
        x
    };
    let deadline = std::time::Instant::now() + LONG;
    let got: Vec<_> = ex
        .map_deadline(check, 0..3u8, deadline, 2)
        .unwrap()
        .collect();
    assert!(matches!(got[0], Ok(0)));
    assert!(
        matches!(&got[1], Err(MapTimeoutError::Failed(e)) if e.kind() == ErrorKind::Panicked),
        "{got:?}"
    );
    assert!(matches!(got[2], Ok(2)));
    // `?` turns a timeout into a plain `ErrorKind::Timeout` error.
    let e = crate::Error::from(MapTimeoutError::Timeout);
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let chunked: Vec<u8> = ex
        .map_chunked(|x: u8| x, 0..10, 3)
        .unwrap()
        .collect::<crate::Result<_>>()
        .unwrap();
    assert_eq!(chunked, (0..10).collect::<Vec<_>>());
}

/// Hostile: the item a timed map gave up on had not started (the one worker was busy with a
/// call from outside the map). It is cancelled like the calls behind it (CPython's `map`
/// cancels the future it gave up on too), and the executor serves the next map.
#[test]
fn map_timeout_cancels_the_call_it_gave_up_on() {
    static RAN: AtomicUsize = AtomicUsize::new(0);
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (hold, release) = gate();
    let busy = ex.submit_closure(move || hold.wait()).unwrap();
    let count = |x: u8| -> u8 {
        RAN.fetch_add(1, Ordering::SeqCst);
        x
    };
    let mut m = ex
        .map_timeout(count, [1u8, 2], Duration::from_millis(20), 1)
        .unwrap();
    assert!(matches!(m.next(), Some(Err(MapTimeoutError::Timeout))));
    assert!(m.next().is_none());
    release.wait();
    busy.result().unwrap();
    let again: Vec<u8> = ex
        .map(|x: u8| x + 1, [1, 2])
        .unwrap()
        .collect::<crate::Result<_>>()
        .unwrap();
    assert_eq!(
        again,
        [2, 3],
        "the executor is reused after a timed-out map"
    );
    drop(m);
    ex.shutdown(true, false);
    assert_eq!(
        RAN.load(Ordering::SeqCst),
        0,
        "a call the map gave up on ran"
    );
}

#[test]
fn shutdown_cancels_queued_and_refuses_new() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let (start, start2) = gate();
    let (stop, stop2) = gate();
    let running = ex
        .submit_closure(move || {
            start2.wait();
            stop2.wait();
        })
        .unwrap();
    start.wait();
    let queued: Vec<_> = (0..5).map(|_| ex.submit_closure(|| ()).unwrap()).collect();
    let queued = Arc::new(queued);
    let q = queued.clone();
    // The running call ends only once shutdown has dealt with the queued ones (or after a
    // bound, so that a broken cancel fails the assertion below instead of hanging).
    let t = std::thread::spawn(move || {
        let until = std::time::Instant::now() + LONG;
        while !q.iter().all(|f| f.done()) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.wait()
    });
    ex.shutdown(true, true);
    t.join().unwrap();
    assert!(running.done() && !running.cancelled());
    assert!(queued.iter().all(|f| f.cancelled()));
    assert_eq!(
        ex.submit_closure(|| ()).unwrap_err().kind(),
        ErrorKind::Closed
    );
}

#[test]
fn zero_workers_is_an_error() {
    assert_eq!(
        ThreadPoolExecutor::new(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

/// The completion/waker race, many times: a poll racing a finish never loses the wake-up,
/// and a callback added while the future finishes runs exactly once.
#[test]
fn no_lost_wakeup_under_races() {
    for _ in 0..500 {
        let inner = Inner::<u8>::new();
        let mut f = Future::from_inner(inner.clone());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let finisher = std::thread::spawn(move || inner.finish(Ok(1)));
        let c = calls.clone();
        f.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        let mut cx = Context::from_waker(&waker);
        let first = std::future::Future::poll(std::pin::Pin::new(&mut f), &mut cx);
        finisher.join().unwrap();
        match first {
            Poll::Ready(v) => assert_eq!(v.unwrap(), 1),
            Poll::Pending => {
                assert_eq!(count.0.load(Ordering::SeqCst), 1, "the waker must be woken");
                assert!(matches!(
                    std::future::Future::poll(std::pin::Pin::new(&mut f), &mut cx),
                    Poll::Ready(Ok(1))
                ));
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn map_timeout_past_what_an_instant_holds_is_no_deadline() {
    let ex = ThreadPoolExecutor::new(1).unwrap();
    let v: Vec<u8> = ex
        .map_timeout(|x: u8| x, 0..3, Duration::MAX, 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(v, [0, 1, 2]);
}

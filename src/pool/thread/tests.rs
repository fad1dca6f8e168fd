//! Unit tests of the thread pool.
use super::*;
use crate::atomic::Ordering;
use std::sync::atomic::AtomicUsize;

#[test]
fn closures_and_panics() {
    let pool = ThreadPool::new(2).unwrap();
    let base = 100;
    assert_eq!(pool.apply(move |x: i32| x + base, 1).unwrap(), 101);
    let e = pool
        .apply(|_: ()| -> u8 { panic!("boom") }, ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked);
    assert_eq!(e.panic_message(), Some("boom"));
    assert_eq!(pool.map(|x: u32| x * 2, 0..100).unwrap().len(), 100);
    let ordered: Vec<u32> = pool
        .imap(|x: u32| x, 0..50)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(ordered, (0..50).collect::<Vec<_>>());
}

#[test]
fn imap_pulls_lazily() {
    let pool = ThreadPool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let it = pool
        .imap(
            |x: u64| x,
            (0u64..).inspect(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    assert_eq!(it.take(20).count(), 20);
    assert!(pulled.load(Ordering::SeqCst) <= 20 + 8);
}

#[test]
fn terminate_cancels_queued_tasks() {
    let pool = ThreadPool::new(1).unwrap();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let (started_tx, started) = std::sync::mpsc::channel();
    let running = pool
        .apply_async(
            move |_: ()| {
                let _ = started_tx.send(());
                let (m, c) = &*g;
                let mut open = lock(m);
                while !*open {
                    open = c.wait(open).unwrap();
                }
            },
            (),
        )
        .unwrap();
    started.recv_timeout(Duration::from_secs(30)).unwrap();
    let queued = pool.apply_async(|x: u8| x, 1).unwrap();
    pool.terminate();
    assert_eq!(queued.get().unwrap_err().kind(), ErrorKind::Cancelled);
    *lock(&gate.0) = true;
    gate.1.notify_all();
    running.get().unwrap();
    pool.join_timeout(Duration::from_secs(30)).unwrap();
}

//! Futures `.await`ed: a `join_all` under a 20-line `block_on` (no runtime crate), then
//! `as_completed_timeout` printing results as they finish. `--processes` switches to processes.

use std::future::Future as StdFuture;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use multiproc::{Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed_timeout};

/// Wakes the thread blocked in `block_on`.
struct Unpark {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

fn block_on<F: StdFuture>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let unpark = Arc::new(Unpark {
        woken: Mutex::new(false),
        cv: Condvar::new(),
    });
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = unpark.woken.lock().unwrap();
        while !*woken {
            woken = unpark.cv.wait(woken).unwrap();
        }
        *woken = false;
    }
}

/// Polls every future until all are ready; their outputs in order.
async fn join_all<F: StdFuture + Unpin>(fs: Vec<F>) -> Vec<F::Output> {
    let mut fs: Vec<Option<F>> = fs.into_iter().map(Some).collect();
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        for (slot, o) in fs.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot
                && let Poll::Ready(v) = Pin::new(f).poll(cx)
            {
                *o = Some(v);
                *slot = None;
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

fn work(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50 * (6 - i)));
    println!("I am working: task {i}");
    i * i
}

fn run(ex: &impl Executor) -> multiproc::Result<()> {
    let fs = (0..6)
        .map(|i| ex.submit(work, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let results = block_on(join_all(fs));
    let values = results
        .into_iter()
        .collect::<multiproc::Result<Vec<u64>>>()?;
    println!("join_all: {values:?}");
    let fs = (0..6)
        .map(|i| ex.submit(work, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for f in as_completed_timeout(&fs, Duration::from_secs(60)) {
        println!("as_completed: {}", f?.result()?);
    }
    println!("done my work");
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    if std::env::args().any(|a| a == "--processes") {
        run(&ProcessPoolExecutor::new(3)?)
    } else {
        run(&ThreadPoolExecutor::new(3)?)
    }
}

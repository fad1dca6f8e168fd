//! A pool of worker processes fed through queues: Python's classic
//! `JoinableQueue` + `Queue` pattern.
//!
//! Python:
//! ```python
//! def worker(jobs, results):
//!     while True:
//!         job = jobs.get()
//!         results.put(work(job))
//!         jobs.task_done()
//! ```
//!
//! Run with `cargo run --example queue_workers`.

use multiproc::{GetError, JoinableQueue, Process, Queue};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Job {
    id: u32,
    range: (u64, u64),
}

#[derive(Serialize, Deserialize, Debug)]
struct Done {
    id: u32,
    primes: u64,
    worker: u32,
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// Takes jobs until the queue is empty and every producer is gone, reporting each result.
fn worker(args: (JoinableQueue<Job>, Queue<Done>)) -> u32 {
    let (jobs, results) = args;
    jobs.close(); // this worker only takes jobs: it does not keep the queue open
    let me = std::process::id();
    let mut done = 0;
    loop {
        match jobs.get() {
            Ok(job) => {
                let primes = (job.range.0..job.range.1).filter(|&n| is_prime(n)).count() as u64;
                results
                    .put(Done {
                        id: job.id,
                        primes,
                        worker: me,
                    })
                    .expect("put result");
                jobs.task_done().expect("task_done");
                done += 1;
            }
            Err(GetError::Disconnected) => return done,
            Err(e) => panic!("get failed: {e}"),
        }
    }
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    let jobs = JoinableQueue::<Job>::new()?;
    let results = Queue::<Done>::new()?;
    let mut workers: Vec<_> = (0..4)
        .map(|_| Process::new(worker, (jobs.clone(), results.clone())))
        .collect();
    for w in &mut workers {
        w.start()?;
    }

    const JOBS: u32 = 40;
    for id in 0..JOBS {
        let start = u64::from(id) * 25_000;
        jobs.put(Job {
            id,
            range: (start, start + 25_000),
        })?;
    }
    jobs.join(); // every job taken and marked done
    println!("{JOBS} jobs done; {} unfinished", jobs.unfinished_tasks());

    let mut total = 0;
    for _ in 0..JOBS {
        let done = results.get()?;
        total += done.primes;
    }
    println!("primes below {}: {total}", u64::from(JOBS) * 25_000);
    assert_eq!(total, 78_498); // pi(10^6)

    jobs.close(); // no more jobs: the workers see Disconnected once the queue is drained
    let per_worker: Vec<u32> = workers
        .iter_mut()
        .map(|w| w.join())
        .collect::<Result<_, _>>()?;
    println!("jobs per worker: {per_worker:?}");
    assert_eq!(per_worker.iter().sum::<u32>(), JOBS);
    assert_eq!(results.lost_messages(), 0);
    Ok(())
}

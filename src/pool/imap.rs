//! `imap` and `imap_unordered`: results as an iterator, the input pulled lazily through a
//! bounded window of tasks in flight.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::encode::{Batch, Encoded};
use super::engine::Engine;
use super::result::{Complete, Decode, lock, wait_until};
use crate::error::{Error, ErrorKind, Result};
use crate::process::Target;

/// Encodes the next input item into the batch: `None` when the input is exhausted.
type Feed<'a> = Box<dyn FnMut(&mut Batch) -> Option<Result<()>> + 'a>;

/// The iterator returned by [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// The input is pulled only as results are taken: at most `window` tasks (of `chunksize`
/// items each) are in flight or waiting to be taken, so an endless input runs in bounded
/// memory (backpressure). An item whose argument does not serialize yields its error at its
/// place; items submitted after the pool was closed yield [`ErrorKind::Closed`]. Items may
/// hold handles (a [`Queue`](crate::Queue), a [`Lock`](crate::Lock)...), as task arguments of
/// [`Pool::apply`](crate::Pool::apply) do.
///
/// # Examples
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
///
/// multiproc::init();
/// let pool = multiproc::Pool::new(2)?;
/// let squares: Vec<u64> = pool.imap(square, 1..=4)?.collect::<Result<_, _>>()?;
/// assert_eq!(squares, [1, 4, 9, 16]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Imap<'a, R> {
    engine: Arc<Engine>,
    target: Target,
    feed: Feed<'a>,
    sink: Arc<ImapSink<R>>,
    chunksize: usize,
    window: usize,
    /// Items taken from the input (submitted, or failed at once).
    pulled: usize,
    /// Items handed to the caller.
    yielded: usize,
    input_done: bool,
}

impl<R> std::fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("pulled", &self.pulled)
            .field("yielded", &self.yielded)
            .field("input_done", &self.input_done)
            .finish()
    }
}

impl<'a, R> Imap<'a, R>
where
    R: DeserializeOwned + Send + 'static,
{
    pub(crate) fn new<A, I>(
        engine: &Arc<Engine>,
        f: fn(A) -> R,
        input: I,
        chunksize: usize,
        window: usize,
        in_order: bool,
    ) -> Result<Imap<'a, R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        if chunksize == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "chunksize must be at least 1",
            ));
        }
        if engine.status() != super::engine::Status::Running {
            return Err(super::closed_error());
        }
        let target = Target::of(f)?;
        let mut it = input.into_iter();
        let feed: Feed<'a> = Box::new(move |batch: &mut Batch| {
            let item = it.next()?;
            Some(batch.push(&item))
        });
        let mut imap = Imap {
            engine: engine.clone(),
            target,
            feed,
            sink: Arc::new(ImapSink::new(in_order)),
            chunksize,
            window: window.max(1),
            pulled: 0,
            yielded: 0,
            input_done: false,
        };
        imap.fill();
        Ok(imap)
    }

    /// Pulls input and submits tasks until the window is full or the input ends.
    fn fill(&mut self) {
        while !self.input_done && self.pulled - self.yielded < self.window * self.chunksize {
            let first = self.pulled;
            let mut batch = Batch::default();
            let mut failed = None;
            while batch.len() < self.chunksize {
                let fed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (self.feed)(&mut batch)
                }));
                let fed = match fed {
                    Ok(fed) => fed,
                    Err(payload) => {
                        // The input (or an item's `Serialize`) panicked. Unwinding out of
                        // here would lose the items pulled before it (and a result `next`
                        // already took), and an iterator used on after the panic is caught
                        // would wait for them for ever. So, as for Python's `imap` whose
                        // input raises: those items still go, the panicking one fails at its
                        // place, and the input ends there.
                        let why = format!(
                            "the input panicked: {}",
                            super::result::panic_message(&payload)
                        );
                        failed = Some(Error::new(ErrorKind::Panicked, why));
                        self.input_done = true;
                        break;
                    }
                };
                match fed {
                    None => {
                        self.input_done = true;
                        break;
                    }
                    Some(Ok(())) => self.pulled += 1,
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if batch.len() > 0 {
                self.submit(first, batch.finish());
            }
            if let Some(e) = failed {
                // The item that did not serialize fails at its own place.
                self.sink.complete(self.pulled, Err(e));
                self.pulled += 1;
            }
        }
    }

    fn submit(&mut self, first: usize, items: Encoded) {
        let count = items.ends.len();
        let sink = Arc::new(Decode::<R, ImapSink<R>>::new(self.sink.clone()));
        if let Err(e) = self
            .engine
            .submit(vec![items.into_task(self.target, sink, first)])
        {
            // The pool was closed: these items, and the rest of the input, cannot run.
            let kind = e.kind();
            let msg = e.to_string();
            for i in first..first + count {
                self.sink.complete(i, Err(Error::new(kind, msg.clone())));
            }
            self.input_done = true;
        }
    }

    /// Like `next`, waiting at most `timeout`: `Some(Err(e))` with
    /// [`ErrorKind::Timeout`] if nothing arrived (the iterator did not advance; call again),
    /// `None` at the end (Python's `next(timeout)`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    ///
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let mut it = pool.imap(nap, [300])?;
    /// let early = it.next_timeout(Duration::from_millis(1)).unwrap();
    /// assert_eq!(early.unwrap_err().kind(), multiproc::ErrorKind::Timeout);
    /// assert_eq!(it.next().unwrap()?, 300);
    /// assert!(it.next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_lazy(Instant::now().checked_add(timeout))
    }

    /// How many results have arrived from the workers so far (taken or not).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let mut it = pool.imap(id, [1, 2])?;
    /// it.next();
    /// assert!(it.arrived() >= 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn arrived(&self) -> usize {
        self.sink.arrived()
    }
}

impl<R> Iterator for Imap<'_, R>
where
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_lazy(None)
    }
}

impl<R> Lazy<R> for Imap<'_, R>
where
    R: DeserializeOwned + Send + 'static,
{
    fn fill(&mut self) {
        Imap::fill(self);
    }

    fn cursor(&mut self) -> (&ImapSink<R>, &mut usize, bool) {
        let exhausted = self.input_done && self.yielded == self.pulled;
        (&self.sink, &mut self.yielded, exhausted)
    }
}

/// An `imap` iterator of either pool: it pulls its input a window ahead of the caller
/// ([`fill`](Lazy::fill)) and hands results out of an [`ImapSink`].
pub(crate) trait Lazy<R> {
    /// Pulls input and submits it until the window is full or the input ends.
    fn fill(&mut self);

    /// The sink, how many results were handed out, and whether everything pulled was.
    fn cursor(&mut self) -> (&ImapSink<R>, &mut usize, bool);

    /// The next result, waiting until `deadline`: the end, a result, or a timeout error.
    fn next_lazy(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        self.fill();
        let (sink, yielded, exhausted) = self.cursor();
        let next = sink.next_step(yielded, exhausted, deadline);
        self.fill();
        next
    }
}

struct ImapState<R> {
    ordered: BTreeMap<usize, Result<R>>,
    unordered: VecDeque<Result<R>>,
    arrived: usize,
    waiters: usize,
}

/// The results of an `imap` or `imap_unordered` as they arrive.
pub(crate) struct ImapSink<R> {
    in_order: bool,
    st: Mutex<ImapState<R>>,
    cv: Condvar,
}

impl<R> ImapSink<R> {
    pub(crate) fn new(in_order: bool) -> ImapSink<R> {
        ImapSink {
            in_order,
            st: Mutex::new(ImapState {
                ordered: BTreeMap::new(),
                unordered: VecDeque::new(),
                arrived: 0,
                waiters: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// The next result to hand out (item `next` if in order), waiting until `deadline`.
    /// `None` on timeout.
    pub(crate) fn next(&self, next: usize, deadline: Option<Instant>) -> Option<Result<R>> {
        let mut st = lock(&self.st);
        loop {
            let found = if self.in_order {
                st.ordered.remove(&next)
            } else {
                st.unordered.pop_front()
            };
            if found.is_some() {
                return found;
            }
            st.waiters += 1;
            let timed_out;
            (st, timed_out) = wait_until(&self.cv, st, deadline);
            st.waiters -= 1;
            if timed_out {
                return None;
            }
        }
    }

    /// The step both `imap` iterators share: the end once everything pulled was handed out,
    /// else the next result (counted in `yielded`), or a timeout error.
    pub(crate) fn next_step(
        &self,
        yielded: &mut usize,
        exhausted: bool,
        deadline: Option<Instant>,
    ) -> Option<Result<R>> {
        if exhausted {
            return None;
        }
        match self.next(*yielded, deadline) {
            Some(r) => {
                *yielded += 1;
                Some(r)
            }
            None => Some(Err(Error::new(
                ErrorKind::Timeout,
                "no result arrived before the timeout",
            ))),
        }
    }

    /// How many results have arrived so far.
    pub(crate) fn arrived(&self) -> usize {
        lock(&self.st).arrived
    }
}

impl<R: Send> Complete<R> for ImapSink<R> {
    fn complete_many(&self, first: usize, outcomes: Vec<Result<R>>) {
        let mut st = lock(&self.st);
        for (i, outcome) in outcomes.into_iter().enumerate() {
            st.arrived += 1;
            if self.in_order {
                st.ordered.insert(first + i, outcome);
            } else {
                st.unordered.push_back(outcome);
            }
        }
        let waiters = st.waiters;
        drop(st);
        if waiters > 0 {
            self.cv.notify_all();
        }
    }

    fn complete(&self, index: usize, outcome: Result<R>) {
        self.complete_many(index, vec![outcome]);
    }
}

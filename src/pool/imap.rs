//! `imap` and `imap_unordered`: results as an iterator, the input pulled lazily through a
//! bounded window of tasks in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{Engine, NewTask};
use super::result::{Complete, Decode, ImapSink};
use super::wire::Bytes;
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::process::Target;

/// Encodes the next input item into the buffer: `None` when the input is exhausted.
type Feed<'a> = Box<dyn FnMut(&mut Vec<u8>) -> Option<Result<()>> + 'a>;

/// The iterator returned by [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered): one `Result` per input item.
///
/// The input is pulled only as results are taken: at most `window` tasks (of `chunksize`
/// items each) are in flight or waiting to be taken, so an endless input runs in bounded
/// memory (backpressure). An item whose argument does not serialize yields its error at its
/// place; items submitted after the pool was closed yield [`ErrorKind::Closed`].
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
        engine: Arc<Engine>,
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
        let feed: Feed<'a> = Box::new(move |buf: &mut Vec<u8>| {
            let item = it.next()?;
            Some(
                codec::encode_into(&item, buf)
                    .map_err(|e| Error::codec("the task's argument could not be serialized", e)),
            )
        });
        let mut imap = Imap {
            engine,
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
            let mut data = Vec::new();
            let mut ends = Vec::with_capacity(self.chunksize);
            let mut failed = None;
            while ends.len() < self.chunksize {
                let start = data.len();
                match (self.feed)(&mut data) {
                    None => {
                        self.input_done = true;
                        break;
                    }
                    Some(Ok(())) => {
                        ends.push(data.len() as u32);
                        self.pulled += 1;
                    }
                    Some(Err(e)) => {
                        data.truncate(start);
                        failed = Some(e);
                        break;
                    }
                }
            }
            if !ends.is_empty() {
                self.submit(first, data, ends);
            }
            if let Some(e) = failed {
                // The item that did not serialize fails at its own place.
                self.sink.complete(self.pulled, Err(e));
                self.pulled += 1;
            }
        }
    }

    fn submit(&mut self, first: usize, data: Vec<u8>, ends: Vec<u32>) {
        let count = ends.len();
        let task = NewTask {
            target: self.target,
            data: Bytes(data.into()),
            ends,
            fds: Vec::new(),
            fd_counts: Vec::new(),
            transits: Default::default(),
            sink: Arc::new(Decode::<R, ImapSink<R>>::new(self.sink.clone())),
            first,
        };
        if let Err(e) = self.engine.submit(vec![task]) {
            // The pool was closed: these items, and the rest of the input, cannot run.
            let kind = e.kind();
            let msg = e.to_string();
            for i in first..first + count {
                self.sink.complete(i, Err(Error::new(kind, msg.clone())));
            }
            self.input_done = true;
        }
    }

    fn next_deadline(&mut self, deadline: Option<Instant>) -> Option<Result<R>> {
        self.fill();
        let exhausted = self.input_done && self.yielded == self.pulled;
        let next = self.sink.next_step(&mut self.yielded, exhausted, deadline);
        self.fill();
        next
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
        self.next_deadline(Instant::now().checked_add(timeout))
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
        self.next_deadline(None)
    }
}

//! # multiproc: Python's `multiprocessing`, for Rust
//!
//! Real child processes and the means for them to talk, with every value that crosses a process
//! boundary serialized explicitly (serde + postcard). This release has [`Process`] (spawn and
//! fork start methods), pools of workers ([`Pool`], [`ThreadPool`]) in which a dead worker
//! fails only its own task, the long-lived [`Worker`], queues ([`Queue`],
//! [`SimpleQueue`], [`JoinableQueue`]) over a ring in shared memory, pipes ([`Connection`]),
//! shared memory ([`SharedMemory`], [`Value`], [`Array`]) and locks that
//! survive the death of their holder ([`Lock`], [`RLock`], [`Semaphore`], [`Event`],
//! [`Condition`], [`Barrier`]), a [`Manager`] whose server process owns objects behind typed
//! proxies (also over authenticated TCP), and the [`codec`] that frames every message.
//!
//! ## The first line of `main`
//!
//! The default start method runs your program's executable again for each child, so every
//! program that starts processes begins with [`init()`] — the counterpart of Python's
//! `if __name__ == "__main__":`:
//!
//! ```no_run
//! use multiproc::Process;
//!
//! fn work(n: u64) -> u64 {
//!     (1..=n).product()
//! }
//!
//! fn main() -> Result<(), multiproc::Error> {
//!     multiproc::init(); // in a child, this is where the child's work runs instead
//!     let mut p = Process::new(work, 10).with_name("factorial");
//!     p.start()?;
//!     assert_eq!(p.join()?, 3_628_800);
//!     Ok(())
//! }
//! ```
//!
//! Functions cross the process boundary as `fn(A) -> R` (closures that capture nothing coerce
//! to it); `A` and `R` are serde types. In a test under the default `#[test]` harness, call
//! [`init()`] at the top of the test.
//!
//! ## From Python
//!
//! | Python | multiproc |
//! |---|---|
//! | `if __name__ == "__main__":` | [`multiproc::init()`](init) as the first line of `main` |
//! | `Process(target=f, args=(x,))` | [`Process::new(f, x)`](Process::new) |
//! | `p.name = "w"`, `p.daemon = True` | [`with_name`](Process::with_name), [`with_daemon`](Process::with_daemon) |
//! | `p.start()`, `p.join()` | [`start`](Process::start), [`join`](Process::join) (returns `f`'s value) |
//! | `p.join(timeout)` | [`join_timeout`](Process::join_timeout) ([`JoinTimeoutError::Timeout`] while running) |
//! | `p.is_alive()`, `p.exitcode`, `p.pid` | [`is_alive`](Process::is_alive), [`exitcode`](Process::exitcode), [`pid`](Process::pid) |
//! | `p.terminate()`, `p.kill()` | [`terminate`](Process::terminate), [`kill`](Process::kill) |
//! | `get_context("fork")` | [`with_start_method(StartMethod::Fork)`](Process::with_start_method) |
//! | `current_process()`, `parent_process()` | [`current_process`], [`parent_process`] |
//! | exception in the child | [`ErrorKind::Panicked`] with message and location |
//! | `a, b = Pipe()` | [`let (a, b) = pipe::<T>()?`](pipe) |
//! | `Pipe(duplex=False)` | [`simplex`] |
//! | `conn.send(x)`, `conn.recv()` | [`send`](Connection::send), [`recv`](Connection::recv) ([`RecvError::Disconnected`] for `EOFError`) |
//! | `connection.wait(objs, timeout)` | [`wait`] with connections and [`Process::sentinel`]s |
//! | `q = Queue(maxsize=n)`, `q.put(x)`, `q.get()` | [`Queue::builder().max_items(n).build()`](Queue::builder), [`put`](Queue::put), [`get`](Queue::get) (`Disconnected` once every producer is gone) |
//! | `SimpleQueue`, `JoinableQueue` (`task_done`, `join`) | [`SimpleQueue`], [`JoinableQueue`] |
//! | `SharedMemory(name, create=True, size=n)` | [`SharedMemory::create`], or anonymous [`SharedMemory::new`] |
//! | `Lock()`, `with lock:` | [`Lock::new`], `let _g = lock.lock()?` (a guard) |
//! | holder killed: lock stuck forever | the next `lock()` gets [`OwnerDied`] with the guard |
//! | `RLock`, `Semaphore`, `BoundedSemaphore`, `Event`, `Condition`, `Barrier` | [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Event`], [`Condition`], [`Barrier`] |
//! | `Value('q', 0)`, `with v.get_lock(): v.value += 1` | [`Value::new(0i64)`](Value::new), `*v.lock()? += 1` |
//! | `Array('d', n)` | [`Array::new(n, 0.0)`](Array::new) |
//! | `Pool(4)`, `pool.apply(f, (x,))` | [`Pool::new(4)`](Pool::new), [`pool.apply(f, x)`](Pool::apply) |
//! | `pool.apply_async(f, (x,), callback=c)` | [`apply_async_with(f, x, Callbacks::new().on_success(c))`](Pool::apply_async_with) → [`AsyncResult`] |
//! | `pool.map(f, it)`, `imap`, `imap_unordered` | [`map`](Pool::map), [`imap`](Pool::imap) (lazy, bounded), [`imap_unordered`](Pool::imap_unordered) |
//! | a pool worker killed: the task hangs forever | that task fails with [`ErrorKind::WorkerDied`]; the worker is replaced |
//! | `multiprocessing.pool.ThreadPool` | [`ThreadPool`] (closures) |
//! | `m = Manager()`, `m.dict()`, `m.list()`, `m.Lock()` | [`Manager::start`], [`dict`](Manager::dict), [`list`](Manager::list), [`lock`](Manager::lock) |
//! | `BaseManager(address, authkey).connect()` | [`Manager::connect`] (mutual HMAC-SHA256, a MAC on every frame) |
//! | `concurrent.futures.ProcessPoolExecutor(n)`, `ThreadPoolExecutor(n)` | [`ProcessPoolExecutor::new(n)`](ProcessPoolExecutor::new), [`ThreadPoolExecutor::new(n)`](ThreadPoolExecutor::new), one [`Executor`] trait |
//! | `ex.submit(f, x)`, `ex.map(f, it)`, `ex.shutdown()` | [`submit`](Executor::submit) → [`Future`], [`map`](Executor::map) (lazy, bounded), [`shutdown`](Executor::shutdown) |
//! | `f.result()`, `f.cancel()`, `f.add_done_callback(c)`, `await` | [`Future::result`], [`Future::cancel`], [`Future::add_done_callback`], `f.await` |
//! | `wait(fs, timeout, return_when)`, `as_completed(fs, timeout)` | [`futures::wait`] / [`futures::wait_timeout`], [`as_completed`] / [`as_completed_timeout`] |
//! | `BrokenProcessPool` after a worker death | only that call fails ([`ErrorKind::WorkerDied`]) |
//!
//! See `docs/python-to-rust.md` in the repository for the whole mapping and the places where
//! the behaviour differs on purpose.
//!
//! ## Platform
//! Linux (x86-64 and aarch64). The crate uses pidfds (Linux 5.3+).

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

mod atomic;
pub mod codec;
mod error;
pub mod futures;
mod handles;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod shm;
mod sync;
mod sys;

pub use error::{Error, ErrorKind, Result};
pub use futures::{
    AsCompleted, AsCompletedTimeout, AsCompletedTimeoutError, Executor, Future, Map, MapTimeout,
    MapTimeoutError, ProcessPoolExecutor, ProcessPoolExecutorBuilder, ResultTimeoutError,
    ReturnWhen, ThreadPoolExecutor, ThreadPoolExecutorBuilder, WaitTimeoutError, as_completed,
    as_completed_deadline, as_completed_timeout,
};
pub use manager::{
    AuthKey, DEFAULT_HANDSHAKE_TIMEOUT, DictProxy, ErasedObject, EventProxy, ListProxy, LockProxy,
    LockProxyGuard, Manager, ManagerAddress, ManagerBuilder, NamespaceProxy, Proxy, ProxyError,
    ProxyTimeoutError, ProxyTryAcquireError, ProxyTryGetError, ProxyTryPutError, QueueProxy,
    Registry, SharedObject,
};
pub use pipe::{
    Connection, DEFAULT_PIPE_FRAME_LIMIT, Nothing, RecvError, RecvIntoError, RecvTimeoutError,
    SendError, Sentinel, TryRecvError, Waitable, pipe, pipe_typed, simplex, wait,
};
pub use pool::{
    AsyncGetTimeoutError, AsyncResult, AsyncWaitTimeoutError, Callbacks, Imap, Pool, PoolBuilder,
    PoolJoinTimeoutError, Progress, ThreadImap, ThreadPool, ThreadPoolBuilder,
};
pub use process::{
    CallTimeoutError, JoinTimeoutError, Process, ProcessInfo, StartMethod, TryJoinError, Worker,
    add_forkserver_preload, current_process, forkserver_pid, init, parent_process, stop_forkserver,
};
pub use queue::{
    DEFAULT_CAPACITY, DEFAULT_MAX_MESSAGE, GetError, GetTimeoutError, JoinableQueue, PutError,
    PutTimeoutError, Queue, QueueBuilder, QueueJoinTimeoutError, SimpleQueue, TaskDoneError,
    TryGetError, TryPutError,
};
pub use shm::SharedMemory;
pub use sync::{
    AcquireTimeoutError, Array, ArrayGuard, AtomicPod, Barrier, BoundedSemaphore, BrokenBarrier,
    Condition, ConditionTimeoutError, Event, EventTimeoutError, Lock, LockError, LockGuard,
    LockResult, OverRelease, OwnerDied, Pod, RLock, RLockGuard, Recover, Semaphore,
    SemaphorePermit, TryAcquireError, TryLockError, TryLockResult, Value, ValueGuard,
};
pub use sync::{BarrierTimeoutError, DataGuard, LockTimeoutError, LockTimeoutResult};

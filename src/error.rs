//! The crate's error type for faults: I/O, codec, a child that failed, a misuse of the API.

use std::fmt;
use std::io;

use crate::codec::CodecError;

/// What kind of fault an [`Error`] is. More kinds may be added.
///
/// # Examples
///
/// ```
/// use multiproc::{Error, ErrorKind};
/// let err = Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
/// assert_eq!(err.kind(), ErrorKind::Io);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed; [`Error::io_error`] has the details.
    Io,
    /// A value could not be serialized or deserialized; [`Error::codec_error`] has the details.
    Codec,
    /// A process was started before [`init()`](crate::init) was called in this process.
    NotInitialized,
    /// The child is not running the same build as its parent, or a function cannot cross the
    /// process boundary by address.
    BuildMismatch,
    /// `start()` was called twice on the same process.
    AlreadyStarted,
    /// The process was never started (join, terminate, ... on a process that did not start).
    NotStarted,
    /// The fork start method was refused because the process has more than one thread.
    ThreadedFork,
    /// The child's function panicked; see [`Error::panic_message`] and [`Error::panic_location`].
    Panicked,
    /// The child exited (with [`Error::exit_code`]) without returning a result, for example by
    /// calling `std::process::exit`.
    Exited,
    /// The child was killed by a signal ([`Error::signal`]).
    Signaled,
    /// The result was already taken by an earlier `join`.
    ResultTaken,
    /// The child ended before it finished starting up; its exit code or signal, if known, is on
    /// the error.
    Bootstrap,
    /// The peer process has gone away, or the channel to it is closed.
    Disconnected,
    /// A named object (a shared memory segment) does not exist.
    NotFound,
    /// A named object (a shared memory segment) already exists.
    AlreadyExists,
    /// The OS refused access (for example a segment that belongs to another user).
    PermissionDenied,
    /// An argument was out of range or malformed (a segment name, a size, a count).
    InvalidArgument,
    /// A shared memory segment is not one of ours, is of another version or type, or is
    /// truncated.
    BadHeader,
    /// The operation is reserved to the creator of the object (unlinking a named segment).
    NotOwner,
    /// The handle was closed (a queue handle after `close()`, a pool after `close()` or
    /// `terminate()`).
    Closed,
    /// A pool worker died while it held the task: [`Error::pid`] and [`Error::signal`] (or
    /// [`Error::exit_code`]) say which worker and how.
    WorkerDied,
    /// A wait gave up at its deadline; nothing was lost and the wait can be repeated (Python's
    /// `multiprocessing.TimeoutError` from `AsyncResult.get(timeout)`).
    Timeout,
    /// A task ran past its time limit: its worker was killed and replaced.
    TaskTimeout,
    /// The task was cancelled before it finished (the pool was terminated).
    Cancelled,
    /// A pool stopped because a worker was killed by SIGINT — a Ctrl-C, which a terminal
    /// sends to the whole process group — in a program that itself survives SIGINT: every
    /// unfinished task fails with this kind and the pool is terminated.
    Interrupted,
    /// A pool's initializer failed (panicked) in its worker; see [`Error::panic_message`].
    Initializer,
    /// The call is not allowed in the object's current state (joining a pool that is still
    /// running).
    InvalidState,
}

/// How a child process failed, when the error is about one.
#[derive(Clone, Debug, Default)]
struct ChildFailure {
    pid: Option<u32>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    panic_message: Option<String>,
    panic_location: Option<String>,
}

/// A fault: something the OS, a peer process or the codec made fail, or a misuse of the API.
///
/// Use [`kind`](Self::kind) to branch; the accessors give the details where they apply.
/// Failures of a child process (a panic, an exit without a result, a signal) carry the child's
/// pid, exit code or signal, and for a panic its message and location.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{ErrorKind, Process};
///
/// fn boom(_: ()) -> u32 {
///     panic!("no luck")
/// }
///
/// fn main() -> Result<(), multiproc::Error> {
///     multiproc::init();
///     let mut p = Process::new(boom, ());
///     p.start()?;
///     let err = p.join().unwrap_err();
///     assert_eq!(err.kind(), ErrorKind::Panicked);
///     assert_eq!(err.panic_message(), Some("no luck"));
///     assert_eq!(err.exit_code(), Some(1));
///     Ok(())
/// }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<Source>,
    child: Option<ChildFailure>,
}

enum Source {
    Io(io::Error),
    Codec(CodecError),
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
                child: None,
            }),
        }
    }

    /// An I/O error with a sentence of context in front of it.
    /// A copy (an I/O source keeps its kind and message), for results read more than once.
    pub(crate) fn duplicate(&self) -> Error {
        let source = self.inner.source.as_ref().map(|s| match s {
            Source::Io(e) => Source::Io(io::Error::new(e.kind(), e.to_string())),
            Source::Codec(c) => Source::Codec(c.clone()),
        });
        Error {
            inner: Box::new(Inner {
                kind: self.inner.kind,
                message: self.inner.message.clone(),
                source,
                child: self.inner.child.clone(),
            }),
        }
    }

    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Error {
        let mut e = Error::new(ErrorKind::Io, context);
        e.inner.source = Some(Source::Io(err));
        e
    }

    /// An I/O error with context, classified: a missing name, an existing name and a refused
    /// access get their own kinds ([`ErrorKind::NotFound`], [`ErrorKind::AlreadyExists`],
    /// [`ErrorKind::PermissionDenied`]); [`Error::io_error`] still has the OS error.
    pub(crate) fn os(context: impl Into<String>, err: io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        let mut e = Error::new(kind, context);
        e.inner.source = Some(Source::Io(err));
        e
    }

    /// A codec error with a sentence of context in front of it.
    pub(crate) fn codec(context: impl Into<String>, err: CodecError) -> Error {
        let mut e = Error::new(ErrorKind::Codec, context);
        e.inner.source = Some(Source::Codec(err));
        e
    }

    pub(crate) fn with_pid(mut self, pid: u32) -> Error {
        self.child_mut().pid = Some(pid);
        self
    }

    pub(crate) fn with_exit(mut self, exit: crate::sys::Exit) -> Error {
        let child = self.child_mut();
        match exit {
            crate::sys::Exit::Code(c) => child.exit_code = Some(c),
            crate::sys::Exit::Signal(s) => child.signal = Some(s),
        }
        self
    }

    pub(crate) fn with_panic(mut self, message: String, location: Option<String>) -> Error {
        let child = self.child_mut();
        child.panic_message = Some(message);
        child.panic_location = location;
        self
    }

    fn child_mut(&mut self) -> &mut ChildFailure {
        self.inner.child.get_or_insert_with(ChildFailure::default)
    }

    /// What kind of fault this is.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// let err = Error::from(multiproc::codec::CodecError::Truncated);
    /// assert_eq!(err.kind(), ErrorKind::Codec);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The pid of the child process this error is about, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::other("x"));
    /// assert_eq!(err.pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.inner.child.as_ref()?.pid
    }

    /// The exit status of a child that exited, if this error is about one.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::other("x"));
    /// assert_eq!(err.exit_code(), None);
    /// ```
    pub fn exit_code(&self) -> Option<i32> {
        self.inner.child.as_ref()?.exit_code
    }

    /// The signal that killed a child, if this error is about one.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::other("x"));
    /// assert_eq!(err.signal(), None);
    /// ```
    pub fn signal(&self) -> Option<i32> {
        self.inner.child.as_ref()?.signal
    }

    /// The message of a child's panic.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::other("x"));
    /// assert_eq!(err.panic_message(), None);
    /// ```
    pub fn panic_message(&self) -> Option<&str> {
        self.inner.child.as_ref()?.panic_message.as_deref()
    }

    /// Where a child panicked, as `file:line:column`.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::other("x"));
    /// assert_eq!(err.panic_location(), None);
    /// ```
    pub fn panic_location(&self) -> Option<&str> {
        self.inner.child.as_ref()?.panic_location.as_deref()
    }

    /// The underlying I/O error, for [`ErrorKind::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Error::from(std::io::Error::from_raw_os_error(32));
    /// assert_eq!(err.io_error().unwrap().raw_os_error(), Some(32));
    /// ```
    pub fn io_error(&self) -> Option<&io::Error> {
        match &self.inner.source {
            Some(Source::Io(e)) => Some(e),
            _ => None,
        }
    }

    /// The underlying codec error, for [`ErrorKind::Codec`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::codec::CodecError;
    /// let err = multiproc::Error::from(CodecError::Truncated);
    /// assert_eq!(err.codec_error(), Some(&CodecError::Truncated));
    /// ```
    pub fn codec_error(&self) -> Option<&CodecError> {
        match &self.inner.source {
            Some(Source::Codec(e)) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::io("system call failed", err)
    }
}

impl From<CodecError> for Error {
    fn from(err: CodecError) -> Error {
        Error::codec("serialization failed", err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        if let Some(child) = &self.inner.child {
            if let Some(msg) = &child.panic_message {
                write!(f, ": panicked: {msg}")?;
                if let Some(loc) = &child.panic_location {
                    write!(f, " at {loc}")?;
                }
            }
            if let Some(pid) = child.pid {
                write!(f, " (pid {pid}")?;
                if let Some(code) = child.exit_code {
                    write!(f, ", exit code {code}")?;
                }
                if let Some(sig) = child.signal {
                    write!(f, ", killed by signal {sig}")?;
                }
                f.write_str(")")?;
            }
        }
        match &self.inner.source {
            Some(Source::Io(e)) => write!(f, ": {e}"),
            Some(Source::Codec(e)) => write!(f, ": {e}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.source {
            Some(Source::Io(e)) => Some(e),
            Some(Source::Codec(e)) => Some(e),
            None => None,
        }
    }
}

/// Short for `std::result::Result<T, multiproc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `std::error::Error` for error enums of the crate that carry a `Failed(Error)` variant: the
/// failure is the source, every other variant has none. With `from` first, also
/// `From<Error>` (an error becomes `Failed`). Shared by the error modules of every layer (pipe,
/// process, manager, pool, futures), whose `Display` texts differ.
macro_rules! failed_error {
    (from $($name:ident),+ $(,)?) => {
        $crate::error::failed_error!($($name),+);
        $(
            impl From<$crate::Error> for $name {
                fn from(e: $crate::Error) -> Self {
                    $name::Failed(e)
                }
            }
        )+
    };
    ($($name:ident),+ $(,)?) => {$(
        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $name::Failed(e) => Some(e),
                    _ => None,
                }
            }
        }
    )+};
}
pub(crate) use failed_error;

/// `Display` for an error enum of the crate: a text for each unit variant, and
/// `"<prefix>: <error>"` for `Failed(error)`, e.g.
/// `error_display!(GetError { Disconnected => "..." } Failed => "get failed")`.
macro_rules! error_display {
    ($name:ident { $($unit:ident => $msg:expr),* $(,)? } Failed => $failed:literal) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($name::$unit => f.write_str($msg),)*
                    $name::Failed(e) => write!(f, concat!($failed, ": {}"), e),
                }
            }
        }
    };
}
pub(crate) use error_display;

/// `Display` (a fixed message) and `std::error::Error` for an error of the crate that carries
/// nothing.
macro_rules! message_error {
    ($t:ty, $message:expr) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($message)
            }
        }

        impl std::error::Error for $t {}
    };
}
pub(crate) use message_error;

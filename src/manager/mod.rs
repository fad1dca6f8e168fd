//! [`Manager`]: a server process that owns shared objects, reached through typed proxies —
//! Python's `multiprocessing.Manager()` and `BaseManager(address, authkey)`, without pickles.
//!
//! The server owns dicts, lists, namespaces, locks, events, queues and objects of registered
//! custom types ([`SharedObject`]); a proxy names one of them, and every method is one request
//! and one reply. Requests are typed messages of a closed set: a client can ask only for a
//! listed operation of an object of a built-in or registered type, never run code.
//!
//! # Addresses and authentication
//! By default the server listens on a Unix socket inside a fresh directory of mode 0700 (the
//! socket itself 0600), and closes connections from other users at once (`SO_PEERCRED`); the
//! abstract namespace is never used. TCP is opt-in ([`ManagerBuilder::address`]) and
//! [`ManagerAddress::localhost`] binds 127.0.0.1. Every connection starts with a mutual
//! HMAC-SHA256 challenge-response over both sides' fresh nonces, with a fixed size and a
//! deadline before authentication; after it, every frame carries an HMAC under a key derived
//! from both nonces, and a frame whose tag does not verify closes the connection. The key is 32
//! random bytes unless you give one, and reaches children as an inherited descriptor inside
//! the proxies passed to them, never on a command line.
//!
//! # The local fast path
//! A client on the Unix socket gets a shared-memory slot after authentication (one per
//! connection; [`ManagerBuilder::shared_memory`]`(false)` turns it off, and TCP clients never
//! get one): requests and replies are copied through it, and each side waits for its turn on a
//! futex word — a brief spin first, only where the two sides have two CPUs between them and
//! recent spins paid off, then a sleep. A small request then costs a fraction of a socket
//! round trip, and on a machine with more runnable threads than CPUs the waits sleep instead
//! of spinning. The socket stays the liveness channel: a sleeping side checks it at a tick
//! (2 ms, doubling up to 200 ms), so a dead peer ends every wait. The slot is reachable only
//! through the two processes' descriptors, so it carries no MAC; everything read from it is
//! checked and decoded like a frame.
//!
//! # Failures
//! - The server died: every proxy call returns [`ErrorKind::Disconnected`], at once.
//! - A client died: its connection ends, and the locks and holds it had are released.
//! - A request that does not decode is refused ([`ErrorKind::InvalidArgument`]); the server
//!   and the connection go on.
//!
//! # Caveats
//! One connection serves one request at a time: a proxy call that blocks (`acquire`, `wait`,
//! `get`) holds its connection, so threads that must wait on one another through the manager
//! each use a connection of their own ([`Manager::connect`]). Objects live as long as the
//! server (there is no reference counting).
//!
//! # Examples
//!
//! ```no_run
//! fn child(d: multiproc::DictProxy<String, u64>) {
//!     d.update_with(&"hits".into(), |v| v.unwrap_or(0) + 1).unwrap();
//! }
//!
//! multiproc::init();
//! let manager = multiproc::Manager::start()?;
//! let d = manager.dict::<String, u64>()?;
//! let mut p = multiproc::Process::new(child, d.clone());
//! p.start()?;
//! p.join()?;
//! assert_eq!(d.get(&"hits".into())?, Some(1));
//! # Ok::<(), multiproc::Error>(())
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::process::{Process, StartMethod};

mod auth;
mod client;
mod error;
mod object;
mod protocol;
mod proxy;
mod server;
mod slot;
#[cfg(test)]
mod tests;

pub use client::{AuthKey, ManagerAddress};
use client::{Client, FdArg, KeyArg};
pub use error::{
    ProxyError, ProxyTimeoutError, ProxyTryAcquireError, ProxyTryGetError, ProxyTryPutError,
};
pub use object::{ErasedObject, Registry, SharedObject};
use protocol::{Kind, Reply, Request};
pub use proxy::{
    DictProxy, EventProxy, ListProxy, LockProxy, LockProxyGuard, NamespaceProxy, Proxy, QueueProxy,
};

/// The time a new connection has to authenticate, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server process receives.
#[derive(Serialize, Deserialize)]
struct ServerArgs {
    listener: FdArg,
    tcp: bool,
    key: KeyArg,
    handshake_micros: u64,
    max_frame: u64,
    slots: bool,
}

/// The server process's main.
fn server_main<R: Registry>(args: ServerArgs) {
    let fd: OwnedFd = args.listener.0;
    let listener = if args.tcp {
        server::Listener::Tcp(TcpListener::from(fd))
    } else {
        server::Listener::Unix(UnixListener::from(fd))
    };
    let config = server::Config {
        handshake_timeout: Duration::from_micros(args.handshake_micros),
        max_frame: args.max_frame as usize,
        slots: args.slots,
    };
    server::serve::<R>(listener, args.key.0.as_bytes().to_vec(), config);
}

/// The server a [`Manager`] started, and the directory of its socket.
struct Owned {
    process: Process<()>,
    dir: Option<PathBuf>,
}

impl Owned {
    fn stop(&mut self) -> Result<()> {
        let killed = self.process.kill();
        let joined = self.process.join();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        killed?;
        match joined {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Signaled => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A connection to a manager's server, and the server itself if this handle started it.
///
/// Objects are created through it ([`dict`](Self::dict), [`list`](Self::list), ...). A
/// `Manager` can be passed to a child as (part of) its arguments: the child gets a connection
/// of its own to the same server (not the server). The one that started the server ends it
/// with [`shutdown`](Self::shutdown) or when dropped.
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let l = m.list::<u8>()?;
/// l.push(&1)?;
/// m.shutdown()?;
/// assert_eq!(l.len().unwrap_err().kind(), multiproc::ErrorKind::Disconnected);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Manager {
    client: Arc<Client>,
    server: Option<Mutex<Owned>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.client.address)
            .field("owns_server", &self.server.is_some())
            .finish()
    }
}

/// Builds a [`Manager`]: registered custom types, address, key, limits, start method.
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::builder()
///     .address(multiproc::ManagerAddress::localhost())
///     .handshake_timeout(std::time::Duration::from_secs(2))
///     .start()?;
/// println!("listening on {}", m.address());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ManagerBuilder<R = ()> {
    address: Option<ManagerAddress>,
    key: Option<AuthKey>,
    handshake_timeout: Duration,
    max_frame: usize,
    slots: bool,
    start_method: Option<StartMethod>,
    _registry: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for ManagerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("address", &self.address)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_frame", &self.max_frame)
            .finish()
    }
}

impl<R: Registry> ManagerBuilder<R> {
    /// Accepts objects of type `T` too (Python's `BaseManager.register`).
    ///
    /// # Examples
    /// See [`Manager::create`].
    pub fn register<T: SharedObject>(self) -> ManagerBuilder<(T, R)> {
        ManagerBuilder {
            address: self.address,
            key: self.key,
            handshake_timeout: self.handshake_timeout,
            max_frame: self.max_frame,
            slots: self.slots,
            start_method: self.start_method,
            _registry: PhantomData,
        }
    }

    /// Listens on `address` instead of a fresh private Unix socket. A Unix path must not exist
    /// yet (it is created with mode 0600); a TCP address is bound as given (port 0 picks one).
    ///
    /// # Examples
    /// See [`ManagerBuilder`].
    pub fn address(mut self, address: ManagerAddress) -> Self {
        self.address = Some(address);
        self
    }

    /// Uses `key` instead of a fresh random one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let key = multiproc::AuthKey::from_bytes(&[42; 32])?;
    /// let m = multiproc::Manager::builder().authkey(key.clone()).start()?;
    /// assert_eq!(m.authkey(), &key);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn authkey(mut self, key: AuthKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The time a new connection has to authenticate (5 s by default).
    ///
    /// # Examples
    /// See [`ManagerBuilder`].
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// The largest request the server accepts, in bytes (64 MiB by default).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Manager::builder().max_frame(1 << 20);
    /// ```
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Whether clients on the Unix socket exchange requests through a shared-memory slot
    /// (`true` by default; TCP clients never do). A slot is set up after authentication, for
    /// one connection; a small request then takes a microsecond or two when both processes
    /// are running, and about a futex wake-up each way when they sleep (the waits spin only
    /// briefly, and not at all when the two sides share one CPU). `false` keeps every request
    /// on the socket, each frame with its MAC.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::builder().shared_memory(false).start()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.slots = on;
        self
    }

    /// How the server process is started (the default is [`Process`]'s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::builder()
    ///     .start_method(multiproc::StartMethod::Fork)
    ///     .start()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Starts the server process and connects to it.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the socket cannot be created or bound (an existing path, a port in
    /// use); the errors of [`Process::start`].
    ///
    /// # Examples
    /// See [`ManagerBuilder`].
    pub fn start(self) -> Result<Manager> {
        let key = match self.key {
            Some(k) => k,
            None => AuthKey::random()?,
        };
        let (fd, tcp, address, dir) = bind(self.address)?;
        let args = ServerArgs {
            listener: FdArg(fd),
            tcp,
            key: KeyArg(key.clone()),
            handshake_micros: client::micros(Some(self.handshake_timeout)).unwrap_or(u64::MAX),
            max_frame: self.max_frame as u64,
            slots: self.slots,
        };
        let mut process = Process::new(server_main::<R>, args).with_name("manager");
        if let Some(m) = self.start_method {
            process = process.with_start_method(m);
        }
        let mut owned = Owned { process, dir };
        if let Err(e) = owned.process.start() {
            if let Some(dir) = owned.dir.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
        match Client::connect(&address, &key) {
            Ok(c) => Ok(Manager {
                client: Arc::new(c),
                server: Some(Mutex::new(owned)),
            }),
            Err(e) => {
                let _ = owned.stop();
                Err(e)
            }
        }
    }
}

/// Creates the listening socket; the directory to remove at the end for a private one.
fn bind(
    address: Option<ManagerAddress>,
) -> Result<(OwnedFd, bool, ManagerAddress, Option<PathBuf>)> {
    match address {
        None => {
            let dir = private_dir()?;
            let path = dir.join("manager.sock");
            match bind_unix(&path) {
                Ok(fd) => Ok((fd, false, ManagerAddress::Unix(path), Some(dir))),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    Err(e)
                }
            }
        }
        Some(ManagerAddress::Unix(path)) => {
            let fd = bind_unix(&path)?;
            Ok((fd, false, ManagerAddress::Unix(path), None))
        }
        Some(ManagerAddress::Tcp(a)) => {
            let l =
                TcpListener::bind(a).map_err(|e| Error::io(format!("cannot listen on {a}"), e))?;
            let actual = l
                .local_addr()
                .map_err(|e| Error::io("cannot read the bound address", e))?;
            Ok((OwnedFd::from(l), true, ManagerAddress::Tcp(actual), None))
        }
    }
}

fn bind_unix(path: &std::path::Path) -> Result<OwnedFd> {
    let l = UnixListener::bind(path)
        .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("cannot restrict the socket to its owner", e))?;
    Ok(OwnedFd::from(l))
}

/// A fresh directory of mode 0700 under the temporary directory.
fn private_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut last = None;
    for _ in 0..8 {
        let mut r = [0u8; 8];
        crate::sys::fill_random(&mut r).map_err(|e| Error::io("cannot get random bytes", e))?;
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let dir = base.join(format!("multiproc-manager-{name}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::io(
        "cannot create a private directory for the manager's socket",
        last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
    ))
}

impl Manager {
    /// A builder with every default: no custom types, a private Unix socket, a random key.
    ///
    /// # Examples
    /// See [`ManagerBuilder`].
    pub fn builder() -> ManagerBuilder<()> {
        ManagerBuilder {
            address: None,
            key: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_frame: client::DEFAULT_MAX_FRAME,
            slots: true,
            start_method: None,
            _registry: PhantomData,
        }
    }

    /// Starts a server process on a private Unix socket with a random key — Python's
    /// `multiprocessing.Manager()`.
    ///
    /// # Errors
    /// As [`ManagerBuilder::start`].
    ///
    /// # Examples
    /// See [`Manager`].
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// Starts a server process listening on `address` with `key` — Python's
    /// `BaseManager(address, authkey).start()`.
    ///
    /// # Errors
    /// As [`ManagerBuilder::start`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let key = multiproc::AuthKey::random()?;
    /// let m = multiproc::Manager::listen(multiproc::ManagerAddress::localhost(), key)?;
    /// println!("{}", m.address());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn listen(address: ManagerAddress, key: AuthKey) -> Result<Manager> {
        Manager::builder().address(address).authkey(key).start()
    }

    /// Connects to the manager at `address` — Python's `BaseManager(address, authkey).connect()`.
    /// Each call makes a new connection (with locks of its own).
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] for a wrong key (either side's); [`ErrorKind::Io`] if
    /// nothing listens there or the handshake does not finish in time.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let other = multiproc::Manager::connect(m.address(), m.authkey())?;
    /// let d = other.dict::<u8, u8>()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(address: &ManagerAddress, key: &AuthKey) -> Result<Manager> {
        Ok(Manager {
            client: Arc::new(Client::connect(address, key)?),
            server: None,
        })
    }

    /// Where the server listens.
    ///
    /// # Examples
    /// See [`ManagerBuilder`].
    pub fn address(&self) -> &ManagerAddress {
        &self.client.address
    }

    /// The key the server accepts.
    ///
    /// # Examples
    /// See [`ManagerBuilder::authkey`].
    pub fn authkey(&self) -> &AuthKey {
        &self.client.key
    }

    /// The server's process id, if this handle started it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// assert!(m.server_pid().is_some());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn server_pid(&self) -> Option<u32> {
        let owned = self
            .server
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        owned.process.pid()
    }

    fn new_object(&self, kind: Kind) -> Result<proxy::Base> {
        match self.client.call(&Request::Create(kind))? {
            Reply::Created(id) => Ok(proxy::Base {
                client: Arc::clone(&self.client),
                id,
            }),
            r => Err(Error::new(
                ErrorKind::Codec,
                format!("unexpected reply from the manager: {r:?}"),
            )),
        }
    }

    /// A new empty shared dict.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] if the server is gone.
    ///
    /// # Examples
    /// See [`DictProxy`].
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>> {
        Ok(DictProxy {
            base: self.new_object(Kind::Dict)?,
            _t: PhantomData,
        })
    }

    /// A new empty shared list.
    ///
    /// # Errors
    /// As [`dict`](Self::dict).
    ///
    /// # Examples
    /// See [`ListProxy`].
    pub fn list<T>(&self) -> Result<ListProxy<T>> {
        Ok(ListProxy {
            base: self.new_object(Kind::List)?,
            _t: PhantomData,
        })
    }

    /// A new shared value, initially `value`.
    ///
    /// # Errors
    /// As [`dict`](Self::dict); [`ErrorKind::Codec`] if `value` does not serialize.
    ///
    /// # Examples
    /// See [`NamespaceProxy`].
    pub fn namespace<T: Serialize>(&self, value: T) -> Result<NamespaceProxy<T>> {
        let bytes = crate::codec::encode(&value)
            .map_err(|e| Error::codec("cannot encode the namespace's value", e))?;
        Ok(NamespaceProxy {
            base: self.new_object(Kind::Namespace(bytes))?,
            _t: PhantomData,
        })
    }

    /// A new lock, released when the connection holding it ends.
    ///
    /// # Errors
    /// As [`dict`](Self::dict).
    ///
    /// # Examples
    /// See [`LockProxy`].
    #[doc(alias = "Lock")]
    pub fn lock(&self) -> Result<LockProxy> {
        Ok(LockProxy {
            base: self.new_object(Kind::Lock)?,
            _t: PhantomData,
        })
    }

    /// A new event, not set.
    ///
    /// # Errors
    /// As [`dict`](Self::dict).
    ///
    /// # Examples
    /// See [`EventProxy`].
    #[doc(alias = "Event")]
    pub fn event(&self) -> Result<EventProxy> {
        Ok(EventProxy {
            base: self.new_object(Kind::Event)?,
            _t: PhantomData,
        })
    }

    /// A new queue holding at most `max_items` items (`None`: unbounded).
    ///
    /// # Errors
    /// As [`dict`](Self::dict).
    ///
    /// # Examples
    /// See [`QueueProxy`].
    #[doc(alias = "Queue")]
    pub fn queue<T>(&self, max_items: Option<usize>) -> Result<QueueProxy<T>> {
        Ok(QueueProxy {
            base: self.new_object(Kind::Queue(max_items.map(|n| n as u64)))?,
            _t: PhantomData,
        })
    }

    /// Moves `init` into the server as a new object of the registered type `T`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the server was not built with
    /// [`register::<T>()`](ManagerBuilder::register); as [`dict`](Self::dict).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Manager, SharedObject};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Stack(Vec<u32>);
    /// impl SharedObject for Stack {
    ///     type Request = Option<u32>; // Some: push, None: pop
    ///     type Reply = Option<u32>;
    ///     fn handle(&mut self, req: Option<u32>) -> Option<u32> {
    ///         match req {
    ///             Some(x) => { self.0.push(x); None }
    ///             None => self.0.pop(),
    ///         }
    ///     }
    /// }
    ///
    /// multiproc::init();
    /// let m = Manager::builder().register::<Stack>().start()?;
    /// let s = m.create(Stack(vec![]))?;
    /// s.call(&Some(7))?;
    /// assert_eq!(s.call(&None)?, Some(7));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create<T: SharedObject>(&self, init: T) -> Result<Proxy<T>> {
        let bytes =
            crate::codec::encode(&init).map_err(|e| Error::codec("cannot encode the object", e))?;
        Ok(Proxy {
            base: self.new_object(Kind::Custom(object::type_key::<T>().to_string(), bytes))?,
            _t: PhantomData,
        })
    }

    /// Ends the server (if this handle started it): every proxy of it fails from now on.
    ///
    /// # Errors
    /// The errors of [`Process::kill`] and [`Process::join`].
    ///
    /// # Examples
    /// See [`Manager`].
    pub fn shutdown(mut self) -> Result<()> {
        match self.server.take() {
            Some(owned) => owned.into_inner().unwrap_or_else(|e| e.into_inner()).stop(),
            None => Ok(()),
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(owned) = self.server.take() {
            let _ = owned.into_inner().unwrap_or_else(|e| e.into_inner()).stop();
        }
    }
}

/// How a manager, and the start of every proxy (see `proxy.rs`), travel: where to connect and
/// the key.
#[derive(Serialize, Deserialize)]
struct WireManager {
    address: ManagerAddress,
    key: KeyArg,
}

impl WireManager {
    fn of(client: &Client) -> WireManager {
        WireManager {
            address: client.address.clone(),
            key: KeyArg(client.key.clone()),
        }
    }
}

impl Serialize for Manager {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireManager::of(&self.client).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Manager {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let w = WireManager::deserialize(d)?;
        Manager::connect(&w.address, &w.key.0).map_err(D::Error::custom)
    }
}

/// Runs a server in a thread of this process (tests of the protocol without a process).
#[cfg(test)]
pub(crate) fn serve_in_thread<R: Registry>(
    key: &AuthKey,
    handshake_timeout: Duration,
) -> (ManagerAddress, PathBuf) {
    let (fd, tcp, address, dir) = bind(None).expect("bind");
    assert!(!tcp);
    let key = key.as_bytes().to_vec();
    std::thread::spawn(move || {
        server::serve::<R>(
            server::Listener::Unix(UnixListener::from(fd)),
            key,
            server::Config {
                handshake_timeout,
                max_frame: 1 << 20,
                slots: true,
            },
        )
    });
    (address, dir.expect("a private directory"))
}

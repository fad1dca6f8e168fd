//! The client side: one authenticated connection, the address and the key, and how the key
//! reaches a child (a descriptor, never the argument bytes).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::auth::{self, AuthError, KEY_LEN, Session, Stream};
use super::protocol::{Refusal, Reply, Request};
use super::slot::{Side, Slot, SlotMemory};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::handles;

/// How long a client waits for a manager's handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest reply a client accepts by default (and request a server accepts).
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Where a manager listens: a Unix socket path, or a TCP address.
///
/// Parsed from `unix:/path/to/socket` or `host:port` (an IP address and a port).
///
/// # Examples
///
/// ```
/// use multiproc::ManagerAddress;
/// let a: ManagerAddress = "127.0.0.1:5000".parse().unwrap();
/// assert_eq!(a.to_string(), "127.0.0.1:5000");
/// let u: ManagerAddress = "unix:/tmp/x.sock".parse().unwrap();
/// assert!(matches!(u, ManagerAddress::Unix(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManagerAddress {
    /// A Unix stream socket at this path (never the abstract namespace).
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl ManagerAddress {
    /// TCP on 127.0.0.1 with a port the system picks: the opt-in TCP address.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::ManagerAddress::localhost();
    /// assert_eq!(a.to_string(), "127.0.0.1:0");
    /// ```
    pub fn localhost() -> ManagerAddress {
        ManagerAddress::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl fmt::Display for ManagerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            ManagerAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl FromStr for ManagerAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<ManagerAddress> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() || path.starts_with('@') || path.starts_with('\0') {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "a manager's Unix address is a path (abstract sockets are refused)",
                ));
            }
            return Ok(ManagerAddress::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(ManagerAddress::Tcp)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!("{s:?} is neither unix:PATH nor IP:PORT: {e}"),
                )
            })
    }
}

/// The secret a manager and its clients share: 32 random bytes by default.
///
/// Its `Debug` does not show it, and it has no `Serialize`: it reaches a child inside a proxy or
/// a [`Manager`](crate::Manager) passed as an argument, as an inherited descriptor.
///
/// # Examples
///
/// ```
/// let k = multiproc::AuthKey::random().unwrap();
/// assert_eq!(k.as_bytes().len(), 32);
/// assert!(multiproc::AuthKey::from_bytes(b"short").is_err());
/// assert_eq!(format!("{k:?}"), "AuthKey(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Vec<u8>);

impl AuthKey {
    /// The shortest key accepted.
    pub const MIN_LEN: usize = 16;

    /// A fresh key of 32 bytes from the kernel's random source.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the kernel has no randomness to give.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = (multiproc::AuthKey::random().unwrap(), multiproc::AuthKey::random().unwrap());
    /// assert_ne!(a, b);
    /// ```
    pub fn random() -> Result<AuthKey> {
        let mut k = vec![0u8; KEY_LEN];
        crate::sys::fill_random(&mut k).map_err(|e| Error::io("cannot get random bytes", e))?;
        Ok(AuthKey(k))
    }

    /// A key from bytes you chose (at least [`MIN_LEN`](Self::MIN_LEN) of them, at most 4 KiB).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a key that is too short or too long.
    ///
    /// # Examples
    ///
    /// ```
    /// let k = multiproc::AuthKey::from_bytes(&[7u8; 32]).unwrap();
    /// assert_eq!(k.as_bytes(), &[7u8; 32]);
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<AuthKey> {
        if bytes.len() < Self::MIN_LEN || bytes.len() > 4096 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "an authentication key has {} to 4096 bytes, not {}",
                    Self::MIN_LEN,
                    bytes.len()
                ),
            ));
        }
        Ok(AuthKey(bytes.to_vec()))
    }

    /// The key's bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let k = multiproc::AuthKey::random().unwrap();
    /// assert_eq!(k.as_bytes().len(), 32);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// A key inside process arguments: the bytes go through a socket pair whose read end is passed
/// as a handle, so they are never part of the encoded arguments (or of a command line).
pub(crate) struct KeyArg(pub(crate) AuthKey);

impl Serialize for KeyArg {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let (r, w) = crate::sys::stream_socketpair().map_err(S::Error::custom)?;
        let mut w = UnixStream::from(w);
        w.write_all(&self.0.0).map_err(S::Error::custom)?;
        drop(w);
        handles::export_fd(r.as_fd())
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for KeyArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let index = u32::deserialize(d)?;
        let fd = handles::import_fd(index).map_err(D::Error::custom)?;
        let mut bytes = Vec::new();
        UnixStream::from(fd)
            .take(4097)
            .read_to_end(&mut bytes)
            .map_err(D::Error::custom)?;
        AuthKey::from_bytes(&bytes)
            .map(KeyArg)
            .map_err(D::Error::custom)
    }
}

/// A descriptor inside process arguments (the server's listening socket).
pub(crate) struct FdArg(pub(crate) OwnedFd);

impl Serialize for FdArg {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        handles::export_fd(self.0.as_fd())
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for FdArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let index = u32::deserialize(d)?;
        handles::import_fd(index)
            .map(FdArg)
            .map_err(D::Error::custom)
    }
}

struct Conn {
    /// The process that opened it: a forked child holds a copy, which is not its own.
    pid: i32,
    /// Replies are read through a buffer (a reply usually arrives whole, in one system call).
    reader: std::io::BufReader<Stream>,
    stream: Stream,
    session: Session,
    /// The shared-memory slot requests go through, if the server gave one.
    slot: Option<Slot>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Conn {
    /// Sends `c.out` and receives the reply into `c.buf`, through the slot if there is one.
    fn exchange(&mut self) -> io::Result<()> {
        match &mut self.slot {
            Some(slot) => {
                slot.send(&self.out, self.stream.as_fd())?;
                slot.recv(&mut self.buf, DEFAULT_MAX_FRAME, self.stream.as_fd())
            }
            None => {
                self.session.send(&mut &self.stream, &self.out)?;
                self.session.recv(&mut self.reader, &mut self.buf)
            }
        }
    }

    /// Asks for a shared-memory slot (Unix sockets only): `None` if the server offers none.
    /// The reply carries the segment's descriptor, so it is read with `recvmsg`, past the
    /// buffered reader (which holds nothing: no other reply is outstanding).
    fn request_slot(&mut self) -> Result<Option<Slot>> {
        let broken = |e: io::Error| Error::io("cannot set up the manager's shared slot", e);
        self.out.clear();
        codec::encode_into(&Request::Slot, &mut self.out)
            .map_err(|e| Error::codec("cannot encode a manager request", e))?;
        self.session
            .send(&mut self.stream, &self.out)
            .map_err(broken)?;
        let mut fds = Vec::new();
        let frame = recv_frame_with_fds(&self.stream, &mut fds).map_err(broken)?;
        self.session
            .recv(&mut &frame[..], &mut self.buf)
            .map_err(broken)?;
        let reply: Reply =
            codec::decode(&self.buf).map_err(|e| Error::codec("undecodable manager reply", e))?;
        match reply {
            Reply::Slot(handle) => {
                let mem: SlotMemory = handles::with_incoming(fds, || codec::decode(&handle))
                    .map_err(|e| Error::codec("the manager's slot does not open", e))?;
                Ok(Some(Slot::new(mem, Side::Client)))
            }
            Reply::Refused(..) => Ok(None),
            r => Err(Error::new(
                ErrorKind::Codec,
                format!("unexpected reply from the manager: {r:?}"),
            )),
        }
    }
}

/// The largest reply that carries a slot.
const MAX_SLOT_REPLY: usize = 4096;

/// Reads exactly one frame from `stream`, collecting the descriptors that come with it.
fn recv_frame_with_fds(stream: &Stream, fds: &mut Vec<OwnedFd>) -> io::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(4);
    let mut total = 4;
    while frame.len() < total {
        let want = total - frame.len();
        let n = crate::sys::recv_append(stream.as_fd(), &mut frame, want, Some(fds), false)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if total == 4 && frame.len() == 4 {
            let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            if len > MAX_SLOT_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the manager's slot reply is too large",
                ));
            }
            total = 4 + len + KEY_LEN;
            frame.reserve(total - frame.len());
        }
    }
    Ok(frame)
}

/// One authenticated connection to a manager, shared by the proxies made through it.
pub(crate) struct Client {
    pub(crate) address: ManagerAddress,
    pub(crate) key: AuthKey,
    /// `None` once the connection failed: every later call fails at once.
    conn: Mutex<Option<Conn>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .finish()
    }
}

fn auth_error(address: &ManagerAddress, e: AuthError) -> Error {
    match e {
        AuthError::Refused(why) => Error::new(
            ErrorKind::PermissionDenied,
            format!("manager at {address}: {why}"),
        ),
        AuthError::Timeout => Error::io(
            format!("manager at {address}: no handshake before the deadline"),
            io::ErrorKind::TimedOut.into(),
        ),
        AuthError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Error::new(
            ErrorKind::Disconnected,
            format!("manager at {address} closed the connection during the handshake"),
        ),
        AuthError::Io(e) => Error::io(format!("manager at {address}"), e),
    }
}

/// Opens a stream to `address`.
pub(crate) fn dial(address: &ManagerAddress) -> Result<Stream> {
    let stream = match address {
        ManagerAddress::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        ManagerAddress::Tcp(a) => TcpStream::connect_timeout(a, CONNECT_TIMEOUT).map(|s| {
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }),
    };
    stream.map_err(|e| Error::io(format!("cannot connect to the manager at {address}"), e))
}

impl Conn {
    /// Connects and authenticates.
    fn open(address: &ManagerAddress, key: &AuthKey) -> Result<Conn> {
        let mut stream = dial(address)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let session = auth::client_handshake(&mut stream, &key.0, deadline, DEFAULT_MAX_FRAME)
            .map_err(|e| auth_error(address, e))?;
        let reader = std::io::BufReader::with_capacity(
            64 << 10,
            stream
                .try_clone()
                .map_err(|e| Error::io("cannot duplicate the connection", e))?,
        );
        let mut conn = Conn {
            pid: crate::sys::getpid(),
            reader,
            stream,
            session,
            slot: None,
            buf: Vec::new(),
            out: Vec::new(),
        };
        if matches!(address, ManagerAddress::Unix(_)) {
            conn.slot = conn.request_slot()?;
        }
        Ok(conn)
    }
}

impl Client {
    /// Connects and authenticates.
    pub(crate) fn connect(address: &ManagerAddress, key: &AuthKey) -> Result<Client> {
        Ok(Client {
            address: address.clone(),
            key: key.clone(),
            conn: Mutex::new(Some(Conn::open(address, key)?)),
        })
    }

    fn gone(&self) -> Error {
        Error::new(
            ErrorKind::Disconnected,
            format!("the connection to the manager at {} is gone", self.address),
        )
    }

    /// Sends `req` and waits for the reply. Refusals become errors; `Timeout` is returned.
    pub(crate) fn call(&self, req: &Request) -> Result<Reply> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard
            .as_ref()
            .is_some_and(|c| c.pid != crate::sys::getpid())
        {
            // A forked child's copy of its parent's connection: its socket and its slot are
            // the parent's, and two processes taking turns on one slot would read each other's
            // replies. It is left alone (not even closed: a safe fork's child closed those
            // descriptors, and their numbers may name other files now), and this process
            // gets a connection of its own.
            std::mem::forget(guard.take());
            *guard = Some(Conn::open(&self.address, &self.key)?);
        }
        let Some(c) = guard.as_mut() else {
            return Err(self.gone());
        };
        c.out.clear();
        codec::encode_into(req, &mut c.out)
            .map_err(|e| Error::codec("cannot encode a manager request", e))?;
        if let Err(e) = c.exchange() {
            c.stream.shutdown();
            *guard = None;
            return Err(Error::new(
                ErrorKind::Disconnected,
                format!("the manager at {} is gone: {e}", self.address),
            ));
        }
        let reply: Reply =
            codec::decode(&c.buf).map_err(|e| Error::codec("undecodable manager reply", e))?;
        drop(guard);
        match reply {
            Reply::Refused(why, msg) => {
                let kind = match why {
                    Refusal::Undecodable | Refusal::InvalidArgument => ErrorKind::InvalidArgument,
                    Refusal::NotFound => ErrorKind::NotFound,
                    Refusal::NotOwner => ErrorKind::NotOwner,
                };
                Err(Error::new(kind, format!("the manager refused: {msg}")))
            }
            r => Ok(r),
        }
    }

    /// Sends raw payload bytes as one authenticated frame and returns the raw reply (tests).
    #[cfg(test)]
    pub(crate) fn call_raw(&self, payload: &[u8]) -> Result<Reply> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let c = guard.as_mut().ok_or_else(|| self.gone())?;
        c.out.clear();
        c.out.extend_from_slice(payload);
        c.exchange().map_err(|e| Error::io("raw call", e))?;
        codec::decode(&c.buf).map_err(|e| Error::codec("reply", e))
    }

    /// Hands the server a slot chunk with `header` and `data` as a scribbler wrote them, `times`
    /// times, then waits for the reply as a call does (tests).
    #[cfg(test)]
    pub(crate) fn call_scribbled(&self, header: u64, data: &[u8], times: usize) -> Result<Reply> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let c = guard.as_mut().ok_or_else(|| self.gone())?;
        let peer = c.stream.as_fd();
        let slot = c.slot.as_mut().expect("a connection with a slot");
        let mut got = Ok(());
        for i in 0..times {
            if i > 0 {
                // The server asks for the next chunk by handing the slot back.
                got = slot.recv_ack(peer);
                if got.is_err() {
                    break;
                }
            }
            slot.send_raw(header, data);
        }
        let received = got.and_then(|()| slot.recv(&mut c.buf, DEFAULT_MAX_FRAME, peer));
        if let Err(e) = received {
            c.stream.shutdown();
            *guard = None;
            return Err(Error::new(ErrorKind::Disconnected, e.to_string()));
        }
        codec::decode(&c.buf).map_err(|e| Error::codec("reply", e))
    }

    /// The shared slot's memory, if the connection has one (tests scribble on it).
    #[cfg(test)]
    pub(crate) fn slot_memory(&self) -> Option<SlotMemory> {
        let guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let slot = guard.as_ref()?.slot.as_ref()?;
        Some(slot.memory().clone())
    }

    /// Stores `value` in the slot's turn word, as another process of the user could (tests).
    #[cfg(test)]
    pub(crate) fn scribble_turn(&self, value: u32) {
        let guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let slot = guard.as_ref().and_then(|c| c.slot.as_ref());
        slot.expect("a connection with a slot").scribble_turn(value);
    }

    /// Writes bytes straight onto the stream, bypassing the session (tests).
    #[cfg(test)]
    pub(crate) fn write_unframed(&self, bytes: &[u8]) -> io::Result<()> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().expect("connected").stream.write_all(bytes)
    }

    /// Whether the connection has failed (tests).
    #[cfg(test)]
    pub(crate) fn read_end(&self) -> io::Result<usize> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let c = guard.as_mut().expect("connected");
        let mut b = [0u8; 1];
        c.stream.read(&mut b)
    }
}

/// The micros left until an optional deadline, for a request (`None`: no deadline).
pub(crate) fn until(deadline: Option<std::time::Instant>) -> Option<u64> {
    micros(deadline.map(|d| d.saturating_duration_since(std::time::Instant::now())))
}

/// The micros of an optional timeout, for a request.
pub(crate) fn micros(t: Option<Duration>) -> Option<u64> {
    t.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

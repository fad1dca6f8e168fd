//! The handshake and the authenticated frames every manager connection speaks.
//!
//! # Handshake (fixed sizes, so nothing is read past them before authentication)
//! 1. client → server: `CLIENT_MAGIC` and a fresh 32-byte nonce `nc` (40 bytes);
//! 2. server → client: `SERVER_MAGIC`, a fresh nonce `ns` and `HMAC(key, "server" ‖ nc ‖ ns)`
//!    (72 bytes); the client checks the tag: the server knows the key;
//! 3. client → server: `HMAC(key, "client" ‖ nc ‖ ns)` (32 bytes); the server checks it;
//! 4. server → client: the first authenticated frame (empty): the client was accepted.
//!
//! The labels make a tag of one side useless as the other's (no reflection), the fresh nonces
//! make a recorded handshake useless later (no replay). Tags are compared in constant time.
//!
//! # Frames
//! After the handshake each direction has its own key, `HMAC(key, "c2s" ‖ nc ‖ ns)` and
//! `HMAC(key, "s2c" ‖ nc ‖ ns)`. A frame is a 4-byte little-endian length, the payload and
//! `HMAC(direction key, sequence ‖ length ‖ payload)`, where the sequence number counts the
//! frames of that direction. A frame whose tag does not verify (forged, replayed, reordered or
//! cut) breaks the connection: it is closed, nothing of the frame is used.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The length of a key, a nonce and a tag.
pub(crate) const KEY_LEN: usize = 32;
const CLIENT_MAGIC: &[u8; 8] = b"mpmgr1\0c";
const SERVER_MAGIC: &[u8; 8] = b"mpmgr1\0s";
/// What the server reads before the client is authenticated, at most: the hello and the tag.
#[cfg(test)]
pub(crate) const PRE_AUTH_BYTES: usize = CLIENT_MAGIC.len() + KEY_LEN + KEY_LEN;

/// A connected byte stream: a Unix socket or TCP.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    /// Ends both directions now (a thread blocked reading it wakes up with end of stream).
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).write(buf),
            Stream::Tcp(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tag(key: &[u8], label: &[u8], nc: &[u8], ns: &[u8]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(nc);
    mac.update(ns);
    mac.finalize().into_bytes().into()
}

fn verify(key: &[u8], label: &[u8], nc: &[u8], ns: &[u8], expected: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.update(nc);
    mac.update(ns);
    mac.verify_slice(expected).is_ok()
}

/// Why a handshake or a frame failed.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// The peer does not know the key (or is not a manager peer at all).
    Refused(&'static str),
    /// The deadline passed first.
    Timeout,
    /// The stream failed or ended.
    Io(io::Error),
}

impl From<io::Error> for AuthError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AuthError::Timeout,
            _ => AuthError::Io(e),
        }
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_exact_by(s: &mut Stream, buf: &mut [u8], deadline: Instant) -> Result<(), AuthError> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AuthError::Timeout);
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[done..]) {
            Ok(0) => return Err(AuthError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn write_all_by(s: &mut Stream, buf: &[u8], deadline: Instant) -> Result<(), AuthError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AuthError::Timeout);
    }
    s.set_write_timeout(Some(left))?;
    s.write_all(buf)?;
    s.set_write_timeout(None)?;
    Ok(())
}

fn nonce() -> Result<[u8; KEY_LEN], AuthError> {
    let mut n = [0u8; KEY_LEN];
    crate::sys::fill_random(&mut n)?;
    Ok(n)
}

/// The keys of an authenticated connection, one per direction, and the frame counters.
pub(crate) struct Session {
    send_key: HmacSha256,
    recv_key: HmacSha256,
    send_seq: u64,
    recv_seq: u64,
    /// The largest payload accepted from the peer.
    max_frame: usize,
}

impl Session {
    fn new(key: &[u8], nc: &[u8], ns: &[u8], server: bool, max_frame: usize) -> Session {
        let c2s = tag(key, b"c2s", nc, ns);
        let s2c = tag(key, b"s2c", nc, ns);
        let (send, recv) = if server { (s2c, c2s) } else { (c2s, s2c) };
        Session {
            send_key: HmacSha256::new_from_slice(&send).expect("any key length"),
            recv_key: HmacSha256::new_from_slice(&recv).expect("any key length"),
            send_seq: 0,
            recv_seq: 0,
            max_frame,
        }
    }

    fn frame_tag(key: &HmacSha256, seq: u64, header: &[u8; 4], payload: &[u8]) -> HmacSha256 {
        let mut mac = key.clone();
        mac.update(&seq.to_le_bytes());
        mac.update(header);
        mac.update(payload);
        mac
    }

    /// Sends one authenticated frame.
    pub(crate) fn send(&mut self, s: &mut impl Write, payload: &[u8]) -> io::Result<()> {
        s.write_all(&self.seal(payload)?)
    }

    /// One authenticated frame, as the bytes to send (for a frame that goes out with
    /// descriptors attached).
    pub(crate) fn seal(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a manager frame is limited to 4 GiB",
            )
        })?;
        let header = len.to_le_bytes();
        let t = Self::frame_tag(&self.send_key, self.send_seq, &header, payload)
            .finalize()
            .into_bytes();
        self.send_seq += 1;
        let mut frame = Vec::with_capacity(4 + payload.len() + KEY_LEN);
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&t);
        Ok(frame)
    }

    /// Receives one authenticated frame into `buf`. A length above the limit or a tag that does
    /// not verify is an `InvalidData` error: the connection must be closed.
    pub(crate) fn recv(&mut self, s: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut header = [0u8; 4];
        s.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header) as usize;
        if len > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a frame of {len} bytes is above the limit of {}",
                    self.max_frame
                ),
            ));
        }
        buf.clear();
        buf.resize(len + KEY_LEN, 0);
        s.read_exact(buf)?;
        let (payload, t) = buf.split_at(len);
        let ok = Self::frame_tag(&self.recv_key, self.recv_seq, &header, payload)
            .verify_slice(t)
            .is_ok();
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a frame's authentication tag does not verify",
            ));
        }
        self.recv_seq += 1;
        buf.truncate(len);
        Ok(())
    }
}

/// The client's side of the handshake, all of it before `deadline`.
pub(crate) fn client_handshake(
    s: &mut Stream,
    key: &[u8],
    deadline: Instant,
    max_frame: usize,
) -> Result<Session, AuthError> {
    let nc = nonce()?;
    let mut hello = [0u8; 40];
    hello[..8].copy_from_slice(CLIENT_MAGIC);
    hello[8..].copy_from_slice(&nc);
    write_all_by(s, &hello, deadline)?;
    let mut answer = [0u8; 72];
    read_exact_by(s, &mut answer, deadline)?;
    if &answer[..8] != SERVER_MAGIC {
        return Err(AuthError::Refused("the peer is not a multiproc manager"));
    }
    let ns = &answer[8..40];
    if !verify(key, b"server", &nc, ns, &answer[40..]) {
        return Err(AuthError::Refused(
            "the manager does not know the key (wrong authentication key)",
        ));
    }
    write_all_by(s, &tag(key, b"client", &nc, ns), deadline)?;
    let mut session = Session::new(key, &nc, ns, false, max_frame);
    // The welcome frame, under the same deadline: a server that refused us closes instead.
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AuthError::Timeout);
    }
    s.set_read_timeout(Some(left))?;
    let mut buf = Vec::new();
    let welcomed = session.recv(s, &mut buf);
    s.set_read_timeout(None)?;
    match welcomed {
        Ok(()) if buf.is_empty() => Ok(session),
        Ok(()) => Err(AuthError::Refused("unexpected welcome from the manager")),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(AuthError::Refused(
            "the manager refused the key (wrong authentication key)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The server's side of the handshake: reads at most 72 bytes (the hello and the tag), all before
/// `deadline`.
pub(crate) fn server_handshake(
    s: &mut Stream,
    key: &[u8],
    deadline: Instant,
    max_frame: usize,
) -> Result<Session, AuthError> {
    let mut hello = [0u8; 40];
    read_exact_by(s, &mut hello, deadline)?;
    if &hello[..8] != CLIENT_MAGIC {
        return Err(AuthError::Refused("not a multiproc manager client"));
    }
    let nc = &hello[8..];
    let ns = nonce()?;
    let mut answer = [0u8; 72];
    answer[..8].copy_from_slice(SERVER_MAGIC);
    answer[8..40].copy_from_slice(&ns);
    answer[40..].copy_from_slice(&tag(key, b"server", nc, &ns));
    write_all_by(s, &answer, deadline)?;
    let mut client_tag = [0u8; KEY_LEN];
    read_exact_by(s, &mut client_tag, deadline)?;
    if !verify(key, b"client", nc, &ns, &client_tag) {
        return Err(AuthError::Refused("the client does not know the key"));
    }
    s.set_read_timeout(None)?;
    let mut session = Session::new(key, nc, &ns, true, max_frame);
    session.send(s, &[])?;
    Ok(session)
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    fn pair() -> (Stream, Stream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Stream::Unix(a), Stream::Unix(b))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(20)
    }

    #[test]
    fn the_same_key_authenticates_both_ways_and_frames_flow() {
        let (mut c, mut s) = pair();
        let server = thread::spawn(move || {
            let mut sess = server_handshake(&mut s, &[7; 32], soon(), 1 << 20).unwrap();
            let mut buf = Vec::new();
            sess.recv(&mut s, &mut buf).unwrap();
            sess.send(&mut s, &buf).unwrap();
        });
        let mut sess = client_handshake(&mut c, &[7; 32], soon(), 1 << 20).unwrap();
        sess.send(&mut c, b"hello").unwrap();
        let mut buf = Vec::new();
        sess.recv(&mut c, &mut buf).unwrap();
        assert_eq!(buf, b"hello");
        server.join().unwrap();
    }

    #[test]
    fn a_wrong_key_is_refused_on_both_sides() {
        let (mut c, mut s) = pair();
        let server = thread::spawn(move || server_handshake(&mut s, &[1; 32], soon(), 1024));
        let client = client_handshake(&mut c, &[2; 32], soon(), 1024);
        assert!(
            matches!(client, Err(AuthError::Refused(_))),
            "{:?}",
            client.err()
        );
        drop(c);
        assert!(server.join().unwrap().is_err());
    }

    #[test]
    fn the_server_reads_nothing_past_the_pre_auth_limit() {
        let (mut c, mut s) = pair();
        let mut junk = vec![0u8; PRE_AUTH_BYTES + 1000];
        junk[..8].copy_from_slice(CLIENT_MAGIC);
        c.write_all(&junk).unwrap();
        let r = server_handshake(&mut s, &[3; 32], soon(), 1024);
        assert!(matches!(r, Err(AuthError::Refused(_))));
        // Exactly the bytes past the limit are still unread on the server's side.
        let mut answer = [0u8; 72];
        c.read_exact(&mut answer).unwrap();
        drop(c);
        let mut rest = Vec::new();
        s.set_read_timeout(None).unwrap();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), 1000);
    }

    #[test]
    fn a_silent_client_hits_the_deadline() {
        let (_c, mut s) = pair();
        let r = server_handshake(
            &mut s,
            &[3; 32],
            Instant::now() + Duration::from_millis(50),
            1024,
        );
        assert!(matches!(r, Err(AuthError::Timeout)), "{:?}", r.err());
    }

    #[test]
    fn a_forged_or_replayed_frame_does_not_verify() {
        let (mut c, mut s) = pair();
        let server =
            thread::spawn(move || (server_handshake(&mut s, &[9; 32], soon(), 1024).unwrap(), s));
        let mut sess = client_handshake(&mut c, &[9; 32], soon(), 1024).unwrap();
        let (mut ssess, mut s) = server.join().unwrap();
        // A frame with a flipped payload byte.
        let mut raw = Vec::new();
        let mut probe = c.try_clone().unwrap();
        sess.send(&mut probe, b"abc").unwrap();
        let mut buf = Vec::new();
        ssess.recv(&mut s, &mut buf).unwrap();
        raw.extend_from_slice(&3u32.to_le_bytes());
        raw.extend_from_slice(b"abd");
        raw.extend_from_slice(&[0u8; 32]);
        c.write_all(&raw).unwrap();
        let e = ssess.recv(&mut s, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_oversized_frame_is_refused_before_allocation() {
        let (mut c, mut s) = pair();
        let server =
            thread::spawn(move || (server_handshake(&mut s, &[9; 32], soon(), 1024).unwrap(), s));
        let _sess = client_handshake(&mut c, &[9; 32], soon(), 1024).unwrap();
        let (mut ssess, mut s) = server.join().unwrap();
        c.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let mut buf = Vec::new();
        let e = ssess.recv(&mut s, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(buf.capacity() < 4096);
    }
}

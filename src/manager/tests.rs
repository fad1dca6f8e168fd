//! The protocol against a server running in a thread of the test process.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::{Refusal, Reply};
use super::*;

struct Server {
    address: ManagerAddress,
    key: AuthKey,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server<R: Registry>(handshake: Duration) -> Server {
    let key = AuthKey::random().unwrap();
    let (address, dir) = serve_in_thread::<R>(&key, handshake);
    Server { address, key, dir }
}

/// The object `id` through the connection of `m` (a second client of the same object).
fn base_on(m: &Manager, id: u64) -> proxy::Base {
    proxy::Base {
        client: Arc::clone(&m.client),
        id,
    }
}

/// Two connections to `s`, and one lock seen through each.
fn one_lock_two_connections(s: &Server) -> (Manager, Manager, LockProxy, LockProxy) {
    let (a, b) = (s.connect(), s.connect());
    let lock = a.lock().unwrap();
    let lock_b = LockProxy {
        base: base_on(&b, lock.base.id),
        _t: PhantomData,
    };
    (a, b, lock, lock_b)
}

impl Server {
    fn connect(&self) -> Manager {
        Manager::connect(&self.address, &self.key).unwrap()
    }
    fn path(&self) -> &std::path::Path {
        match &self.address {
            ManagerAddress::Unix(p) => p,
            ManagerAddress::Tcp(_) => unreachable!(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Counter(u64);

impl SharedObject for Counter {
    type Request = u64;
    type Reply = u64;
    fn handle(&mut self, add: u64) -> u64 {
        self.0 += add;
        self.0
    }
}

#[test]
fn dict_list_and_namespace_work_through_the_protocol() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let d = m.dict::<String, u32>().unwrap();
    assert_eq!(d.insert(&"a".into(), &1).unwrap(), None);
    assert_eq!(d.insert(&"a".into(), &2).unwrap(), Some(1));
    d.update([(&"b".to_string(), &3)]).unwrap();
    assert!(d.contains(&"b".into()).unwrap());
    assert_eq!(d.len().unwrap(), 2);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items, [("a".to_string(), 2), ("b".to_string(), 3)]);
    assert_eq!(d.update_with(&"a".into(), |v| v.unwrap() * 10).unwrap(), 20);
    assert_eq!(d.update_with(&"z".into(), |v| v.unwrap_or(5)).unwrap(), 5);
    assert_eq!(d.remove(&"z".into()).unwrap(), Some(5));
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());

    let l = m.list::<u8>().unwrap();
    l.extend(&[1, 2, 3]).unwrap();
    l.insert(0, &0).unwrap();
    assert_eq!(l.set(1, &9).unwrap(), 1);
    assert_eq!(l.remove(3).unwrap(), 3);
    assert_eq!(l.pop().unwrap(), Some(2));
    assert_eq!(l.snapshot().unwrap(), [0, 9]);
    assert_eq!(l.get(7).unwrap(), None);
    assert_eq!(l.set(7, &1).unwrap_err().kind(), ErrorKind::InvalidArgument);

    let ns = m.namespace((1u8, "x".to_string())).unwrap();
    assert_eq!(
        ns.update(|(n, s)| (n + 1, s + "y")).unwrap(),
        (2, "xy".into())
    );
    assert_eq!(ns.set(&(0, String::new())).unwrap(), (2, "xy".into()));
}

#[test]
fn a_panicking_update_releases_the_dict_unchanged() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(&1, &1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.update_with(&1, |_| panic!("in the closure"))
    }));
    assert!(r.is_err());
    let other = s.connect();
    let d2 = DictProxy::<u8, u8> {
        base: base_on(&other, d.base.id),
        _t: PhantomData,
    };
    assert_eq!(d2.get(&1).unwrap(), Some(1));
}

#[test]
fn locks_events_and_queues_wait_with_deadlines() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let (a, _b, lock, lock_b) = one_lock_two_connections(&s);
    let g = lock.acquire().unwrap();
    assert!(matches!(
        lock.try_acquire(),
        Err(ProxyTryAcquireError::Failed(e)) if e.kind() == ErrorKind::InvalidArgument
    ));
    assert!(matches!(
        lock_b.acquire_timeout(Duration::from_millis(20)),
        Err(ProxyTimeoutError::Timeout)
    ));
    assert!(matches!(
        lock_b.acquire_deadline(Instant::now()),
        Err(ProxyTimeoutError::Timeout)
    ));
    assert!(matches!(
        lock_b.try_acquire(),
        Err(ProxyTryAcquireError::WouldBlock)
    ));
    assert_eq!(
        lock_b.release_raw().unwrap_err().kind(),
        ErrorKind::NotOwner
    );
    drop(g);
    let g = lock_b.try_acquire().unwrap();
    drop(g);
    drop(lock_b.acquire_deadline(Instant::now()).unwrap());

    let e = a.event().unwrap();
    assert!(matches!(
        e.wait_timeout(Duration::from_millis(10)),
        Err(ProxyTimeoutError::Timeout)
    ));
    assert!(matches!(
        e.wait_deadline(Instant::now()),
        Err(ProxyTimeoutError::Timeout)
    ));
    e.set().unwrap();
    e.wait().unwrap();
    e.wait_deadline(Instant::now()).unwrap();
    assert!(e.is_set().unwrap());
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());

    let q = a.queue::<u32>(Some(1)).unwrap();
    q.put(&1).unwrap();
    assert!(matches!(
        q.put_timeout(&2, Duration::from_millis(10)),
        Err(ProxyTimeoutError::Timeout)
    ));
    assert!(matches!(q.try_put(&2), Err(ProxyTryPutError::Full)));
    assert!(matches!(
        q.put_deadline(&2, Instant::now()),
        Err(ProxyTimeoutError::Timeout)
    ));
    assert_eq!(q.len().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 1);
    assert!(matches!(q.try_get(), Err(ProxyTryGetError::Empty)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(10)),
        Err(ProxyTimeoutError::Timeout)
    ));
    q.try_put(&3).unwrap();
    assert_eq!(q.get_deadline(Instant::now()).unwrap(), 3);
    q.put_deadline(&4, Instant::now()).unwrap();
    assert_eq!(q.try_get().unwrap(), 4);
    // A timeout too long for an `Instant` waits for as long as it takes.
    q.put(&5).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 5);
}

#[test]
fn a_lock_is_released_when_its_connection_ends() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let (a, _b, lock, lock_b) = one_lock_two_connections(&s);
    std::mem::forget(lock.acquire().unwrap());
    drop(lock);
    drop(a); // the connection ends with the lock held
    let got = lock_b.acquire_timeout(Duration::from_secs(30));
    assert!(got.is_ok(), "{got:?}");
}

#[test]
fn custom_objects_of_registered_types_only() {
    let s = server::<(Counter, ())>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let c = m.create(Counter(1)).unwrap();
    assert_eq!(c.call(&2).unwrap(), 3);

    let plain = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = plain.connect();
    assert_eq!(
        m.create(Counter(1)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn random_bytes_after_authentication_are_refused_and_the_server_goes_on() {
    let s = server::<(Counter, ())>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let c = m.create(Counter(0)).unwrap();
    let mut rng = 0x1234_5678_9abc_def0u64;
    for len in [0usize, 1, 7, 64, 1000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 24) as u8 | 0x80
            })
            .collect();
        match m.client.call_raw(&junk).unwrap() {
            Reply::Refused(Refusal::Undecodable, _) => {}
            r => panic!("{len} random bytes: {r:?}"),
        }
    }
    // A well-framed request whose object payload is garbage: refused by the object's type.
    let bad = crate::codec::encode(&protocol::Request::Custom(c.base.id, vec![0xff; 12])).unwrap();
    assert!(matches!(
        m.client.call_raw(&bad).unwrap(),
        Reply::Refused(Refusal::Undecodable, _)
    ));
    // The same connection and the server go on.
    assert_eq!(c.call(&5).unwrap(), 5);
    assert!(s.connect().dict::<u8, u8>().is_ok());
}

#[test]
fn a_forged_frame_closes_the_connection() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let d = m.dict::<u8, u8>().unwrap();
    // A frame of the right shape whose tag is wrong.
    let mut frame = 3u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[1, 2, 3]);
    frame.extend_from_slice(&[0u8; 32]);
    m.client.write_unframed(&frame).unwrap();
    // The server closes: end of stream (or a reset), no reply.
    match m.client.read_end() {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("the server answered a forged frame ({n} bytes)"),
    }
    assert_eq!(d.len().unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(d.len().unwrap_err().kind(), ErrorKind::Disconnected);
    assert!(s.connect().dict::<u8, u8>().is_ok());
}

#[test]
fn a_wrong_key_is_refused_before_any_request() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let wrong = AuthKey::random().unwrap();
    let e = Manager::connect(&s.address, &wrong).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(s.connect().dict::<u8, u8>().is_ok());
}

#[test]
fn a_slow_loris_is_cut_off_at_the_deadline_and_others_are_served() {
    let s = server::<()>(Duration::from_millis(300));
    let mut raw = UnixStream::connect(s.path()).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One byte of hello every 20 ms: 40 bytes would take 800 ms, past the deadline.
    for b in b"mpmgr1\0c"
        .iter()
        .chain([0u8; 32].iter())
        .cycle()
        .take(2000)
    {
        if raw.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 128];
        match raw.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("the server answered an incomplete hello"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the server never closed a slow client");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Meanwhile and afterwards, others connect.
    assert!(s.connect().dict::<u8, u8>().is_ok());
}

#[test]
fn a_truncated_handshake_leaves_the_server_serving() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    for cut in [0usize, 5, 39] {
        let mut raw = UnixStream::connect(s.path()).unwrap();
        let mut hello = b"mpmgr1\0c".to_vec();
        hello.extend_from_slice(&[7u8; 32]);
        raw.write_all(&hello[..cut]).unwrap();
        drop(raw);
    }
    // A client that stops after the hello, before its tag.
    let mut raw = UnixStream::connect(s.path()).unwrap();
    let mut hello = b"mpmgr1\0c".to_vec();
    hello.extend_from_slice(&[7u8; 32]);
    raw.write_all(&hello).unwrap();
    let mut answer = [0u8; 72];
    raw.read_exact(&mut answer).unwrap();
    drop(raw);
    assert!(s.connect().dict::<u8, u8>().is_ok());
}

#[test]
fn the_private_socket_is_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.dir), 0o700);
    assert_eq!(mode(s.path()), 0o600);
}

#[test]
fn addresses_parse_and_refuse_abstract_names() {
    assert!("unix:@abstract".parse::<ManagerAddress>().is_err());
    assert!("unix:".parse::<ManagerAddress>().is_err());
    assert!("nonsense".parse::<ManagerAddress>().is_err());
    let a: ManagerAddress = "[::1]:80".parse().unwrap();
    assert_eq!(a.to_string().parse::<ManagerAddress>().unwrap(), a);
}

#[test]
fn local_connections_use_a_shared_slot_and_tcp_never_does() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    assert!(m.client.slot_memory().is_some(), "no slot on a Unix socket");
    let d = m.dict::<u32, Vec<u8>>().unwrap();
    // Values larger than the slot travel in chunks, both ways.
    let big = vec![7u8; 3 * slot::SLOT_DATA + 5];
    d.insert(&1, &big).unwrap();
    assert_eq!(d.get(&1).unwrap().as_deref(), Some(&big[..]));
    // A second request for a slot on the same connection is refused, typed.
    let again = crate::codec::encode(&protocol::Request::Slot).unwrap();
    assert!(matches!(
        m.client.call_raw(&again).unwrap(),
        Reply::Refused(Refusal::NotFound, _)
    ));
    assert_eq!(d.len().unwrap(), 1);

    // Over TCP, requests stay on the socket, each frame with its MAC.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = ManagerAddress::Tcp(listener.local_addr().unwrap());
    let key = AuthKey::random().unwrap();
    let server_key = key.as_bytes().to_vec();
    std::thread::spawn(move || {
        server::serve::<()>(
            server::Listener::Tcp(listener),
            server_key,
            server::Config {
                handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                max_frame: 1 << 20,
                slots: true,
            },
        )
    });
    let m = Manager::connect(&address, &key).unwrap();
    assert!(m.client.slot_memory().is_none(), "a slot over TCP");
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(&1, &2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
    assert!(matches!(
        m.client.call_raw(&again).unwrap(),
        Reply::Refused(Refusal::NotFound, _)
    ));
}

#[test]
fn a_client_scribbling_its_slot_gets_typed_errors_and_the_server_goes_on() {
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    // Garbage of a plausible length: refused as undecodable, and the connection goes on.
    let m = s.connect();
    let d = m.dict::<u8, u8>().unwrap();
    let junk = [0xffu8; 40];
    assert!(matches!(
        m.client
            .call_scribbled(slot::Slot::header(junk.len(), false), &junk, 1)
            .unwrap(),
        Reply::Refused(Refusal::Undecodable, _)
    ));
    assert_eq!(d.len().unwrap(), 0);

    // A length past the slot: the server drops the connection; every call then fails typed.
    let e = m
        .client
        .call_scribbled(u64::MAX >> 1, &junk, 1)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");
    assert_eq!(d.len().unwrap_err().kind(), ErrorKind::Disconnected);

    // A message that never ends: cut at the server's limit (1 MiB here), not read forever.
    let m = s.connect();
    let chunk = vec![0u8; slot::SLOT_DATA];
    let e = m
        .client
        .call_scribbled(slot::Slot::header(chunk.len(), true), &chunk, 64)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected, "{e}");

    // The server serves everyone else throughout.
    let other = s.connect();
    let d = other.dict::<u8, u8>().unwrap();
    d.insert(&1, &2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

#[test]
fn a_turn_scribbled_while_the_server_sleeps_ends_that_connection_only() {
    // Another process of the user writes the turn word of an idle connection's slot: the
    // server's thread, asleep on it, finds the jump at its next tick and closes the connection
    // (it used to sleep on the socket, which nothing rang: the connection hung for good).
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let m = s.connect();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(&1, &1).unwrap();
    std::thread::sleep(Duration::from_millis(20)); // the server's thread falls asleep
    m.client.scribble_turn(0xdead_beef);
    assert_eq!(
        m.client.read_end().unwrap(),
        0,
        "the server closes the connection"
    );
    assert_eq!(d.get(&1).unwrap_err().kind(), ErrorKind::Disconnected);

    let other = s.connect();
    let d = other.dict::<u8, u8>().unwrap();
    d.insert(&1, &2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

/// Runs `f` in a thread pinned to one CPU (the first this thread may use), which it returns.
fn on_one_cpu<T: Send>(f: impl FnOnce(u64) -> T + Send) -> T {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let cpu = crate::sys::cpu_mask().trailing_zeros() as usize;
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set).unwrap();
            f(1 << cpu)
        })
        .join()
        .unwrap()
    })
}

/// Pins the calling thread to the CPUs of `mask`.
fn pin_to(mask: u64) {
    let mut set = rustix::thread::CpuSet::new();
    (0..64)
        .filter(|c| mask >> c & 1 == 1)
        .for_each(|c| set.set(c));
    rustix::thread::sched_setaffinity(None, &set).unwrap();
}

/// Runs `f` in a thread and fails if it has not returned within `limit` (a hang, not a
/// timing: `limit` is far above what the work takes).
fn ends_within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung for {limit:?}"),
    }
}

#[test]
fn a_client_that_unpins_itself_mid_session_still_gets_replies_to_large_requests() {
    // Server and client on one CPU, then the client moves to every CPU: the two sides' views
    // of the CPU masks differ for a while, and the requests are larger than the slot.
    if crate::sys::cpu_mask().count_ones() < 2 {
        return;
    }
    let (s, cpu) = on_one_cpu(|cpu| (server::<()>(DEFAULT_HANDSHAKE_TIMEOUT), cpu));
    let all = crate::sys::cpu_mask();
    ends_within(Duration::from_secs(60), move || {
        pin_to(cpu);
        let m = s.connect();
        let d = m.dict::<u8, Vec<u8>>().unwrap();
        for i in 0..200u32 {
            d.insert(&1, &i.to_le_bytes().to_vec()).unwrap();
            assert_eq!(d.get(&1).unwrap(), Some(i.to_le_bytes().to_vec()));
        }
        pin_to(all);
        // Larger than the slot; enough calls for the client to read the masks again.
        let big: Vec<u8> = (0..slot::SLOT_DATA + 5).map(|j| j as u8).collect();
        for _ in 0..50 {
            d.insert(&1, &big).unwrap();
            assert_eq!(d.get(&1).unwrap().as_deref(), Some(&big[..]));
        }
        drop(s);
    });
}

#[test]
fn a_long_wait_for_a_lock_leaves_the_connection_in_step() {
    // The holder keeps the lock past many of the waiting client's ticks; then the waiter gets
    // it, and its connection goes on answering each call with its own reply.
    let s = server::<()>(DEFAULT_HANDSHAKE_TIMEOUT);
    let (a, b, lock, lock_b) = one_lock_two_connections(&s);
    ends_within(Duration::from_secs(60), move || {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let g = lock.acquire().unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(g);
            (a, lock)
        });
        held_rx.recv().unwrap();
        let g = lock_b.acquire().unwrap();
        let d = b.dict::<u32, u32>().unwrap();
        for i in 0..2000 {
            d.insert(&i, &(i * 3)).unwrap();
            assert_eq!(d.get(&i).unwrap(), Some(i * 3));
        }
        drop(g);
        drop(holder.join().unwrap());
    });
}

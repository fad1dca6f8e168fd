//! The server: accepts connections, authenticates them, and answers requests against the
//! objects it owns. One thread per connection; the objects sit behind one mutex, and every
//! change wakes the requests that wait (a lock, an event, a queue, a held object).

use crate::atomic::Ordering;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::auth::{self, Session, Stream};
use super::object::{ErasedObject, Registry};
use super::protocol::{
    Bytes, DictOp, EventOp, Kind, ListOp, LockOp, NsOp, QueueOp, Refusal, Reply, Request,
};
use super::slot::{Side, Slot};
use crate::codec;
use crate::handles;

/// At most this many connections may be in their handshake at once; more are closed at once.
const MAX_PENDING: usize = 64;

/// How a server treats its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// The time a new connection has to authenticate.
    pub(crate) handshake_timeout: Duration,
    /// The largest request accepted after authentication.
    pub(crate) max_frame: usize,
    /// Whether Unix-socket clients may get a shared-memory slot.
    pub(crate) slots: bool,
}

/// Where a server accepts connections.
#[derive(Debug)]
pub(crate) enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

enum State {
    Dict(HashMap<Bytes, Bytes>),
    List(Vec<Bytes>),
    Namespace(Bytes),
    /// The connection holding the lock.
    Lock(Option<u64>),
    Event(bool),
    Queue(VecDeque<Bytes>, Option<u64>),
    Custom(ErasedObject),
}

struct Object {
    /// The connection with an exclusive hold (`update_with`), if any.
    held_by: Option<u64>,
    state: State,
}

#[derive(Default)]
struct Store {
    next_id: u64,
    objects: HashMap<u64, Object>,
}

/// A registry's constructor.
type Construct = fn(&str, &[u8]) -> Option<Result<ErasedObject, codec::CodecError>>;

/// What every connection's thread shares.
struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    key: Vec<u8>,
    config: Config,
    construct: Construct,
    pending: AtomicUsize,
    next_conn: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the server on `listener` for ever (until the process ends).
pub(crate) fn serve<R: Registry>(listener: Listener, key: Vec<u8>, config: Config) {
    let shared = Arc::new(Shared {
        store: Mutex::new(Store::default()),
        changed: Condvar::new(),
        key,
        config,
        construct: R::construct,
        pending: AtomicUsize::new(0),
        next_conn: AtomicU64::new(1),
    });
    let me = crate::sys::euid();
    loop {
        let stream = match listener.accept() {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or a connection reset before accept: wait a little.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Stream::Unix(s) = &stream
            && crate::sys::peer_uid(s.as_fd()).ok() != Some(me)
        {
            continue; // another user: closed before a byte is read
        }
        if shared.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("manager-conn".into())
            .spawn(move || connection(&shared, stream));
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Serves one connection to its end.
fn connection(shared: &Shared, mut stream: Stream) {
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let session =
        auth::server_handshake(&mut stream, &shared.key, deadline, shared.config.max_frame);
    shared.pending.fetch_sub(1, Ordering::AcqRel);
    let Ok(mut session) = session else { return };
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut slot: Option<Slot> = None;
    // Any receive error (end of stream, a forged tag, an oversized frame, a corrupt slot) ends
    // the connection. Reads are buffered: a request usually arrives whole, in one system call.
    let mut reader = std::io::BufReader::with_capacity(64 << 10, &stream);
    loop {
        let received = match &mut slot {
            Some(sl) => sl.recv(&mut buf, shared.config.max_frame, stream.as_fd()),
            None => session.recv(&mut reader, &mut buf),
        };
        if received.is_err() {
            break;
        }
        let reply = match codec::decode::<Request>(&buf) {
            Ok(Request::Slot)
                if slot.is_none() && shared.config.slots && matches!(stream, Stream::Unix(_)) =>
            {
                match offer_slot(&mut session, &stream) {
                    Ok(s) => {
                        slot = Some(s);
                        continue;
                    }
                    Err(_) => break,
                }
            }
            Ok(req) => handle(
                shared,
                Peer {
                    conn,
                    stream: &stream,
                },
                req,
            ),
            Err(e) => Reply::Refused(Refusal::Undecodable, format!("undecodable request: {e}")),
        };
        out.clear();
        if codec::encode_into(&reply, &mut out).is_err() {
            break;
        }
        let sent = match &mut slot {
            Some(sl) => sl.send(&out, stream.as_fd()),
            None => session.send(&mut &stream, &out),
        };
        if sent.is_err() {
            break;
        }
    }
    stream.shutdown();
    // The connection's locks and holds end with it.
    let mut store = shared.lock();
    for obj in store.objects.values_mut() {
        if obj.held_by == Some(conn) {
            obj.held_by = None;
        }
        if let State::Lock(holder) = &mut obj.state
            && *holder == Some(conn)
        {
            *holder = None;
        }
    }
    drop(store);
    shared.changed.notify_all();
}

/// Creates a slot for a Unix-socket connection (whose peer uid `serve` checked) and sends it:
/// an authenticated `Reply::Slot` frame with the segment's descriptor attached.
fn offer_slot(session: &mut Session, stream: &Stream) -> std::io::Result<Slot> {
    let Stream::Unix(unix) = stream else {
        return Err(std::io::ErrorKind::Unsupported.into());
    };
    let shm = Slot::create().map_err(std::io::Error::other)?;
    let (handle, fds, _) = handles::encode_with_handles(&shm).map_err(std::io::Error::other)?;
    let reply = codec::encode(&Reply::Slot(handle)).map_err(std::io::Error::other)?;
    let frame = session.seal(&reply)?;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let n = crate::sys::sendmsg(unix.as_fd(), &[&frame], &borrowed, false)?;
    (&*unix).write_all(&frame[n..])?;
    Ok(Slot::new(shm, Side::Server))
}

fn deadline_of(micros: Option<u64>) -> Option<Instant> {
    micros.and_then(|m| Instant::now().checked_add(Duration::from_micros(m)))
}

fn refused(why: Refusal, msg: impl Into<String>) -> Reply {
    Reply::Refused(why, msg.into())
}

fn not_found(id: u64, what: &str) -> Reply {
    refused(
        Refusal::NotFound,
        format!("no {what} with id {id} in this manager"),
    )
}

/// How often a waiting request checks that its client is still there.
const LIVENESS_PERIOD: Duration = Duration::from_millis(200);

/// The connection a request came on: its id, and whether its client has gone away.
#[derive(Clone, Copy)]
struct Peer<'a> {
    conn: u64,
    stream: &'a Stream,
}

impl Peer<'_> {
    /// Whether the client hung up. It waits for our reply, so anything readable on the
    /// stream means it closed (or broke the protocol): either way nobody is waiting.
    fn gone(&self) -> bool {
        crate::sys::wait_fd(
            self.stream.as_fd(),
            crate::sys::POLLIN,
            Some(Instant::now()),
        )
        .unwrap_or(true)
    }
}

/// Waits on the store until `ready` holds or `deadline` passes; `false` on timeout. A waiter
/// whose client died gives up too (`false`), so that a dead client never takes a lock or an
/// item, and its thread ends.
fn wait_for<'a>(
    shared: &'a Shared,
    mut store: MutexGuard<'a, Store>,
    peer: Peer<'_>,
    deadline: Option<Instant>,
    mut ready: impl FnMut(&mut Store) -> bool,
) -> (MutexGuard<'a, Store>, bool) {
    let mut check = Instant::now() + LIVENESS_PERIOD;
    let mut waited = false;
    loop {
        if ready(&mut store) {
            // After a wait, make sure someone still wants what is ready (a client killed
            // while waiting must not take the lock or the item with it).
            let wanted = !waited || !peer.gone();
            return (store, wanted);
        }
        waited = true;
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return (store, false);
        }
        if now >= check {
            if peer.gone() {
                return (store, false);
            }
            check = now + LIVENESS_PERIOD;
        }
        let until = deadline.map_or(check, |d| d.min(check));
        store = shared
            .changed
            .wait_timeout(store, until.saturating_duration_since(now))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Whether `conn` may use object `id` now (it exists and nobody else holds it).
fn usable(store: &Store, id: u64, conn: u64) -> bool {
    match store.objects.get(&id) {
        Some(o) => o.held_by.is_none_or(|h| h == conn),
        None => true, // the caller reports it missing
    }
}

/// One request being served: where it came from, and whether it changed something that
/// waiting requests must re-check.
struct Ctx<'a, 'p> {
    shared: &'a Shared,
    peer: Peer<'p>,
    changed: bool,
}

impl<'a> Ctx<'a, '_> {
    /// Waits on the store until `ready` holds or `deadline` passes (see [`wait_for`]).
    fn wait(
        &self,
        store: MutexGuard<'a, Store>,
        deadline: Option<u64>,
        ready: impl FnMut(&mut Store) -> bool,
    ) -> (MutexGuard<'a, Store>, bool) {
        wait_for(self.shared, store, self.peer, deadline_of(deadline), ready)
    }

    /// Waits until object `id` is held by nobody else (another connection's `update_with`).
    fn wait_usable(&self, store: MutexGuard<'a, Store>, id: u64) -> MutexGuard<'a, Store> {
        let conn = self.peer.conn;
        wait_for(self.shared, store, self.peer, None, |s| usable(s, id, conn)).0
    }

    /// Ends this connection's hold after `write`; refused if it holds nothing.
    fn commit(&mut self, held: &mut Option<u64>, what: &str, write: impl FnOnce()) -> Reply {
        if *held != Some(self.peer.conn) {
            return refused(
                Refusal::NotOwner,
                format!("the {what} is not held by this connection"),
            );
        }
        write();
        *held = None;
        self.changed = true;
        Reply::Done
    }
}

fn handle(shared: &Shared, peer: Peer<'_>, req: Request) -> Reply {
    let mut cx = Ctx {
        shared,
        peer,
        changed: false,
    };
    let store = shared.lock();
    let reply = match req {
        Request::Create(kind) => create(shared, store, kind),
        Request::Unhold(id) => unhold(&mut cx, store, id),
        Request::Dict(id, op) => dict(&mut cx, store, id, op),
        Request::List(id, op) => list(&cx, store, id, op),
        Request::Namespace(id, op) => namespace(&mut cx, store, id, op),
        Request::Lock(id, op) => lock(&mut cx, store, id, op),
        Request::Event(id, op) => event(&mut cx, store, id, op),
        Request::Queue(id, op) => queue(&mut cx, store, id, op),
        Request::Custom(id, bytes) => custom(store, id, &bytes),
        // One per connection, where slots are on (the connection's loop answers those).
        Request::Slot => refused(
            Refusal::NotFound,
            "no shared-memory slot on this connection",
        ),
    };
    if cx.changed {
        shared.changed.notify_all();
    }
    reply
}

fn unhold(cx: &mut Ctx<'_, '_>, mut store: MutexGuard<'_, Store>, id: u64) -> Reply {
    match store.objects.get_mut(&id) {
        Some(o) if o.held_by == Some(cx.peer.conn) => {
            o.held_by = None;
            cx.changed = true;
            Reply::Done
        }
        Some(_) => Reply::Done,
        None => not_found(id, "object"),
    }
}

fn custom(mut store: MutexGuard<'_, Store>, id: u64, bytes: &[u8]) -> Reply {
    let Some(State::Custom(obj)) = store.objects.get_mut(&id).map(|o| &mut o.state) else {
        return not_found(id, "custom object");
    };
    match catch_unwind(AssertUnwindSafe(|| obj.0.call(bytes))) {
        Ok(Ok(b)) => Reply::Custom(b),
        Ok(Err(e)) => refused(Refusal::Undecodable, format!("undecodable request: {e}")),
        Err(_) => refused(Refusal::InvalidArgument, "the object's handle panicked"),
    }
}

fn create(shared: &Shared, mut store: MutexGuard<'_, Store>, kind: Kind) -> Reply {
    let state = match kind {
        Kind::Dict => State::Dict(HashMap::new()),
        Kind::List => State::List(Vec::new()),
        Kind::Namespace(v) => State::Namespace(v),
        Kind::Lock => State::Lock(None),
        Kind::Event => State::Event(false),
        Kind::Queue(max) => State::Queue(VecDeque::new(), max),
        Kind::Custom(name, init) => match (shared.construct)(&name, &init) {
            Some(Ok(obj)) => State::Custom(obj),
            Some(Err(e)) => {
                return refused(
                    Refusal::Undecodable,
                    format!("initial value of {name}: {e}"),
                );
            }
            None => {
                return refused(
                    Refusal::NotFound,
                    format!("type {name} is not registered with this manager"),
                );
            }
        },
    };
    store.next_id += 1;
    let id = store.next_id;
    let object = Object {
        held_by: None,
        state,
    };
    store.objects.insert(id, object);
    Reply::Created(id)
}

fn dict(cx: &mut Ctx<'_, '_>, store: MutexGuard<'_, Store>, id: u64, op: DictOp) -> Reply {
    let mut store = cx.wait_usable(store, id);
    let Some(Object {
        held_by,
        state: State::Dict(map),
    }) = store.objects.get_mut(&id)
    else {
        return not_found(id, "dict");
    };
    match op {
        DictOp::Get(k) => Reply::Value(map.get(&k).cloned()),
        DictOp::Insert(k, v) => Reply::Value(map.insert(k, v)),
        DictOp::Remove(k) => Reply::Value(map.remove(&k)),
        DictOp::Contains(k) => Reply::Bool(map.contains_key(&k)),
        DictOp::Len => Reply::Len(map.len() as u64),
        DictOp::Keys => Reply::Values(map.keys().cloned().collect()),
        DictOp::Values => Reply::Values(map.values().cloned().collect()),
        DictOp::Items => Reply::Pairs(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        DictOp::Update(pairs) => {
            map.extend(pairs);
            Reply::Done
        }
        DictOp::Clear => {
            map.clear();
            Reply::Done
        }
        DictOp::Hold(k) => {
            *held_by = Some(cx.peer.conn);
            Reply::Value(map.get(&k).cloned())
        }
        DictOp::Commit(k, v) => cx.commit(held_by, "dict", || {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }),
    }
}

fn list(cx: &Ctx<'_, '_>, store: MutexGuard<'_, Store>, id: u64, op: ListOp) -> Reply {
    let mut store = cx.wait_usable(store, id);
    let Some(State::List(v)) = store.objects.get_mut(&id).map(|o| &mut o.state) else {
        return not_found(id, "list");
    };
    let out_of_range = |i: u64, len: usize| {
        refused(
            Refusal::InvalidArgument,
            format!("index {i} out of range for a list of length {len}"),
        )
    };
    match op {
        ListOp::Push(x) => {
            v.push(x);
            Reply::Done
        }
        ListOp::Pop => Reply::Value(v.pop()),
        ListOp::Get(i) => Reply::Value(usize::try_from(i).ok().and_then(|i| v.get(i)).cloned()),
        ListOp::Set(i, x) => match usize::try_from(i).ok().and_then(|i| v.get_mut(i)) {
            Some(slot) => Reply::Value(Some(std::mem::replace(slot, x))),
            None => out_of_range(i, v.len()),
        },
        ListOp::Len => Reply::Len(v.len() as u64),
        ListOp::Extend(xs) => {
            v.extend(xs);
            Reply::Done
        }
        ListOp::Insert(i, x) => match usize::try_from(i) {
            Ok(i) if i <= v.len() => {
                v.insert(i, x);
                Reply::Done
            }
            _ => out_of_range(i, v.len()),
        },
        ListOp::Remove(i) => match usize::try_from(i) {
            Ok(i) if i < v.len() => Reply::Value(Some(v.remove(i))),
            _ => out_of_range(i, v.len()),
        },
        ListOp::Snapshot => Reply::Values(v.clone()),
        ListOp::Clear => {
            v.clear();
            Reply::Done
        }
    }
}

fn namespace(cx: &mut Ctx<'_, '_>, store: MutexGuard<'_, Store>, id: u64, op: NsOp) -> Reply {
    let mut store = cx.wait_usable(store, id);
    let Some(Object {
        held_by,
        state: State::Namespace(value),
    }) = store.objects.get_mut(&id)
    else {
        return not_found(id, "namespace");
    };
    match op {
        NsOp::Get => Reply::Value(Some(value.clone())),
        NsOp::Set(v) => Reply::Value(Some(std::mem::replace(value, v))),
        NsOp::Hold => {
            *held_by = Some(cx.peer.conn);
            Reply::Value(Some(value.clone()))
        }
        NsOp::Commit(v) => cx.commit(held_by, "namespace", || *value = v),
    }
}

/// The state of object `id` if it is a `State::$kind`, as `Some(&mut fields)`.
macro_rules! state_of {
    ($store:expr, $id:expr, $kind:ident($($f:ident),*)) => {
        match $store.objects.get_mut(&$id).map(|o| &mut o.state) {
            Some(State::$kind($($f),*)) => Some(($($f),*)),
            _ => None,
        }
    };
}

fn lock(cx: &mut Ctx<'_, '_>, mut store: MutexGuard<'_, Store>, id: u64, op: LockOp) -> Reply {
    let conn = cx.peer.conn;
    let Some(current) = state_of!(store, id, Lock(h)).map(|h| *h) else {
        return not_found(id, "lock");
    };
    match op {
        LockOp::IsLocked => Reply::Bool(current.is_some()),
        LockOp::Release if current != Some(conn) => {
            refused(Refusal::NotOwner, "the lock is not held by this connection")
        }
        LockOp::Release => {
            if let Some(h) = state_of!(store, id, Lock(h)) {
                *h = None;
            }
            cx.changed = true;
            Reply::Done
        }
        LockOp::Acquire(_) if current == Some(conn) => refused(
            Refusal::InvalidArgument,
            "the lock is already held by this connection",
        ),
        LockOp::Acquire(timeout) => {
            let free = |s: &mut Store| !matches!(state_of!(s, id, Lock(h)), Some(Some(_)));
            let (mut store, got) = cx.wait(store, timeout, free);
            match state_of!(store, id, Lock(h)) {
                Some(h) if got => {
                    *h = Some(conn);
                    Reply::Bool(true)
                }
                Some(_) => Reply::Bool(false),
                None => not_found(id, "lock"),
            }
        }
    }
}

fn event(cx: &mut Ctx<'_, '_>, mut store: MutexGuard<'_, Store>, id: u64, op: EventOp) -> Reply {
    let Some(flag) = state_of!(store, id, Event(f)) else {
        return not_found(id, "event");
    };
    match op {
        EventOp::Set => {
            *flag = true;
            cx.changed = true;
            Reply::Done
        }
        EventOp::Clear => {
            *flag = false;
            Reply::Done
        }
        EventOp::IsSet => Reply::Bool(*flag),
        EventOp::Wait(timeout) => {
            let set = |s: &mut Store| state_of!(s, id, Event(f)).is_none_or(|f| *f);
            Reply::Bool(cx.wait(store, timeout, set).1)
        }
    }
}

/// Whether a queue (its items, its bound) is ready for a request.
type QueueReady = fn(&VecDeque<Bytes>, Option<u64>) -> bool;

fn queue(cx: &mut Ctx<'_, '_>, mut store: MutexGuard<'_, Store>, id: u64, op: QueueOp) -> Reply {
    let Some((q, _)) = state_of!(store, id, Queue(q, max)) else {
        return not_found(id, "queue");
    };
    let (timeout, ready): (_, QueueReady) = match &op {
        QueueOp::Len => return Reply::Len(q.len() as u64),
        QueueOp::Put(_, t) => (*t, |q, max| max.is_none_or(|m| (q.len() as u64) < m)),
        QueueOp::Get(t) => (*t, |q, _| !q.is_empty()),
    };
    let ready = |s: &mut Store| state_of!(s, id, Queue(q, max)).is_none_or(|(q, m)| ready(q, *m));
    let (mut store, got) = cx.wait(store, timeout, ready);
    let Some((q, _)) = state_of!(store, id, Queue(q, max)) else {
        return not_found(id, "queue");
    };
    if !got {
        return Reply::Timeout;
    }
    cx.changed = true;
    match op {
        QueueOp::Put(item, _) => {
            q.push_back(item);
            Reply::Done
        }
        _ => Reply::Value(q.pop_front()),
    }
}

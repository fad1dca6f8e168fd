//! The manager with real processes: proxies as arguments, clients and servers SIGKILLed,
//! contention from several processes, and TCP between processes started from the shell.

use std::time::Duration;

use multiproc::{
    DictProxy, ErrorKind, EventProxy, LockProxy, Manager, NamespaceProxy, Process, ProxyError,
    ProxyTryAcquireError, QueueProxy, StartMethod,
};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("manager::proxies_as_child_arguments", proxies_as_arguments),
        ("manager::fork_started_server", fork_started_server),
        (
            "manager::update_with_8_processes_x_10000",
            update_with_contention,
        ),
        (
            "manager::client_sigkilled_holding_the_lock",
            client_killed_holding_lock,
        ),
        ("manager::server_sigkilled_every_call_fails", server_killed),
        (
            "manager::server_sigkilled_while_clients_wait_ends_their_waits",
            server_killed_mid_wait,
        ),
        (
            "manager::proxies_as_pool_task_arguments",
            proxies_as_task_arguments,
        ),
        (
            "manager::a_killed_waiter_takes_nothing",
            killed_waiter_takes_nothing,
        ),
        (
            "manager::a_proxy_outside_arguments_is_refused",
            proxy_outside_arguments,
        ),
        ("manager::tcp_between_unrelated_processes", tcp_examples),
        (
            "manager::a_forked_copy_of_a_connection_is_not_shared",
            forked_copy_of_a_connection,
        ),
        (
            "manager::shutdown_with_requests_in_flight_on_one_cpu_and_two",
            shutdown_with_requests_in_flight,
        ),
    ]
}

const PATIENCE: Duration = Duration::from_secs(30);

type Kit = (
    DictProxy<String, u64>,
    QueueProxy<String>,
    EventProxy,
    NamespaceProxy<(u32, String)>,
    Manager,
);

fn child_uses_everything(kit: Kit) -> u64 {
    let (dict, queue, event, ns, manager) = kit;
    dict.insert(&"from-child".into(), &7).unwrap();
    queue.put(&"hello".into()).unwrap();
    ns.update(|(n, s)| (n + 1, s + "child")).unwrap();
    // A new object made through the Manager passed in, seen by the parent through the dict.
    let list = manager.list::<u8>().unwrap();
    list.push(&1).unwrap();
    event.set().unwrap();
    dict.get(&"from-parent".into()).unwrap().unwrap_or(0)
}

fn proxies_as_arguments() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let dict = m.dict::<String, u64>().ctx("dict")?;
    let queue = m.queue::<String>(None).ctx("queue")?;
    let event = m.event().ctx("event")?;
    let ns = m.namespace((0u32, String::new())).ctx("namespace")?;
    dict.insert(&"from-parent".into(), &3).ctx("insert")?;
    let connect_again = Manager::connect(m.address(), m.authkey()).ctx("connect")?;
    let mut p = Process::new(
        child_uses_everything,
        (
            dict.clone(),
            queue.clone(),
            event.clone(),
            ns.clone(),
            connect_again,
        ),
    );
    p.start().ctx("start child")?;
    event
        .wait_timeout(PATIENCE)
        .ctx("the child never set the event")?;
    ensure!(
        p.join().ctx("join")? == 3,
        "the child read the parent's value"
    );
    ensure!(
        dict.get(&"from-child".into()).ctx("get")? == Some(7),
        "child's insert"
    );
    ensure!(queue.get_timeout(PATIENCE).ctx("get")? == "hello", "queue");
    ensure!(
        ns.get().ctx("ns")? == (1, "child".to_string()),
        "namespace update"
    );
    m.shutdown().ctx("shutdown")?;
    Ok(())
}

/// In a (single-threaded) spawned child: a manager whose server is forked.
fn forked_manager(_: ()) -> Option<u8> {
    let m = Manager::builder()
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(&1, &2).unwrap();
    let got = d.get(&1).unwrap();
    m.shutdown().unwrap();
    got
}

fn fork_started_server() -> Result<(), String> {
    let mut p = Process::new(forked_manager, ());
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == Some(2), "a forked server serves");
    Ok(())
}

fn add_many(args: (DictProxy<String, u64>, u32)) {
    let (dict, n) = args;
    for _ in 0..n {
        dict.update_with(&"counter".into(), |v| v.unwrap_or(0) + 1)
            .unwrap();
    }
}

fn update_with_contention() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let dict = m.dict::<String, u64>().ctx("dict")?;
    let mut children = Vec::new();
    for _ in 0..8 {
        let mut p = Process::new(add_many, (dict.clone(), 10_000));
        p.start().ctx("start child")?;
        children.push(p);
    }
    for mut p in children {
        p.join().ctx("join")?;
    }
    let total = dict.get(&"counter".into()).ctx("get")?;
    ensure!(
        total == Some(80_000),
        "8 x 10,000 update_with gave {total:?}"
    );
    Ok(())
}

fn hold_and_wait(args: (LockProxy, EventProxy)) {
    let (lock, held) = args;
    let _g = lock.acquire().unwrap();
    held.set().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

fn client_killed_holding_lock() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let lock = m.lock().ctx("lock")?;
    let held = m.event().ctx("event")?;
    let mut p = Process::new(hold_and_wait, (lock.clone(), held.clone()));
    p.start().ctx("start child")?;
    held.wait_timeout(PATIENCE)
        .ctx("the child never took the lock")?;
    ensure!(
        matches!(lock.try_acquire(), Err(ProxyTryAcquireError::WouldBlock)),
        "the lock is held by the child"
    );
    p.kill().ctx("kill")?;
    let e = p.join().err().ctx("join of a killed child")?;
    ensure!(e.kind() == ErrorKind::Signaled, "{e}");
    let _g = lock
        .acquire_timeout(PATIENCE)
        .ctx("the dead client's lock was never released")?;
    Ok(())
}

/// Announces itself, then waits for an item (and for the lock) until killed.
fn wait_for_item(args: (QueueProxy<u32>, EventProxy)) {
    let (queue, waiting) = args;
    waiting.set().unwrap();
    let _ = queue.get();
}

fn wait_for_lock(args: (LockProxy, EventProxy)) {
    let (lock, waiting) = args;
    waiting.set().unwrap();
    let _ = lock.acquire();
    std::thread::sleep(Duration::from_secs(120));
}

/// A client SIGKILLed while blocked in `get` (or `acquire`) must not take the item (or the
/// lock) that arrives after its death.
fn killed_waiter_takes_nothing() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let queue = m.queue::<u32>(None).ctx("queue")?;
    let lock = m.lock().ctx("lock")?;
    let held = lock.acquire().ctx("acquire")?;
    let (w1, w2) = (m.event().ctx("event")?, m.event().ctx("event")?);
    let mut getter = Process::new(wait_for_item, (queue.clone(), w1.clone()));
    let mut locker = Process::new(wait_for_lock, (lock.clone(), w2.clone()));
    getter.start().ctx("start getter")?;
    locker.start().ctx("start locker")?;
    w1.wait_timeout(PATIENCE).ctx("the getter never started")?;
    w2.wait_timeout(PATIENCE).ctx("the locker never started")?;
    // Let the blocking requests reach the server (if one has not, the test proves less, but
    // cannot fail for it).
    std::thread::sleep(Duration::from_millis(300));
    getter.kill().ctx("kill")?;
    locker.kill().ctx("kill")?;
    let _ = getter.join();
    let _ = locker.join();
    queue.put(&7).ctx("put")?;
    drop(held);
    ensure!(
        queue
            .get_timeout(PATIENCE)
            .ctx("the item went to a dead client")?
            == 7,
        "the item went to a dead client"
    );
    let _g = lock
        .acquire_timeout(PATIENCE)
        .ctx("the lock went to a dead client and stayed")?;
    Ok(())
}

/// A pool task that counts through a dict proxy it received as its argument.
fn count_in_task(args: (DictProxy<String, u64>, u64)) -> u64 {
    let (dict, n) = args;
    for _ in 0..n {
        dict.update_with(&"tasks".into(), |v| v.unwrap_or(0) + 1)
            .unwrap();
    }
    n
}

/// A proxy is a handle: it travels in a Pool task's arguments too, and connects anew there.
fn proxies_as_task_arguments() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let dict = m.dict::<String, u64>().ctx("dict")?;
    let pool = multiproc::Pool::new(2).ctx("pool")?;
    let done: u64 = pool
        .map(count_in_task, (0..6).map(|_| (dict.clone(), 50)))
        .ctx("map")?
        .into_iter()
        .sum();
    pool.close();
    pool.join().ctx("join")?;
    ensure!(done == 300, "tasks reported {done}");
    let total = dict.get(&"tasks".into()).ctx("get")?;
    ensure!(total == Some(300), "the dict holds {total:?}");
    Ok(())
}

fn server_killed() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let dict = m.dict::<u8, u8>().ctx("dict")?;
    let list = m.list::<u8>().ctx("list")?;
    let lock = m.lock().ctx("lock")?;
    let event = m.event().ctx("event")?;
    let queue = m.queue::<u8>(None).ctx("queue")?;
    dict.insert(&1, &1).ctx("insert")?;
    let pid = m.server_pid().ctx("server pid")? as i32;
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    ensure!(
        ipc_tests::eventually(PATIENCE, || ipc_tests::proc_entry(pid)
            .is_none_or(|e| e.state == 'Z')),
        "the server did not die"
    );
    let kinds = [
        dict.get(&1).err().map(|e| e.kind()),
        dict.get(&1).err().map(|e| e.kind()),
        list.push(&1).err().map(|e| e.kind()),
        m.dict::<u8, u8>().err().map(|e| e.kind()),
    ];
    ensure!(
        kinds.iter().all(|k| *k == Some(ErrorKind::Disconnected)),
        "every call fails with Disconnected: {kinds:?}"
    );
    let waits = [lock.acquire().err(), event.wait().err(), queue.get().err()];
    ensure!(
        waits
            .iter()
            .all(|e| matches!(e, Some(ProxyError::Disconnected))),
        "every waiting call fails with Disconnected: {waits:?}"
    );
    let e = Manager::connect(m.address(), m.authkey()).err();
    ensure!(e.is_some(), "connecting to a dead server fails");
    Ok(())
}

/// The server is SIGKILLed while clients already sleep in calls it will never answer (a lock
/// an event never set, an empty queue), long enough that their slot waits
/// are past the short liveness ticks: each wait ends with Disconnected (within PATIENCE).
fn server_killed_mid_wait() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let event = m.event().ctx("event")?;
    let queue = m.queue::<u8>(None).ctx("queue")?;
    let pid = m.server_pid().ctx("server pid")? as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiters = [
        {
            let (e, tx) = (event.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(("event", matches!(e.wait(), Err(ProxyError::Disconnected))));
            })
        },
        {
            let (q, tx) = (queue.clone(), tx.clone());
            std::thread::spawn(move || {
                let _ = tx.send(("queue", matches!(q.get(), Err(ProxyError::Disconnected))));
            })
        },
    ];
    drop(tx);
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on the pid of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..2 {
        let (what, typed) = rx
            .recv_timeout(PATIENCE)
            .map_err(|_| "a waiter still waits on a dead server".to_string())?;
        ensure!(typed, "the {what} wait did not fail with Disconnected");
    }
    for w in waiters {
        w.join().map_err(|_| "a waiter panicked".to_string())?;
    }
    Ok(())
}

fn proxy_outside_arguments() -> Result<(), String> {
    let m = Manager::start().ctx("start")?;
    let d = m.dict::<u8, u8>().ctx("dict")?;
    let (a, _b) = multiproc::pipe::<DictProxy<u8, u8>>().ctx("pipe")?;
    let e = a.send(&d).err().ctx("sending a proxy through a pipe")?;
    ensure!(
        matches!(&e, multiproc::SendError::Failed(f) if f.kind() == ErrorKind::Codec),
        "a proxy (with its key) only travels as process arguments: {e}"
    );
    Ok(())
}

/// The example pair over TCP on 127.0.0.1: the client starts the server binary (an unrelated
/// process, from the shell's point of view), reads its address, and exercises it.
fn tcp_examples() -> Result<(), String> {
    let exe = std::env::current_exe().ctx("current_exe")?;
    // target/<profile>/deps/ipc-<hash> → target/<profile>/examples/
    let examples = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples"))
        .ctx("examples directory")?;
    let (server, client) = (
        examples.join("manager_server"),
        examples.join("manager_client"),
    );
    // Always through cargo: a no-op when they are fresh, a rebuild when stale.
    {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "multiproc",
                "--example",
                "manager_server",
                "--example",
                "manager_client",
            ])
            .status()
            .ctx("cargo build of the examples")?;
        ensure!(status.success(), "building the examples failed: {status}");
    }
    let out = std::process::Command::new(&client)
        .arg("--spawn-server")
        .arg(&server)
        .output()
        .ctx("run manager_client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "manager_client failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("counter = 1000"),
        "unexpected output: {stdout}"
    );
    Ok(())
}

/// Gets `key` from `dict` `n` times: how many calls failed or brought another key's value.
fn wrong_replies(dict: &DictProxy<u32, u32>, key: u32, n: u32) -> u32 {
    (0..n)
        .filter(|_| !matches!(dict.get(&key), Ok(Some(v)) if v == key))
        .count() as u32
}

/// A child of an unchecked fork holds a copy of its parent's proxies, connection included
/// (socket and shared slot). Both processes using it at once must not share it: each must get
/// its own replies, and neither may break the other's connection.
fn forked_copy_of_a_connection() -> Result<(), String> {
    // Through the shared-memory slot (where sharing went unnoticed) and over the socket.
    for slots in [true, false] {
        forked_copy_of_a_connection_with(slots)?;
    }
    Ok(())
}

fn forked_copy_of_a_connection_with(slots: bool) -> Result<(), String> {
    const N: u32 = 5_000;
    let m = Manager::builder()
        .shared_memory(slots)
        .start()
        .ctx("start")?;
    let dict = m.dict::<u32, u32>().ctx("dict")?;
    dict.insert(&1, &1).ctx("insert")?;
    dict.insert(&2, &2).ctx("insert")?;
    let copy = dict.clone();
    // SAFETY: the closure takes the connection's lock, which no other thread of this process
    // holds at the fork (only this thread uses the proxy, and it is between two calls); it
    // prints nothing and panics on nothing.
    let mut p = unsafe { Process::new_fork_unchecked(move || wrong_replies(&copy, 2, N)) };
    p.start().ctx("start")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mine = dict.clone();
    std::thread::spawn(move || tx.send(wrong_replies(&mine, 1, N)));
    let parent = rx.recv_timeout(PATIENCE);
    let child = p.join_timeout(PATIENCE);
    if child.is_err() {
        let _ = p.kill();
        let _ = p.join();
    }
    let parent = parent.map_err(|_| "the parent's calls hung")?;
    let child = child.map_err(|e| format!("the child: {e}"))?;
    ensure!(
        (parent, child) == (0, 0),
        "slots {slots}: wrong or failed replies: {parent} of {N} in the parent, {child} in the child"
    );
    // The parent's connection is intact.
    ensure!(
        dict.get(&1).ctx("get")? == Some(1),
        "the parent's connection"
    );
    Ok(())
}

/// Pins the thread `tid` (0: the calling one) to `cpu`, or to every CPU.
fn pin_thread(tid: i32, cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET only writes that local set, which
    // sched_setaffinity only reads (a thread that ended meanwhile makes it fail, harmlessly).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..libc::CPU_SETSIZE as usize {
            if cpu.is_none_or(|p| p == c) {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// A child on `cpu` that waits for the lock: how its wait ended.
fn wait_for_lock_on(args: (LockProxy, EventProxy, Option<usize>)) -> String {
    let (lock, waiting, cpu) = args;
    pin_thread(0, cpu);
    waiting.set().unwrap();
    format!("{:?}", lock.acquire().err())
}

/// A child on `cpu` that makes calls until one fails: how it failed.
fn call_until_it_fails(args: (DictProxy<u32, Vec<u8>>, EventProxy, Option<usize>)) -> String {
    let (dict, calling, cpu) = args;
    pin_thread(0, cpu);
    calling.set().unwrap();
    let mut i = 0u32;
    loop {
        i = i.wrapping_add(1);
        // Small calls, and now and then one larger than the slot.
        let len = if i.is_multiple_of(50) { 200_000 } else { 16 };
        let r = dict
            .insert(&1, &vec![i as u8; len])
            .and_then(|_| dict.get(&1).map(|_| ()));
        if let Err(e) = r {
            return format!("{:?}", e.kind());
        }
    }
}

/// The server shut down while one client waits for a lock and another makes calls as fast as
/// it can, every thread of them on one CPU, then spread: each call in flight ends with
/// `Disconnected`, none hangs.
fn shutdown_with_requests_in_flight() -> Result<(), String> {
    for cpu in [Some(0), None] {
        let m = Manager::start().ctx("start")?;
        let pid = m.server_pid().ctx("server pid")?;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ctx("the server's threads")?;
        for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
            pin_thread(tid, cpu);
        }
        let lock = m.lock().ctx("lock")?;
        let dict = m.dict::<u32, Vec<u8>>().ctx("dict")?;
        let held = lock.acquire().ctx("acquire")?;
        let (w1, w2) = (m.event().ctx("event")?, m.event().ctx("event")?);
        let mut waiter = Process::new(wait_for_lock_on, (lock.clone(), w1.clone(), cpu));
        let mut caller = Process::new(call_until_it_fails, (dict.clone(), w2.clone(), cpu));
        waiter.start().ctx("start waiter")?;
        caller.start().ctx("start caller")?;
        w1.wait_timeout(PATIENCE).ctx("the waiter never started")?;
        w2.wait_timeout(PATIENCE).ctx("the caller never started")?;
        std::thread::sleep(Duration::from_millis(300));
        std::mem::forget(held); // its release would go to a dead server
        m.shutdown().ctx("shutdown")?;
        let waited = waiter
            .join_timeout(PATIENCE)
            .ctx(&format!("the waiter on {cpu:?} hung"))?;
        let called = caller
            .join_timeout(PATIENCE)
            .ctx(&format!("the caller on {cpu:?} hung"))?;
        ensure!(
            waited == "Some(Disconnected)" && called == "Disconnected",
            "on {cpu:?}: the waiter got {waited}, the caller {called}"
        );
    }
    Ok(())
}

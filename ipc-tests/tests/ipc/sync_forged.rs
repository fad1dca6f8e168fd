//! Forged handles: a `Serialize` in safe user code that writes the wire form of an arena
//! handle (its descriptor's index and its slot's offset) that the library did not write. The
//! receiver must adopt only the slot counts that were really sent: a forged reference is a
//! typed error, and it can neither keep a slot nor free one under a live handle.

use std::time::Duration;

use multiproc::{ErrorKind, Event, Lock, Process, Value};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Context, ensure};

const PATIENCE: Duration = Duration::from_secs(30);
const MAGIC: u64 = 0x5eed_f00d_dead_beef;

/// The wire form of `handle`: `(descriptor index, slot offset)`. The handle writes itself for
/// real (so the message counts it once); only the bytes are kept.
fn wire_of<H: Serialize, E: serde::ser::Error>(handle: &H) -> Result<(u32, u32), E> {
    let bytes = postcard::to_allocvec(handle).map_err(E::custom)?;
    postcard::from_bytes(&bytes).map_err(E::custom)
}

/// One real `Value` sent, its reference written twice: one count, two handles. The child
/// decodes two values.
struct Duplicated(Value<u64>);

impl Serialize for Duplicated {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = wire_of::<_, S::Error>(&self.0)?;
        (wire, wire).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Duplicated {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (a, _b) = <(Value<u64>, Value<u64>)>::deserialize(d)?;
        Ok(Duplicated(a))
    }
}

/// A real `Lock` sent, followed by a reference that nobody sent to another slot of its chunk,
/// `.1` bytes further. The child decodes two locks.
struct Neighbour(Lock, u32);

impl Serialize for Neighbour {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (index, offset) = wire_of::<_, S::Error>(&self.0)?;
        let forged = offset
            .checked_add(self.1)
            .ok_or_else(|| S::Error::custom("offset"))?;
        ((index, offset), (index, forged)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Neighbour {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (a, _b) = <(Lock, Lock)>::deserialize(d)?;
        Ok(Neighbour(a, 0))
    }
}

fn take_two_values(_: Duplicated) {}

fn take_two_locks(_: Neighbour) {}

/// Waits for `go`, then writes `MAGIC` through its handle.
fn write_when_told(args: (Value<u64>, Event)) -> bool {
    let (v, go) = args;
    go.wait_timeout(PATIENCE).is_ok() && v.set(MAGIC).is_ok()
}

/// The refusal a child reports for forged arguments: a codec error, never a crash or a hang.
fn refused(r: multiproc::Result<()>, what: &str) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == ErrorKind::Codec => Ok(()),
        Err(e) => Err(format!("{what}: the child failed otherwise: {e}")),
        Ok(()) => Err(format!(
            "{what}: the child took a handle that was never sent"
        )),
    }
}

/// A reference written twice must not count twice: before the fix, the child gave back two
/// counts for one, the slot was freed under the parent's handle and reused, and two distinct
/// `Value`s (one in a second child, one here) shared one slot.
pub fn a_duplicated_reference_is_refused_and_frees_nothing() -> Result<(), String> {
    duplicated_then_reused(|a| {
        let mut p = Process::new(take_two_values, Duplicated(a));
        p.start()?;
        p.join()
    })
}

/// The same, the forged reference in a pool task.
pub fn a_duplicated_reference_in_a_pool_task_is_refused() -> Result<(), String> {
    let pool = multiproc::Pool::new(1).ctx("pool")?;
    duplicated_then_reused(|a| pool.apply(take_two_values, Duplicated(a)))
}

/// Sends `a` (a fresh value) with its reference written twice through `send`, then checks that
/// the refusal left the count of `a`'s slot whole: another child's handle on it keeps it from
/// being reused once ours is gone.
fn duplicated_then_reused(
    send: impl FnOnce(Value<u64>) -> multiproc::Result<()>,
) -> Result<(), String> {
    let a = Value::new(0u64).ctx("value")?;
    let forged = send(a.clone());
    // Another child holds `a` and writes through it when told.
    let go = Event::new().ctx("event")?;
    let mut writer = Process::new(write_when_told, (a.clone(), go.clone()));
    writer.start().ctx("start the writer")?;
    // Our handle goes; the writer's keeps the slot allocated. New values must not land on it.
    drop(a);
    let fresh: Vec<Value<u64>> = (0..256)
        .map(|_| Value::new(0u64))
        .collect::<Result<_, _>>()
        .ctx("new values")?;
    go.set();
    ensure!(writer.join().ctx("join the writer")?, "the writer failed");
    let shared = fresh.iter().filter(|v| v.get().ok() == Some(MAGIC)).count();
    ensure!(
        shared == 0,
        "{shared} new value(s) share the slot of a live handle in another process"
    );
    refused(forged, "a duplicated reference")
}

/// A reference to a live slot that nobody sent (the next slots of the lock's chunk) is
/// refused, and the child's refusal gives back no count it did not get.
pub fn a_reference_to_an_unsent_slot_is_refused() -> Result<(), String> {
    // Live neighbours, so the forged offsets name slots in use (not only free ones).
    let locks: Vec<Lock> = (0..64)
        .map(|_| Lock::new())
        .collect::<Result<_, _>>()
        .ctx("locks")?;
    let mut refusals = 0;
    for (i, step) in [128u32, 256, 128 * 7].into_iter().enumerate() {
        let mut p = Process::new(take_two_locks, Neighbour(locks[i].clone(), step));
        p.start().ctx("start")?;
        match p.join() {
            // The forged offset named one of our live locks, or a slot of another object.
            Err(e) if e.kind() == ErrorKind::Codec => refusals += 1,
            Err(e) => return Err(format!("the child failed otherwise: {e}")),
            Ok(()) => return Err("the child took a slot that was never sent".into()),
        }
    }
    ensure!(refusals == 3, "{refusals} refusals");
    // Every lock still works, and no new one lands on a live one.
    let fresh: Vec<Lock> = (0..256)
        .map(|_| Lock::new())
        .collect::<Result<_, _>>()
        .ctx("new locks")?;
    let guards: Vec<_> = locks
        .iter()
        .map(|l| l.try_lock())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("an old lock is held: {e:?}"))?;
    let taken = fresh.iter().filter(|l| l.is_locked()).count();
    drop(guards);
    ensure!(taken == 0, "{taken} new lock(s) share a live lock's slot");
    Ok(())
}

fn keep_lock(_: Lock) {}

/// The arena chunks this process holds (one descriptor each).
fn arena_chunks() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("memfd:multiproc-Arena"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// In a fresh process (its own arena): `rounds` times, a chunk's worth of locks, each put in a
/// `Process` that is dropped unstarted, then dropped. Returns the chunks it ended with.
fn unstarted_processes(rounds: u32) -> Result<usize, String> {
    for _ in 0..rounds {
        let locks: Vec<Lock> = (0..4096)
            .map(|_| Lock::new())
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for l in &locks {
            drop(Process::new(keep_lock, l.clone()));
        }
    }
    Ok(arena_chunks())
}

/// A `Process` dropped before `start()` gives back the arena counts of its arguments: before,
/// every such lock's slot stayed allocated for good.
pub fn an_unstarted_process_gives_its_slots_back() -> Result<(), String> {
    let mut p = Process::new(unstarted_processes, 3);
    p.start().ctx("start")?;
    let chunks = p.join().ctx("join")??;
    ensure!(
        chunks <= 2,
        "{chunks} arena chunks for 3 rounds of 4096 locks dropped with their unstarted processes"
    );
    Ok(())
}

/// A handle that this process holds only here, so that a forked child's copy of it is the
/// child's last one (its drop would give back a count the child never had).
static KEPT: std::sync::Mutex<Option<Value<u64>>> = std::sync::Mutex::new(None);

fn kept() -> std::sync::MutexGuard<'static, Option<Value<u64>>> {
    KEPT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// In a forked child: drops the copy of `KEPT` it inherited, then makes new values and marks
/// them. Before the fix the drop freed the parent's live slot and a new value landed on it.
fn drop_inherited_then_allocate(_: ()) -> bool {
    drop(kept().take());
    let fresh: Vec<Value<u64>> = (0..256).filter_map(|_| Value::new(MAGIC).ok()).collect();
    fresh.len() == 256
}

/// In a forked child: waits for `go`, then writes `MAGIC` through its inherited copy of `KEPT`.
fn write_inherited_when_told(go: Event) -> bool {
    let Some(v) = kept().take() else { return false };
    go.wait_timeout(PATIENCE).is_ok() && v.set(MAGIC).is_ok()
}

/// Runs in a spawned child (the suite's own process has threads, which forbid a fork start).
fn forked_copies(_: ()) -> Result<(), String> {
    use multiproc::StartMethod;
    // The child drops its copy: the parent's value keeps its slot.
    *kept() = Some(Value::new(0u64).map_err(|e| e.to_string())?);
    let mut p = Process::new(drop_inherited_then_allocate, ()).with_start_method(StartMethod::Fork);
    p.start().map_err(|e| format!("fork: {e}"))?;
    let made = p.join().map_err(|e| format!("join: {e}"))?;
    if !made {
        return Err("the forked child could not make its values".into());
    }
    let ours = kept().as_ref().map(|v| v.get().ok());
    if ours != Some(Some(0)) {
        return Err(format!(
            "a forked child's new value shared the slot of our live one: we read {ours:?}"
        ));
    }
    // The parent drops its value while the child still uses its copy: the slot is not reused.
    let go = Event::new().map_err(|e| e.to_string())?;
    let mut p =
        Process::new(write_inherited_when_told, go.clone()).with_start_method(StartMethod::Fork);
    p.start().map_err(|e| format!("fork: {e}"))?;
    drop(kept().take());
    let fresh: Vec<Value<u64>> = (0..256)
        .map(|_| Value::new(0u64))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    go.set();
    let wrote = p.join().map_err(|e| format!("join: {e}"))?;
    if !wrote {
        return Err("the forked child could not write through its copy".into());
    }
    let shared = fresh.iter().filter(|v| v.get().ok() == Some(MAGIC)).count();
    if shared != 0 {
        return Err(format!(
            "{shared} new value(s) share the slot that a forked child still used"
        ));
    }
    Ok(())
}

/// Handles a forked child inherits (a copy of memory, not a message) were never counted for
/// it: the child's drop must give nothing back, and the parent's own drop must not free a slot
/// that a child may still use.
pub fn forked_copies_neither_free_nor_reuse_a_live_slot() -> Result<(), String> {
    let mut p = Process::new(forked_copies, ());
    p.start().ctx("start")?;
    match p.join().ctx("join")? {
        Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

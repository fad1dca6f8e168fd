//! How a Rust function crosses into another process: by its address, relative to an anchor.
//!
//! A child started with the spawn method executes the very file its parent runs (through a
//! descriptor on `/proc/self/exe`, so a binary rebuilt on disk meanwhile cannot be picked up), so
//! every function lies at the same offset from any other function of the executable in both
//! processes, whatever address-space randomisation did to the base. The parent sends two
//! offsets from [`anchor`]: the user's `fn(A) -> R` and a trampoline [`entry::<A, R>`] that
//! decodes `A`, calls the function and encodes `R`. The child adds its own anchor address back.
//!
//! Before the child trusts an offset it checks that it runs the same file as its parent (device
//! and inode of `/proc/self/exe`) with the same GNU build-id note, and the environment variable
//! that made it a child names this copy of the crate (see `bootstrap`). The parent starts a
//! child only when this crate's code lies in the executable the kernel started (not in a shared
//! library or plugin, not under an explicitly invoked dynamic loader, not in a secure-execution
//! program), and refuses functions that live outside the main executable (in a shared library,
//! whose distance from the executable changes from run to run).

use std::io;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Why a call failed inside the child without panicking.
pub(crate) enum CallError {
    /// The arguments did not decode as `A`.
    Arguments(CodecError),
    /// The result did not encode.
    Result(CodecError),
}

/// The trampoline's signature: `(function address, encoded A) -> encoded R`.
pub(crate) type EntryFn = fn(usize, &[u8]) -> std::result::Result<Vec<u8>, CallError>;

/// Decodes `A`, calls the `fn(A) -> R` at `func`, encodes `R`.
fn entry<A: DeserializeOwned, R: Serialize>(
    func: usize,
    args: &[u8],
) -> std::result::Result<Vec<u8>, CallError> {
    // SAFETY: `func` was produced by `Call::new::<A, R>` from a value of type `fn(A) -> R`, in
    // this process (fork) or in a parent running the same executable file (spawn; checked by
    // `BuildId::verify` before any call), and rebased against the same anchor. Such an address
    // is a valid `fn(A) -> R` here, and `entry::<A, R>` is only ever paired with it.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    let arg: A = codec::decode(args).map_err(CallError::Arguments)?;
    let result = f(arg);
    codec::encode(&result).map_err(CallError::Result)
}

/// The chunk trampoline's signature: `(function address, items encoded back to back, where
/// each ends, the next item to run, results out, their sizes)`. It runs items from `next` on,
/// advancing `next` past each one before calling the function (so that, when a call panics or
/// fails, `next - 1` is the item), and appends each encoded result to `out` and its size to
/// `lens`.
pub(crate) type ChunkFn = fn(
    usize,
    &[u8],
    &[u32],
    &mut usize,
    &mut Vec<u8>,
    &mut Vec<u32>,
) -> std::result::Result<(), CallError>;

/// Runs the `fn(A) -> R` at `func` on every item of a chunk, from `next` on, with no allocation
/// per item (see [`ChunkFn`]).
fn chunk_entry<A: DeserializeOwned, R: Serialize>(
    func: usize,
    data: &[u8],
    ends: &[u32],
    next: &mut usize,
    out: &mut Vec<u8>,
    lens: &mut Vec<u32>,
) -> std::result::Result<(), CallError> {
    // SAFETY: as in `entry`: `func` and this instantiation were paired by `Target::of::<A, R>`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    while let Some(&end) = ends.get(*next) {
        let start = next
            .checked_sub(1)
            .and_then(|i| ends.get(i))
            .map_or(0, |&e| e as usize);
        *next += 1;
        let item = data.get(start..end as usize).ok_or_else(|| {
            CallError::Arguments(CodecError::Invalid(
                "the task's item boundaries are out of range".into(),
            ))
        })?;
        let arg: A = codec::decode(item).map_err(CallError::Arguments)?;
        let result = f(arg);
        let before = out.len();
        codec::encode_into(&result, out).map_err(CallError::Result)?;
        let Ok(len) = u32::try_from(out.len() - before) else {
            out.truncate(before);
            return Err(CallError::Result(CodecError::Encode(
                "a result of 4 GiB or more is too large for a pool task".into(),
            )));
        };
        lens.push(len);
    }
    Ok(())
}

/// The reference point for function offsets. Never called; only its address matters.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d75_6c74_6970_726f)
}

fn anchor_addr() -> usize {
    anchor as fn() -> u64 as usize
}

fn offset_of(addr: usize) -> u64 {
    addr.wrapping_sub(anchor_addr()) as u64
}

fn addr_of(offset: u64) -> usize {
    anchor_addr().wrapping_add(offset as usize)
}

/// One call to make in another process: which function, through which trampoline, with what.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) target: Target,
    pub(crate) args: Vec<u8>,
    /// Descriptors of handles inside the arguments (see `handles`).
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
    /// Handles inside the arguments that want to know which child receives them.
    pub(crate) transits: crate::handles::Transits,
    /// The largest encoded result the child may send back (see `Process::with_max_result`).
    pub(crate) max_result: u64,
}

/// The two offsets that name a function and its trampoline.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Target {
    entry: u64,
    func: u64,
    /// The chunk trampoline `chunk_entry::<A, R>` (pool tasks of many items).
    chunk: u64,
}

impl Call {
    /// Encodes `arg` and records where `f` and its trampoline are.
    pub(crate) fn new<A, R>(f: fn(A) -> R, arg: &A) -> Result<Call>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let target = Target::of(f)?;
        let (args, fds, transits) = crate::handles::encode_with_handles(arg)
            .map_err(|e| Error::codec("the process arguments could not be serialized", e))?;
        Ok(Call {
            target,
            args,
            fds,
            transits,
            max_result: crate::codec::MAX_FRAME_LIMIT as u64,
        })
    }
}

impl Target {
    /// The offsets of `f` and of `entry::<A, R>`, after checking that both can cross by address.
    pub(crate) fn of<A, R>(f: fn(A) -> R) -> Result<Target>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let func = f as usize;
        let entry = entry::<A, R> as EntryFn as usize;
        let chunk = chunk_entry::<A, R> as ChunkFn as usize;
        let home = sys::object_base(anchor_addr());
        for (what, addr) in [
            ("function", func),
            ("trampoline", entry),
            ("trampoline", chunk),
        ] {
            if sys::object_base(addr) != home {
                return Err(Error::new(
                    ErrorKind::BuildMismatch,
                    format!(
                        "the {what} at {addr:#x} is not in the main executable (a shared library?); \
                         only functions linked into the executable can run in a child process"
                    ),
                ));
            }
        }
        Ok(Target {
            entry: offset_of(entry),
            func: offset_of(func),
            chunk: offset_of(chunk),
        })
    }

    /// Runs the call in this process. Panics propagate to the caller.
    ///
    /// Only valid on a target made in this process, or received from a parent whose build was
    /// verified with [`BuildId::verify`].
    #[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
    pub(crate) fn invoke(self, args: &[u8]) -> std::result::Result<Vec<u8>, CallError> {
        // SAFETY: `entry` is the offset of an `entry::<A, R>` instantiation (see `Target::of`),
        // and the build was verified, so the rebased address is that function with type EntryFn.
        let entry = unsafe { std::mem::transmute::<usize, EntryFn>(addr_of(self.entry)) };
        entry(addr_of(self.func), args)
    }

    /// Runs the call on the items of a chunk, from `next` on (see [`ChunkFn`]). Panics
    /// propagate to the caller, with `next - 1` the item that panicked. Valid as
    /// [`invoke`](Self::invoke) is.
    pub(crate) fn invoke_chunk(
        self,
        data: &[u8],
        ends: &[u32],
        next: &mut usize,
        out: &mut Vec<u8>,
        lens: &mut Vec<u32>,
    ) -> std::result::Result<(), CallError> {
        // SAFETY: `chunk` is the offset of a `chunk_entry::<A, R>` instantiation (see
        // `Target::of`), and the build was verified, so the rebased address has type ChunkFn.
        let chunk = unsafe { std::mem::transmute::<usize, ChunkFn>(addr_of(self.chunk)) };
        chunk(addr_of(self.func), data, ends, next, out, lens)
    }
}

/// What identifies the running build: the executable file and its build-id note.
///
/// The file is pinned by device and inode: the child executes the parent's own descriptor on
/// `/proc/self/exe`, so it runs that very inode (the kernel refuses writes to a running
/// executable, and the inode cannot be reused while the parent holds it open). The build-id note
/// (written by the linker: a hash of the linked output) is compared too, when the linker wrote
/// one, so that the same inode number on another file system or a file rewritten between runs
/// cannot pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildId {
    dev: u64,
    ino: u64,
    note: Option<Vec<u8>>,
}

impl BuildId {
    /// This process's build, for starting a child: an error if a spawned child could not run
    /// this build's functions (see `spawn_refusal`).
    pub(crate) fn current() -> Result<BuildId> {
        static REFUSAL: OnceLock<Option<(ErrorKind, String)>> = OnceLock::new();
        if let Some((kind, why)) = REFUSAL.get_or_init(spawn_refusal) {
            return Err(Error::new(*kind, why.clone()));
        }
        BuildId::identity().map_err(|why| Error::new(ErrorKind::Io, why))
    }

    /// The running file and its note, computed once.
    fn identity() -> std::result::Result<BuildId, String> {
        static IDENTITY: OnceLock<std::result::Result<BuildId, String>> = OnceLock::new();
        IDENTITY
            .get_or_init(|| {
                // stat(2) through the magic link names the running file as an open would,
                // in one system call and without a descriptor (a spawned child needs none
                // unless it starts processes itself; `exe` opens one then).
                let (dev, ino) = sys::path_identity("/proc/self/exe")
                    .map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
                Ok(BuildId {
                    dev,
                    ino,
                    note: sys::build_id(anchor_addr()),
                })
            })
            .clone()
    }

    /// Checks that `self` (sent by the parent) is this process's build.
    pub(crate) fn verify(&self) -> std::result::Result<(), String> {
        let mine = BuildId::identity()?;
        if (mine.dev, mine.ino) != (self.dev, self.ino) {
            return Err(format!(
                "the child runs a different executable file (device {}, inode {}) from its parent \
                 (device {}, inode {})",
                mine.dev, mine.ino, self.dev, self.ino
            ));
        }
        if mine.note != self.note {
            return Err(format!(
                "the child's build-id note ({}) differs from its parent's ({})",
                hex(mine.note.as_deref()),
                hex(self.note.as_deref())
            ));
        }
        Ok(())
    }
}

fn hex(note: Option<&[u8]>) -> String {
    match note {
        Some(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        None => "none".into(),
    }
}

/// Why a spawned child could not run this process's functions, if it could not.
///
/// Spawning executes `/proc/self/exe` again and rebases function offsets on this crate's
/// anchor. That needs the anchor in that executable, at a fixed distance from the code: so not
/// when `/proc/self/exe` is the dynamic loader that was run explicitly
/// (`ld-linux-x86-64.so.2 ./program`), nor when this crate is linked into a shared object (a
/// `cdylib` plugin), whose functions the re-executed program does not hold. And a child must
/// never trust its environment and standard input in a setuid, setgid or file-capability
/// program, so such programs cannot spawn at all.
fn spawn_refusal() -> Option<(ErrorKind, String)> {
    if sys::is_secure_execution() {
        return Some((
            ErrorKind::PermissionDenied,
            "the spawn start method is not available in a setuid, setgid or file-capability \
             program (secure execution, AT_SECURE): a child would have to trust an environment \
             and descriptors that an unprivileged caller controls; use the fork start method"
                .into(),
        ));
    }
    // The file that holds this crate's code must be the one a child will execute.
    let (dev, ino, home) = sys::mapped_file(anchor_addr())?;
    let exe_identity = exe().ok().and_then(|fd| sys::file_identity(fd).ok());
    if exe_identity == Some((dev, ino)) {
        return None;
    }
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "?".into());
    Some(if !sys::has_interpreter() {
        (
            ErrorKind::BuildMismatch,
            format!(
                "this program ({home}) was started through an explicit dynamic loader \
                 (/proc/self/exe is {exe}), so the spawn start method cannot re-execute it: run \
                 the program directly, or use the fork start method"
            ),
        )
    } else {
        (
            ErrorKind::BuildMismatch,
            format!(
                "multiproc is linked into a shared object ({home}: a cdylib plugin?), not into \
                 the executable {exe}: a spawned child re-executes that executable, which does \
                 not hold this object's functions; link multiproc into the program, or use the \
                 fork start method"
            ),
        )
    })
}

/// A descriptor on this process's executable file, opened once.
pub(crate) fn exe() -> io::Result<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::{AsFd, OwnedFd};
    static EXE: OnceLock<std::result::Result<OwnedFd, i32>> = OnceLock::new();
    match EXE.get_or_init(|| sys::open_self_exe().map_err(|e| e.raw_os_error().unwrap_or(0))) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_call_made_here_runs_here() {
        let call = Call::new(double, &21).unwrap();
        let out = match call.target.invoke(&call.args) {
            Ok(bytes) => bytes,
            Err(_) => panic!("invoke failed"),
        };
        assert_eq!(codec::decode::<u32>(&out).unwrap(), 42);
    }

    #[test]
    fn wrong_arguments_are_a_codec_error_not_ub() {
        let target = Target::of(double).unwrap();
        assert!(matches!(
            target.invoke(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(CallError::Arguments(_))
        ));
        assert!(matches!(
            target.invoke(&[1, 2]),
            Err(CallError::Arguments(CodecError::TrailingBytes { .. }))
        ));
    }

    #[test]
    fn the_current_build_verifies() {
        BuildId::current().unwrap().verify().unwrap();
    }

    #[test]
    fn another_executable_is_refused() {
        let mut other = BuildId::current().unwrap();
        other.ino ^= 1;
        let why = other.verify().unwrap_err();
        assert!(why.contains("different executable"), "{why}");
    }

    #[test]
    fn another_build_id_is_refused() {
        let mut other = BuildId::current().unwrap();
        assert!(other.note.is_some(), "the test binary has no build-id note");
        other.note.as_mut().unwrap()[0] ^= 1;
        let why = other.verify().unwrap_err();
        assert!(why.contains("build-id"), "{why}");
        other.note = None;
        assert!(other.verify().is_err());
    }

    #[test]
    fn the_build_id_is_the_linkers_note() {
        // The same bytes as `readelf -n` shows for this test binary.
        let note = sys::build_id(anchor_addr()).unwrap();
        assert!(note.len() >= 8, "{note:?}");
        assert_eq!(sys::build_id(double as fn(u32) -> u32 as usize), Some(note));
    }
}

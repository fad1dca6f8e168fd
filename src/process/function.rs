//! How a Rust function crosses into another process: by its address, relative to an anchor.
//!
//! A child started with the spawn method executes the very file its parent runs (through a
//! descriptor on `/proc/self/exe`, so a binary rebuilt on disk meanwhile cannot be picked up), so
//! every function lies at the same offset from any other function of the executable in both
//! processes, whatever address-space randomisation did to the base. The parent sends two
//! offsets from [`anchor`]: the user's `fn(A) -> R` and a trampoline [`entry::<A, R>`] that
//! decodes `A`, calls the function and encodes `R`. The child adds its own anchor address back.
//!
//! Before the child trusts an offset it checks that it runs the same file (device and inode of
//! `/proc/self/exe`) and that a probe function lies at the same offset from the anchor. The
//! parent refuses functions that live outside the main executable (in a shared library, whose
//! distance from the executable changes from run to run).

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

/// The reference point for function offsets. Never called; only its address matters.
#[inline(never)]
fn anchor() -> u64 {
    std::hint::black_box(0x6d75_6c74_6970_726f)
}

/// A second function whose offset from [`anchor`] both sides compare.
#[inline(never)]
fn probe() -> u64 {
    std::hint::black_box(0x7072_6f62_6521_0001)
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
    pub(crate) transits: super::handles::Transits,
}

/// The two offsets that name a function and its trampoline.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Target {
    entry: u64,
    func: u64,
}

impl Call {
    /// Encodes `arg` and records where `f` and its trampoline are.
    pub(crate) fn new<A, R>(f: fn(A) -> R, arg: &A) -> Result<Call>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let target = Target::of(f)?;
        let (args, fds, transits) = super::handles::encode_with_handles(arg)
            .map_err(|e| Error::codec("the process arguments could not be serialized", e))?;
        Ok(Call {
            target,
            args,
            fds,
            transits,
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
        let home = sys::object_base(anchor_addr());
        for (what, addr) in [("function", func), ("trampoline", entry)] {
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
        })
    }

    /// Runs the call in this process. Panics propagate to the caller.
    ///
    /// Only valid on a target made in this process, or received from a parent whose build was
    /// verified with [`BuildId::verify`].
    pub(crate) fn invoke(self, args: &[u8]) -> std::result::Result<Vec<u8>, CallError> {
        // SAFETY: `entry` is the offset of an `entry::<A, R>` instantiation (see `Target::of`),
        // and the build was verified, so the rebased address is that function with type EntryFn.
        let entry = unsafe { std::mem::transmute::<usize, EntryFn>(addr_of(self.entry)) };
        entry(addr_of(self.func), args)
    }
}

/// What identifies the running build: the executable file and a code-layout probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildId {
    dev: u64,
    ino: u64,
    probe: u64,
}

impl BuildId {
    /// This process's build, computed once.
    pub(crate) fn current() -> Result<BuildId> {
        static CURRENT: OnceLock<std::result::Result<BuildId, String>> = OnceLock::new();
        CURRENT
            .get_or_init(|| {
                let fd = exe().map_err(|e| format!("cannot open /proc/self/exe: {e}"))?;
                let (dev, ino) = sys::file_identity(fd)
                    .map_err(|e| format!("cannot stat /proc/self/exe: {e}"))?;
                Ok(BuildId {
                    dev,
                    ino,
                    probe: offset_of(probe as fn() -> u64 as usize),
                })
            })
            .clone()
            .map_err(|why| Error::new(ErrorKind::Io, why))
    }

    /// Checks that `self` (sent by the parent) is this process's build.
    pub(crate) fn verify(&self) -> std::result::Result<(), String> {
        let mine = BuildId::current().map_err(|e| e.to_string())?;
        if (mine.dev, mine.ino) != (self.dev, self.ino) {
            return Err(format!(
                "the child runs a different executable file (device {}, inode {}) from its parent \
                 (device {}, inode {})",
                mine.dev, mine.ino, self.dev, self.ino
            ));
        }
        if mine.probe != self.probe {
            return Err("the child's code layout differs from its parent's".into());
        }
        Ok(())
    }
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
    fn another_code_layout_is_refused() {
        let mut other = BuildId::current().unwrap();
        other.probe = other.probe.wrapping_add(16);
        let why = other.verify().unwrap_err();
        assert!(why.contains("code layout"), "{why}");
    }
}

//! The program image: the auxiliary vector the kernel passed, the objects the loader mapped,
//! their build-id notes and their constructors.

use std::ffi::{c_char, c_int, c_void};

/// A constructor in `.init_array`, called as glibc calls it: `(argc, argv, envp)`.
pub(crate) type InitFn = extern "C" fn(c_int, *const *const c_char, *const *const c_char);

fn auxv(key: libc::c_ulong) -> usize {
    // SAFETY: getauxval reads the process's auxiliary vector; it has no preconditions and
    // returns 0 for a missing key.
    unsafe { libc::getauxval(key) as usize }
}

/// True when the kernel started this program in secure-execution mode: a setuid or setgid
/// executable, or one with file capabilities (the environment and descriptors it inherited
/// come from a less privileged caller). See getauxval(3), `AT_SECURE`.
pub(crate) fn is_secure_execution() -> bool {
    auxv(libc::AT_SECURE) != 0
}

/// True when the kernel loaded a program interpreter (`AT_BASE` is its address): false for a
/// static executable, or when the dynamic loader itself was the program run
/// (`ld-linux-x86-64.so.2 ./program`).
pub(crate) fn has_interpreter() -> bool {
    auxv(libc::AT_BASE) != 0
}

/// The file mapped at `addr` in this process, as `(device, inode, path)`, from
/// `/proc/self/maps`. See proc_pid_maps(5).
pub(crate) fn mapped_file(addr: usize) -> Option<(u64, u64, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        // start-end perms offset major:minor inode path
        let mut fields = line.split_ascii_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        if addr < start || addr >= end {
            return None;
        }
        let (_perms, _offset) = (fields.next()?, fields.next()?);
        let (major, minor) = fields.next()?.split_once(':')?;
        let dev = libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        let ino = fields.next()?.parse().ok()?;
        let path = fields.collect::<Vec<_>>().join(" ");
        Some((dev, ino, path))
    })
}

/// The load address of the executable or shared object that contains `addr`, if any.
/// See dladdr(3).
///
/// An address inside the main executable is answered from a span remembered on first use:
/// `Process::new` asks four times per process, and dladdr takes the loader's lock (writing a
/// page of the loader's data, which every fork then makes the parent copy or fault on again).
/// The executable is never unloaded, so the span stays right; other objects may be, and are
/// always looked up.
pub(crate) fn object_base(addr: usize) -> Option<usize> {
    let (start, end, base) = main_span();
    if start <= addr && addr < end {
        return Some(base);
    }
    dladdr_base(addr)
}

fn dladdr_base(addr: usize) -> Option<usize> {
    // SAFETY: an all-zero Dl_info is a valid value to be overwritten.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address value; `info` is writable.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
    (found != 0).then_some(info.dli_fbase as usize)
}

/// The main executable's code segment `[start, end)` (its one executable PT_LOAD) and its base
/// as dladdr reports it; an empty span when either is unknown.
///
/// Remembered without a lock (threads that race compute the same values), so that a child of
/// an unchecked fork never waits on an initialisation another thread of its parent had begun.
fn main_span() -> (usize, usize, usize) {
    use crate::atomic::Ordering;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    static READY: AtomicBool = AtomicBool::new(false);
    static SPAN: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    if READY.load(Ordering::Acquire) {
        return (
            SPAN[0].load(Ordering::Relaxed),
            SPAN[1].load(Ordering::Relaxed),
            SPAN[2].load(Ordering::Relaxed),
        );
    }
    let span = compute_main_span();
    for (slot, value) in SPAN.iter().zip([span.0, span.1, span.2]) {
        slot.store(value, Ordering::Relaxed);
    }
    READY.store(true, Ordering::Release);
    span
}

fn compute_main_span() -> (usize, usize, usize) {
    let phdr = auxv(libc::AT_PHDR);
    let phnum = auxv(libc::AT_PHNUM);
    if phdr == 0 || phnum == 0 {
        return (0, 0, 0);
    }
    // AT_PHDR and AT_PHNUM describe the main program's program headers, which the kernel
    // mapped with it and which stay mapped for the life of the process.
    let headers = Object {
        bias: 0,
        phdr: phdr as *const libc::Elf64_Phdr,
        phnum,
    }
    .headers();
    // The load bias: where the headers are, less where the program says they are.
    let Some(bias) = headers
        .iter()
        .find(|h| h.p_type == libc::PT_PHDR)
        .map(|h| phdr.wrapping_sub(h.p_vaddr as usize))
    else {
        return (0, 0, 0);
    };
    // The executable segment alone (functions are looked up): one mapping, no holes that
    // another object could have been mapped into.
    let mut code = headers
        .iter()
        .filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0);
    let (Some(text), None) = (code.next(), code.next()) else {
        return (0, 0, 0);
    };
    let start = bias.wrapping_add(text.p_vaddr as usize);
    let end = start.wrapping_add(text.p_memsz as usize);
    match dladdr_base(start) {
        Some(base) if start < end && dladdr_base(end - 1) == Some(base) => (start, end, base),
        _ => (0, 0, 0),
    }
}

/// The mapped object that contains `addr`: its load bias and program headers.
#[derive(Clone, Copy)]
struct Object {
    bias: usize,
    phdr: *const libc::Elf64_Phdr,
    phnum: usize,
}

impl Object {
    fn headers(&self) -> &'static [libc::Elf64_Phdr] {
        if self.phdr.is_null() {
            return &[];
        }
        // SAFETY: the loader keeps an object's program headers mapped for as long as the object
        // is, and the objects we look up (the one holding this crate's code) are never unloaded
        // while its code runs.
        unsafe { std::slice::from_raw_parts(self.phdr, self.phnum) }
    }

    /// The bytes of segment `h` as mapped.
    fn segment(&self, h: &libc::Elf64_Phdr) -> &'static [u8] {
        let start = self.bias.wrapping_add(h.p_vaddr as usize);
        // SAFETY: a loaded segment of a mapped object is readable for `p_memsz` bytes from its
        // runtime address (PT_NOTE and PT_DYNAMIC lie inside a PT_LOAD segment).
        unsafe { std::slice::from_raw_parts(start as *const u8, h.p_memsz as usize) }
    }
}

/// Finds the loaded object whose PT_LOAD segments cover `addr`. See dl_iterate_phdr(3).
fn object_containing(addr: usize) -> Option<Object> {
    struct Search {
        addr: usize,
        found: Option<Object>,
    }
    extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info record, and `data` is the `Search` below.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
        let object = Object {
            bias: info.dlpi_addr as usize,
            phdr: info.dlpi_phdr,
            phnum: info.dlpi_phnum as usize,
        };
        let inside = object.headers().iter().any(|h| {
            let start = object.bias.wrapping_add(h.p_vaddr as usize);
            h.p_type == libc::PT_LOAD
                && search.addr >= start
                && search.addr - start < h.p_memsz as usize
        });
        if inside {
            search.found = Some(object);
            1
        } else {
            0
        }
    }
    let mut search = Search { addr, found: None };
    // SAFETY: `visit` matches the callback type and only reads the records it is given;
    // `search` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// The GNU build-id note of the object that contains `addr`, if its linker wrote one.
pub(crate) fn build_id(addr: usize) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let object = object_containing(addr)?;
    for h in object
        .headers()
        .iter()
        .filter(|h| h.p_type == libc::PT_NOTE)
    {
        let mut notes = object.segment(h);
        // Each note: namesz, descsz, type (u32 each), then the name and the descriptor, each
        // padded to 4 bytes.
        while notes.len() >= 12 {
            let word =
                |i: usize| u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]);
            let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
            let name_end = 12 + namesz.div_ceil(4) * 4;
            let desc_end = name_end + descsz.div_ceil(4) * 4;
            if desc_end > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && &notes[12..12 + namesz] == b"GNU\0" {
                return Some(notes[name_end..name_end + descsz].to_vec());
            }
            notes = &notes[desc_end..];
        }
    }
    None
}

/// The constructors that the loader would call after `slot`, an entry of the `.init_array`
/// of the object that contains it; `None` if that array cannot be found or does not hold
/// `slot`.
fn constructors_after(slot: *const InitFn) -> Option<&'static [usize]> {
    const DT_NULL: i64 = 0;
    const DT_INIT_ARRAY: i64 = 25;
    const DT_INIT_ARRAYSZ: i64 = 27;
    let object = object_containing(slot as usize)?;
    let dynamic = object
        .headers()
        .iter()
        .find(|h| h.p_type == libc::PT_DYNAMIC)?;
    let (mut array, mut size) = (None, None);
    // The dynamic section: (tag, value) pairs of two words each, up to DT_NULL.
    let bytes = object.segment(dynamic);
    for entry in bytes.chunks_exact(16) {
        let tag = i64::from_ne_bytes(entry[..8].try_into().ok()?);
        let value = u64::from_ne_bytes(entry[8..].try_into().ok()?) as usize;
        match tag {
            DT_NULL => break,
            DT_INIT_ARRAY => array = Some(object.bias.wrapping_add(value)),
            DT_INIT_ARRAYSZ => size = Some(value),
            _ => {}
        }
    }
    let (start, size) = (array?, size?);
    let slot = slot as usize;
    let word = size_of::<usize>();
    if slot < start || slot >= start + size || !(slot - start).is_multiple_of(word) {
        return None;
    }
    let after = slot + word;
    // SAFETY: `[start, start + size)` is the object's `.init_array` as the dynamic section
    // describes it, mapped and word-aligned; it contains `slot` (checked above), so the words
    // after it up to the end are entries of the same array.
    Some(unsafe {
        std::slice::from_raw_parts(after as *const usize, (start + size - after) / word)
    })
}

/// Calls, in order, the constructors of `slot`'s object that come after `slot` in its
/// `.init_array`, as the loader would have, so that a hook that never returns still lets them
/// run. Returns false (calling nothing) if the array cannot be found.
///
/// # Safety
/// `slot` must be the `.init_array` entry of the constructor that is running now, called by
/// the loader with `argc`, `argv` and `envp`, and that constructor must never return (or the
/// loader would call the later ones a second time).
pub(crate) unsafe fn run_constructors_after(
    slot: *const InitFn,
    argc: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> bool {
    let Some(entries) = constructors_after(slot) else {
        return false;
    };
    for &entry in entries {
        // Old toolchains pad the array with 0 or -1; the loader never sees those as functions.
        if entry == 0 || entry == usize::MAX {
            continue;
        }
        // SAFETY: every other word of `.init_array` is a constructor the loader would call
        // with these arguments now; the caller never returns, so none runs twice.
        let f = unsafe { std::mem::transmute::<usize, InitFn>(entry) };
        f(argc, argv, envp);
    }
    true
}

#[cfg(test)]
mod span_tests {
    use super::{dladdr_base, main_span, object_base};

    #[test]
    fn the_remembered_span_agrees_with_dladdr() {
        let here = the_remembered_span_agrees_with_dladdr as fn() as usize;
        let (start, end, _) = main_span();
        assert!(
            start <= here && here < end,
            "a test function lies in the executable's code"
        );
        assert_eq!(object_base(here), dladdr_base(here));
        assert!(object_base(here).is_some());
        // Outside the executable: dladdr answers, as before.
        let elsewhere = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize;
        assert_eq!(object_base(elsewhere), dladdr_base(elsewhere));
        assert_ne!(object_base(elsewhere), object_base(here));
    }
}

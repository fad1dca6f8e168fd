//! CPU placement for the benches: on these 2-vCPU machines a wake-up across CPUs costs ~33 µs
//! one way, so round trips are measured pinned to one CPU and to two.

/// Pins the calling process to `cpu` (None: leave it free to run anywhere).
pub fn pin(cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read/write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..num_cpus() {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPUs online (not `available_parallelism`, which shrinks to the current affinity mask and
/// would make "unpin" pin to the last CPU set).
pub fn num_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// (name, parent's CPU, child's CPU) for every placement this machine allows.
pub fn placements() -> Vec<(&'static str, Option<usize>, Option<usize>)> {
    let mut v = vec![("unpinned", None, None), ("same-cpu", Some(0), Some(0))];
    if num_cpus() >= 2 {
        v.push(("cross-cpu", Some(0), Some(1)));
    }
    v
}

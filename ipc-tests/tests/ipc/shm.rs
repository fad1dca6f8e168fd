//! SharedMemory between real processes: passing, naming, ownership, bad segments, stale cleanup,
//! permissions.

use std::time::Duration;

use multiproc::{ErrorKind, Event, Process, SharedMemory};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("shm::anonymous_passes_to_children", anonymous_passes),
        (
            "shm::named_attacher_never_unlinks",
            named_attacher_never_unlinks,
        ),
        ("shm::bad_names_and_segments_are_typed_errors", bad_segments),
        (
            "shm::stale_segment_of_killed_creator_is_removed",
            stale_removed,
        ),
        ("shm::other_user_is_refused", other_user_is_refused),
    ]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Checks the first half against seed 1 and writes the second half with seed 2.
fn check_and_fill(shm: SharedMemory) -> bool {
    let half = shm.len() / 2;
    let mut buf = vec![0; half];
    shm.read_at(0, &mut buf);
    let ok = buf == pattern(half, 1);
    shm.write_at(half, &pattern(shm.len() - half, 2));
    ok
}

fn anonymous_passes() -> Result<(), String> {
    let shm = SharedMemory::new(4 << 20).ctx("new")?;
    let half = shm.len() / 2;
    shm.write_at(0, &pattern(half, 1));
    let mut p = Process::new(check_and_fill, shm.clone());
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")?, "child saw wrong bytes");
    let mut buf = vec![0; shm.len() - half];
    shm.read_at(half, &mut buf);
    ensure!(
        buf == pattern(shm.len() - half, 2),
        "parent sees wrong bytes"
    );
    Ok(())
}

/// Opens a named segment, checks and writes it, and drops the handle.
fn attach_by_name(name: String) -> Result<bool, String> {
    let shm = SharedMemory::open(&name).map_err(|e| e.to_string())?;
    if shm.is_owner() {
        return Err("an attacher must not be the owner".into());
    }
    if shm.unlink().map_err(|e| e.kind()) != Err(ErrorKind::NotOwner) {
        return Err("an attacher's unlink must be refused".into());
    }
    Ok(check_and_fill(shm))
}

fn dev_shm(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(name)
}

fn named_attacher_never_unlinks() -> Result<(), String> {
    let shm = SharedMemory::create_unique(1 << 16).ctx("create")?;
    let name = shm.name().ctx("name")?.to_string();
    let half = shm.len() / 2;
    shm.write_at(0, &pattern(half, 1));
    let meta = std::fs::metadata(dev_shm(&name)).ctx("stat")?;
    use std::os::unix::fs::PermissionsExt;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600,
        "mode {:o}",
        meta.permissions().mode()
    );
    for _ in 0..2 {
        let mut p = Process::new(attach_by_name, name.clone());
        p.start().ctx("start")?;
        ensure!(p.join().ctx("join")??, "child saw wrong bytes");
        ensure!(
            dev_shm(&name).exists(),
            "the attacher's exit removed the name"
        );
    }
    let mut buf = vec![0; shm.len() - half];
    shm.read_at(half, &mut buf);
    ensure!(
        buf == pattern(shm.len() - half, 2),
        "parent sees wrong bytes"
    );
    let clone = shm.clone();
    drop(shm);
    ensure!(
        dev_shm(&name).exists(),
        "dropping one of two handles removed it"
    );
    drop(clone);
    ensure!(
        !dev_shm(&name).exists(),
        "the creator's last drop must remove the name"
    );
    Ok(())
}

fn bad_segments() -> Result<(), String> {
    for bad in ["", ".hidden", "a/b", "with space", &"x".repeat(201)] {
        let k = SharedMemory::create(bad, 8)
            .err()
            .ctx("bad name accepted")?
            .kind();
        ensure!(k == ErrorKind::InvalidArgument, "{bad:?}: {k:?}");
    }
    let pid = std::process::id();
    let missing = format!("mp-test-missing-{pid}");
    let k = SharedMemory::open(&missing)
        .err()
        .ctx("missing opened")?
        .kind();
    ensure!(k == ErrorKind::NotFound, "missing: {k:?}");

    let name = format!("mp-test-exists-{pid}");
    let shm = SharedMemory::create(&name, 100).ctx("create")?;
    let k = SharedMemory::create(&name, 100)
        .err()
        .ctx("duplicate")?
        .kind();
    ensure!(k == ErrorKind::AlreadyExists, "duplicate: {k:?}");
    // Truncated behind our back: the header announces more than the file holds.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dev_shm(&name))
        .and_then(|f| f.set_len(128 + 50))
        .ctx("truncate")?;
    let e = SharedMemory::open(&name).err().ctx("truncated opened")?;
    ensure!(e.kind() == ErrorKind::BadHeader, "truncated: {e}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(dev_shm(&name))
        .and_then(|f| f.set_len(16))
        .ctx("truncate more")?;
    let e = SharedMemory::open(&name).err().ctx("stub opened")?;
    ensure!(e.kind() == ErrorKind::BadHeader, "stub: {e}");
    drop(shm);

    // A file that is not ours at all.
    let foreign = format!("mp-test-foreign-{pid}");
    std::fs::write(dev_shm(&foreign), vec![0xAB; 4096]).ctx("write foreign")?;
    let r = SharedMemory::open(&foreign);
    let _ = std::fs::remove_file(dev_shm(&foreign));
    let e = r.err().ctx("foreign opened")?;
    ensure!(e.kind() == ErrorKind::BadHeader, "foreign: {e}");
    Ok(())
}

/// Creates a named segment (optionally persistent), reports, and waits to be killed.
fn create_and_hang(args: (String, bool, Event)) {
    let (name, persist, ready) = args;
    let shm = SharedMemory::create(&name, 4096).expect("child create");
    if persist {
        shm.persist().expect("the creator may persist");
    }
    ready.set();
    std::thread::sleep(Duration::from_secs(120));
    drop(shm);
}

fn stale_removed() -> Result<(), String> {
    let pid = std::process::id();
    let mut names = Vec::new();
    for persist in [false, true] {
        let name = format!("mp-test-stale-{pid}-{persist}");
        let ready = Event::new().ctx("event")?;
        let mut p = Process::new(create_and_hang, (name.clone(), persist, ready.clone()));
        p.start().ctx("start")?;
        ensure!(
            ready.wait_timeout(Duration::from_secs(30)).is_ok(),
            "child never created it"
        );
        p.kill().ctx("kill")?;
        let _ = p.join();
        ensure!(
            dev_shm(&name).exists(),
            "a SIGKILLed creator cannot have unlinked"
        );
        names.push(name);
    }
    // A live creator's segment is not stale.
    let live = SharedMemory::create(&format!("mp-test-live-{pid}"), 8).ctx("live")?;
    let removed = SharedMemory::remove_stale().ctx("remove_stale")?;
    let persistent_left = dev_shm(&names[1]).exists();
    let _ = SharedMemory::unlink_name(&names[1]);
    ensure!(
        removed.contains(&names[0]),
        "stale segment not removed: {removed:?}"
    );
    ensure!(!dev_shm(&names[0]).exists(), "still there");
    ensure!(persistent_left, "a persistent segment was removed");
    ensure!(
        !removed.iter().any(|n| Some(n.as_str()) == live.name()),
        "a live creator's segment was removed"
    );
    Ok(())
}

/// Drops to user `nobody` and tries to open `name`; returns the error kind's name.
fn open_as_nobody(name: String) -> String {
    // SAFETY: plain system calls; the child is single-purpose and exits right after.
    let dropped = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(65534, 65534, 65534) == 0
            && libc::setresuid(65534, 65534, 65534) == 0
    };
    if !dropped {
        return "could not drop privileges".into();
    }
    match SharedMemory::open(&name) {
        Ok(_) => "opened".into(),
        Err(e) => format!("{:?}", e.kind()),
    }
}

fn other_user_is_refused() -> Result<(), String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("shm::other_user_is_refused: not root, cannot switch users; skipped");
        return Ok(());
    }
    let shm = SharedMemory::create_unique(4096).ctx("create")?;
    let mut p = Process::new(open_as_nobody, shm.name().ctx("name")?.to_string());
    p.start().ctx("start")?;
    let got = p.join().ctx("join")?;
    ensure!(got == "PermissionDenied", "user nobody got: {got}");
    Ok(())
}

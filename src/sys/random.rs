//! Randomness from the kernel, and who we are, for the manager's authentication.

use std::io;

use rustix::io::Errno;
use rustix::rand::GetRandomFlags;

/// Fills `buf` with random bytes from the kernel's pool, blocking only until the pool has been
/// initialised at boot. Retries `EINTR` and short reads. See getrandom(2).
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// This process's effective user id. See geteuid(2).
pub(crate) fn euid() -> u32 {
    super::geteuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_between_calls() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        fill_random(&mut a).unwrap();
        fill_random(&mut b).unwrap();
        assert_ne!(a, b);
    }
}

//! The receive side's state, lent to one receiver at a time with a lock that can be waited on
//! with a deadline — so that `try_recv` never blocks and `recv_timeout` is a bound on the whole
//! call, even while another thread sits in a blocking `recv`.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::codec::{CodecError, FrameDecoder};

pub(super) struct RecvState {
    pub(super) decoder: FrameDecoder,
    pub(super) eof: bool,
    /// Why the stream is unusable, once it is.
    pub(super) broken: Option<CodecError>,
}

impl RecvState {
    pub(super) fn has_frame(&mut self) -> bool {
        // A bad header counts as ready: the next receive reports it.
        self.decoder.has_frame().unwrap_or(true)
    }
}

/// The state sits in the mutex while nobody receives; a receiver takes it out (the mutex is
/// held only for that instant) and puts it back when done.
pub(super) struct RecvSlot {
    inner: Mutex<Inner>,
    returned: Condvar,
}

struct Inner {
    state: Option<RecvState>,
    /// Threads waiting in `take` for the state to come back. Counted so that giving the state
    /// back wakes somebody only when somebody waits: a condition variable's notify is a system
    /// call every time (a futex wake), which an uncontended receive must not pay.
    waiting: usize,
}

/// The state, lent out; returned to the slot on drop (a panic in the receiver included).
pub(super) struct Lent<'a> {
    slot: &'a RecvSlot,
    state: Option<RecvState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecvSlot {
    pub(super) fn new(state: RecvState) -> RecvSlot {
        RecvSlot {
            inner: Mutex::new(Inner {
                state: Some(state),
                waiting: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// The state if no other thread has it now.
    pub(super) fn try_take(&self) -> Option<Lent<'_>> {
        let state = lock(&self.inner).state.take()?;
        Some(Lent {
            slot: self,
            state: Some(state),
        })
    }

    /// The state, waiting for another receiver to return it until `deadline` (`None`: as long
    /// as it takes).
    pub(super) fn take(&self, deadline: Option<Instant>) -> Option<Lent<'_>> {
        let mut inner = lock(&self.inner);
        loop {
            if let Some(state) = inner.state.take() {
                return Some(Lent {
                    slot: self,
                    state: Some(state),
                });
            }
            let left = match deadline {
                None => None,
                Some(d) => Some(d.checked_duration_since(Instant::now())?),
            };
            inner.waiting += 1;
            inner = match left {
                None => self.returned.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(left) => {
                    self.returned
                        .wait_timeout(inner, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            inner.waiting -= 1;
        }
    }

    /// Puts the state back; true if a waiting thread was woken for it.
    fn put(&self, state: RecvState) -> bool {
        let mut inner = lock(&self.inner);
        inner.state = Some(state);
        let wake = inner.waiting > 0;
        drop(inner);
        if wake {
            self.returned.notify_one();
        }
        wake
    }
}

impl Deref for Lent<'_> {
    type Target = RecvState;
    fn deref(&self) -> &RecvState {
        self.state
            .as_ref()
            .expect("lent state is present until drop")
    }
}

impl DerefMut for Lent<'_> {
    fn deref_mut(&mut self) -> &mut RecvState {
        self.state
            .as_mut()
            .expect("lent state is present until drop")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.slot.put(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slot() -> RecvSlot {
        RecvSlot::new(RecvState {
            decoder: FrameDecoder::new(16),
            eof: false,
            broken: None,
        })
    }

    #[test]
    fn giving_the_state_back_wakes_nobody_when_nobody_waits() {
        let slot = slot();
        let mut lent = slot.try_take().expect("free");
        assert!(slot.try_take().is_none());
        let state = lent.state.take().expect("lent");
        assert!(!slot.put(state), "an uncontended receive must not notify");
        drop(lent);
        assert!(slot.take(Some(Instant::now())).is_some());
    }

    #[test]
    fn a_waiting_receiver_is_woken_when_the_state_comes_back() {
        let slot = slot();
        let mut lent = slot.try_take().expect("free");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| slot.take(None).is_some());
            while lock(&slot.inner).waiting == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let state = lent.state.take().expect("lent");
            assert!(slot.put(state));
            assert!(waiter.join().expect("waiter"));
        });
        assert_eq!(lock(&slot.inner).waiting, 0);
    }

    #[test]
    fn a_timed_take_that_gives_up_is_no_longer_counted() {
        let slot = slot();
        let mut lent = slot.try_take().expect("free");
        let soon = Instant::now() + Duration::from_millis(5);
        assert!(slot.take(Some(soon)).is_none());
        assert_eq!(lock(&slot.inner).waiting, 0);
        let state = lent.state.take().expect("lent");
        assert!(!slot.put(state));
    }

    #[test]
    fn timed_takes_giving_up_as_the_state_comes_back_lose_no_wake() {
        // A timed waiter whose deadline falls just as the state is returned may take the
        // notify meant for an untimed waiter behind it; the untimed one must still get the
        // state (the timed one either takes it and gives it back, or leaves it there).
        let slot = slot();
        for round in 0..2_000u64 {
            let lent = slot.try_take().expect("free between rounds");
            std::thread::scope(|s| {
                let timed = s.spawn(|| {
                    let soon = Instant::now() + Duration::from_micros(round % 50);
                    drop(slot.take(Some(soon)));
                });
                // Bounded so that a lost wake fails the test instead of hanging it.
                let untimed = s.spawn(|| {
                    slot.take(Some(Instant::now() + Duration::from_secs(30)))
                        .is_some()
                });
                while lock(&slot.inner).waiting == 0 {
                    std::hint::spin_loop();
                }
                std::thread::sleep(Duration::from_micros(round % 60));
                drop(lent);
                timed.join().unwrap();
                assert!(untimed.join().unwrap(), "round {round}");
            });
            assert_eq!(lock(&slot.inner).waiting, 0, "round {round}");
        }
    }
}

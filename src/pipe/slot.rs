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
    state: Mutex<Option<RecvState>>,
    returned: Condvar,
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
            state: Mutex::new(Some(state)),
            returned: Condvar::new(),
        }
    }

    /// The state if no other thread has it now.
    pub(super) fn try_take(&self) -> Option<Lent<'_>> {
        let state = lock(&self.state).take()?;
        Some(Lent {
            slot: self,
            state: Some(state),
        })
    }

    /// The state, waiting for another receiver to return it until `deadline` (`None`: as long
    /// as it takes).
    pub(super) fn take(&self, deadline: Option<Instant>) -> Option<Lent<'_>> {
        let mut slot = lock(&self.state);
        loop {
            if let Some(state) = slot.take() {
                return Some(Lent {
                    slot: self,
                    state: Some(state),
                });
            }
            slot = match deadline {
                None => self.returned.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.returned
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
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
            *lock(&self.slot.state) = Some(state);
            self.slot.returned.notify_one();
        }
    }
}

//! Length-prefixed frames: a 4-byte little-endian length, then the payload.

use super::CodecError;

/// Size of a frame header in bytes.
pub const HEADER_LEN: usize = 4;

/// Capacity reserved ahead of the bytes that have actually arrived. A peer that announces a huge
/// frame and then sends nothing makes us hold at most this much.
const RESERVE_STEP: usize = 1 << 20;

/// Frames from this size on are assembled in a vector of their own, which is handed out whole
/// (no copy) when the frame is complete.
const LARGE_FRAME: usize = 64 * 1024;

/// A large frame's vector is kept for the next large frame up to this capacity.
const RECYCLE_LIMIT: usize = 64 << 20;

/// How much one read into the shared buffer asks for.
const READ_CHUNK: usize = 64 * 1024;

/// The header of a frame of `len` bytes.
///
/// # Errors
/// [`CodecError::Oversized`] if `len` is above `limit` (or above what 4 bytes can describe).
///
/// # Examples
///
/// ```
/// use multiproc::codec::encode_frame_header;
/// assert_eq!(encode_frame_header(5, 1024).unwrap(), [5, 0, 0, 0]);
/// assert!(encode_frame_header(2048, 1024).is_err());
/// ```
pub fn encode_frame_header(len: usize, limit: usize) -> Result<[u8; HEADER_LEN], CodecError> {
    let limit = limit.min(super::MAX_FRAME_LIMIT);
    if len > limit {
        return Err(CodecError::Oversized { len, limit });
    }
    Ok((len as u32).to_le_bytes())
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
///
/// Feed it whatever a read returned with [`push`](Self::push) (or read straight into
/// [`spare`](Self::spare) and [`commit`](Self::commit)), then take complete frames with
/// [`next_frame`](Self::next_frame). A header that announces more than the limit is an error as
/// soon as its four bytes are in (or as soon as the decoder next looks at it: any call but
/// [`buffered`](Self::buffered)), and from then on the decoder drops all further input, holding
/// no more than one read: the stream cannot be resynchronised.
///
/// Memory: small frames share one buffer that is reused from frame to frame. A large frame
/// (64 KiB or more) is assembled in a vector of its own, which grows with what has arrived: the
/// room it reserves ahead is at most 1 MiB or as much as has arrived, whichever is more (or what
/// a caller of [`spare`](Self::spare) or [`push`](Self::push) asked for), and never beyond the
/// frame's length. It is handed out by [`next_frame`](Self::next_frame) without a copy; a vector
/// of up to 64 MiB is kept for the next large frame.
///
/// # Examples
///
/// ```
/// use multiproc::codec::FrameDecoder;
///
/// let mut dec = FrameDecoder::new(1024);
/// dec.push(&[3, 0, 0]);            // a partial header
/// assert_eq!(dec.next_frame().unwrap(), None);
/// dec.push(&[0, b'a', b'b', b'c', 1]);
/// assert_eq!(dec.next_frame().unwrap().as_deref(), Some(&b"abc"[..]));
/// assert_eq!(dec.next_frame().unwrap(), None); // one byte of the next header so far
/// assert_eq!(dec.buffered(), 1);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    /// Received bytes not yet consumed are `buf[pos..]`; `buf.len()` is the end of what arrived
    /// (except between `spare` and `commit`).
    buf: Vec<u8>,
    pos: usize,
    /// The frame at the front, when it is large: assembled apart from `buf`.
    large: Option<Large>,
    /// A large frame's vector, kept for the next one.
    recycle: Vec<u8>,
    limit: usize,
    poisoned: Option<CodecError>,
    /// Where the slice handed out by `spare` begins, until `commit`.
    spare_at: Option<(Target, usize)>,
}

#[derive(Debug)]
struct Large {
    /// The payload's length, from the header.
    len: usize,
    /// The payload so far.
    data: Vec<u8>,
    /// Lent out by `next_frame_ref`; dropped (or recycled) by the next call.
    lent: bool,
}

/// Which vector the next bytes go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Shared,
    Large,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `limit` bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let dec = multiproc::codec::FrameDecoder::new(multiproc::codec::DEFAULT_MAX_FRAME);
    /// assert_eq!(dec.buffered(), 0);
    /// ```
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            large: None,
            recycle: Vec::new(),
            limit: limit.min(super::MAX_FRAME_LIMIT),
            poisoned: None,
            spare_at: None,
        }
    }

    /// The frame size limit.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::codec::FrameDecoder::new(10).limit(), 10);
    /// ```
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the frame size limit (for frames not yet returned).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(super::MAX_FRAME_LIMIT);
    }

    /// Bytes received but not yet returned as frames.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut dec = multiproc::codec::FrameDecoder::new(10);
    /// dec.push(&[1, 2]);
    /// assert_eq!(dec.buffered(), 2);
    /// ```
    pub fn buffered(&self) -> usize {
        let large = match &self.large {
            Some(l) if !l.lent => HEADER_LEN + l.data.len(),
            _ => 0,
        };
        self.buf.len() - self.pos + large
    }

    /// Appends received bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut dec = multiproc::codec::FrameDecoder::new(10);
    /// dec.push(&[0, 0, 0, 0]);
    /// assert_eq!(dec.next_frame().unwrap(), Some(vec![]));
    /// ```
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.poisoned.is_some() {
            return;
        }
        while !bytes.is_empty() {
            let (target, room) = self.prepare(bytes.len(), false);
            let take = room.min(bytes.len());
            self.vec(target).extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Free space to read into directly (at least `min` bytes, and no more than the frame being
    /// assembled needs plus one step), zero-filled. Follow with [`commit`](Self::commit).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut dec = multiproc::codec::FrameDecoder::new(100);
    /// let spare = dec.spare(16);
    /// spare[..5].copy_from_slice(&[1, 0, 0, 0, 9]);
    /// dec.commit(5);
    /// assert_eq!(dec.next_frame().unwrap(), Some(vec![9]));
    /// ```
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        let (target, room) = self.prepare(min, false);
        let vec = self.vec(target);
        let start = vec.len();
        vec.resize(start + room, 0);
        self.spare_at = Some((target, start));
        &mut self.vec(target)[start..]
    }

    /// Marks `n` bytes of the last [`spare`](Self::spare) slice as received; the rest is dropped.
    ///
    /// # Panics
    /// If `n` is larger than the slice that `spare` returned.
    ///
    /// # Examples
    ///
    /// See [`spare`](Self::spare).
    pub fn commit(&mut self, n: usize) {
        let Some((target, start)) = self.spare_at.take() else {
            assert_eq!(n, 0, "commit without spare");
            return;
        };
        let vec = self.vec(target);
        assert!(start + n <= vec.len(), "commit past the spare slice");
        vec.truncate(start + n);
    }

    /// Lets `append` add received bytes straight to the decoder's storage (no zero-filling):
    /// it gets the vector to append to and how many bytes it may append at most (at least one),
    /// and returns what its own source gave. The decoder does no I/O itself; the transports
    /// (`pipe/`) read their descriptors through this.
    ///
    /// `append` must only append, and at most the bytes it was offered.
    pub(crate) fn append_with<T>(&mut self, append: impl FnOnce(&mut Vec<u8>, usize) -> T) -> T {
        let (target, room) = self.prepare(1, true);
        let vec = self.vec(target);
        let before = vec.len();
        let out = append(vec, room);
        debug_assert!(vec.len() >= before && vec.len() - before <= room);
        out
    }

    fn vec(&mut self, target: Target) -> &mut Vec<u8> {
        match (target, self.large.as_mut()) {
            (Target::Large, Some(l)) => &mut l.data,
            _ => &mut self.buf,
        }
    }

    /// Picks where the next bytes go and makes room there: returns the target and how many
    /// bytes it can take (at least `min` in the shared buffer, or a whole read chunk with
    /// `read_ahead`; in a large frame, up to its end).
    fn prepare(&mut self, min: usize, read_ahead: bool) -> (Target, usize) {
        self.release_lent();
        if self.large.is_none() {
            self.compact();
            self.start_large_frame();
        }
        if self.poisoned.is_some() {
            // Nothing after a bad header can be used: drop it, keep only room for one read.
            self.buf.clear();
            self.pos = 0;
            self.large = None;
            let room = if read_ahead { min.max(READ_CHUNK) } else { min };
            self.buf.reserve(room);
            return (Target::Shared, room);
        }
        if let Some(l) = &mut self.large {
            let missing = l.len - l.data.len();
            if missing > 0 {
                let room = missing.min(min.max(RESERVE_STEP));
                let have = l.data.len();
                if l.data.capacity() < have + room {
                    // Double with what has arrived (so that a frame arriving in pieces is copied
                    // a bounded number of times), never beyond the frame's length: room ahead is
                    // at most what arrived, or the step (or what the caller asked), whichever is
                    // more.
                    let target = (2 * have).max(have + room).min(l.len);
                    l.data.reserve_exact(target - have);
                }
                return (Target::Large, room);
            }
        }
        let room = if read_ahead { min.max(READ_CHUNK) } else { min };
        self.buf.reserve(room);
        (Target::Shared, room)
    }

    /// If the frame at the front is large and not yet complete, moves it into a vector of its own.
    fn start_large_frame(&mut self) {
        let Ok(Some(len)) = self.next_frame_header() else {
            return;
        };
        let avail = self.buf.len() - self.pos - HEADER_LEN;
        if len < LARGE_FRAME || avail >= len {
            return;
        }
        let mut data = std::mem::take(&mut self.recycle);
        data.clear();
        data.reserve_exact(avail.max(RESERVE_STEP).min(len));
        let start = self.pos + HEADER_LEN;
        data.extend_from_slice(&self.buf[start..start + avail]);
        self.pos = self.buf.len();
        self.large = Some(Large {
            len,
            data,
            lent: false,
        });
    }

    /// Drops the large frame that `next_frame_ref` lent out, keeping its vector for reuse.
    fn release_lent(&mut self) {
        if self.large.as_ref().is_some_and(|l| l.lent)
            && let Some(l) = self.large.take()
            && l.data.capacity() <= RECYCLE_LIMIT
        {
            self.recycle = l.data;
        }
    }

    /// Drops consumed bytes from the front of the shared buffer once they dominate it.
    fn compact(&mut self) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`CodecError::Oversized`] once a header announces more than the limit; the same error is
    /// returned by every later call.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::codec::{CodecError, FrameDecoder};
    /// let mut dec = FrameDecoder::new(8);
    /// dec.push(&[0xff, 0xff, 0xff, 0x7f]); // a garbage length
    /// assert!(matches!(dec.next_frame(), Err(CodecError::Oversized { .. })));
    /// ```
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        match self.locate()? {
            Some(Loc::Large) => Ok(self.large.take().map(|l| l.data)),
            Some(Loc::Shared(range)) => {
                let frame = self.buf[range.clone()].to_vec();
                self.pos = range.end;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Like [`next_frame`](Self::next_frame), but lends the payload instead of copying it.
    ///
    /// # Errors
    /// As [`next_frame`](Self::next_frame).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut dec = multiproc::codec::FrameDecoder::new(8);
    /// dec.push(&[2, 0, 0, 0, 7, 8]);
    /// assert_eq!(dec.next_frame_ref().unwrap(), Some(&[7u8, 8][..]));
    /// ```
    pub fn next_frame_ref(&mut self) -> Result<Option<&[u8]>, CodecError> {
        match self.locate()? {
            Some(Loc::Large) => Ok(self.large.as_mut().map(|l| {
                l.lent = true;
                &l.data[..]
            })),
            Some(Loc::Shared(range)) => {
                self.pos = range.end;
                Ok(Some(&self.buf[range]))
            }
            None => Ok(None),
        }
    }

    /// If the frame at the front is a large one still arriving and `out` can hold it, moves what
    /// has arrived into `out` and gives the rest of that frame up to the caller, who reads it
    /// straight into `out`: returns the frame's length and how many bytes are already in `out`.
    pub(crate) fn divert_large_into(&mut self, out: &mut [u8]) -> Option<(usize, usize)> {
        self.release_lent();
        if self.large.is_none() {
            self.compact();
            self.start_large_frame();
        }
        let l = self.large.as_ref()?;
        if l.len > out.len() || l.data.len() == l.len {
            return None;
        }
        let l = self.large.take()?;
        let have = l.data.len();
        out[..have].copy_from_slice(&l.data);
        if l.data.capacity() <= RECYCLE_LIMIT {
            self.recycle = l.data;
        }
        Some((l.len, have))
    }

    /// True when a complete frame is ready.
    ///
    /// # Errors
    /// As [`next_frame`](Self::next_frame).
    pub(crate) fn has_frame(&mut self) -> Result<bool, CodecError> {
        Ok(self.locate()?.is_some())
    }

    /// Bytes of memory held, for tests of the allocation bound.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity() + self.large.as_ref().map_or(0, |l| l.data.capacity())
    }

    /// The length of the frame at the front of the shared buffer, once its header is in.
    fn next_frame_header(&mut self) -> Result<Option<usize>, CodecError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.limit {
            let err = CodecError::Oversized {
                len,
                limit: self.limit,
            };
            self.poisoned = Some(err.clone());
            return Err(err);
        }
        Ok(Some(len))
    }

    /// Where the next complete frame is, if there is one.
    fn locate(&mut self) -> Result<Option<Loc>, CodecError> {
        self.release_lent();
        if let Some(l) = &self.large {
            return Ok((l.data.len() == l.len).then_some(Loc::Large));
        }
        let Some(len) = self.next_frame_header()? else {
            return Ok(None);
        };
        if self.buf.len() - self.pos < HEADER_LEN + len {
            return Ok(None);
        }
        let start = self.pos + HEADER_LEN;
        Ok(Some(Loc::Shared(start..start + len)))
    }
}

/// Where a complete frame lies.
enum Loc {
    Shared(std::ops::Range<usize>),
    Large,
}

//! Length-prefixed frames: a 4-byte little-endian length, then the payload.

use super::CodecError;

/// Size of a frame header in bytes.
pub const HEADER_LEN: usize = 4;

/// Capacity reserved ahead of the bytes that have actually arrived. A peer that announces a huge
/// frame and then sends nothing makes us hold at most this much.
const RESERVE_STEP: usize = 1 << 20;

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
/// soon as its four bytes are in, and the decoder refuses all further input: the stream cannot
/// be resynchronised.
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
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    limit: usize,
    poisoned: Option<CodecError>,
    /// Where the slice handed out by `spare` begins, until `commit`.
    spare_start: Option<usize>,
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
            limit: limit.min(super::MAX_FRAME_LIMIT),
            poisoned: None,
            spare_start: None,
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
        self.buf.len() - self.pos
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
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Free space to read into directly (at least `min` bytes, and no more than the frame being
    /// assembled needs plus one step). Follow with [`commit`](Self::commit).
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
        self.compact();
        let want = self.wanted().max(min).max(HEADER_LEN);
        let len = self.buf.len();
        // Never reserve more than one step ahead of what has arrived.
        let grow = want
            .saturating_sub(len - self.pos)
            .clamp(min, RESERVE_STEP.max(min));
        self.buf.resize(len + grow, 0);
        self.spare_start = Some(len);
        &mut self.buf[len..]
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
        // `spare` left the buffer at len + grow; keep only what was filled.
        let filled_end = self.buf.len();
        let spare_start = self.spare_start.take().unwrap_or(filled_end);
        assert!(spare_start + n <= filled_end, "commit past the spare slice");
        self.buf.truncate(spare_start + n);
    }

    /// How many bytes the frame being assembled still needs in total (header included).
    fn wanted(&self) -> usize {
        let avail = &self.buf[self.pos..];
        if avail.len() < HEADER_LEN {
            return HEADER_LEN;
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        HEADER_LEN + len.min(self.limit)
    }

    /// Drops consumed bytes from the front once they dominate the buffer.
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
        Ok(self.next_frame_range()?.map(|range| {
            let frame = self.buf[range.clone()].to_vec();
            self.pos = range.end;
            frame
        }))
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
        match self.next_frame_range()? {
            Some(range) => {
                self.pos = range.end;
                Ok(Some(&self.buf[range]))
            }
            None => Ok(None),
        }
    }

    /// Bytes of memory held, for tests of the allocation bound.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The length of the frame being assembled, once its header is in.
    pub(crate) fn peek_len(&mut self) -> Result<Option<usize>, CodecError> {
        self.next_frame_header()
    }

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

    fn next_frame_range(&mut self) -> Result<Option<std::ops::Range<usize>>, CodecError> {
        let Some(len) = self.next_frame_header()? else {
            return Ok(None);
        };
        if self.buffered() < HEADER_LEN + len {
            return Ok(None);
        }
        let start = self.pos + HEADER_LEN;
        Ok(Some(start..start + len))
    }
}

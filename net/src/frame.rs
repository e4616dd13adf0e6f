//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

use bytes::{Buf, Bytes, BytesMut};

/// Why a length prefix was refused. Every case closes the connection: the
/// stream can no longer be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    Negative(i32),
    #[error("frame length {len} is shorter than a request header ({min} bytes)")]
    TooShort { len: usize, min: usize },
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Splits whole frames off a receive buffer without copying them.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    min_bytes: usize,
    max_bytes: usize,
}

impl FrameDecoder {
    /// Frames of `min_bytes..=max_bytes` bytes after the prefix.
    pub fn new(min_bytes: usize, max_bytes: usize) -> FrameDecoder {
        assert!(min_bytes <= max_bytes);
        FrameDecoder {
            min_bytes,
            max_bytes,
        }
    }

    /// The request-frame limits from `sluice_tuning::limits`.
    pub fn requests() -> FrameDecoder {
        use sluice_tuning::limits::{FRAME_BYTES_MAX, REQUEST_FRAME_BYTES_MIN};
        FrameDecoder::new(REQUEST_FRAME_BYTES_MIN, FRAME_BYTES_MAX)
    }

    /// Checks a length prefix before anything is allocated for the frame.
    pub fn check_length(&self, prefix: [u8; 4]) -> Result<usize, FrameError> {
        let len = i32::from_be_bytes(prefix);
        let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
        if len < self.min_bytes {
            return Err(FrameError::TooShort {
                len,
                min: self.min_bytes,
            });
        }
        if len > self.max_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_bytes,
            });
        }
        Ok(len)
    }

    /// How many more bytes `buf` needs before its first frame is whole
    /// (0 when it is), after checking the prefix if it is there.
    pub fn missing(&self, buf: &[u8]) -> Result<usize, FrameError> {
        if buf.len() < 4 {
            return Ok(4 - buf.len());
        }
        let len = self.check_length(buf[..4].try_into().unwrap())?;
        Ok((4 + len).saturating_sub(buf.len()))
    }

    /// Takes the first whole frame (without its prefix) off `buf`, or
    /// `None` when more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if self.missing(buf)? > 0 {
            return Ok(None);
        }
        let len = self.check_length(buf[..4].try_into().unwrap())?;
        buf.advance(4);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Largest answer frame the client reads.
pub const RESPONSE_FRAME_BYTES_MAX: usize = sluice_tuning::limits::FRAME_BYTES_MAX;

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    // Proves bad prefixes are refused before allocation, by kind.
    #[test]
    fn bad_lengths_are_refused() {
        let d = FrameDecoder::new(10, 1000);
        assert_eq!(
            d.check_length((-1i32).to_be_bytes()),
            Err(FrameError::Negative(-1))
        );
        assert_eq!(
            d.check_length(5i32.to_be_bytes()),
            Err(FrameError::TooShort { len: 5, min: 10 })
        );
        assert_eq!(
            d.check_length(1001i32.to_be_bytes()),
            Err(FrameError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
        assert_eq!(
            d.check_length(i32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 1000
            })
        );
        assert_eq!(d.check_length(1000i32.to_be_bytes()), Ok(1000));
        let mut buf = BytesMut::from(&(-7i32).to_be_bytes()[..]);
        assert!(d.decode(&mut buf).is_err());
    }

    // Proves frames are split whole, in order, across partial arrivals.
    #[test]
    fn frames_split_across_reads() {
        let d = FrameDecoder::new(1, 1000);
        let mut stream = framed(b"first frame");
        stream.extend(framed(b"second"));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in stream {
            buf.extend_from_slice(&[byte]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"first frame"),
                Bytes::from_static(b"second")
            ]
        );
        assert!(buf.is_empty());
        assert_eq!(d.missing(&framed(b"abc")[..5]).unwrap(), 2);
    }
}

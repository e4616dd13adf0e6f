//! Response encoding: length prefix, response header (v0, or v1 for
//! flexible versions; always v0 for ApiVersions, whose client does not yet
//! know what the broker supports), then the body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

#[derive(Debug, thiserror::Error)]
#[error("cannot encode {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    pub api_key: ApiKey,
    pub version: i16,
    pub reason: String,
}

/// The response header version for `api_key` at `version`.
pub fn response_header_version(api_key: ApiKey, version: i16) -> i16 {
    if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    }
}

/// A whole response frame, length prefix included.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let err = |e: &dyn std::fmt::Display| EncodeError {
        api_key,
        version,
        reason: e.to_string(),
    };
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, response_header_version(api_key, version))
        .map_err(|e| err(&e))?;
    body.encode(&mut buf, version).map_err(|e| err(&e))?;
    let len = frame_length(buf.len()).map_err(|e| err(&e))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The length prefix of a frame of `total` bytes (prefix included): an
/// error, never a wrapped negative length, past what an i32 can say.
fn frame_length(total: usize) -> Result<i32, &'static str> {
    total
        .checked_sub(4)
        .and_then(|l| i32::try_from(l).ok())
        .ok_or("response longer than 2 GiB")
}

/// The ApiVersions body listing `supported` (api key, min, max).
pub fn api_versions(supported: &[(ApiKey, i16, i16)], error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            supported
                .iter()
                .map(|&(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(lo)
                        .with_max_version(hi)
                })
                .collect(),
        )
}

/// The KIP-511 answer to an ApiVersions request at a version this broker
/// does not know: a v0 body with UNSUPPORTED_VERSION and the ranges.
pub fn api_versions_unsupported(
    correlation_id: i32,
    supported: &[(ApiKey, i16, i16)],
) -> Result<Bytes, EncodeError> {
    let body = ResponseKind::ApiVersions(api_versions(supported, UNSUPPORTED_VERSION));
    encode_response(correlation_id, ApiKey::ApiVersions, 0, &body)
}

/// The largest record set one placeholder can stand for (see
/// [`records_placeholder`]): a fetch answer never carries more for one
/// partition than the frame limit.
pub const RECORDS_PLACEHOLDER_BYTES_MAX: usize = sluice_tuning::limits::FRAME_BYTES_MAX;

/// A read-only, never-touched anonymous mapping whose address marks record
/// sets in a response body. Mapping it reserves address space only.
fn placeholder_region() -> &'static [u8] {
    static REGION: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *REGION.get_or_init(|| {
        // SAFETY: a fresh private anonymous read-only mapping; nothing else
        // refers to it and it is never unmapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RECORDS_PLACEHOLDER_BYTES_MAX,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "cannot reserve address space for record placeholders"
        );
        p as usize
    });
    // SAFETY: the mapping above is RECORDS_PLACEHOLDER_BYTES_MAX readable
    // bytes that live for the rest of the process.
    unsafe { std::slice::from_raw_parts(addr as *const u8, RECORDS_PLACEHOLDER_BYTES_MAX) }
}

/// A stand-in for `len` bytes of records in a response body. The codec
/// writes the field's length prefix as usual; [`encode_response_chunks`]
/// recognises the stand-in's address and puts the real record chunks in
/// its place, so record bytes are never copied into the response buffer.
pub fn records_placeholder(len: usize) -> Bytes {
    assert!(len <= RECORDS_PLACEHOLDER_BYTES_MAX);
    Bytes::from_static(&placeholder_region()[..len])
}

/// A response frame as a list of chunks: the encoded fields, and record
/// bytes shared with the log (`Bytes` clones, never copies).
#[derive(Debug, Default, Clone)]
pub struct ResponseChunks {
    pub chunks: Vec<Bytes>,
}

impl ResponseChunks {
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(|c| c.is_empty())
    }
    /// A frame that is one contiguous buffer.
    pub fn single(b: Bytes) -> ResponseChunks {
        ResponseChunks { chunks: vec![b] }
    }
}

/// Encodes fields into a buffer, and record-set placeholders as references
/// to the record chunks they stand for.
struct ChunkBuf {
    buf: BytesMut,
    out: Vec<Bytes>,
    flushed: usize,
    records: std::vec::IntoIter<Vec<Bytes>>,
    region: (usize, usize),
    error: Option<String>,
}

impl ChunkBuf {
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let b = self.buf.split().freeze();
            self.flushed += b.len();
            self.out.push(b);
        }
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, whose contract
// it inherits; `put_slice` only adds the record-chunk substitution.
unsafe impl BufMut for ChunkBuf {
    fn remaining_mut(&self) -> usize {
        self.buf.remaining_mut()
    }
    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        unsafe { self.buf.advance_mut(cnt) }
    }
    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.buf.chunk_mut()
    }
    fn put_slice(&mut self, src: &[u8]) {
        let p = src.as_ptr() as usize;
        if !src.is_empty() && p >= self.region.0 && p < self.region.1 {
            match self.records.next() {
                Some(chunks) if chunks.iter().map(|c| c.len()).sum::<usize>() == src.len() => {
                    self.flush();
                    for c in chunks {
                        self.flushed += c.len();
                        self.out.push(c);
                    }
                }
                other => {
                    self.error.get_or_insert_with(|| {
                        format!(
                            "record placeholder of {} bytes has no matching record set ({:?} bytes)",
                            src.len(),
                            other.map(|c| c.iter().map(|c| c.len()).sum::<usize>())
                        )
                    });
                    self.buf.extend_from_slice(src);
                }
            }
        } else {
            self.buf.extend_from_slice(src);
        }
    }
}

impl kafka_protocol::protocol::buf::ByteBufMut for ChunkBuf {
    fn offset(&self) -> usize {
        self.flushed + self.buf.len()
    }
    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.flushed, "seek into an already flushed chunk");
        self.buf.resize(offset - self.flushed, 0);
    }
    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.flushed, "range in an already flushed chunk");
        &mut self.buf[r.start - self.flushed..r.end - self.flushed]
    }
}

/// A whole response frame, length prefix included, as chunks. `records`
/// holds, in encoding order, the chunks of each non-empty record set the
/// body carries as a [`records_placeholder`].
pub fn encode_response_chunks<E: Encodable>(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &E,
    records: Vec<Vec<Bytes>>,
) -> Result<ResponseChunks, EncodeError> {
    let err = |e: &dyn std::fmt::Display| EncodeError {
        api_key,
        version,
        reason: e.to_string(),
    };
    let region = placeholder_region();
    let start = region.as_ptr() as usize;
    let mut b = ChunkBuf {
        buf: BytesMut::with_capacity(1024),
        out: Vec::with_capacity(1 + 2 * records.len()),
        flushed: 0,
        records: records.into_iter(),
        region: (start, start + region.len()),
        error: None,
    };
    b.buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut b, response_header_version(api_key, version))
        .map_err(|e| err(&e))?;
    body.encode(&mut b, version).map_err(|e| err(&e))?;
    if let Some(e) = b.error.take() {
        return Err(err(&e));
    }
    if b.records.next().is_some() {
        return Err(err(&"more record sets than placeholders"));
    }
    b.flush();
    let mut out = b.out;
    let len = frame_length(out.iter().map(|c| c.len()).sum::<usize>()).map_err(|e| err(&e))?;
    // The first chunk begins with the prefix written above; patch it.
    let mut first = BytesMut::from(&out[0][..]);
    first[..4].copy_from_slice(&len.to_be_bytes());
    out[0] = first.freeze();
    Ok(ResponseChunks { chunks: out })
}

#[cfg(test)]
mod tests {
    use super::frame_length;

    // A frame's length prefix is its length, or an error where an i32
    // cannot hold it (the old cast wrapped to a negative prefix).
    #[test]
    fn frame_lengths_past_i32_are_errors() {
        assert_eq!(frame_length(4), Ok(0));
        assert_eq!(frame_length(i32::MAX as usize + 4), Ok(i32::MAX));
        assert!(frame_length(i32::MAX as usize + 5).is_err());
        assert!(frame_length(3).is_err());
    }
}

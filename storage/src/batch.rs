//! Kafka RecordBatch v2 (KIP-98): header layout, validation on append,
//! broker stamping, and validation after reading back.
//!
//! Layout (big-endian): baseOffset i64, batchLength i32, partitionLeaderEpoch
//! i32, magic i8, crc u32, attributes i16, lastOffsetDelta i32,
//! baseTimestamp i64, maxTimestamp i64, producerId i64, producerEpoch i16,
//! baseSequence i32, recordCount i32, then the records. batchLength counts
//! the bytes after itself; the CRC-32C covers attributes to the end, so the
//! broker may write baseOffset and partitionLeaderEpoch without recomputing it.

use bytes::{Bytes, BytesMut};
use sluice_tuning::limits;

use crate::error::{Result, StorageError};

pub mod compressed;

pub const HEADER_BYTES: usize = 61;
/// Bytes before the part that batchLength counts.
pub const LOG_OVERHEAD_BYTES: usize = 12;
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;
/// The CRC covers the bytes from the attributes to the end of the batch.
pub const CRC_START: usize = ATTRIBUTES;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
pub const ATTR_CONTROL: i16 = 0x20;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// The decoded fixed header of a v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header from the first [`HEADER_BYTES`] of `b`.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: i64_at(b, BASE_OFFSET),
            batch_length: i32_at(b, BATCH_LENGTH),
            partition_leader_epoch: i32_at(b, LEADER_EPOCH),
            magic: b[MAGIC] as i8,
            crc: u32_at(b, CRC),
            attributes: i16_at(b, ATTRIBUTES),
            last_offset_delta: i32_at(b, LAST_OFFSET_DELTA),
            base_timestamp: i64_at(b, BASE_TIMESTAMP),
            max_timestamp: i64_at(b, MAX_TIMESTAMP),
            producer_id: i64_at(b, PRODUCER_ID),
            producer_epoch: i16_at(b, PRODUCER_EPOCH),
            base_sequence: i32_at(b, BASE_SEQUENCE),
            record_count: i32_at(b, RECORD_COUNT),
        })
    }

    /// Whole size of the batch on disk, or `None` for a negative length.
    pub fn total_bytes(&self) -> Option<usize> {
        usize::try_from(self.batch_length)
            .ok()
            .map(|l| l + LOG_OVERHEAD_BYTES)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }
}

/// CRC-32C of a batch held as header bytes plus body bytes.
fn crc_of(head: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&head[CRC_START..]), body)
}

/// Reads a zig-zag varint (Kafka's `varint`/`varlong`) at `*pos`.
fn read_varlong(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Walks the uncompressed records of a batch body (the bytes after the
/// header) and checks that they are exactly `record_count` records with
/// offset deltas 0, 1, 2 ... that fill the body. Returns each record's
/// timestamp delta through `on_record`.
pub fn walk_records(
    body: &[u8],
    record_count: i32,
    mut on_record: impl FnMut(i32, i64),
) -> Result<()> {
    let mut pos = 0usize;
    for expected_delta in 0..record_count {
        let bad =
            |what: &str| StorageError::InvalidRecord(format!("record {expected_delta}: {what}"));
        let len = read_varlong(body, &mut pos).ok_or_else(|| bad("truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let end = pos.checked_add(len).filter(|&e| e <= body.len());
        let end = end.ok_or_else(|| bad("length runs past the batch"))?;
        let rec = &body[..end];
        let mut p = pos + 1; // attributes
        let ts_delta = read_varlong(rec, &mut p).ok_or_else(|| bad("truncated timestamp"))?;
        let off_delta = read_varlong(rec, &mut p).ok_or_else(|| bad("truncated offset delta"))?;
        if off_delta != expected_delta as i64 {
            return Err(bad(&format!("offset delta {off_delta}")));
        }
        on_record(expected_delta, ts_delta);
        pos = end;
    }
    if pos != body.len() {
        return Err(StorageError::InvalidRecord(format!(
            "{} bytes after the last of {record_count} records",
            body.len() - pos
        )));
    }
    Ok(())
}

/// Calls `on_record(key, value)` for each record of an uncompressed batch
/// body (the bytes after the header), in order. Headers are skipped.
pub fn read_records<'a>(
    body: &'a [u8],
    record_count: i32,
    mut on_record: impl FnMut(Option<&'a [u8]>, &'a [u8]),
) -> Result<()> {
    let mut pos = 0usize;
    for n in 0..record_count {
        let bad = |what: &str| StorageError::InvalidRecord(format!("record {n}: {what}"));
        let len = read_varlong(body, &mut pos).ok_or_else(|| bad("truncated length"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| bad("length runs past the batch"))?;
        let rec = &body[..end];
        let mut p = pos + 1; // attributes
        read_varlong(rec, &mut p).ok_or_else(|| bad("truncated timestamp"))?;
        read_varlong(rec, &mut p).ok_or_else(|| bad("truncated offset delta"))?;
        let field = |p: &mut usize| -> Result<Option<&'a [u8]>> {
            let l = read_varlong(rec, p).ok_or_else(|| bad("truncated field length"))?;
            if l < 0 {
                return Ok(None);
            }
            let e = p
                .checked_add(l as usize)
                .filter(|&e| e <= rec.len())
                .ok_or_else(|| bad("field runs past the record"))?;
            let f = &body[*p..e];
            *p = e;
            Ok(Some(f))
        };
        let key = field(&mut p)?;
        let value = field(&mut p)?.unwrap_or_default();
        on_record(key, value);
        pos = end;
    }
    Ok(())
}

/// Validates one batch's framing exactly as a producer sent it: magic,
/// length, size, CRC, record count against the last offset delta, codec.
/// Nothing about the offsets or epoch it carries is trusted: the log
/// overwrites them. The records themselves are checked by [`validate`].
pub fn validate_header(batch: &[u8], batch_bytes_max: usize) -> Result<BatchHeader> {
    let corrupt = |m: String| Err(StorageError::CorruptMessage(m));
    let Some(h) = BatchHeader::parse(batch) else {
        return corrupt(format!(
            "{} bytes is shorter than a batch header ({HEADER_BYTES})",
            batch.len()
        ));
    };
    if h.magic != MAGIC_V2 {
        return corrupt(format!("magic {} (only v2 batches are stored)", h.magic));
    }
    if h.total_bytes() != Some(batch.len()) {
        return corrupt(format!(
            "batch length {} does not match the {} bytes present",
            h.batch_length,
            batch.len()
        ));
    }
    if batch.len() > batch_bytes_max {
        return Err(StorageError::MessageTooLarge {
            size: batch.len(),
            max: batch_bytes_max,
        });
    }
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    if crc != h.crc {
        return corrupt(format!("crc {:#010x}, computed {crc:#010x}", h.crc));
    }
    if h.record_count <= 0 {
        return Err(StorageError::InvalidRecord(format!(
            "record count {}",
            h.record_count
        )));
    }
    if h.last_offset_delta != h.record_count - 1 {
        return Err(StorageError::InvalidRecord(format!(
            "last offset delta {} with {} records",
            h.last_offset_delta, h.record_count
        )));
    }
    if !(0..=4).contains(&h.compression()) {
        return Err(StorageError::InvalidRecord(format!(
            "unknown compression codec {}",
            h.compression()
        )));
    }
    Ok(h)
}

/// Validates one batch exactly as a producer sent it (see
/// [`validate_header`]) and its records: an uncompressed body is walked;
/// a compressed one is decompressed as a stream and walked (it is still
/// stored as sent, never recompressed), refused when it would decompress
/// to more than `BATCH_DECOMPRESSED_BYTES_MAX`.
pub fn validate(batch: &[u8], batch_bytes_max: usize) -> Result<BatchHeader> {
    let h = validate_header(batch, batch_bytes_max)?;
    check_records(batch, &h, limits::BATCH_DECOMPRESSED_BYTES_MAX)?.map_err(|_| too_large())?;
    Ok(h)
}

fn too_large() -> StorageError {
    StorageError::InvalidRecord(format!(
        "the records decompress to more than {} bytes",
        limits::BATCH_DECOMPRESSED_BYTES_MAX
    ))
}

/// As [`validate`], for the log's append: a compressed body that
/// decompresses to more than `BATCH_DECOMPRESSED_INLINE_BYTES_MAX` is
/// checked again on the executor's blocking pool, so a large (or
/// hostile) compressed batch does not hold the shard for the time its
/// decompression takes.
pub async fn validate_async(batch: &Bytes, batch_bytes_max: usize) -> Result<BatchHeader> {
    let h = validate_header(batch, batch_bytes_max)?;
    if check_records(batch, &h, limits::BATCH_DECOMPRESSED_INLINE_BYTES_MAX)?.is_ok() {
        return Ok(h);
    }
    let b = batch.clone();
    glommio::executor()
        .spawn_blocking(move || check_records(&b, &h, limits::BATCH_DECOMPRESSED_BYTES_MAX))
        .await?
        .map_err(|_| too_large())?;
    Ok(h)
}

/// Checks a batch's records against its (validated) header; an inner
/// `Err` when a compressed body decompresses past `out_max` bytes.
fn check_records(
    batch: &[u8],
    h: &BatchHeader,
    out_max: usize,
) -> Result<std::result::Result<(), compressed::Walk>> {
    let body = &batch[HEADER_BYTES..];
    if h.compression() == 0 {
        let base = h.base_timestamp;
        let mut overflow = None;
        walk_records(body, h.record_count, |delta, ts_delta| {
            if overflow.is_none() && base.checked_add(ts_delta).is_none() {
                overflow = Some((delta, ts_delta));
            }
        })?;
        if let Some((delta, ts_delta)) = overflow {
            return Err(StorageError::InvalidRecord(format!(
                "record {delta}: timestamp delta {ts_delta} overflows"
            )));
        }
        return Ok(Ok(()));
    }
    compressed::check(
        h.compression(),
        body,
        h.record_count,
        h.base_timestamp,
        out_max,
    )
}

/// A stored batch: its (stamped) header and its body, kept apart so a batch
/// that arrived in a network buffer is stored and served without copying
/// the body. A batch read ahead from disk across two read buffers keeps its
/// body in pieces (`more`), served as they are rather than joined.
#[derive(Clone, Debug)]
pub struct Batch {
    head: Bytes,
    body: Bytes,
    /// The rest of the body, in order, when it lies in more than one buffer;
    /// usually empty (and then allocates nothing).
    more: Vec<Bytes>,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

impl Batch {
    /// Wraps bytes already validated and stamped (read back from disk).
    pub(crate) fn from_stored(bytes: Bytes, h: &BatchHeader) -> Batch {
        Batch {
            head: bytes.slice(..HEADER_BYTES),
            body: bytes.slice(HEADER_BYTES..),
            more: Vec::new(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        }
    }

    /// Stamps a validated producer batch with its offset and leader epoch,
    /// and with the append time when `log_append_time_ms` is given (which
    /// changes bytes inside the CRC, so the CRC is recomputed).
    pub(crate) fn stamp(
        batch: Bytes,
        h: &BatchHeader,
        base_offset: i64,
        leader_epoch: i32,
        log_append_time_ms: Option<i64>,
    ) -> Batch {
        let mut head = BytesMut::from(&batch[..HEADER_BYTES]);
        let body = batch.slice(HEADER_BYTES..);
        head[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
        head[LEADER_EPOCH..LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
        let mut max_timestamp = h.max_timestamp;
        if let Some(now) = log_append_time_ms {
            let attrs = h.attributes | ATTR_LOG_APPEND_TIME;
            head[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
            head[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now.to_be_bytes());
            max_timestamp = now;
            let crc = crc_of(&head, &body);
            head[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        }
        Batch {
            head: head.freeze(),
            body,
            more: Vec::new(),
            base_offset,
            last_offset: base_offset + h.last_offset_delta as i64,
            max_timestamp,
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn last_offset(&self) -> i64 {
        self.last_offset
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    pub fn len(&self) -> usize {
        self.chunks().map(Bytes::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn header(&self) -> BatchHeader {
        BatchHeader::parse(&self.head).expect("a stored batch always has a whole header")
    }
    /// The batch as the slices to write to a socket, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &Bytes> {
        [&self.head, &self.body].into_iter().chain(&self.more)
    }
    /// The body as one buffer: shared when it is one piece, joined (a copy)
    /// when it was read in pieces.
    pub fn body(&self) -> Bytes {
        if self.more.is_empty() {
            return self.body.clone();
        }
        let mut b = BytesMut::with_capacity(self.len() - HEADER_BYTES);
        b.extend_from_slice(&self.body);
        for p in &self.more {
            b.extend_from_slice(p);
        }
        b.freeze()
    }
    /// The batch as one contiguous buffer (copies; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for c in self.chunks() {
            v.extend_from_slice(c);
        }
        v
    }
    /// The first record in this batch whose timestamp is >= `ts`, when the
    /// records can be read without decompressing; otherwise the base offset.
    pub fn first_offset_at_or_after(&self, ts: i64) -> i64 {
        let h = self.header();
        if h.is_log_append_time() || h.compression() != 0 {
            return self.base_offset;
        }
        let mut found = None;
        let _ = walk_records(&self.body(), h.record_count, |delta, ts_delta| {
            if found.is_none() && h.base_timestamp.saturating_add(ts_delta) >= ts {
                found = Some(self.base_offset + delta as i64);
            }
        });
        found.unwrap_or(self.base_offset)
    }
    /// Checks the CRC again (pair assertion with the check on append).
    pub fn crc_ok(&self) -> bool {
        let h = self.header();
        let crc = self
            .more
            .iter()
            .fold(crc_of(&self.head, &self.body), |c, p| {
                crc32c::crc32c_append(c, p)
            });
        crc == h.crc
    }

    /// Assembles a stored batch read in pieces (`parts`, in order, holding
    /// exactly the batch, header first), checking its CRC over the pieces.
    /// Nothing is copied unless the header itself is split across pieces.
    pub(crate) fn from_stored_parts(
        parts: Vec<Bytes>,
        h: &BatchHeader,
    ) -> std::result::Result<Batch, String> {
        let mut parts = parts.into_iter().filter(|p| !p.is_empty());
        let mut first = parts.next().unwrap_or_default();
        let head = if first.len() >= HEADER_BYTES {
            first.split_to(HEADER_BYTES)
        } else {
            let mut head = BytesMut::with_capacity(HEADER_BYTES);
            head.extend_from_slice(&first);
            first = Bytes::new();
            while head.len() < HEADER_BYTES {
                let mut p = parts.next().ok_or_else(|| "truncated header".to_string())?;
                let n = (HEADER_BYTES - head.len()).min(p.len());
                head.extend_from_slice(&p.split_to(n));
                first = p;
            }
            head.freeze()
        };
        let mut rest = std::iter::once(first)
            .chain(parts)
            .filter(|p| !p.is_empty());
        let body = rest.next().unwrap_or_default();
        let batch = Batch {
            head,
            body,
            more: rest.collect(),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        };
        if BatchHeader::parse(&batch.head) != Some(*h) || h.total_bytes() != Some(batch.len()) {
            return Err("the pieces do not hold exactly this batch".to_string());
        }
        if !batch.crc_ok() {
            return Err(format!(
                "crc {:#010x} does not match the batch's bytes",
                h.crc
            ));
        }
        Ok(batch)
    }
}

/// Validates a stored batch found at the start of `b` (read from disk),
/// expecting it to start at `expected_base` when given. Returns its header
/// and total length, or a reason it is not a whole, intact batch.
pub(crate) fn check_stored(
    b: &[u8],
    expected_base: Option<i64>,
) -> std::result::Result<(BatchHeader, usize), String> {
    let (h, len) = check_stored_header(b, expected_base)?;
    if b.len() < len {
        return Err(format!("truncated: {} of {len} bytes", b.len()));
    }
    let crc = crc32c::crc32c(&b[CRC_START..len]);
    if crc != h.crc {
        return Err(format!("crc {:#010x}, computed {crc:#010x}", h.crc));
    }
    Ok((h, len))
}

/// The checks of [`check_stored`] that need only the header at the start
/// of `b`: it does not look at the rest of the batch, nor at its CRC.
pub(crate) fn check_stored_header(
    b: &[u8],
    expected_base: Option<i64>,
) -> std::result::Result<(BatchHeader, usize), String> {
    let h = BatchHeader::parse(b).ok_or_else(|| "truncated header".to_string())?;
    if h.magic != MAGIC_V2 {
        return Err(format!("magic {}", h.magic));
    }
    let len = h
        .total_bytes()
        .filter(|l| (HEADER_BYTES..=sluice_tuning::limits::BATCH_BYTES_MAX).contains(l))
        .ok_or_else(|| format!("batch length {}", h.batch_length))?;
    if h.last_offset_delta < 0 || h.base_offset < 0 {
        return Err(format!(
            "offsets {} + {}",
            h.base_offset, h.last_offset_delta
        ));
    }
    if let Some(e) = expected_base {
        if h.base_offset != e {
            return Err(format!(
                "base offset {} where {e} was expected",
                h.base_offset
            ));
        }
    }
    Ok((h, len))
}

/// Builds v2 record batches, for tests, benchmarks and tools.
pub mod build {
    use super::*;

    pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            if z < 0x80 {
                out.push(z as u8);
                return;
            }
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
    }

    /// One record: key, value and a timestamp.
    #[derive(Clone, Debug)]
    pub struct Record<'a> {
        pub key: Option<&'a [u8]>,
        pub value: &'a [u8],
        pub timestamp: i64,
    }

    /// An uncompressed v2 batch holding `records` (at least one), with a
    /// correct CRC, base offset 0 and the given producer fields unset.
    pub fn batch(records: &[Record<'_>]) -> Bytes {
        assert!(!records.is_empty());
        let base_ts = records[0].timestamp;
        let max_ts = records.iter().map(|r| r.timestamp).max().unwrap();
        let mut body = Vec::new();
        let mut rec = Vec::new();
        for (i, r) in records.iter().enumerate() {
            rec.clear();
            rec.push(0); // attributes
            put_varlong(&mut rec, r.timestamp - base_ts);
            put_varlong(&mut rec, i as i64);
            match r.key {
                Some(k) => {
                    put_varlong(&mut rec, k.len() as i64);
                    rec.extend_from_slice(k);
                }
                None => put_varlong(&mut rec, -1),
            }
            put_varlong(&mut rec, r.value.len() as i64);
            rec.extend_from_slice(r.value);
            put_varlong(&mut rec, 0); // headers
            put_varlong(&mut body, rec.len() as i64);
            body.extend_from_slice(&rec);
        }
        let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(
            &((HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(MAGIC_V2 as u8);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
        b.extend_from_slice(&base_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(records.len() as i32).to_be_bytes());
        b.extend_from_slice(&body);
        reseal(&mut b);
        Bytes::from(b)
    }

    /// Recomputes the CRC of a batch after its covered bytes were edited.
    pub fn reseal(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }

    /// `count` records of `value_bytes` each, all at `timestamp`.
    pub fn uniform(count: usize, value_bytes: usize, timestamp: i64) -> Bytes {
        let value = vec![0x5a; value_bytes];
        let recs: Vec<Record<'_>> = (0..count)
            .map(|_| Record {
                key: None,
                value: &value,
                timestamp,
            })
            .collect();
        batch(&recs)
    }
}

/// Splits a `records` field holding several batches into whole batches.
/// Trailing bytes that do not form a whole batch are an error.
pub fn split_batches(records: &Bytes) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        if rest.len() < LOG_OVERHEAD_BYTES {
            return Err(StorageError::CorruptMessage(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        let len = i32_at(rest, BATCH_LENGTH);
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(LOG_OVERHEAD_BYTES))
            .filter(|&t| t <= rest.len() && t >= HEADER_BYTES)
            .ok_or_else(|| {
                StorageError::CorruptMessage(format!(
                    "batch length {len} with {} bytes left",
                    rest.len()
                ))
            })?;
        out.push(records.slice(pos..pos + total));
        pos += total;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::build::*;

    /// Keys and values read back as they were built.
    #[test]
    fn read_records_gives_keys_and_values() {
        let b = batch(&[
            Record {
                key: Some(b"k1"),
                value: b"v1",
                timestamp: 5,
            },
            Record {
                key: None,
                value: b"",
                timestamp: 6,
            },
            Record {
                key: Some(b""),
                value: b"third value",
                timestamp: 7,
            },
        ]);
        let mut got = Vec::new();
        super::read_records(&b[super::HEADER_BYTES..], 3, |k, v| {
            got.push((k.map(|k| k.to_vec()), v.to_vec()))
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (Some(b"k1".to_vec()), b"v1".to_vec()),
                (None, vec![]),
                (Some(vec![]), b"third value".to_vec())
            ]
        );
        assert!(super::read_records(&b[super::HEADER_BYTES..b.len() - 3], 3, |_, _| {}).is_err());
    }
    use super::*;

    // Proves a batch built by the test builder passes validation and that a
    // stamp changes offsets and epoch without breaking the CRC.
    #[test]
    fn build_validate_stamp() {
        let b = uniform(3, 10, 1000);
        let h = validate(&b, 1 << 20).unwrap();
        assert_eq!(h.record_count, 3);
        let s = Batch::stamp(b.clone(), &h, 42, 7, None);
        assert_eq!(s.base_offset(), 42);
        assert_eq!(s.last_offset(), 44);
        assert!(s.crc_ok());
        assert_eq!(s.header().partition_leader_epoch, 7);
        let t = Batch::stamp(b, &h, 0, 0, Some(5555));
        assert!(t.crc_ok());
        assert!(t.header().is_log_append_time());
        assert_eq!(t.max_timestamp(), 5555);
        assert!(check_stored(&t.to_vec(), Some(0)).is_ok());
    }

    // Proves varint round trips, including negative and large values.
    #[test]
    fn varlong_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            64,
            -65,
            300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            build::put_varlong(&mut out, v);
            let mut p = 0;
            assert_eq!(read_varlong(&out, &mut p), Some(v));
            assert_eq!(p, out.len());
        }
    }

    // Proves split_batches cuts concatenated batches and rejects a ragged end.
    #[test]
    fn split() {
        let a = uniform(1, 5, 1);
        let b = uniform(2, 7, 2);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let parts = split_batches(&Bytes::from(all.clone())).unwrap();
        assert_eq!(parts, vec![a, b]);
        all.push(1);
        assert!(split_batches(&Bytes::from(all)).is_err());
    }

    // Proves the record-level timestamp lookup inside one batch.
    #[test]
    fn first_offset_by_time() {
        let v = [1u8];
        let recs: Vec<Record<'_>> = [10, 30, 20, 40]
            .iter()
            .map(|&t| Record {
                key: None,
                value: &v,
                timestamp: t,
            })
            .collect();
        let b = batch(&recs);
        let h = validate(&b, 1 << 20).unwrap();
        let s = Batch::stamp(b, &h, 100, 0, None);
        assert_eq!(s.first_offset_at_or_after(5), 100);
        assert_eq!(s.first_offset_at_or_after(25), 101);
        assert_eq!(s.first_offset_at_or_after(40), 103);
    }

    // Proves a batch assembled from pieces, whatever the cut points (in
    // its header or its body, into two or three pieces), is the same
    // batch: bytes, offsets, CRC, records; and that a flipped body bit is
    // refused rather than served.
    #[test]
    fn batches_from_pieces_are_whole_and_checked() {
        let stored = uniform(5, 40, 7).to_vec();
        let h = BatchHeader::parse(&stored).unwrap();
        let all = Bytes::from(stored.clone());
        let want = Batch::from_stored(all.clone(), &h);
        let n = stored.len();
        for a in 0..=n {
            for b in [a, a + 1, a + 13, n]
                .into_iter()
                .filter(|&b| b >= a && b <= n)
            {
                let parts = vec![all.slice(..a), all.slice(a..b), all.slice(b..)];
                let got = Batch::from_stored_parts(parts, &h).unwrap();
                assert_eq!(got.to_vec(), stored, "cut at {a} and {b}");
                assert!(got.crc_ok());
                assert_eq!(got.len(), n);
                assert_eq!(got.body(), want.body());
                assert_eq!(got.header(), h);
                assert_eq!(got.next_offset(), want.next_offset());
                assert_eq!(
                    got.first_offset_at_or_after(7),
                    want.first_offset_at_or_after(7)
                );
            }
        }
        let mut bad = stored.clone();
        bad[n - 3] ^= 0x10;
        let bad = Bytes::from(bad);
        let parts = vec![bad.slice(..100), bad.slice(100..)];
        assert!(Batch::from_stored_parts(parts, &h).is_err());
        // Pieces holding less, or more, than the batch are refused.
        assert!(Batch::from_stored_parts(vec![all.slice(..n - 1)], &h).is_err());
        let mut longer = stored.clone();
        longer.push(0);
        assert!(Batch::from_stored_parts(vec![Bytes::from(longer)], &h).is_err());
        assert!(Batch::from_stored_parts(vec![all.slice(..30)], &h).is_err());
    }
}

//! Record batches (v2) as a client builds and reads them: records appended
//! one at a time into a batch, compressed when it is closed; and a walk
//! over the records of fetched batches, compressed or not.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor, Decompressor};

/// Bytes of a v2 batch header, up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;

/// A batch's compression codec (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Compression, String> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return Err(format!("{s:?}: expected none, gzip, snappy, lz4 or zstd")),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("record batch magic {0} (only v2 is read)")]
    Magic(i8),
    #[error("compression: {0}")]
    Codec(String),
}

fn put_varint(b: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    b.put_u8(z as u8);
}

fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.max(1).leading_zeros() as usize).div_ceil(7).max(1)
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<i64, RecordsError> {
    let mut z = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(RecordsError::Malformed("varint"))?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(RecordsError::Malformed("varint too long"))
}

/// One batch being filled: records go straight into its buffer, behind
/// room for the header, so an uncompressed batch is finished in place.
pub struct BatchBuilder {
    buf: BytesMut,
    capacity: usize,
    count: i32,
    first_ts: i64,
    max_ts: i64,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(capacity.max(BATCH_HEADER_BYTES));
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            capacity,
            count: 0,
            first_ts: 0,
            max_ts: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the batch so far (before compression).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record with timestamp `ts_ms`.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], ts_ms: i64) {
        self.push_parts(key, &[value], ts_ms)
    }

    /// Appends a record whose value is `parts` one after another.
    pub fn push_parts(&mut self, key: Option<&[u8]>, parts: &[&[u8]], ts_ms: i64) {
        if self.count == 0 {
            self.first_ts = ts_ms;
            self.max_ts = ts_ms;
        }
        self.max_ts = self.max_ts.max(ts_ms);
        let ts_delta = ts_ms - self.first_ts;
        let offset_delta = self.count as i64;
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len: usize = parts.iter().map(|p| p.len()).sum();
        let body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, |k| k.len())
            + varint_len(value_len as i64)
            + value_len
            + 1;
        let r = &mut self.buf;
        put_varint(r, body as i64);
        r.put_u8(0);
        put_varint(r, ts_delta);
        put_varint(r, offset_delta);
        put_varint(r, key_len);
        if let Some(k) = key {
            r.put_slice(k);
        }
        put_varint(r, value_len as i64);
        for p in parts {
            r.put_slice(p);
        }
        put_varint(r, 0);
        self.count += 1;
    }

    /// The finished batch (base offset 0, no producer id), compressed with
    /// `compression`; the builder is empty again afterwards.
    pub fn finish(&mut self, compression: Compression) -> Result<Bytes, RecordsError> {
        let mut out = match compression {
            Compression::None => self.buf.split(),
            codec_id => {
                let records = self.buf.split().freeze();
                let body = &records[BATCH_HEADER_BYTES..];
                let mut out = BytesMut::with_capacity(BATCH_HEADER_BYTES + body.len() / 2);
                out.resize(BATCH_HEADER_BYTES, 0);
                let fill = |tmp: &mut BytesMut| -> anyhow::Result<()> {
                    tmp.put_slice(body);
                    Ok(())
                };
                let r = match codec_id {
                    Compression::Gzip => codec::Gzip::compress(&mut out, fill),
                    Compression::Snappy => codec::Snappy::compress(&mut out, fill),
                    Compression::Lz4 => codec::Lz4::compress(&mut out, fill),
                    _ => codec::Zstd::compress(&mut out, fill),
                };
                r.map_err(|e| RecordsError::Codec(e.to_string()))?;
                out
            }
        };
        let len = (out.len() - 12) as i32;
        let mut h = &mut out[..BATCH_HEADER_BYTES];
        h.put_i64(0); // base offset
        h.put_i32(len);
        h.put_i32(-1); // partition leader epoch
        h.put_i8(2); // magic
        h.put_u32(0); // crc, set below
        h.put_i16(compression as i16);
        h.put_i32(self.count - 1);
        h.put_i64(self.first_ts);
        h.put_i64(self.max_ts);
        h.put_i64(-1); // producer id
        h.put_i16(-1); // producer epoch
        h.put_i32(-1); // base sequence
        h.put_i32(self.count);
        let crc = crc32c::crc32c(&out[21..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        self.count = 0;
        self.buf.reserve(self.capacity.max(BATCH_HEADER_BYTES));
        self.buf.resize(BATCH_HEADER_BYTES, 0);
        Ok(out.freeze())
    }
}

/// A record read back: its offset, timestamp, key and value.
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The whole batch at the start of `data`: (its length, base offset, last
/// offset delta), or `None` when `data` holds no whole batch (a Fetch answer
/// may cut the last one).
fn whole_batch(data: &[u8]) -> Result<Option<(usize, i64, i32)>, RecordsError> {
    if data.len() < BATCH_HEADER_BYTES {
        return Ok(None);
    }
    let base = i64::from_be_bytes(data[0..8].try_into().expect("8 bytes"));
    let len = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
    if len < (BATCH_HEADER_BYTES - 12) as i32 {
        return Err(RecordsError::Malformed("batch length"));
    }
    let total = 12 + len as usize;
    if data.len() < total {
        return Ok(None);
    }
    let magic = data[16] as i8;
    if magic != 2 {
        return Err(RecordsError::Magic(magic));
    }
    let last_delta = i32::from_be_bytes(data[23..27].try_into().expect("4 bytes"));
    Ok(Some((total, base, last_delta)))
}

/// The offset after the last whole batch in `data` (what
/// [`for_each_record`] returns), reading only the batch headers.
pub fn next_offset(mut data: &[u8]) -> Result<Option<i64>, RecordsError> {
    let mut next = None;
    while let Some((total, base, last_delta)) = whole_batch(data)? {
        next = Some(base + last_delta as i64 + 1);
        data = &data[total..];
    }
    Ok(next)
}

/// Calls `f` for every record of the batches in `data` (a Fetch answer's
/// records), decompressing where needed. A partial batch at the end (a
/// Fetch answer may cut one) is skipped. Returns the offset after the last
/// whole batch, or `None` when there was none.
pub fn for_each_record(
    mut data: &[u8],
    mut f: impl FnMut(RecordView<'_>),
) -> Result<Option<i64>, RecordsError> {
    let mut next = None;
    while let Some((total, base, last_delta)) = whole_batch(data)? {
        let batch = &data[..total];
        let attributes = i16::from_be_bytes([batch[21], batch[22]]);
        let first_ts = i64::from_be_bytes(batch[27..35].try_into().expect("8 bytes"));
        let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
        let body = &batch[BATCH_HEADER_BYTES..];
        let control = attributes & 0x20 != 0;
        let walk = |records: &[u8], f: &mut dyn FnMut(RecordView<'_>)| {
            walk_records(records, count, base, first_ts, control, f)
        };
        match attributes & 7 {
            0 => walk(body, &mut f)?,
            codec_id => {
                let mut src = Bytes::copy_from_slice(body);
                let plain = decompress(codec_id, &mut src)?;
                walk(&plain, &mut f)?
            }
        }
        next = Some(base + last_delta as i64 + 1);
        data = &data[total..];
    }
    Ok(next)
}

fn decompress(codec_id: i16, src: &mut Bytes) -> Result<Bytes, RecordsError> {
    let all = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.split_to(b.len())) };
    let r = match codec_id {
        1 => codec::Gzip::decompress(src, all),
        2 => codec::Snappy::decompress(src, all),
        3 => codec::Lz4::decompress(src, all),
        4 => codec::Zstd::decompress(src, all),
        other => return Err(RecordsError::Codec(format!("unknown codec {other}"))),
    };
    r.map_err(|e| RecordsError::Codec(e.to_string()))
}

fn walk_records(
    mut r: &[u8],
    count: i32,
    base: i64,
    first_ts: i64,
    control: bool,
    f: &mut dyn FnMut(RecordView<'_>),
) -> Result<(), RecordsError> {
    for _ in 0..count.max(0) {
        let mut at = 0;
        let len = get_varint(r, &mut at)?;
        let end = at
            .checked_add(usize::try_from(len).map_err(|_| RecordsError::Malformed("length"))?)
            .filter(|e| *e <= r.len())
            .ok_or(RecordsError::Malformed("record length"))?;
        at += 1; // attributes
        let ts_delta = get_varint(r, &mut at)?;
        let offset_delta = get_varint(r, &mut at)?;
        let field = |at: &mut usize| -> Result<Option<&[u8]>, RecordsError> {
            let n = get_varint(r, at)?;
            if n < 0 {
                return Ok(None);
            }
            let s = *at;
            let e = s
                .checked_add(n as usize)
                .filter(|e| *e <= end)
                .ok_or(RecordsError::Malformed("field length"))?;
            *at = e;
            Ok(Some(&r[s..e]))
        };
        let key = field(&mut at)?;
        let value = field(&mut at)?;
        if !control {
            f(RecordView {
                offset: base + offset_delta,
                timestamp: first_ts + ts_delta,
                key,
                value,
            });
        }
        r = &r[end..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression) {
        let mut b = BatchBuilder::new(4096);
        for i in 0..100i64 {
            let key = format!("k{i}");
            let value = vec![i as u8; (i as usize * 7) % 300];
            b.push((i % 3 != 0).then_some(key.as_bytes()), &value, 1_000 + i);
        }
        assert_eq!(b.len(), 100);
        let batch = b.finish(c).unwrap();
        assert!(b.is_empty());
        // The header's CRC covers what follows it.
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c::crc32c(&batch[21..]));
        let mut seen = Vec::new();
        let next = for_each_record(&batch, |r| {
            seen.push((
                r.offset,
                r.timestamp,
                r.key.map(|k| k.to_vec()),
                r.value.unwrap().to_vec(),
            ))
        })
        .unwrap();
        assert_eq!(next, Some(100));
        assert_eq!(seen.len(), 100);
        for (i, (offset, ts, key, value)) in seen.into_iter().enumerate() {
            assert_eq!(offset, i as i64);
            assert_eq!(ts, 1_000 + i as i64);
            assert_eq!(key, (i % 3 != 0).then(|| format!("k{i}").into_bytes()));
            assert_eq!(value, vec![i as u8; (i * 7) % 300]);
        }
    }

    #[test]
    fn batches_round_trip_with_every_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            roundtrip(c);
        }
    }

    #[test]
    fn a_cut_batch_at_the_end_is_skipped_and_garbage_is_an_error() {
        let mut b = BatchBuilder::new(1024);
        b.push(None, b"one", 1);
        let first = b.finish(Compression::None).unwrap();
        b.push(None, b"two", 2);
        let second = b.finish(Compression::None).unwrap();
        let mut data = first.to_vec();
        data.extend_from_slice(&second[..second.len() - 3]);
        let mut n = 0;
        assert_eq!(for_each_record(&data, |_| n += 1).unwrap(), Some(1));
        assert_eq!(n, 1);
        let mut bad = first.to_vec();
        bad[16] = 1;
        assert!(matches!(
            for_each_record(&bad, |_| {}),
            Err(RecordsError::Magic(1))
        ));
        let mut bad = first.to_vec();
        let l = bad.len();
        bad[l - 5] = 0x7e; // a value length (63) past the record's end
        assert!(for_each_record(&bad, |_| {}).is_err());
    }

    #[test]
    fn the_next_offset_is_read_off_the_batch_headers_alone() {
        let mut b = BatchBuilder::new(4096);
        let mut data = Vec::new();
        for (base, n) in [(0i64, 10), (10, 5), (15, 7)] {
            for i in 0..n {
                b.push(None, format!("v{i}").as_bytes(), 1);
            }
            let mut batch = b.finish(Compression::Lz4).unwrap().to_vec();
            batch[0..8].copy_from_slice(&base.to_be_bytes());
            data.extend_from_slice(&batch);
        }
        // The third batch cut short: neither reader counts it.
        data.truncate(data.len() - 1);
        let mut seen = 0;
        assert_eq!(for_each_record(&data, |_| seen += 1).unwrap(), Some(15));
        assert_eq!(seen, 15);
        assert_eq!(next_offset(&data).unwrap(), Some(15));
        assert_eq!(next_offset(&data[..30]).unwrap(), None);
        let mut bad = data.clone();
        bad[16] = 0;
        assert!(matches!(next_offset(&bad), Err(RecordsError::Magic(0))));
    }
}

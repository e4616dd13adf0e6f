//! Checks of a compressed batch's records, as Kafka makes them on append:
//! the body is decompressed as a stream and its records walked as they
//! come out, so the header's record count and offset deltas are proved
//! against the records themselves instead of trusted as sent.
//!
//! Memory is bounded whatever the body claims: the walk holds one read
//! buffer, never the decompressed batch (snappy holds one block, whose
//! size is checked before it is allocated), and a body that decompresses
//! to more than its caller's bound is refused once it passes it (a
//! decompression bomb costs that many bytes of CPU, not of memory). The
//! bound also makes the CPU cost a caller's choice: the log checks small
//! bounds on the shard and larger ones on the blocking pool (see
//! `validate_async`).

use std::io::{self, BufRead, BufReader, Read};

use crate::error::{Result, StorageError};

/// Codec ids of the attributes' low bits.
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The largest zstd window a batch may ask for (2^24, 16 MiB): the
/// decoder allocates the window a frame's header asks for, so an
/// untrusted frame must not choose it freely.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Why a walk stopped short of a verdict.
#[derive(Debug)]
pub enum Walk {
    /// The body decompressed past `out_max` bytes before its records
    /// ended: check it again with a larger bound, or refuse it.
    TooLarge,
}

/// Decompresses `body` with `codec` and checks that it holds exactly
/// `record_count` records with offset deltas 0, 1, 2 ... and timestamps
/// that `base_timestamp` plus their delta can express. `Ok(Err(TooLarge))`
/// when the records decompress to more than `out_max` bytes.
pub fn check(
    codec: i16,
    body: &[u8],
    record_count: i32,
    base_timestamp: i64,
    out_max: usize,
) -> Result<std::result::Result<(), Walk>> {
    let corrupt = |e: io::Error| StorageError::CorruptMessage(format!("codec {codec}: {e}"));
    let reader: Box<dyn Read + '_> = match codec {
        GZIP => Box::new(flate2::read::MultiGzDecoder::new(body)),
        SNAPPY => Box::new(SnappyReader::new(body, out_max)),
        LZ4 => Box::new(lz4::Decoder::new(body).map_err(corrupt)?),
        ZSTD => {
            let mut d = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(corrupt)?;
            Box::new(d)
        }
        c => {
            return Err(StorageError::InvalidRecord(format!(
                "unknown compression codec {c}"
            )))
        }
    };
    let mut r = BufReader::with_capacity(
        16 * 1024,
        Bounded {
            inner: reader,
            left: out_max as u64,
            over: false,
        },
    );
    match walk(&mut r, record_count, base_timestamp) {
        Ok(()) => Ok(Ok(())),
        Err(_) if r.get_ref().over => Ok(Err(Walk::TooLarge)),
        Err(WalkError::Io(e)) if e.kind() == io::ErrorKind::OutOfMemory => Ok(Err(Walk::TooLarge)),
        Err(WalkError::Io(e)) => Err(corrupt(e)),
        Err(WalkError::Bad(m)) => Err(StorageError::InvalidRecord(m)),
    }
}

/// A reader that fails once more than `left` bytes have come out of it.
struct Bounded<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.over = true;
            return Err(io::Error::other("decompressed past the bound"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

enum WalkError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Io(e)
    }
}

/// Reads a zig-zag varint, or `None` at a clean end of input.
fn read_varlong(r: &mut impl BufRead) -> std::result::Result<Option<i64>, WalkError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if r.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(WalkError::Bad("truncated varint".into()))
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(((value >> 1) as i64) ^ -((value & 1) as i64)));
        }
    }
    Err(WalkError::Bad("varint longer than 10 bytes".into()))
}

fn walk(
    r: &mut impl BufRead,
    record_count: i32,
    base_timestamp: i64,
) -> std::result::Result<(), WalkError> {
    for expected in 0..record_count {
        let bad = |what: &str| WalkError::Bad(format!("record {expected}: {what}"));
        let len = read_varlong(r)?.ok_or_else(|| {
            bad(&format!(
                "the records end after {expected} of the {record_count} the header claims"
            ))
        })?;
        let len = u64::try_from(len).map_err(|_| bad("negative length"))?;
        let mut rec = r.by_ref().take(len);
        let mut attributes = [0u8; 1];
        rec.read_exact(&mut attributes)
            .map_err(|_| bad("truncated attributes"))?;
        let ts_delta = read_varlong(&mut rec)?.ok_or_else(|| bad("truncated timestamp"))?;
        let off_delta = read_varlong(&mut rec)?.ok_or_else(|| bad("truncated offset delta"))?;
        if off_delta != i64::from(expected) {
            return Err(bad(&format!("offset delta {off_delta}")));
        }
        if base_timestamp.checked_add(ts_delta).is_none() {
            return Err(bad(&format!("timestamp delta {ts_delta} overflows")));
        }
        io::copy(&mut rec, &mut io::sink())?;
        if rec.limit() != 0 {
            return Err(bad("length runs past the batch"));
        }
    }
    let mut more = [0u8; 1];
    if r.read(&mut more)? != 0 {
        return Err(WalkError::Bad(format!(
            "bytes after the last of {record_count} records"
        )));
    }
    Ok(())
}

/// The snappy framing of Kafka's Java clients (xerial: a 16-byte magic
/// header, then blocks each behind a 4-byte length), or one raw snappy
/// block (librdkafka), as a reader. Each block's decompressed length is
/// read from its header and checked against the bound before the block
/// is decompressed.
struct SnappyReader<'a> {
    input: &'a [u8],
    xerial: bool,
    started: bool,
    block: Vec<u8>,
    at: usize,
    out_max: usize,
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

impl<'a> SnappyReader<'a> {
    fn new(input: &'a [u8], out_max: usize) -> SnappyReader<'a> {
        SnappyReader {
            input,
            xerial: input.starts_with(XERIAL_MAGIC),
            started: false,
            block: Vec::new(),
            at: 0,
            out_max,
        }
    }

    /// The next compressed block, or `None` at the end.
    fn next_compressed(&mut self) -> io::Result<Option<&'a [u8]>> {
        if !self.xerial {
            if self.started {
                return Ok(None);
            }
            self.started = true;
            return Ok(Some(self.input));
        }
        if !self.started {
            self.started = true;
            self.input = self.input.get(XERIAL_HEADER_BYTES..).unwrap_or_default();
        }
        if self.input.is_empty() {
            return Ok(None);
        }
        let len = self
            .input
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(|| io::Error::other("truncated snappy block length"))?;
        let block = self
            .input
            .get(4..4 + len)
            .ok_or_else(|| io::Error::other("snappy block runs past the batch"))?;
        self.input = &self.input[4 + len..];
        Ok(Some(block))
    }
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            let Some(compressed) = self.next_compressed()? else {
                return Ok(0);
            };
            let len = snap::raw::decompress_len(compressed).map_err(io::Error::other)?;
            if len > self.out_max {
                // The bound applies to the whole body, enforced by the
                // caller's `Bounded`; a block alone past it is refused
                // before it is allocated.
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "snappy block larger than the bound",
                ));
            }
            self.block.clear();
            self.block.resize(len, 0);
            let n = snap::raw::Decoder::new()
                .decompress(compressed, &mut self.block)
                .map_err(io::Error::other)?;
            self.block.truncate(n);
            self.at = 0;
        }
        let n = (self.block.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

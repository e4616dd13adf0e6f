//! Fuzzes record batch validation, the check every produced batch passes
//! before it is stored: any bytes end in a header or an error, never a
//! panic, an abort or memory past the decompression bound. Besides raw
//! bytes (resealed, so the CRC does not stop everything at the door),
//! inputs become real compressed batches: the fuzzer's bytes are the
//! records compressed with each codec under a header whose record count
//! it also picks, so every decompressor and the record walk behind it
//! see well-formed streams carrying hostile records.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use sluice_storage::batch::{self, build};
use sluice_tuning::limits::BATCH_BYTES_MAX;

const HEADER: usize = batch::HEADER_BYTES;

/// A v2 batch header for `count` records with `attributes`, then `body`.
fn batch_of(attributes: i16, count: i32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, sealed below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&count.wrapping_sub(1).to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(body);
    build::reseal(&mut b);
    b
}

fn compress(codec: i16, raw: &[u8]) -> Vec<u8> {
    match codec {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(raw).unwrap();
            e.finish().unwrap()
        }
        2 => snap::raw::Encoder::new().compress_vec(raw).unwrap(),
        3 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(raw).unwrap();
            e.finish().0
        }
        _ => zstd::bulk::compress(raw, 1).unwrap(),
    }
}

fn check(b: &[u8]) {
    if let Ok(h) = batch::validate(b, BATCH_BYTES_MAX) {
        // What validation accepts, the readers of the log can walk.
        if h.compression() == 0 {
            batch::walk_records(&b[HEADER..], h.record_count, |_, _| {})
                .expect("an accepted batch's records walk");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        // Raw bytes as a batch, resealed.
        0 => {
            let mut b = rest.to_vec();
            if b.len() >= HEADER {
                build::reseal(&mut b);
            }
            check(&b);
        }
        // Raw bytes as they are.
        1 => check(rest),
        // The bytes as records: uncompressed or under one of the codecs,
        // with a record count taken from the input.
        _ => {
            if rest.len() < 3 {
                return;
            }
            let codec = (rest[0] % 5) as i16;
            let count = i16::from_be_bytes([rest[1], rest[2]]) as i32;
            let raw = &rest[3..];
            let body = if codec == 0 {
                raw.to_vec()
            } else {
                compress(codec, raw)
            };
            check(&batch_of(codec, count, &body));
        }
    }
});

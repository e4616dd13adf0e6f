//! Compressed batches on append: every codec's records are decompressed
//! and checked against the header, as Kafka checks them, with memory and
//! shard time bounded; and timestamps that overflow are refused.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::build::{self, reseal};
use sluice_storage::batch::compressed::{GZIP, LZ4, SNAPPY, ZSTD};
use sluice_storage::StorageError;

const INVALID_RECORD: i16 = 87;
const CORRUPT_MESSAGE: i16 = 2;

/// Compresses the records of `plain` (an uncompressed batch) with
/// `codec` and claims `claimed` records in the header.
fn compress(plain: &Bytes, codec: i16, claimed: i32) -> Bytes {
    let body = &plain[61..];
    let packed = match codec {
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        SNAPPY => snap::raw::Encoder::new().compress_vec(body).unwrap(),
        LZ4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
            e.write_all(body).unwrap();
            let (out, r) = e.finish();
            r.unwrap();
            out
        }
        ZSTD => zstd::encode_all(body, 1).unwrap(),
        _ => unreachable!(),
    };
    seal(&plain[..61], &packed, codec, claimed)
}

/// The snappy framing of Kafka's Java clients: a magic header, then
/// blocks of at most 32 KiB each behind their length.
fn xerial_snappy(plain: &Bytes) -> Bytes {
    let mut out = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
    for block in plain[61..].chunks(32 * 1024) {
        let c = snap::raw::Encoder::new().compress_vec(block).unwrap();
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(&c);
    }
    let h = sluice_storage::BatchHeader::parse(plain).unwrap();
    seal(&plain[..61], &out, SNAPPY, h.record_count)
}

fn seal(head: &[u8], body: &[u8], codec: i16, claimed: i32) -> Bytes {
    let mut b = head.to_vec();
    b.extend_from_slice(body);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[21..23].copy_from_slice(&codec.to_be_bytes());
    b[23..27].copy_from_slice(&(claimed - 1).to_be_bytes());
    b[57..61].copy_from_slice(&claimed.to_be_bytes());
    reseal(&mut b);
    Bytes::from(b)
}

fn code(r: Result<sluice_storage::AppendInfo, StorageError>) -> i16 {
    match r {
        Ok(_) => 0,
        Err(e) => e.kafka_code(),
    }
}

// Every codec's batches are taken when their records match the header
// (xerial-framed snappy as the Java clients send it, and raw snappy as
// librdkafka sends it), and stored byte for byte as sent.
#[test]
fn compressed_batches_of_every_codec_are_stored_as_sent() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let plain = build::uniform(50, 100, 1000);
        let mut sent = Vec::new();
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            sent.push(compress(&plain, codec, 50));
        }
        sent.push(xerial_snappy(&build::uniform(2000, 100, 1000)));
        for b in &sent {
            log.append(b.clone()).await.unwrap();
        }
        let mut at = 0;
        for b in &sent {
            let got = log.read(at, 1).await.unwrap();
            let stored = got[0].to_vec();
            assert_eq!(
                stored[21..],
                b[21..],
                "stored as sent after the stamped fields"
            );
            at = got[0].next_offset();
        }
        assert_eq!(log.log_end_offset(), 4 * 50 + 2000);
    });
}

// A compressed batch whose header claims more or fewer records than its
// body holds is refused with INVALID_RECORD and nothing is written: the
// count is no longer trusted as sent. A header claiming 2^31-1 records
// over one record's body used to be taken, and the offsets it spent made
// the segment's next roll panic the shard.
#[test]
fn a_compressed_batch_whose_count_lies_is_refused() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let plain = build::uniform(3, 10, 1000);
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            for claimed in [1, 2, 4, i32::MAX] {
                let r = log.append(compress(&plain, codec, claimed)).await;
                assert_eq!(code(r), INVALID_RECORD, "codec {codec} claiming {claimed}");
            }
            // A body that is not the codec's at all.
            let mut junk = compress(&plain, codec, 3).to_vec();
            for byte in junk[61..].iter_mut() {
                *byte = 0xa5;
            }
            reseal(&mut junk);
            let r = log.append(Bytes::from(junk)).await;
            assert_eq!(code(r), CORRUPT_MESSAGE, "codec {codec} junk");
        }
        assert_eq!(log.log_end_offset(), 0, "nothing refused was written");
        let one = build::uniform(1, 10, 1000);
        for _ in 0..3 {
            log.append(one.clone()).await.unwrap();
        }
        assert_eq!(log.log_end_offset(), 3);
    });
}

// A batch that decompresses past the bound (a decompression bomb: a few
// hundred KiB of zstd that would make 80 MiB) is refused; one past the
// shard's inline bound but within the limit is checked on the blocking
// pool and taken.
#[test]
fn decompression_is_bounded() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let big = build::uniform(1, 4 << 20, 1000);
        let b = compress(&big, ZSTD, 1);
        assert!(b.len() < 64 * 1024, "{}", b.len());
        log.append(b).await.unwrap();
        let bomb = build::uniform(1, 80 << 20, 1000);
        let b = compress(&bomb, ZSTD, 1);
        assert!(b.len() < 1 << 20, "{}", b.len());
        assert_eq!(code(log.append(b).await), INVALID_RECORD);
        assert_eq!(log.log_end_offset(), 1);
    });
}

// A record whose timestamp delta overflows the batch's base timestamp is
// refused (it used to be added unchecked on reads).
#[test]
fn an_overflowing_timestamp_is_refused() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let recs = [
            build::Record {
                key: None,
                value: b"a",
                timestamp: 0,
            },
            build::Record {
                key: None,
                value: b"b",
                timestamp: 1_000,
            },
        ];
        let mut b = build::batch(&recs).to_vec();
        b[27..35].copy_from_slice(&(i64::MAX - 10).to_be_bytes());
        reseal(&mut b);
        let b = Bytes::from(b);
        assert_eq!(code(log.append(b.clone()).await), INVALID_RECORD);
        let plain = build::batch(&recs);
        let mut z = compress(&plain, ZSTD, 2).to_vec();
        z[27..35].copy_from_slice(&(i64::MAX - 10).to_be_bytes());
        reseal(&mut z);
        assert_eq!(code(log.append(Bytes::from(z)).await), INVALID_RECORD);
        assert_eq!(log.log_end_offset(), 0);
    });
}

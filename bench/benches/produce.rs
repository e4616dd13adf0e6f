//! Produce benchmark: the broker against its own storage path, in the same
//! run. Until the load generator exists, a small pipelined producer here
//! sends 1 KiB records in 16 KiB and 1 MiB batches with acks=all to a
//! `sluice serve` on one shard (pinned to CPU 0), and the storage engine
//! appends the same batches to a log on an executor pinned to CPU 0 with a
//! durable wait every N batches, as the storage benchmark does. The ratio
//! broker/storage is what the network, decoding and routing layers leave
//! of the storage path's throughput when both pay the same number of
//! fsyncs per byte: a closed-loop client with 2N requests in flight gets
//! groups of about N per sync (see the cases below); N in flight, which
//! halves the bytes per fsync, is reported too.
//!
//! Needs the release binary: `cargo build --release -p sluice-broker`, then
//! `cargo bench -p sluice-bench --bench produce`. SLUICE_BENCH_MIB
//! (default 512), SLUICE_BENCH_REPEATS (default 5), SLUICE_BENCH_DIR.
//! Writes `target/bench/produce.json`.

use std::path::{Path, PathBuf};

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::Placement;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_bench::{
    broker_bin, create_topic, frame, free_port, median, pin_this_thread, pipeline, serve,
};
use sluice_storage::batch::build;
use sluice_storage::{LogConfig, PartitionLog, ShardCache, SystemClock};
use sluice_tuning::{host, limits};

const RECORD_BYTES: usize = 1024;
const TOPIC: &str = "bench";

fn batches(batch_bytes: usize) -> Vec<Bytes> {
    let per = (batch_bytes / (RECORD_BYTES + 12)).max(1);
    (0..8)
        .map(|i| build::uniform(per, RECORD_BYTES, 1_700_000_000_000 + i))
        .collect()
}

/// The storage path: append, with a durable wait every `sync_every`.
fn storage_append(dir: PathBuf, total: u64, batch_bytes: usize, sync_every: usize) -> f64 {
    let io_memory =
        host::io_memory_per_executor(host::raise_memlock_limit(), 1).expect("locked-memory limit");
    sluice_storage::runtime::executor_builder(
        Placement::Fixed(0),
        io_memory,
        std::time::Duration::from_micros(sluice_tuning::limits::IDLE_POLL_US_DEFAULT),
    )
    .spawn(move || async move {
        let cfg = LogConfig {
            segment_bytes: limits::SEGMENT_BYTES_MAX,
            ..LogConfig::default()
        };
        let cache = ShardCache::new(sluice_bench::BENCH_CACHE_BYTES);
        let log = PartitionLog::open(&dir, cfg, &cache, Rc::new(SystemClock))
            .await
            .unwrap();
        let set = batches(batch_bytes);
        let started = Instant::now();
        let (mut written, mut i) = (0u64, 0usize);
        while written < total {
            let b = set[i % set.len()].clone();
            written += b.len() as u64;
            let info = log.append(b).await.unwrap();
            i += 1;
            if i.is_multiple_of(sync_every) {
                log.wait_durable(info.last_offset).await.unwrap();
            }
        }
        log.sync().await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        log.close().await.unwrap();
        written as f64 / secs
    })
    .unwrap()
    .join()
    .unwrap()
}

/// The broker path: `total` bytes of batches, `in_flight` acks=all
/// requests outstanding; returns bytes per second. The client is one
/// thread on the other CPU with a non-blocking socket and `poll`: it
/// writes every request the window allows as soon as the socket takes
/// them and parses answers out of large reads, so it measures the broker
/// rather than itself.
fn broker_produce(port: u16, total: u64, batch_bytes: usize, in_flight: usize) -> f64 {
    const VERSION: i16 = 9;
    let mut frames: Vec<Vec<u8>> = batches(batch_bytes)
        .into_iter()
        .map(|b| {
            let req = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(b)),
                    ])]);
            frame(ApiKey::Produce, VERSION, 0, &req)
        })
        .collect();
    let record_bytes = batches(batch_bytes)[0].len() as u64;
    let count = total.div_ceil(record_bytes) as usize;
    pin_this_thread(1);
    let hv = ApiKey::Produce.response_header_version(VERSION);
    let took = pipeline(
        port,
        count,
        in_flight,
        |i, out| {
            let n = frames.len();
            let f = &mut frames[i % n];
            f[8..12].copy_from_slice(&(i as i32).to_be_bytes());
            out.extend_from_slice(f);
        },
        |i, mut f| {
            let h = ResponseHeader::decode(&mut f, hv).unwrap();
            assert_eq!(h.correlation_id, i as i32);
            let resp = ProduceResponse::decode(&mut f, VERSION).unwrap();
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 0, "produce failed: {p:?}");
        },
    );
    (count as u64 * record_bytes) as f64 / took.as_secs_f64()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let total_mib = env("SLUICE_BENCH_MIB", if quick { 16 } else { 512 });
    let repeats = env("SLUICE_BENCH_REPEATS", if quick { 1 } else { 5 }) as usize;
    let dir = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-produce"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = broker_bin();
    let total = total_mib << 20;
    let mut json = Vec::new();
    println!(
        "produce benchmark: {total_mib} MiB per case, median of {repeats}, broker {}",
        bin.display()
    );
    // (batch bytes, storage: durable wait every N batches, broker: requests
    // in flight). A client that keeps W acks=all requests in flight gets
    // its answers in two alternating groups of about W/2 (those that
    // arrived during one sync are covered by the next), so a window of 2N
    // gives the broker the storage path's bytes per fsync; a window of N
    // gives it half as many bytes per fsync.
    for (batch_bytes, sync_every, in_flight) in [
        (16 * 1024, 64, 128),
        (16 * 1024, 64, 64),
        (1 << 20, 4, 8),
        (1 << 20, 4, 4),
    ] {
        let (mut s, mut b) = (Vec::new(), Vec::new());
        for round in 0..repeats {
            // Alternate which goes first, so neither always meets a disk
            // still busy with the other's writes.
            let run_storage = |s: &mut Vec<f64>| {
                let d = dir.join("storage");
                let _ = std::fs::remove_dir_all(&d);
                s.push(storage_append(d, total, batch_bytes, sync_every));
            };
            let run_broker = |b: &mut Vec<f64>| {
                let port = free_port();
                let _served = serve(&bin, &dir.join("broker"), port);
                create_topic(
                    port,
                    TOPIC,
                    1,
                    &[("segment.bytes", limits::SEGMENT_BYTES_MAX.to_string())],
                );
                b.push(broker_produce(port, total, batch_bytes, in_flight));
            };
            if round % 2 == 0 {
                run_storage(&mut s);
                run_broker(&mut b);
            } else {
                run_broker(&mut b);
                run_storage(&mut s);
            }
        }
        let per_round: Vec<String> = s
            .iter()
            .zip(&b)
            .map(|(s, b)| format!("{:.2}", b / s))
            .collect();
        let (s, b) = (median(s), median(b));
        let name = format!(
            "{} KiB batches, acks=all, {in_flight} in flight / durable every {sync_every}",
            batch_bytes / 1024
        );
        println!(
            "  {name:<40} broker {:>6.0} MiB/s   storage {:>6.0} MiB/s   broker/storage {:.2}   (per round {})",
            b / (1 << 20) as f64,
            s / (1 << 20) as f64,
            b / s,
            per_round.join(" ")
        );
        json.push(format!(
            "{{\"case\":\"{name}\",\"broker_bytes_per_sec\":{b:.0},\"storage_bytes_per_sec\":{s:.0},\"ratio\":{:.3}}}",
            b / s
        ));
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join(if quick {
            "produce-smoke.json"
        } else {
            "produce.json"
        }),
        format!(
            "{{\"mib\":{total_mib},\"repeats\":{repeats},\"cases\":[{}]}}\n",
            json.join(",")
        ),
    );
}

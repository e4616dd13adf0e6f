//! Power cuts at the moments that matter, each over many seeds of
//! `faults::power`: what the log called durable survives, and what
//! survives reads back whole, with no hole served as an error.

mod common;

use std::time::Duration;

use common::*;
use sluice_storage::{faults, LogConfig};

fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 256,
        ..small_config()
    }
}

const SEEDS: u64 = 40;

/// A one-record batch of exactly one page.
fn page_batch() -> bytes::Bytes {
    (3_900..4_096)
        .map(|v| sluice_storage::batch::build::uniform(1, v, 1_000))
        .find(|b| b.len() == 4096)
        .expect("some value size makes a one-page batch")
}

// After a process crash, recovery finds appends the kernel took but no
// fdatasync covered, and the log calls them durable from then on: so it
// must sync them as it opens. The old recovery did not, and a power cut
// after it lost batches below the durable offset it had reported.
#[test]
fn what_recovery_calls_durable_survives_a_power_cut() {
    for seed in 0..SEEDS {
        run(|| async move {
            let (dir, clock, cache) = fixture(1_700_000_000_000, 1 << 20);
            faults::power::arm();
            let mut rng = Rng(seed);
            let cfg = LogConfig {
                segment_bytes: 1 << 20,
                ..config()
            };
            let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
            // Batches of exactly one page, an even number of them: every
            // tail write is whole, so the file ends at a batch boundary
            // and recovery has no torn tail to cut (cutting one syncs).
            let page = page_batch();
            for _ in 0..2 * rng.range(4, 20) {
                log.append(page.clone()).await.unwrap();
            }
            let appended = log.log_end_offset();
            log.simulate_crash().await;
            drop(log);
            let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
            let durable = log.durable_offset();
            assert!(
                durable > 0,
                "seed {seed}: recovery found the written batches"
            );
            assert!(durable <= appended);
            drop(log);
            faults::power::power_cut(rng.next());
            let log = open(dir.path(), cfg, &cache, &clock).await;
            assert!(
                log.log_end_offset() >= durable,
                "seed {seed}: a power cut lost durable batches ({} < {durable})",
                log.log_end_offset()
            );
            let all = read_all(&log, 0).await;
            assert_eq!(
                all.last().map(|b| b.next_offset()),
                Some(log.log_end_offset())
            );
            log.close().await.unwrap();
            faults::power::disarm();
        });
    }
}

// Index entries reach their file every half second, whether or not the
// batches they point at were synced. Recovery trusts the last entry and
// validates only what follows it, so an entry that outlived a power cut
// while the data before it did not left a hole that was kept and served
// as an error forever. Entries must only be written for synced data.
#[test]
fn a_power_cut_leaves_no_hole_under_an_index_entry() {
    for seed in 0..SEEDS / 2 {
        run(|| async move {
            let (dir, clock, cache) = fixture(1_700_000_000_000, 1 << 20);
            faults::power::arm();
            let mut rng = Rng(seed);
            let cfg = LogConfig {
                segment_bytes: 1 << 20,
                ..config()
            };
            let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
            for _ in 0..10 {
                log.append(random_batch(&mut rng, &[1_000; 3], 300))
                    .await
                    .unwrap();
            }
            log.sync().await.unwrap();
            let synced = log.log_end_offset();
            for _ in 0..60 {
                log.append(random_batch(&mut rng, &[1_000; 3], 300))
                    .await
                    .unwrap();
            }
            // The flusher writes the index entries of what was appended.
            glommio::timer::sleep(Duration::from_millis(700)).await;
            log.simulate_crash().await;
            drop(log);
            faults::power::power_cut(rng.next());
            let log = open(dir.path(), cfg, &cache, &clock).await;
            let end = log.log_end_offset();
            assert!(end >= synced, "seed {seed}: lost synced batches");
            let mut at = 0;
            while at < end {
                let got = log.read(at, 1 << 20).await;
                let got = got.unwrap_or_else(|e| {
                    panic!("seed {seed}: offset {at} below the log end {end} reads as {e}")
                });
                at = got.last().unwrap().next_offset();
            }
            log.close().await.unwrap();
            faults::power::disarm();
        });
    }
}

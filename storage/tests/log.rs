//! Behaviour of the partition log one rule at a time: validation, group
//! commit, poisoning, timestamps, flush policy, cache, retention, limits.

mod common;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::build::{self, reseal};
use sluice_storage::notify::Notify;
use sluice_storage::{
    faults, kafka_code, LogConfig, ManualClock, PartitionLog, ShardCache, StorageError,
    SystemClock, TimestampType,
};

fn edit(b: &Bytes, f: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut v = b.to_vec();
    f(&mut v);
    Bytes::from(v)
}

// Proves each validation rule refuses its bad batch with the matching Kafka
// error code, and that a refused batch leaves the log untouched.
#[test]
fn bad_batches_are_refused_and_nothing_is_written() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let cfg = LogConfig {
            batch_bytes_max: 2000,
            ..small_config()
        };
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        let good = build::uniform(3, 20, 1000);
        log.append(good.clone()).await.unwrap();
        let cases: Vec<(&str, Bytes, i16)> = vec![
            (
                "shorter than a header",
                good.slice(..40),
                kafka_code::CORRUPT_MESSAGE,
            ),
            (
                "length says more than present",
                good.slice(..good.len() - 1),
                kafka_code::CORRUPT_MESSAGE,
            ),
            (
                "length says less than present",
                {
                    let mut v = good.to_vec();
                    v.push(0);
                    Bytes::from(v)
                },
                kafka_code::CORRUPT_MESSAGE,
            ),
            (
                "magic 1",
                edit(&good, |v| {
                    v[16] = 1;
                    reseal(v)
                }),
                kafka_code::CORRUPT_MESSAGE,
            ),
            (
                "bad crc",
                edit(&good, |v| {
                    let n = v.len();
                    v[n - 1] ^= 0x40
                }),
                kafka_code::CORRUPT_MESSAGE,
            ),
            (
                "record count 0",
                edit(&good, |v| {
                    v[57..61].copy_from_slice(&0i32.to_be_bytes());
                    reseal(v)
                }),
                kafka_code::INVALID_RECORD,
            ),
            (
                "record count disagrees with records",
                edit(&good, |v| {
                    v[57..61].copy_from_slice(&4i32.to_be_bytes());
                    v[23..27].copy_from_slice(&3i32.to_be_bytes());
                    reseal(v)
                }),
                kafka_code::INVALID_RECORD,
            ),
            (
                "last offset delta disagrees",
                edit(&good, |v| {
                    v[23..27].copy_from_slice(&5i32.to_be_bytes());
                    reseal(v)
                }),
                kafka_code::INVALID_RECORD,
            ),
            (
                "unknown codec",
                edit(&good, |v| {
                    v[22] = 6;
                    reseal(v)
                }),
                kafka_code::INVALID_RECORD,
            ),
            (
                "too large for the topic",
                build::uniform(40, 60, 1000),
                kafka_code::MESSAGE_TOO_LARGE,
            ),
        ];
        for (what, batch, code) in cases {
            let r = log.append(batch).await;
            match r {
                Err(e) => assert_eq!(e.kafka_code(), code, "{what}: {e}"),
                Ok(_) => panic!("{what}: accepted"),
            }
        }
        assert_eq!(log.log_end_offset(), 3, "refused batches take no offsets");
        assert_eq!(log.stats().appends, 1);
        log.close().await.unwrap();
        let log = open(dir.path(), cfg, &cache, &clock).await;
        assert_eq!(log.log_end_offset(), 3, "and nothing reached the disk");
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 1);
    });
}

// Proves concurrent waiters share fdatasyncs: many appends awaited
// together need far fewer syncs than appends.
#[test]
fn group_commit_shares_syncs_between_waiters() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let producers = 64;
        let mut tasks = Vec::new();
        for i in 0..producers {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let info = log.append(build::uniform(2, 50, i)).await.unwrap();
                log.wait_durable(info.last_offset).await.unwrap();
                assert!(log.durable_offset() > info.last_offset);
                info.base_offset
            }));
        }
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await);
        }
        bases.sort();
        assert_eq!(bases, (0..producers).map(|i| i * 2).collect::<Vec<_>>());
        let syncs = log.stats().syncs;
        assert!(
            syncs >= 1 && syncs <= producers as u64 / 4,
            "{syncs} syncs for {producers} waiters"
        );
        log.close().await.unwrap();
    });
}

// Proves a group commit releases all of its waiters in one pass: a task
// woken by the first waiter to return (as a connection's writer is) runs
// only after every other waiter of that sync has returned too, so their
// answers can leave together.
#[test]
fn a_group_commit_releases_its_waiters_together() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let waiters = 32;
        let mut lasts = Vec::new();
        for i in 0..waiters {
            lasts.push(
                log.append(build::uniform(1, 20, i))
                    .await
                    .unwrap()
                    .last_offset,
            );
        }
        let done = Rc::new(std::cell::Cell::new(0usize));
        let first_back = Rc::new(Notify::default());
        let mut tasks = Vec::new();
        for last in lasts {
            let (log, done, first_back) = (log.clone(), done.clone(), first_back.clone());
            tasks.push(glommio::spawn_local(async move {
                log.wait_durable(last).await.unwrap();
                done.set(done.get() + 1);
                first_back.notify_all();
            }));
        }
        let observer = {
            let (done, first_back) = (done.clone(), first_back.clone());
            glommio::spawn_local(async move {
                first_back.changed(0).await;
                done.get()
            })
        };
        let seen = observer.await;
        for t in tasks {
            t.await;
        }
        assert_eq!(log.stats().syncs, 1, "one sync covered every append");
        assert_eq!(
            seen, waiters as usize,
            "every waiter of the sync had returned when the first one's wake-up ran"
        );
        log.close().await.unwrap();
    });
}

// Proves a waiter dropped while it makes the sync (its request went away)
// leaves the others to make their own instead of waiting for it forever.
#[test]
fn a_dropped_syncer_does_not_strand_the_other_waiters() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let a = log.append(build::uniform(1, 20, 1)).await.unwrap();
        let mut syncer = Box::pin(log.wait_durable(a.last_offset));
        assert!(
            futures_lite::future::poll_once(&mut syncer).await.is_none(),
            "the first waiter is making the sync"
        );
        let waiter = glommio::spawn_local({
            let log = log.clone();
            async move { log.wait_durable(a.last_offset).await }
        });
        glommio::executor().yield_task_queue_now().await;
        drop(syncer);
        let r = glommio::timer::timeout(Duration::from_secs(20), async { Ok(waiter.await) }).await;
        assert!(
            matches!(r, Ok(Ok(()))),
            "the waiter made its own sync: {r:?}"
        );
        assert!(log.durable_offset() > a.last_offset);
        log.close().await.unwrap();
    });
}

// Proves an fsync failure poisons the log: the waiter gets an error and
// nothing is acknowledged afterwards until the log is reopened.
#[test]
fn fsync_failure_poisons_until_reopen() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let a = log.append(build::uniform(1, 10, 1)).await.unwrap();
        log.wait_durable(a.last_offset).await.unwrap();
        let b = log.append(build::uniform(1, 10, 2)).await.unwrap();
        faults::fail_next_syncs(1);
        let r = log.wait_durable(b.last_offset).await;
        assert!(matches!(r, Err(StorageError::Io { .. })), "{r:?}");
        assert!(log.is_poisoned());
        assert!(matches!(
            log.wait_durable(b.last_offset).await,
            Err(StorageError::Poisoned(_))
        ));
        assert!(matches!(
            log.append(build::uniform(1, 10, 3)).await,
            Err(StorageError::Poisoned(_))
        ));
        assert_eq!(
            log.durable_offset(),
            1,
            "the failed sync acknowledged nothing"
        );
        log.simulate_crash().await;
        drop(log);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        assert!(!log.is_poisoned());
        assert!(log.log_end_offset() >= 1);
        let c = log.append(build::uniform(1, 10, 4)).await.unwrap();
        log.wait_durable(c.last_offset).await.unwrap();
        log.close().await.unwrap();
    });
}

// Proves a failed data write also poisons the log.
#[test]
fn write_failure_poisons() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let a = log.append(build::uniform(1, 10, 1)).await.unwrap();
        faults::fail_next_writes(1);
        assert!(log.wait_durable(a.last_offset).await.is_err());
        assert!(log.is_poisoned());
        assert!(log.append(build::uniform(1, 10, 1)).await.is_err());
    });
}

// Proves LogAppendTime topics get the append time written into the batch
// (attribute bit and max timestamp, with a recomputed CRC) and looked up.
#[test]
fn log_append_time_is_stamped() {
    run(|| async {
        let (dir, clock, cache) = fixture(5_000, 0);
        let cfg = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        };
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        let a = log.append(build::uniform(2, 10, 1)).await.unwrap();
        assert_eq!(a.log_append_time_ms, 5_000);
        clock.set(9_000);
        log.append(build::uniform(2, 10, 1)).await.unwrap();
        log.close().await.unwrap();
        let log = open(dir.path(), cfg, &cache, &clock).await;
        let got = log.read(0, 1).await.unwrap();
        let h = got[0].header();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 5_000);
        assert!(got[0].crc_ok());
        assert_eq!(log.offset_for_timestamp(6_000).await.unwrap(), Some(2));
        assert_eq!(log.offset_for_timestamp(10_000).await.unwrap(), None);
        log.close().await.unwrap();
    });
}

// Proves the flush policy syncs appends nobody waits on, by bytes and by age.
#[test]
fn flush_policy_syncs_unwaited_appends() {
    run(|| async {
        let cache = ShardCache::new(1 << 20);
        for (bytes, ms) in [(1u64, 3_600_000u64), (u64::MAX, 20)] {
            let dir = tempdir();
            let cfg = LogConfig {
                flush_interval_bytes: bytes,
                flush_interval_ms: ms,
                ..small_config()
            };
            let log = PartitionLog::open(dir.path(), cfg, &cache, Rc::new(SystemClock))
                .await
                .unwrap();
            log.append(build::uniform(3, 10, 1)).await.unwrap();
            // Bounded wait for the background sync; the assertion is about
            // what happens, the bound only stops a broken policy hanging.
            for _ in 0..500 {
                if log.durable_offset() == 3 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                log.durable_offset(),
                3,
                "flush policy bytes={bytes} ms={ms}"
            );
            assert!(log.stats().syncs >= 1);
            log.close().await.unwrap();
        }
    });
}

// Proves a consumer following the producer is served from memory, without
// copying (the batch body is the producer's buffer), and a cold read is
// CRC-checked from disk once then cached.
#[test]
fn hot_reads_come_from_the_cache_without_copying() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 64 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let mut sent = Vec::new();
        for i in 0..50 {
            let b = build::uniform(4, 100, i);
            log.append(b.clone()).await.unwrap();
            sent.push(b);
        }
        let got = read_all(&log, 0).await;
        assert_eq!(got.len(), 50);
        // Batches this small were copied once on append (so the cache pins
        // no receive buffer); every read then serves that one copy.
        let twice = read_all(&log, 0).await;
        for ((g, t), s) in got.iter().zip(&twice).zip(&sent) {
            assert_eq!(&g.body()[..], &s[61..]);
            assert_eq!(
                g.body().as_ptr(),
                t.body().as_ptr(),
                "served from the cached batch, not copied per read"
            );
        }
        // A batch of a receive buffer's size or more is served from the
        // producer's own buffer.
        let big = build::uniform(200, 400, 60);
        assert!(big.len() >= sluice_tuning::limits::CACHE_COPY_BATCH_BYTES_MAX);
        let info = log.append(big.clone()).await.unwrap();
        let got_big = log.read(info.base_offset, 1 << 20).await.unwrap();
        assert_eq!(
            got_big[0].body().as_ptr(),
            big[61..].as_ptr(),
            "served from the producer's buffer"
        );
        assert_eq!(log.stats().disk_reads, 0);
        log.close().await.unwrap();
        drop(log);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let cold = read_all(&log, 0).await;
        let disk_reads = log.stats().disk_reads;
        assert!(disk_reads >= 1);
        for (g, s) in cold.iter().zip(&sent) {
            assert_eq!(&g.to_vec()[61..], &s[61..]);
        }
        let again = read_all(&log, 0).await;
        assert_eq!(again.len(), 51);
        assert_eq!(
            log.stats().disk_reads,
            disk_reads,
            "second pass is served from memory"
        );
        assert!(cache.stats().used_bytes <= cache.budget_bytes());
        log.close().await.unwrap();
    });
}

// Proves the cache never exceeds its budget except for batches not yet
// written (the only copy), and that evicted batches still read from disk.
#[test]
fn cache_respects_its_budget() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 16 * 1024);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        for i in 0..200 {
            log.append(build::uniform(2, 200, i)).await.unwrap();
            // Unwritten bytes are bounded by the tail plus writes in flight.
            let cfg = small_config();
            let slack = cfg.tail_buffer_bytes * (cfg.write_behind + 1) + 1024;
            assert!(cache.stats().used_bytes <= cache.budget_bytes() + slack);
        }
        log.sync().await.unwrap();
        let all = read_all(&log, 0).await;
        assert_eq!(all.len(), 200);
        assert!(cache.stats().used_bytes <= cache.budget_bytes());
        assert!(cache.stats().evicted_bytes > 0);
        log.close().await.unwrap();
    });
}

// Proves a batch larger than max_bytes is still returned whole (KIP-74),
// including one larger than the read-ahead window, from disk.
#[test]
fn oversized_first_batch_is_returned_whole() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 0);
        let cfg = LogConfig {
            batch_bytes_max: 1 << 20,
            ..small_config()
        };
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        log.append(build::uniform(1, 10, 1)).await.unwrap();
        let big = build::uniform(3, 20_000, 1);
        log.append(big.clone()).await.unwrap();
        log.append(build::uniform(1, 10, 1)).await.unwrap();
        log.close().await.unwrap();
        let log = open(dir.path(), cfg, &cache, &clock).await;
        let got = log.read(1, 100).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].to_vec()[61..], &big[61..]);
        assert_eq!(
            log.read(2, 100).await.unwrap()[0].base_offset(),
            1,
            "a read inside a batch returns it whole"
        );
        log.close().await.unwrap();
    });
}

// Proves segments roll by size and retention deletes their files.
#[test]
fn roll_and_retention_delete_files() {
    run(|| async {
        let (dir, clock, cache) = fixture(1_000_000, 1 << 20);
        let mut cfg = small_config();
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        for _ in 0..100 {
            log.append(build::uniform(2, 300, 1_000_000)).await.unwrap();
        }
        let segs = log.segments();
        assert!(segs.len() > 3, "rolled into {} segments", segs.len());
        assert!(segs.iter().all(|s| s.bytes <= cfg.segment_bytes));
        log.set_high_watermark(log.log_end_offset());
        clock.advance(10_000);
        cfg.retention_ms = 5_000;
        log.set_config(cfg).unwrap();
        let out = log.apply_retention().await.unwrap();
        assert_eq!(
            out.deleted_segments,
            segs.len() - 1,
            "all but the active segment"
        );
        assert_eq!(log.log_start_offset(), segs.last().unwrap().base_offset);
        let logs = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        });
        assert_eq!(logs.count(), 1, "deleted segment files are gone from disk");
        assert!(matches!(
            log.read(0, 100).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
    });
}

// Proves delete_segments_below removes exactly the whole segments below
// an offset, never the one holding it, and never above the high watermark.
#[test]
fn delete_segments_below_an_offset() {
    run(|| async {
        let (dir, clock, cache) = fixture(1_000_000, 1 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        for _ in 0..100 {
            log.append(build::uniform(2, 300, 1_000_000)).await.unwrap();
        }
        let segs = log.segments();
        assert!(segs.len() > 4);
        let target = segs[3].base_offset + 1;
        let out = log.delete_segments_below(target).await.unwrap();
        assert_eq!(out.deleted_segments, 0, "nothing above the high watermark");
        log.set_high_watermark(log.log_end_offset());
        let out = log.delete_segments_below(target).await.unwrap();
        assert_eq!(
            out.deleted_segments, 3,
            "segments 0..3 end below the target"
        );
        assert_eq!(log.log_start_offset(), segs[3].base_offset);
        let batches = read_all(&log, log.log_start_offset()).await;
        assert_eq!(batches.last().unwrap().next_offset(), 200);
        let out = log.delete_segments_below(i64::MAX).await.unwrap();
        assert_eq!(log.segments().len(), 1, "the active segment stays");
        assert_eq!(out.log_start_offset, segs.last().unwrap().base_offset);
        log.close().await.unwrap();
    });
}

// Proves out-of-range configuration values are refused.
#[test]
fn config_limits_are_enforced() {
    let ok = LogConfig::default();
    assert!(ok.validate().is_ok());
    for bad in [
        LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        },
        LogConfig {
            segment_bytes: 8 << 30,
            ..LogConfig::default()
        },
        LogConfig {
            batch_bytes_max: 0,
            ..LogConfig::default()
        },
        LogConfig {
            batch_bytes_max: 1 << 30,
            ..LogConfig::default()
        },
        LogConfig {
            tail_buffer_bytes: 5000,
            ..LogConfig::default()
        },
        LogConfig {
            write_behind: 0,
            ..LogConfig::default()
        },
        LogConfig {
            retention_ms: -5,
            ..LogConfig::default()
        },
    ] {
        assert!(
            matches!(bad.validate(), Err(StorageError::InvalidConfig(_))),
            "{bad:?}"
        );
    }
}

// Proves reads fall back to the blocking-thread pool when the device refuses
// io_uring O_DIRECT reads, serve the same bytes, and return to io_uring later.
#[test]
fn refused_uring_reads_fall_back_to_the_pool() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 0);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let mut sent = Vec::new();
        for i in 0..300 {
            let b = build::uniform(2, 300, i);
            log.append(b.clone()).await.unwrap();
            sent.push(b);
        }
        log.close().await.unwrap();
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let before = sluice_storage::runtime::read_paths();
        faults::refuse_next_uring_reads(1);
        let all = read_all(&log, 0).await;
        let after = sluice_storage::runtime::read_paths();
        assert_eq!(all.len(), 300);
        for (g, s) in all.iter().zip(&sent) {
            assert_eq!(&g.to_vec()[61..], &s[61..]);
        }
        assert!(after.refusals > before.refusals, "{before:?} -> {after:?}");
        assert!(after.pool > before.pool, "{before:?} -> {after:?}");
        log.close().await.unwrap();
    });
}

// Proves a sequential reader of a cold log is served by read-ahead: every
// byte comes from disk once, almost all of it streamed ahead of the reader,
// and the bytes are the ones appended (batches straddle the 4 KiB reads, so
// many are served in pieces); a truncation while streaming leaves nothing
// stale behind. Read-ahead on the blocking pool, and through io_uring.
#[test]
fn sequential_cold_reads_are_streamed_ahead() {
    streamed_ahead(true);
}

#[test]
fn sequential_cold_reads_are_streamed_ahead_through_io_uring() {
    streamed_ahead(false);
}

fn streamed_ahead(on_pool: bool) {
    run(move || async move {
        let dir = tempdir();
        let clock = Rc::new(ManualClock::new(1000));
        let cfg = LogConfig {
            read_ahead_bytes: 16 * 1024,
            read_chunk_bytes: 4096,
            segment_bytes: 64 * 1024,
            read_ahead_on_pool: on_pool,
            ..small_config()
        };
        let cache = ShardCache::new(1 << 20);
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        let mut sent = Vec::new();
        for i in 0..400 {
            let b = build::uniform(3, 150, i);
            log.append(b.clone()).await.unwrap();
            sent.push(b);
        }
        log.close().await.unwrap();
        drop(log);
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        let paths_before = sluice_storage::runtime::read_paths();
        let mut o = 0;
        let mut got = Vec::new();
        loop {
            let part = log.read(o, 2048).await.unwrap();
            let Some(last) = part.last() else { break };
            o = last.next_offset();
            got.extend(part);
        }
        let paths = sluice_storage::runtime::read_paths();
        assert_eq!(got.len(), 400);
        for (g, s) in got.iter().zip(&sent) {
            assert_eq!(&g.to_vec()[61..], &s[61..]);
            assert!(g.crc_ok());
        }
        let pieces = got.iter().filter(|b| b.chunks().count() > 2).count();
        assert!(pieces > 0, "no batch straddled two reads");
        // (Through io_uring, a device that refuses its reads, as some
        // virtio disks do, sends them to the pool for a while: nothing to
        // assert about the path there.)
        if on_pool {
            assert!(
                paths.pool > paths_before.pool + 50,
                "{paths_before:?} -> {paths:?}"
            );
        }
        let st = log.stats();
        let total: u64 = got.iter().map(|b| b.len() as u64).sum();
        assert!(st.streams_started >= 1, "{st:?}");
        assert!(
            st.streamed_bytes >= total * 3 / 4,
            "most bytes streamed ahead: {st:?}"
        );
        assert!(
            st.streamed_bytes + st.disk_read_bytes <= total + total / 4,
            "little read twice: {st:?}"
        );
        println!("sequential cold read: {total} bytes served, {st:?}");
        // What was streamed left the cache once served: the cache holds
        // what the reader's own disk reads brought, not the whole log.
        let cs = cache.stats();
        assert!(
            cs.read_once_bytes >= st.streamed_bytes * 3 / 4,
            "{cs:?} {st:?}"
        );
        assert!(
            cs.used_bytes as u64 <= st.disk_read_bytes + 2 * 16 * 1024,
            "{cs:?} {st:?}"
        );
        // A second read of streamed batches comes from disk, unchanged.
        let again = read_all(&log, 300).await;
        assert_eq!(again.len(), 300);
        for (g, s) in again.iter().zip(&sent[100..]) {
            assert_eq!(&g.to_vec()[61..], &s[61..]);
        }
        log.close().await.unwrap();
        drop(log);

        // Truncate while a streamer runs; reads after it see only what is left.
        let log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        log.read(0, 2048).await.unwrap();
        let end = log.truncate_to(600).await.unwrap();
        assert_eq!(end, 600);
        let all = read_all(&log, 0).await;
        assert_eq!(all.last().unwrap().next_offset(), 600);
        assert_eq!(all.len(), 200);
        let b = build::uniform(1, 10, 1);
        assert_eq!(log.append(b).await.unwrap().base_offset, 600);
        assert_eq!(read_all(&log, 590).await.last().unwrap().next_offset(), 601);
        log.close().await.unwrap();
    });
}

// Proves a segment rolls once it is segment.ms old (by the log's clock),
// and not before.
#[test]
fn segments_roll_by_age() {
    run(|| async {
        let (dir, clock, cache) = fixture(1_000_000, 1 << 20);
        let cfg = LogConfig {
            segment_ms: 1_000,
            segment_bytes: 1 << 20,
            ..small_config()
        };
        let log = open(dir.path(), cfg, &cache, &clock).await;
        log.append(build::uniform(1, 10, 1)).await.unwrap();
        clock.advance(999);
        log.append(build::uniform(1, 10, 1)).await.unwrap();
        assert_eq!(log.segments().len(), 1, "not yet segment.ms old");
        clock.advance(1);
        log.append(build::uniform(1, 10, 1)).await.unwrap();
        let segs = log.segments();
        assert_eq!(segs.len(), 2, "rolled at segment.ms");
        assert_eq!(segs[1].base_offset, 2);
        log.close().await.unwrap();
    });
}

// A small batch appended from a slice of a larger buffer (a receive
// buffer holding other requests too) is copied: what the cache serves
// does not point into that buffer, so the cache never pins memory it
// does not count. A large batch is kept where it was sent (no copy).
#[test]
fn small_batches_are_cached_apart_from_their_receive_buffer() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 8 << 20);
        let log = open(dir.path(), small_config(), &cache, &clock).await;
        let small = build::uniform(2, 20, 1000);
        let mut buf = vec![0u8; 64 * 1024];
        buf[100..100 + small.len()].copy_from_slice(&small);
        let shared = Bytes::from(buf);
        let range = shared.as_ptr() as usize..shared.as_ptr() as usize + shared.len();
        log.append(shared.slice(100..100 + small.len()))
            .await
            .unwrap();
        let got = log.read(0, 1 << 20).await.unwrap();
        assert_eq!(got.len(), 1);
        for c in got[0].chunks() {
            assert!(
                !range.contains(&(c.as_ptr() as usize)),
                "the cached batch points into the receive buffer"
            );
        }
        let cfg = LogConfig {
            segment_bytes: 1 << 20,
            ..small_config()
        };
        log.set_config(cfg).unwrap();
        let large = build::uniform(200, 400, 1000);
        assert!(large.len() >= sluice_tuning::limits::CACHE_COPY_BATCH_BYTES_MAX);
        // The body follows the 61-byte header the log rewrites.
        let body = large.as_ptr() as usize + 61;
        log.append(large.clone()).await.unwrap();
        let got = log.read(2, 1 << 20).await.unwrap();
        assert!(
            got[0].chunks().any(|c| c.as_ptr() as usize == body),
            "a large batch's body is served from where it was sent"
        );
    });
}

/// A follower's log built from the batches its leader stored holds the
/// same bytes: offsets, leader epochs and append times kept; a batch that
/// does not start at the follower's end is refused and changes nothing.
#[test]
fn replicated_batches_keep_the_leaders_bytes() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let lat = LogConfig {
            timestamp_type: sluice_storage::TimestampType::LogAppendTime,
            ..small_config()
        };
        let leader = open(&dir.path().join("leader"), lat, &cache, &clock).await;
        leader.set_leader_epoch(7);
        for i in 0..5 {
            leader.append(build::uniform(3, 40, i)).await.unwrap();
        }
        let batches = leader.read(0, 1 << 20).await.unwrap();
        assert_eq!(batches.len(), 5);
        let bytes = |b: &sluice_storage::batch::Batch| {
            let mut v = Vec::new();
            for c in b.chunks() {
                v.extend_from_slice(c);
            }
            Bytes::from(v)
        };
        let follower = open(&dir.path().join("follower"), small_config(), &cache, &clock).await;
        // Not at the follower's end (0): refused.
        let e = follower
            .append_replica(bytes(&batches[1]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not follow"), "{e}");
        assert_eq!(follower.log_end_offset(), 0);
        for b in &batches {
            let info = follower.append_replica(bytes(b)).await.unwrap();
            assert_eq!(info.base_offset, b.base_offset());
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        // A batch already there is refused too.
        assert!(follower.append_replica(bytes(&batches[4])).await.is_err());
        let copied = follower.read(0, 1 << 20).await.unwrap();
        assert_eq!(copied.len(), 5);
        for (a, b) in batches.iter().zip(&copied) {
            assert_eq!(bytes(a), bytes(b));
            assert_eq!(b.header().partition_leader_epoch, 7);
        }
        follower.sync().await.unwrap();
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    })
}

/// The leader-epoch history follows the log: each epoch's first offset
/// is recorded (from the leader's epoch on append, from the batch's on a
/// replicated append), survives a reopen, answers end offsets as Kafka's
/// OffsetForLeaderEpoch does, and loses the epochs a truncation removes.
/// A replicated batch from an older epoch than the log's latest is
/// refused. A log that only ever had epoch 0 writes no history file.
#[test]
fn leader_epoch_history_follows_appends_truncation_and_reopen() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let plain = open(&dir.path().join("plain"), small_config(), &cache, &clock).await;
        plain.append(build::uniform(2, 10, 0)).await.unwrap();
        plain.close().await.unwrap();
        assert!(!dir
            .path()
            .join("plain")
            .join("leader-epoch-checkpoint")
            .exists());
        let plain = open(&dir.path().join("plain"), small_config(), &cache, &clock).await;
        assert_eq!(plain.leader_epochs(), vec![(0, 0)]);
        plain.close().await.unwrap();

        let path = dir.path().join("p");
        let log = open(&path, small_config(), &cache, &clock).await;
        assert_eq!(log.end_offset_for_epoch(0), (-1, -1));
        log.append(build::uniform(3, 10, 0)).await.unwrap(); // 0..3 epoch 0
        log.begin_epoch(2).await.unwrap();
        log.append(build::uniform(3, 10, 0)).await.unwrap(); // 3..6 epoch 2
        log.append(build::uniform(3, 10, 0)).await.unwrap(); // 6..9 epoch 2
        log.set_leader_epoch(5);
        log.append(build::uniform(3, 10, 0)).await.unwrap(); // 9..12 epoch 5
        assert_eq!(log.leader_epochs(), vec![(0, 0), (2, 3), (5, 9)]);
        assert_eq!(log.latest_epoch(), 5);
        assert_eq!(log.end_offset_for_epoch(5), (5, 12));
        assert_eq!(log.end_offset_for_epoch(4), (2, 9));
        assert_eq!(log.end_offset_for_epoch(1), (0, 3));
        assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
        let batches = read_all(&log, 0).await;
        let epochs: Vec<i32> = batches
            .iter()
            .map(|b| b.header().partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![0, 2, 2, 5]);
        // Not closed: the history was written ahead of the data.
        log.sync().await.unwrap();
        log.simulate_crash().await;
        drop(log);
        let log = open(&path, small_config(), &cache, &clock).await;
        assert_eq!(log.leader_epochs(), vec![(0, 0), (2, 3), (5, 9)]);
        // A follower cut back to where its leader's epoch 2 ended.
        assert_eq!(log.truncate_to(9).await.unwrap(), 9);
        assert_eq!(log.leader_epochs(), vec![(0, 0), (2, 3)]);
        assert_eq!(log.end_offset_for_epoch(5), (-1, -1));
        // A replicated batch of epoch 1 cannot follow epoch 2.
        let mut old = build::uniform(1, 10, 0).to_vec();
        old[0..8].copy_from_slice(&9i64.to_be_bytes());
        old[12..16].copy_from_slice(&1i32.to_be_bytes());
        let e = log.append_replica(Bytes::from(old)).await.unwrap_err();
        assert!(e.to_string().contains("goes back"), "{e}");
        let mut newer = build::uniform(1, 10, 0).to_vec();
        newer[0..8].copy_from_slice(&9i64.to_be_bytes());
        newer[12..16].copy_from_slice(&7i32.to_be_bytes());
        log.append_replica(Bytes::from(newer)).await.unwrap();
        // A leader that recorded its epoch and appended nothing, then
        // follows again: cutting back to its end drops the empty epoch,
        // so its next fetch names the epoch of its last batch.
        log.begin_epoch(9).await.unwrap();
        assert_eq!(log.latest_epoch(), 9);
        assert_eq!(log.truncate_to(10).await.unwrap(), 10);
        assert_eq!(log.leader_epochs(), vec![(0, 0), (2, 3), (7, 9)]);
        log.close().await.unwrap();
        let log = open(&path, small_config(), &cache, &clock).await;
        assert_eq!(log.leader_epochs(), vec![(0, 0), (2, 3), (7, 9)]);
        // Damage to the history stops the open, naming the file.
        log.close().await.unwrap();
        std::fs::write(path.join("leader-epoch-checkpoint"), "0\n2\n5 0\n3 9\n").unwrap();
        let e = PartitionLog::open(&path, small_config(), &cache, clock.clone())
            .await
            .err()
            .expect("damaged history refused");
        assert!(e.to_string().contains("leader-epoch-checkpoint"), "{e}");
    })
}

/// A follower whose whole log lies below its leader's log start empties
/// it and restarts at the leader's start: reads there find nothing,
/// replicated batches append from there with their epochs, and a reopen
/// (after a crash as after a close) starts the log at the same offset.
#[test]
fn restart_at_empties_the_log_and_starts_it_at_the_offset() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let path = dir.path().join("p");
        let log = open(&path, small_config(), &cache, &clock).await;
        for _ in 0..4 {
            log.append(build::uniform(3, 10, 0)).await.unwrap();
        }
        log.set_high_watermark(12);
        assert_eq!(log.restart_at(40).await.unwrap(), 40);
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (40, 40),
            "start and end"
        );
        assert_eq!(log.high_watermark(), 40);
        assert_eq!(log.durable_offset(), 40);
        assert!(log.read(0, 1 << 20).await.map_or(true, |b| b.is_empty()));
        assert!(read_all(&log, 40).await.is_empty());
        let mut copied = build::uniform(2, 10, 0).to_vec();
        copied[0..8].copy_from_slice(&40i64.to_be_bytes());
        copied[12..16].copy_from_slice(&3i32.to_be_bytes());
        log.append_replica(Bytes::from(copied)).await.unwrap();
        assert_eq!(log.log_end_offset(), 42);
        assert_eq!(log.latest_epoch(), 3);
        log.sync().await.unwrap();
        log.simulate_crash().await;
        drop(log);
        let log = open(&path, small_config(), &cache, &clock).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 42));
        let got = read_all(&log, 40).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header().base_offset, 40);
        assert_eq!(log.end_offset_for_epoch(3), (3, 42));
        // Restarting at an offset inside the log empties it just the same.
        assert_eq!(log.restart_at(41).await.unwrap(), 41);
        assert!(read_all(&log, 41).await.is_empty());
        log.close().await.unwrap();
        let log = open(&path, small_config(), &cache, &clock).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (41, 41));
        log.close().await.unwrap();
    })
}

/// Readers run while a cut or a restart awaits its file deletions and
/// syncs: the log always has segments to answer from (a follower's
/// heartbeat and lag checks read its ends while it truncates), and the
/// ends they see are the old ones or the new ones, never anything else.
#[test]
fn readers_during_a_cut_or_a_restart_never_find_the_log_without_segments() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let path = dir.path().join("p");
        // Large segments: the log is one segment, the case that emptied.
        let log = open(&path, LogConfig::default(), &cache, &clock).await;
        let fill = |n: usize| {
            let log = log.clone();
            async move {
                for _ in 0..n {
                    log.append(build::uniform(3, 10, 0)).await.unwrap();
                }
                log.sync().await.unwrap();
            }
        };
        fill(4).await;
        assert_eq!(log.segments().len(), 1);
        // (before, cut, restart, after): a cut inside the one segment, a
        // restart, a cut of the restarted log's one segment, a cut to the
        // log start (which restarts it).
        for (refill, cut, restart, want) in [
            (0, 6, false, (0, 6)),
            (0, 2, true, (2, 2)),
            (2, 5, false, (2, 5)),
            (1, 2, false, (2, 2)),
        ] {
            fill(refill).await;
            let done = Rc::new(std::cell::Cell::new(false));
            let (l, d) = (log.clone(), done.clone());
            let before = (log.log_start_offset(), log.log_end_offset());
            let reader = glommio::spawn_local(async move {
                let mut seen = 0u32;
                while !d.get() {
                    let ends = (l.log_start_offset(), l.log_end_offset());
                    assert!(ends == before || ends == want, "ends {ends:?}");
                    seen += 1;
                    futures_lite::future::yield_now().await;
                }
                seen
            });
            let end = if restart {
                log.restart_at(cut).await.unwrap()
            } else {
                log.truncate_to(cut).await.unwrap()
            };
            done.set(true);
            assert!(reader.await > 1, "the reader ran during the cut");
            assert_eq!(end, want.1);
            assert_eq!((log.log_start_offset(), log.log_end_offset()), want);
            assert_eq!(log.segments().len(), 1);
        }
    })
}

/// A sealed segment whose last batches share the timestamp of the last
/// time index entry (a producer's batches within one millisecond) keeps
/// its seal mark: a clean reopen reads no sealed segment again.
#[test]
fn segments_sealed_at_a_repeated_timestamp_reopen_without_a_scan() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let path = dir.path().join("p");
        let log = open(&path, small_config(), &cache, &clock).await;
        for i in 0..200 {
            // Timestamps move every 10 batches: each segment ends on a
            // run of equal ones.
            log.append(build::uniform(3, 100, 1_000 + i / 10))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        let log = open(&path, small_config(), &cache, &clock).await;
        let r = log.open_report().clone();
        assert!(r.segments > 3, "{r:?}");
        assert_eq!(r.rebuilt_indexes, 0, "{r:?}");
        let sealed: u64 = log.segments().iter().rev().skip(1).map(|s| s.bytes).sum();
        assert!(
            r.scanned_bytes < sealed,
            "{r:?}: sealed segments were scanned"
        );
        assert_eq!(log.log_end_offset(), 600);
        log.close().await.unwrap();
    })
}

/// A clean close leaves a mark the next open trusts instead of reading
/// the tail; the open removes it, so a crash after that open is
/// recovered by a scan again; a mark that does not match the segment
/// (or does not decode) is ignored.
#[test]
fn a_clean_close_reopens_without_reading_the_tail() {
    run(|| async {
        let (dir, clock, cache) = fixture(1000, 1 << 20);
        let path = dir.path().join("p");
        let mark = path.join(sluice_storage::CLEAN_SHUTDOWN_FILE);
        let log = open(&path, small_config(), &cache, &clock).await;
        for i in 0..50 {
            log.append(build::uniform(3, 100, 1_000 + i)).await.unwrap();
        }
        log.close().await.unwrap();
        assert!(mark.exists());
        let log = open(&path, small_config(), &cache, &clock).await;
        let r = log.open_report().clone();
        assert!(r.clean, "{r:?}");
        assert_eq!(r.scanned_bytes, 0, "{r:?}");
        assert!(!mark.exists(), "the mark outlived the open");
        assert_eq!(log.log_end_offset(), 150);
        assert_eq!(read_all(&log, 0).await.len(), 50);
        assert_eq!(log.offset_for_timestamp(1_049).await.unwrap(), Some(147));
        // Appends go on from the mark's end, and a crash now is recovered
        // by a scan (no mark).
        log.append(build::uniform(3, 100, 2_000)).await.unwrap();
        log.sync().await.unwrap();
        log.simulate_crash().await;
        drop(log);
        let log = open(&path, small_config(), &cache, &clock).await;
        let r = log.open_report().clone();
        assert!(!r.clean && r.scanned_bytes > 0, "{r:?}");
        assert_eq!(log.log_end_offset(), 153);
        assert_eq!(read_all(&log, 0).await.len(), 51);
        log.close().await.unwrap();
        // A mark that does not decode, then one for another size.
        let good = std::fs::read(&mark).unwrap();
        let mut bad = good.clone();
        bad[10] ^= 1;
        std::fs::write(&mark, &bad).unwrap();
        let log = open(&path, small_config(), &cache, &clock).await;
        assert!(!log.open_report().clean);
        assert_eq!(log.log_end_offset(), 153);
        log.close().await.unwrap();
        let active = log.segments().last().unwrap().base_offset;
        let seg = path.join(format!("{active:020}.log"));
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len + 4096)
            .unwrap();
        let log = open(&path, small_config(), &cache, &clock).await;
        let r = log.open_report().clone();
        assert!(!r.clean && r.scanned_bytes > 0, "{r:?}");
        assert_eq!(log.log_end_offset(), 153);
        log.close().await.unwrap();
    })
}

//! Reference-model test: random sequences of append / wait-durable / read /
//! read-by-time / truncate / retention / close / crash / power cut / reopen
//! applied both to the log and to a plain in-memory model, compared after
//! every step. A power cut (`faults::power`) keeps only what a completed
//! fdatasync covered and drops or tears the rest at page granularity: every
//! acknowledged (waited-durable) batch must survive it, and every batch
//! that survives must read back whole.
//! A failure prints the seed; rerun with SLUICE_TEST_SEED=<seed>.

mod common;

use std::rc::Rc;

use common::*;
use sluice_storage::{faults, LogConfig, ManualClock, PartitionLog, ShardCache, StorageError};

#[derive(Clone, Debug)]
struct MBatch {
    base: i64,
    last: i64,
    /// The batch as the producer sent it.
    sent: Vec<u8>,
    max_ts: i64,
    record_ts: Vec<i64>,
}

impl MBatch {
    /// The bytes the log must hold: the producer's, with the base offset and
    /// leader epoch (0) written in; CreateTime leaves the CRC as it was.
    fn stored(&self) -> Vec<u8> {
        let mut b = self.sent.clone();
        b[0..8].copy_from_slice(&self.base.to_be_bytes());
        b[12..16].copy_from_slice(&0i32.to_be_bytes());
        b
    }
}

#[derive(Default, Debug)]
struct Model {
    batches: Vec<MBatch>,
    log_start: i64,
    next: i64,
    hw: i64,
    durable_at_least: i64,
}

impl Model {
    fn containing(&self, offset: i64) -> Option<usize> {
        self.batches.iter().position(|b| b.last >= offset)
    }
    fn truncate(&mut self, offset: i64) {
        if offset <= self.log_start {
            self.batches.clear();
            self.log_start = offset;
            self.next = offset;
        } else if let Some(i) = self.containing(offset) {
            self.next = self.batches[i].base;
            self.batches.truncate(i);
        }
        self.hw = self.hw.min(self.next).max(self.log_start);
        self.durable_at_least = self.durable_at_least.min(self.next);
    }
    fn offset_for_time(&self, ts: i64) -> Option<i64> {
        let b = self.batches.iter().find(|b| b.max_ts >= ts)?;
        let i = b.record_ts.iter().position(|&t| t >= ts).unwrap();
        Some(b.base + i as i64)
    }
}

async fn check_state(log: &PartitionLog, m: &Model, step: usize) {
    assert_eq!(
        log.log_start_offset(),
        m.log_start,
        "step {step}: log start"
    );
    assert_eq!(log.log_end_offset(), m.next, "step {step}: log end");
    assert_eq!(log.high_watermark(), m.hw, "step {step}: high watermark");
    assert!(
        log.durable_offset() >= m.durable_at_least,
        "step {step}: durable"
    );
}

async fn check_read(log: &PartitionLog, m: &Model, offset: i64, max_bytes: usize, step: usize) {
    let r = log.read(offset, max_bytes).await;
    if offset < m.log_start || offset > m.next {
        assert!(
            matches!(r, Err(StorageError::OffsetOutOfRange { .. })),
            "step {step}: read {offset} outside [{}, {}] gave {r:?}",
            m.log_start,
            m.next
        );
        return;
    }
    let got = r.unwrap_or_else(|e| panic!("step {step}: read {offset}: {e}"));
    if offset == m.next {
        assert!(
            got.is_empty(),
            "step {step}: read at the end returns nothing"
        );
        return;
    }
    let i = m.containing(offset).unwrap();
    assert!(
        !got.is_empty(),
        "step {step}: read {offset} returned nothing"
    );
    let mut total = 0;
    for (k, b) in got.iter().enumerate() {
        let want = &m.batches[i + k];
        assert_eq!(b.base_offset(), want.base, "step {step}: batch {k} base");
        assert_eq!(b.last_offset(), want.last, "step {step}: batch {k} last");
        assert_eq!(b.to_vec(), want.stored(), "step {step}: batch {k} bytes");
        total += b.len();
    }
    assert!(
        got.len() == 1 || total <= max_bytes,
        "step {step}: {total} > {max_bytes}"
    );
}

async fn check_all(log: &PartitionLog, m: &Model, step: usize) {
    let all = read_all(log, m.log_start).await;
    assert_eq!(all.len(), m.batches.len(), "step {step}: batch count");
    for (b, want) in all.iter().zip(&m.batches) {
        assert_eq!(
            b.to_vec(),
            want.stored(),
            "step {step}: batch {} bytes",
            want.base
        );
    }
}

fn run_seed(seed: u64, steps: usize) {
    run(move || async move {
        let dir = tempdir();
        faults::power::arm();
        let mut rng = Rng(seed);
        let clock = Rc::new(ManualClock::new(1_700_000_000_000));
        // A small cache (sometimes tiny) so reads go to disk as well.
        let cache = ShardCache::new(if rng.chance(50) { 4096 } else { 256 * 1024 });
        let mut cfg = small_config();
        let mut log = open(dir.path(), cfg.clone(), &cache, &clock).await;
        let mut m = Model::default();
        for step in 0..steps {
            let op = rng.below(100);
            if std::env::var_os("SLUICE_TEST_TRACE").is_some() {
                println!(
                    "step {step}: op {op} start {} end {} hw {} segs {:?}",
                    m.log_start,
                    m.next,
                    m.hw,
                    log.segments()
                        .iter()
                        .map(|s| (s.base_offset, s.bytes))
                        .collect::<Vec<_>>()
                );
            }
            match op {
                0..=39 => {
                    let n = rng.range(1, 8) as usize;
                    let now = clock_now(&clock);
                    let ts: Vec<i64> = (0..n).map(|_| now - rng.range(0, 5000)).collect();
                    let big = rng.chance(5);
                    let bytes = random_batch(&mut rng, &ts, if big { 3000 } else { 200 });
                    let info = log.append(bytes.clone()).await.expect("append");
                    assert_eq!(info.base_offset, m.next, "step {step}: assigned offset");
                    m.batches.push(MBatch {
                        base: m.next,
                        last: m.next + n as i64 - 1,
                        sent: bytes.to_vec(),
                        max_ts: *ts.iter().max().unwrap(),
                        record_ts: ts,
                    });
                    m.next += n as i64;
                }
                40..=42 => {
                    let mut bytes = random_batch(&mut rng, &[1, 2], 50).to_vec();
                    let at = 21 + rng.below((bytes.len() - 21) as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                    let r = log.append(bytes.into()).await;
                    assert!(
                        matches!(
                            r,
                            Err(StorageError::CorruptMessage(_))
                                | Err(StorageError::InvalidRecord(_))
                        ),
                        "step {step}: damaged batch accepted: {r:?}"
                    );
                }
                43..=50 if m.next > m.log_start => {
                    let o = rng.range(m.log_start, m.next - 1);
                    log.wait_durable(o).await.expect("durable");
                    let i = m.containing(o).unwrap();
                    m.durable_at_least = m.durable_at_least.max(m.batches[i].last + 1);
                }
                51..=56 => {
                    let hw = rng.range(m.hw, m.next);
                    log.set_high_watermark(hw);
                    m.hw = hw;
                }
                57..=74 => {
                    let o = rng.range(m.log_start - 2, m.next + 2);
                    let max = [1usize, 100, 1000, 5000, 20000][rng.below(5) as usize];
                    check_read(&log, &m, o, max, step).await;
                }
                75..=79 => {
                    let ts = clock_now(&clock) - rng.range(-100, 7000);
                    let got = log.offset_for_timestamp(ts).await.expect("time lookup");
                    assert_eq!(
                        got,
                        m.offset_for_time(ts),
                        "step {step}: offset for time {ts}; segments {:?}; model {:?}",
                        log.segments(),
                        m.batches
                            .iter()
                            .map(|b| (b.base, b.max_ts))
                            .collect::<Vec<_>>()
                    );
                }
                80..=82 => {
                    let o = rng.range(m.log_start - 1, m.next);
                    let end = log.truncate_to(o).await.expect("truncate");
                    m.truncate(o.max(0));
                    assert_eq!(end, m.next, "step {step}: end after truncate to {o}");
                }
                83..=86 => {
                    clock.advance(rng.range(0, 20_000));
                    cfg.retention_ms = if rng.chance(50) {
                        rng.range(1000, 30_000)
                    } else {
                        -1
                    };
                    cfg.retention_bytes = if rng.chance(50) {
                        rng.range(0, 60_000)
                    } else {
                        -1
                    };
                    log.set_config(cfg.clone()).unwrap();
                    let expected = expected_log_start(&log, &m, &cfg, clock_now(&clock), step);
                    let out = log.apply_retention().await.expect("retention");
                    assert_eq!(
                        out.log_start_offset, expected,
                        "step {step}: log start after retention"
                    );
                    m.batches.retain(|b| b.base >= expected);
                    m.log_start = expected;
                    m.hw = m.hw.max(m.log_start);
                }
                87..=89 => {
                    log.close().await.expect("close");
                    drop(log);
                    log = open(dir.path(), cfg.clone(), &cache, &clock).await;
                    m.hw = m.next;
                    m.durable_at_least = m.next;
                }
                90..=92 => {
                    // A process crash (90) keeps every write the kernel
                    // took; a power cut (91, 92) keeps what fdatasync
                    // covered and drops or tears the rest, page by page.
                    let power = op != 90;
                    log.simulate_crash().await;
                    drop(log);
                    if power {
                        let cut = faults::power::power_cut(rng.next());
                        if std::env::var_os("SLUICE_TEST_TRACE").is_some() {
                            println!("step {step}: power cut {cut:?}");
                        }
                    }
                    log = open(dir.path(), cfg.clone(), &cache, &clock).await;
                    let end = log.log_end_offset();
                    assert!(
                        end >= m.durable_at_least,
                        "step {step}: crash lost durable data ({end} < {})",
                        m.durable_at_least
                    );
                    assert!(end <= m.next, "step {step}: crash grew the log");
                    assert!(
                        end == m.next
                            || m.batches.iter().any(|b| b.base == end)
                            || end == m.log_start,
                        "step {step}: recovered end {end} is not a batch boundary"
                    );
                    if end < m.next {
                        m.truncate(end);
                    }
                    m.hw = m.next;
                    m.durable_at_least = m.next;
                    // Every batch that survived reads back whole: no hole,
                    // nothing that was not appended.
                    check_all(&log, &m, step).await;
                }
                93..=96 => clock.advance(rng.range(0, 3000)),
                _ => {
                    cfg.segment_ms = if rng.chance(30) {
                        rng.range(1000, 10_000)
                    } else {
                        i64::MAX / 4
                    };
                    cfg.segment_bytes = [8 * 1024, 16 * 1024, 64 * 1024][rng.below(3) as usize];
                    log.set_config(cfg.clone()).unwrap();
                }
            }
            check_state(&log, &m, step).await;
            if step % 25 == 0 {
                check_all(&log, &m, step).await;
            }
        }
        check_all(&log, &m, steps).await;
        log.close().await.unwrap();
        faults::power::disarm();
    })
}

fn clock_now(c: &ManualClock) -> i64 {
    use sluice_storage::Clock;
    c.now_ms()
}

/// The log start retention must produce, computed from the model's own
/// batch sizes and timestamps over the log's segment boundaries.
fn expected_log_start(
    log: &PartitionLog,
    m: &Model,
    cfg: &LogConfig,
    now: i64,
    step: usize,
) -> i64 {
    let segs = log.segments();
    let mut total = 0u64;
    let mut info = Vec::new();
    for s in &segs {
        let in_seg: Vec<&MBatch> = m
            .batches
            .iter()
            .filter(|b| b.base >= s.base_offset && b.base < s.next_offset)
            .collect();
        let bytes: u64 = in_seg.iter().map(|b| b.sent.len() as u64).sum();
        let max_ts = in_seg.iter().map(|b| b.max_ts).max().unwrap_or(-1);
        assert_eq!(
            s.bytes, bytes,
            "step {step}: segment {} size",
            s.base_offset
        );
        assert_eq!(
            s.max_timestamp, max_ts,
            "step {step}: segment {} max timestamp",
            s.base_offset
        );
        total += bytes;
        info.push((s.base_offset, s.next_offset, bytes, max_ts));
    }
    let mut start = m.log_start;
    let mut remaining = total;
    for (i, &(_, next, bytes, max_ts)) in info.iter().enumerate().take(info.len() - 1) {
        let by_time = cfg.retention_ms >= 0 && now - max_ts > cfg.retention_ms;
        let by_size = cfg.retention_bytes >= 0 && remaining - bytes >= cfg.retention_bytes as u64;
        if !(by_time || by_size) || next > m.hw {
            break;
        }
        remaining -= bytes;
        start = info[i + 1].0;
    }
    start
}

#[test]
fn log_matches_reference_model() {
    let base = seed();
    let seeds: u64 = std::env::var("SLUICE_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for i in 0..seeds {
        let s = base.wrapping_add(i);
        println!("model seed {s}");
        let r = std::panic::catch_unwind(|| run_seed(s, 400));
        if r.is_err() {
            panic!(
                "reference model diverged; replay with SLUICE_TEST_SEED={s} SLUICE_MODEL_SEEDS=1"
            );
        }
    }
}

//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use glommio::Placement;
use sluice_storage::batch::build::{self, Record};
use sluice_storage::{LogConfig, ManualClock, PartitionLog, ShardCache};

/// Runs `f` on a fresh glommio executor sized for the test machine's
/// locked-memory limit.
pub fn run<F, T>(f: impl FnOnce() -> F) -> T
where
    F: Future<Output = T>,
{
    let ex = sluice_storage::runtime::executor_builder(
        Placement::Unbound,
        256 * 1024,
        std::time::Duration::ZERO,
    )
    .make()
    .expect("glommio executor starts within the locked-memory limit");
    ex.run(f())
}

/// A small deterministic PRNG (SplitMix64), so a failing seed replays.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seed for a randomized test: `SLUICE_TEST_SEED` or the clock.
pub fn seed() -> u64 {
    std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A batch of `count` records with random sizes and the given timestamps.
pub fn random_batch(rng: &mut Rng, timestamps: &[i64], value_max: usize) -> Bytes {
    let values: Vec<Vec<u8>> = timestamps
        .iter()
        .map(|_| {
            let n = rng.below(value_max as u64 + 1) as usize;
            let b = rng.next() as u8;
            (0..n).map(|i| b.wrapping_add(i as u8)).collect()
        })
        .collect();
    let keys: Vec<Vec<u8>> = timestamps
        .iter()
        .map(|_| rng.next().to_be_bytes().to_vec())
        .collect();
    let recs: Vec<Record<'_>> = timestamps
        .iter()
        .zip(&values)
        .zip(&keys)
        .map(|((&t, v), k)| Record {
            key: Some(k),
            value: v,
            timestamp: t,
        })
        .collect();
    build::batch(&recs)
}

/// A configuration with tiny sizes so rolls, flushes and index entries
/// happen within a few kilobytes.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        tail_buffer_bytes: 8 * 1024,
        index_interval_bytes: 512,
        read_chunk_bytes: 4096,
        read_ahead_bytes: 8192,
        write_behind: 2,
        flush_interval_ms: 3_600_000,
        flush_interval_bytes: u64::MAX,
        ..LogConfig::default()
    }
}

pub async fn open(
    dir: &std::path::Path,
    cfg: LogConfig,
    cache: &Rc<ShardCache>,
    clock: &Rc<ManualClock>,
) -> Rc<PartitionLog> {
    PartitionLog::open(dir, cfg, cache, clock.clone())
        .await
        .expect("log opens")
}

/// Reads the whole log from `from` to its end, concatenating batch bytes.
pub async fn read_all(log: &PartitionLog, from: i64) -> Vec<sluice_storage::Batch> {
    let mut out = Vec::new();
    let mut o = from;
    loop {
        let got = log.read(o, 64 * 1024).await.expect("read");
        let Some(last) = got.last() else { break };
        o = last.next_offset();
        out.extend(got);
    }
    out
}

/// A temporary directory on the build's disk: O_DIRECT needs a real file
/// system, and /tmp is often tmpfs.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sluice-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// A fresh directory, a manual clock at `now_ms` and a shard cache of
/// `cache_bytes`: what most log tests start from.
pub fn fixture(
    now_ms: i64,
    cache_bytes: usize,
) -> (tempfile::TempDir, Rc<ManualClock>, Rc<ShardCache>) {
    (
        tempdir(),
        Rc::new(ManualClock::new(now_ms)),
        ShardCache::new(cache_bytes),
    )
}

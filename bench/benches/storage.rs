//! Storage micro-benchmark: the partition log against the raw device path
//! in the same run, on one pinned executor.
//!
//! - append: 1 KiB records in 16 KiB and 1 MiB batches, a durable wait every
//!   N batches, against raw DMA sequential writes of the same bytes with the
//!   same buffer size, depth and fdatasync cadence;
//! - cold read: a 1 GiB log read sequentially after reopening, against raw
//!   sequential O_DIRECT reads of the same file with the same chunk and depth;
//! - hot read: the same log read back from the shard cache.
//!
//! Prints bytes/s and the ratio log/raw, and writes JSON to
//! `target/bench/storage.json`. Sizes: SLUICE_BENCH_MIB (default 1024),
//! SLUICE_BENCH_DIR (default target/tmp/bench-data), SLUICE_BENCH_REPEATS (3).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use glommio::Placement;
use sluice_storage::batch::build;
use sluice_storage::runtime::ReadPaths;
use sluice_storage::{Batch, LogConfig, PartitionLog, ShardCache, SystemClock};
use sluice_tuning::{host, limits};

const RECORD_BYTES: usize = 1024;

/// How the log's reads were served in the last cold read.
static PATHS: std::sync::Mutex<ReadPaths> = std::sync::Mutex::new(ReadPaths {
    uring: 0,
    pool: 0,
    refusals: 0,
});

struct Figures {
    name: String,
    bytes: u64,
    log_secs: f64,
    raw_secs: Option<f64>,
}

impl Figures {
    fn log_bps(&self) -> f64 {
        self.bytes as f64 / self.log_secs
    }
    fn raw_bps(&self) -> Option<f64> {
        self.raw_secs.map(|s| self.bytes as f64 / s)
    }
    fn ratio(&self) -> Option<f64> {
        self.raw_secs.map(|r| r / self.log_secs)
    }
}

fn mib(bps: f64) -> String {
    format!("{:.0} MiB/s", bps / (1 << 20) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Batches of 1 KiB records totalling about `batch_bytes` each.
fn batches(batch_bytes: usize) -> Vec<Bytes> {
    let per = (batch_bytes / (RECORD_BYTES + 12)).max(1);
    (0..8)
        .map(|i| build::uniform(per, RECORD_BYTES, 1_700_000_000_000 + i))
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        // One segment holds the whole run, so the benchmark measures the
        // append path rather than rolls.
        segment_bytes: limits::SEGMENT_BYTES_MAX,
        flush_interval_ms: 3_600_000,
        flush_interval_bytes: u64::MAX,
        ..LogConfig::default()
    }
}

async fn log_append(dir: &Path, total: u64, batch_bytes: usize, sync_every: usize) -> (f64, u64) {
    let cache = ShardCache::new(64 << 20);
    let log = PartitionLog::open(dir, config(), &cache, Rc::new(SystemClock))
        .await
        .unwrap();
    let set = batches(batch_bytes);
    let started = Instant::now();
    let mut written = 0u64;
    let mut i = 0usize;
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
    (secs, written)
}

/// Raw DMA sequential write of `total` bytes in `buf_bytes` buffers, with
/// `depth` writes in flight and an fdatasync every `sync_bytes`.
async fn raw_write(
    path: &Path,
    total: u64,
    buf_bytes: usize,
    depth: usize,
    sync_bytes: u64,
) -> f64 {
    let file = Rc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let mut pos = 0u64;
    let mut since_sync = 0u64;
    let mut inflight = std::collections::VecDeque::new();
    // Buffers are reused once their write completes, as the log does.
    let mut free: Vec<glommio::io::DmaBuffer> = Vec::new();
    let recycle = |r: Rc<glommio::io::DmaBuffer>, free: &mut Vec<_>| {
        if let Ok(b) = Rc::try_unwrap(r) {
            free.push(b);
        }
    };
    while pos < total {
        let buf = free.pop().unwrap_or_else(|| {
            let mut b = file.alloc_dma_buffer(buf_bytes);
            b.as_bytes_mut().fill(0x5a);
            b
        });
        let f = file.clone();
        let at = pos;
        inflight.push_back(glommio::spawn_local(async move {
            let buf = Rc::new(buf);
            f.write_rc_at(buf.clone(), at).await.unwrap();
            buf
        }));
        pos += buf_bytes as u64;
        since_sync += buf_bytes as u64;
        if inflight.len() >= depth {
            let b = inflight.pop_front().unwrap().await;
            recycle(b, &mut free);
        }
        if since_sync >= sync_bytes {
            while let Some(t) = inflight.pop_front() {
                let b = t.await;
                recycle(b, &mut free);
            }
            file.fdatasync().await.unwrap();
            since_sync = 0;
        }
    }
    while let Some(t) = inflight.pop_front() {
        t.await;
    }
    file.fdatasync().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let _ = file.close_rc().await;
    secs
}

/// Reads the whole log sequentially, 1 MiB per read; returns seconds and bytes.
async fn read_through(log: &PartitionLog, mut each: impl FnMut(&Batch)) -> (f64, u64) {
    let started = Instant::now();
    let mut o = log.log_start_offset();
    let mut bytes = 0u64;
    loop {
        let got = log.read(o, 1 << 20).await.unwrap();
        let Some(last) = got.last() else { break };
        o = last.next_offset();
        for b in &got {
            bytes += b.len() as u64;
            each(b);
        }
    }
    (started.elapsed().as_secs_f64(), bytes)
}

/// Cold reads of the log after reopening: a first pass, then a second
/// pass with the cache (smaller than the log) full and recycling its memory,
/// as in a running broker; both read everything from disk. Then hot passes
/// over a cache that holds the whole log. Returns (second pass seconds,
/// bytes) and leaves the other figures in HOT.
async fn log_cold_read(dir: &Path, log_bytes: u64) -> (f64, u64) {
    // A cache a quarter of the log (at most 128 MiB, at least the 16 MiB
    // the read-ahead needs), so the second pass comes from disk as well.
    let cache_bytes = std::env::var("SLUICE_BENCH_CACHE_MIB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(((log_bytes / 4) as usize).clamp(16 << 20, 128 << 20), |m| {
            m << 20
        });
    let from_disk = |s: sluice_storage::LogStats| s.disk_read_bytes + s.streamed_bytes;
    let cache = ShardCache::new(cache_bytes);
    let log = PartitionLog::open(dir, config(), &cache, Rc::new(SystemClock))
        .await
        .unwrap();
    let (first_secs, bytes) = read_through(&log, |_| {}).await;
    let before = from_disk(log.stats());
    let (secs, again) = read_through(&log, |_| {}).await;
    let disk = from_disk(log.stats()) - before;
    assert_eq!(again, bytes);
    assert!(
        disk >= bytes * 9 / 10,
        "the second pass reads from disk too ({disk} of {bytes} bytes)"
    );
    if std::env::var_os("SLUICE_BENCH_VERBOSE").is_some() {
        println!(
            "  cold passes: first {first_secs:.3} s, second {secs:.3} s; {:?}",
            log.stats()
        );
    }
    let paths = sluice_storage::runtime::read_paths();
    log.close().await.unwrap();
    drop(log);
    // Hot passes: a cache that holds the whole log, filled by a first pass
    // without read-ahead (read-ahead batches are read once: they leave the
    // cache as their reader gets them).
    let cache = ShardCache::new(2 * bytes as usize + (64 << 20));
    let hot_config = LogConfig {
        read_ahead_bytes: 0,
        ..config()
    };
    let log = PartitionLog::open(dir, hot_config, &cache, Rc::new(SystemClock))
        .await
        .unwrap();
    read_through(&log, |_| {}).await;
    let disk = from_disk(log.stats());
    let (hot_secs, hot) = read_through(&log, |_| {}).await;
    assert_eq!(
        from_disk(log.stats()),
        disk,
        "the hot pass never touches the disk"
    );
    assert_eq!(hot, bytes);
    // Hot pass as a consumer sees it: every byte read (checksummed).
    let mut crc = 0u32;
    let (touch_secs, _) = read_through(&log, |b| {
        for c in b.chunks() {
            crc = crc32c::crc32c_append(crc, c);
        }
    })
    .await;
    std::hint::black_box(crc);
    HOT.with(|h| h.set((hot_secs, touch_secs, first_secs, paths)));
    log.close().await.unwrap();
    (secs, bytes)
}

thread_local! {
    static HOT: std::cell::Cell<(f64, f64, f64, ReadPaths)> = const { std::cell::Cell::new((0.0, 0.0, 0.0, ReadPaths { uring: 0, pool: 0, refusals: 0 })) };
}

/// Raw sequential O_DIRECT read of a file as `chunk`-byte reads with
/// `window / chunk` of them always in flight (the disk never waits on the
/// reader): io_uring where the device accepts it, else positional reads on
/// the blocking-thread pool (the same fallback the log uses).
async fn raw_read(path: &Path, window: usize, chunk: usize) -> (f64, u64) {
    let file = Rc::new(DmaFile::open(path).await.unwrap());
    let size = file.file_size().await.unwrap();
    let uring = file.read_at_aligned(0, 4096).await.is_ok();
    let depth = (window / chunk).max(1);
    let started = Instant::now();
    let mut pos = 0u64;
    let mut total = 0u64;
    let mut inflight = std::collections::VecDeque::new();
    while pos < size || !inflight.is_empty() {
        while pos < size && inflight.len() < depth {
            let n = chunk.min((size - pos).div_ceil(4096) as usize * 4096);
            let f = file.clone();
            let at = pos;
            inflight.push_back(glommio::spawn_local(async move {
                if uring {
                    f.read_at_aligned(at, n).await.unwrap().len()
                } else {
                    pread_pool(&f, at, n).await
                }
            }));
            pos += n as u64;
        }
        if let Some(t) = inflight.pop_front() {
            total += t.await as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = file.close_rc().await;
    (secs, total)
}

async fn pread_pool(f: &Rc<DmaFile>, pos: u64, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: dup of an open descriptor, closed below on the pool thread.
    let fd = unsafe { libc::dup(f.as_raw_fd()) };
    glommio::executor()
        .spawn_blocking(move || {
            let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
            // SAFETY: a fresh aligned allocation, read into and freed here.
            unsafe {
                let p = std::alloc::alloc(layout);
                let n = libc::pread(fd, p.cast(), len, pos as libc::off_t);
                std::alloc::dealloc(p, layout);
                libc::close(fd);
                n.max(0) as usize
            }
        })
        .await
}

fn bench(dir: PathBuf, total: u64, repeats: usize) -> Vec<Figures> {
    let mut out = Vec::new();
    // (batch bytes, durable wait every N batches): about 1 MiB and 4 MiB
    // between syncs.
    for (batch_bytes, sync_every) in [(16 * 1024, 64), (1 << 20, 4)] {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for _ in 0..repeats {
            let d = dir.join(format!("append-{batch_bytes}"));
            let _ = std::fs::remove_dir_all(&d);
            let d2 = d.clone();
            let (secs, written) =
                run_local(
                    move || async move { log_append(&d2, total, batch_bytes, sync_every).await },
                );
            bytes = written;
            l.push(secs);
            let cfg = config();
            let raw = dir.join("raw-write");
            r.push(run_local(move || async move {
                raw_write(
                    &raw,
                    written,
                    cfg.tail_buffer_bytes,
                    cfg.write_behind,
                    (batch_bytes * sync_every) as u64,
                )
                .await
            }));
        }
        out.push(Figures {
            name: format!(
                "append {} KiB batches, durable every {sync_every}",
                batch_bytes / 1024
            ),
            bytes,
            log_secs: median(l),
            raw_secs: Some(median(r)),
        });
    }
    // Cold and hot reads of the 1 MiB-batch log written last.
    let log_dir = dir.join(format!("append-{}", 1 << 20));
    let seg = log_dir.join("00000000000000000000.log");
    let (mut l, mut r, mut h, mut t, mut f) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    // Alternate which goes first, so neither always meets the device just
    // after the other (or just after the writes).
    for i in 0..repeats.max(2) {
        let raw_first = i % 2 == 0;
        let raw = || {
            let seg = seg.clone();
            let cfg = config();
            run_local(move || async move {
                raw_read(&seg, cfg.read_ahead_bytes, cfg.read_chunk_bytes)
                    .await
                    .0
            })
        };
        if raw_first {
            r.push(raw());
        }
        let d = log_dir.clone();
        let (secs, b, (hot, touch, first, uring)) = run_local(move || async move {
            let (s, b) = log_cold_read(&d, total).await;
            (s, b, HOT.with(|h| h.get()))
        });
        *PATHS.lock().unwrap() = uring;
        bytes = b;
        l.push(secs);
        h.push(hot);
        t.push(touch);
        f.push(first);
        if !raw_first {
            r.push(raw());
        }
        if std::env::var_os("SLUICE_BENCH_VERBOSE").is_some() {
            println!(
                "  cold read round {i}: log {:.3} s, raw {:.3} s",
                l[l.len() - 1],
                r[r.len() - 1]
            );
        }
    }
    let raw = median(r);
    out.push(Figures {
        name: "cold read, first pass after reopen".into(),
        bytes,
        log_secs: median(f),
        raw_secs: Some(raw),
    });
    out.push(Figures {
        name: "cold read, cache full (steady state)".into(),
        bytes,
        log_secs: median(l),
        raw_secs: Some(raw),
    });
    out.push(Figures {
        name: "hot read (shard cache, zero-copy)".into(),
        bytes,
        log_secs: median(h),
        raw_secs: None,
    });
    out.push(Figures {
        name: "hot read, every byte checksummed".into(),
        bytes,
        log_secs: median(t),
        raw_secs: None,
    });
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn run_local<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    let io_memory =
        host::io_memory_per_executor(host::raise_memlock_limit(), 1).expect("locked-memory limit");
    sluice_storage::runtime::executor_builder(
        Placement::Fixed(0),
        io_memory,
        std::time::Duration::from_micros(sluice_tuning::limits::IDLE_POLL_US_DEFAULT),
    )
    .spawn(f)
    .unwrap()
    .join()
    .unwrap()
}

fn main() {
    // `cargo test --benches` runs this binary with --bench absent; do a
    // tiny run then so the harness stays quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let total_mib: u64 = std::env::var("SLUICE_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 16 } else { 1024 });
    let repeats: usize = std::env::var("SLUICE_BENCH_REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let dir = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-data"));
    std::fs::create_dir_all(&dir).unwrap();
    // The smoke run under `cargo test` needs a log four times the smallest
    // cache the read-ahead works with.
    let total_mib = if quick { total_mib.max(64) } else { total_mib };
    let figures = bench(dir, total_mib << 20, repeats);
    let paths = *PATHS.lock().unwrap();
    println!("storage benchmark: {total_mib} MiB per case, median of {repeats}");
    let mut json = Vec::new();
    for f in &figures {
        match (f.raw_bps(), f.ratio()) {
            (Some(raw), Some(ratio)) => println!(
                "  {:<45} log {:>10}   raw {:>10}   log/raw {:.2}",
                f.name,
                mib(f.log_bps()),
                mib(raw),
                ratio
            ),
            _ => println!("  {:<45} log {:>10}", f.name, mib(f.log_bps())),
        }
        json.push(format!(
            "{{\"case\":\"{}\",\"bytes\":{},\"log_bytes_per_sec\":{:.0},\"raw_bytes_per_sec\":{},\"ratio\":{}}}",
            f.name,
            f.bytes,
            f.log_bps(),
            f.raw_bps().map_or("null".into(), |v| format!("{v:.0}")),
            f.ratio().map_or("null".into(), |v| format!("{v:.3}"))
        ));
    }
    println!(
        "  (log reads in the last cold pass: {} by io_uring, {} on the blocking pool, {} refused by the device)",
        paths.uring, paths.pool, paths.refusals
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join(if quick { "storage-smoke.json" } else { "storage.json" }),
        format!(
            "{{\"mib\":{total_mib},\"repeats\":{repeats},\"uring_reads\":{},\"pool_reads\":{},\"uring_refusals\":{},\"cases\":[{}]}}\n",
            paths.uring, paths.pool, paths.refusals, json.join(",")
        ),
    );
}

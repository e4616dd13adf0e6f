//! `sluice iotune`: the disk under a directory measured with the same DMA
//! files and buffers (O_DIRECT, io_uring) the log writes: sequential
//! writes at several block sizes and depths, fdatasync after writes of
//! each size, sequential and random reads; and the io-properties derived
//! from them. Writes are waited for in the kernel on a ring of iotune's
//! own, so the figures are the device's and not the executor's turn
//! around each completion (which the executor's own fdatasync figure
//! shows). Runs inside a glommio executor; bounded by a time budget;
//! removes its files.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_tuning::io_properties::IoProperties;
use sluice_tuning::limits;

use crate::file::DirectFile;
use crate::kernel_ring::KernelRing;

pub const BLOCK_SIZES: [usize; 5] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];
pub const DEPTHS: [usize; 3] = [1, 4, 16];
/// The most one write point writes (it stops at its time slice first on
/// slower disks).
const POINT_BYTES_MAX: u64 = 1 << 30;
const READ_FILE_BYTES: u64 = 512 << 20;
/// The most one way of the fdatasync point writes (it stops at its time
/// slice first with small writes): the size of fio's sync jobs in
/// `bench/iotune-vs-fio.py`. Syncs after appends to a larger file came
/// out slower (fio's own, 1 MiB writes: about 84 µs at 64 MiB, 97 µs at
/// 1 GiB), so both tools sync files of the same size.
const SYNC_RUN_BYTES_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, serde::Serialize)]
pub struct WritePoint {
    pub block_bytes: usize,
    pub depth: usize,
    pub write_bytes_per_sec: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncPoint {
    pub write_bytes: usize,
    /// A write then an fdatasync through io_uring, each waited for in the
    /// kernel on a ring of iotune's own (how fio's io_uring engine
    /// measures it): the device and the hand-off to io_uring's worker.
    pub fdatasync_p50_us: u64,
    pub fdatasync_p99_us: u64,
    /// Both through the executor's ring, as the log issues them: the above
    /// plus the executor's turn from the completion to the task (glommio
    /// re-arms its timers first). What a shard waits for; io-properties
    /// use it.
    pub executor_fdatasync_p50_us: u64,
    pub executor_fdatasync_p99_us: u64,
    /// pwrite(2) then fdatasync(2) on iotune's thread: the device and
    /// filesystem alone (how fio's psync engine measures it).
    pub syscall_p50_us: u64,
    pub syscall_p99_us: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Results {
    pub seq_write: Vec<WritePoint>,
    pub fdatasync: Vec<SyncPoint>,
    /// 256 KiB reads, 16 in flight.
    pub seq_read_bytes_per_sec: f64,
    /// 4 KiB reads at random aligned offsets, 32 in flight.
    pub rand_read_4k_iops: f64,
    pub seconds: f64,
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Fills `b` with pseudo-random bytes (xorshift64*), which a device that
/// compresses or deduplicates (as this VM's disk does: a constant pattern
/// wrote 10% faster than fio's buffers) can do nothing with, as fio fills
/// its buffers. The log's data is not a constant pattern either.
fn fill_random(b: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in b.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes `pos` over the first 8 bytes of every 4 KiB block of `b`, so no
/// two writes carry the same block (fio's `scramble_buffers`).
fn stamp(b: &mut [u8], pos: u64) {
    for (i, block) in b.chunks_mut(4096).enumerate() {
        let v = (pos + (i as u64) * 4096).to_le_bytes();
        let n = block.len().min(8);
        block[..n].copy_from_slice(&v[..n]);
    }
}

/// A write on iotune's ring that wrote less than its block is an error.
fn whole_write(n: u32, block: usize) -> std::io::Result<()> {
    if n as usize == block {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::WriteZero,
        format!("short write: {n} of {block} bytes"),
    ))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sequential extending writes of `block` bytes with `depth` in flight for
/// `slice` (or `POINT_BYTES_MAX`), on a ring of iotune's own that it waits
/// on in the kernel (`kernel_ring`), from the same DMA buffers and
/// O_DIRECT file the log uses. The ring is polled where the shards' is
/// (`polled`, from `runtime::device_polls`), else completed by interrupt;
/// also by interrupt where the device refuses polled writes.
async fn write_point(
    dir: &Path,
    block: usize,
    depth: usize,
    slice: Duration,
    polled: bool,
) -> std::io::Result<WritePoint> {
    if !polled {
        return write_point_on(dir, block, depth, slice, false).await;
    }
    match write_point_on(dir, block, depth, slice, true).await {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            write_point_on(dir, block, depth, slice, false).await
        }
        r => r,
    }
}

async fn write_point_on(
    dir: &Path,
    block: usize,
    depth: usize,
    slice: Duration,
    polled: bool,
) -> std::io::Result<WritePoint> {
    let scratch = Scratch(dir.join(".sluice-iotune-write"));
    let _ = std::fs::remove_file(&scratch.0);
    let f = DirectFile::open(&scratch.0, true).await?;
    // One buffer per write in flight, as the log's tail buffers are.
    let mut bufs: Vec<_> = (0..depth)
        .map(|i| {
            let mut b = f.alloc(block);
            fill_random(b.as_bytes_mut(), i as u64 + 1);
            b
        })
        .collect();
    // Declared after the buffers, so it is dropped (and waits for its
    // writes) before they are.
    let mut ring = if polled {
        KernelRing::polled(depth as u32)?
    } else {
        KernelRing::new(depth as u32)?
    };
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut sent = vec![Instant::now(); depth];
    let start = Instant::now();
    let mut pos = 0u64;
    let mut lat = Vec::new();
    loop {
        let more = start.elapsed() < slice && pos < POINT_BYTES_MAX;
        if more {
            if let Some(slot) = free.pop() {
                // Its write is not in flight (the slot was free).
                stamp(bufs[slot].as_bytes_mut(), pos);
                sent[slot] = Instant::now();
                // SAFETY: the buffer lives until the ring is dropped, which
                // waits for every write in flight; it is not touched while
                // its write is out (its slot is off the free list).
                unsafe {
                    ring.push_write(
                        f.raw_fd(),
                        bufs[slot].as_ptr(),
                        block as u32,
                        pos,
                        slot as u64,
                    )?
                };
                pos += block as u64;
                continue;
            }
        }
        if ring.in_flight() == 0 {
            break;
        }
        let (slot, r) = ring.submit_and_wait()?;
        whole_write(r?, block)?;
        lat.push(sent[slot as usize].elapsed().as_micros() as u64);
        free.push(slot as usize);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(WritePoint {
        block_bytes: block,
        depth,
        write_bytes_per_sec: pos as f64 / secs,
        latency_p50_us: pct(&mut lat, 0.5),
        latency_p99_us: pct(&mut lat, 0.99),
    })
}

/// How a write and the fdatasync after it are made.
#[derive(Clone, Copy)]
enum SyncWay {
    /// Both on iotune's own ring, waited for in the kernel.
    Kernel,
    /// Both on the executor's ring, as the log makes them.
    Executor,
    /// pwrite(2) then fdatasync(2) on this thread.
    Syscall,
}

/// A write of `block` bytes then an fdatasync, repeated for `slice` (or
/// `SYNC_RUN_BYTES_MAX`) on a fresh file (as each of fio's jobs has its
/// own); returns the fdatasync latencies. The kernel and system-call ways
/// block this executor while the disk works: iotune serves nothing else
/// (a broker shard never does this).
async fn sync_run(
    dir: &Path,
    block: usize,
    slice: Duration,
    way: SyncWay,
) -> std::io::Result<Vec<u64>> {
    let scratch = Scratch(dir.join(".sluice-iotune-sync"));
    let _ = std::fs::remove_file(&scratch.0);
    let f = DirectFile::open(&scratch.0, true).await?;
    let mut buf = Rc::new(f.alloc(block));
    if let Some(b) = Rc::get_mut(&mut buf) {
        fill_random(b.as_bytes_mut(), block as u64);
    }
    // fdatasync cannot be polled, so this ring is completed by interrupt,
    // as fio's sync job runs (without --hipri).
    let mut ring = KernelRing::new(2)?;
    let start = Instant::now();
    let mut pos = 0u64;
    let mut took = Vec::new();
    while (start.elapsed() < slice && pos < SYNC_RUN_BYTES_MAX) || took.len() < 3 {
        // No write holds the buffer between turns.
        if let Some(b) = Rc::get_mut(&mut buf) {
            stamp(b.as_bytes_mut(), pos);
        }
        let t = match way {
            SyncWay::Kernel => {
                // SAFETY: the buffer outlives the wait for its write below.
                unsafe { ring.push_write(f.raw_fd(), buf.as_ptr(), block as u32, pos, 0)? };
                whole_write(ring.submit_and_wait()?.1?, block)?;
                let t = Instant::now();
                ring.push_fdatasync(f.raw_fd(), 1)?;
                ring.submit_and_wait()?.1?;
                t
            }
            SyncWay::Executor => {
                f.write(buf.clone(), pos).await?;
                let t = Instant::now();
                f.fdatasync().await?;
                t
            }
            SyncWay::Syscall => {
                f.write_blocking(&buf, pos)?;
                let t = Instant::now();
                f.fdatasync_blocking()?;
                t
            }
        };
        took.push(t.elapsed().as_micros() as u64);
        pos += block as u64;
    }
    Ok(took)
}

/// The three ways of `SyncPoint`, a third of `slice` each.
async fn sync_point(dir: &Path, block: usize, slice: Duration) -> std::io::Result<SyncPoint> {
    let third = slice / 3;
    let mut kernel = sync_run(dir, block, third, SyncWay::Kernel).await?;
    let mut executor = sync_run(dir, block, third, SyncWay::Executor).await?;
    let mut syscall = sync_run(dir, block, third, SyncWay::Syscall).await?;
    Ok(SyncPoint {
        write_bytes: block,
        fdatasync_p50_us: pct(&mut kernel, 0.5),
        fdatasync_p99_us: pct(&mut kernel, 0.99),
        executor_fdatasync_p50_us: pct(&mut executor, 0.5),
        executor_fdatasync_p99_us: pct(&mut executor, 0.99),
        syscall_p50_us: pct(&mut syscall, 0.5),
        syscall_p99_us: pct(&mut syscall, 0.99),
    })
}

/// Reads of `block` bytes with `depth` in flight for `slice`, sequential
/// or at random aligned offsets; returns (bytes per second, reads per
/// second).
async fn read_point(
    f: &DirectFile,
    size: u64,
    block: usize,
    depth: usize,
    random: bool,
    slice: Duration,
) -> std::io::Result<(f64, f64)> {
    let start = Instant::now();
    let blocks = (size / block as u64).max(1);
    let (mut next, mut rng, mut done) = (0u64, 0x9E37_79B9_7F4A_7C15u64, 0u64);
    let mut inflight = std::collections::VecDeque::new();
    loop {
        if start.elapsed() < slice && inflight.len() < depth {
            let i = if random {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % blocks
            } else {
                let i = next % blocks;
                next += 1;
                i
            };
            let f = f.clone();
            inflight.push_back(glommio::spawn_local(async move {
                f.read_chunk(i * block as u64, block).await.map(|_| ())
            }));
            continue;
        }
        match inflight.pop_front() {
            Some(h) => {
                h.await?;
                done += 1;
            }
            None => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((done as f64 * block as f64 / secs, done as f64 / secs))
}

/// Measures the disk under `dir` within about `budget`, its O_DIRECT I/O
/// on the ring a shard would use for that device.
pub async fn measure(
    dir: &Path,
    budget: Duration,
    mut progress: impl FnMut(&str),
) -> std::io::Result<Results> {
    let started = Instant::now();
    // O_DIRECT I/O on the ring a shard would use for this device (see
    // `runtime::use_interrupt_ring`), decided once.
    let polled = crate::runtime::device_polls(dir);
    if !polled {
        crate::runtime::use_interrupt_ring(dir, 0).await?;
    }
    let points = (BLOCK_SIZES.len() * DEPTHS.len()) as u32;
    let write_slice = budget.mul_f64(0.55) / points;
    let sync_slice = budget.mul_f64(0.15) / BLOCK_SIZES.len() as u32;
    let read_slice = budget.mul_f64(0.1);
    let mut seq_write = Vec::new();
    for &b in &BLOCK_SIZES {
        for &d in &DEPTHS {
            progress(&format!("sequential write {} KiB x {d}", b >> 10));
            seq_write.push(write_point(dir, b, d, write_slice, polled).await?);
        }
    }
    let mut fdatasync = Vec::new();
    for &b in &BLOCK_SIZES {
        progress(&format!("fdatasync after {} KiB", b >> 10));
        fdatasync.push(sync_point(dir, b, sync_slice).await?);
    }
    // A file to read: written at 1 MiB x 4 for up to a tenth of the budget.
    progress("writing a file to read");
    let scratch = Scratch(dir.join(".sluice-iotune-read"));
    let _ = std::fs::remove_file(&scratch.0);
    let f = DirectFile::open(&scratch.0, true).await?;
    let mut bufs: Vec<Rc<_>> = (0..4)
        .map(|i| {
            let mut b = f.alloc(1 << 20);
            fill_random(b.as_bytes_mut(), 100 + i);
            Rc::new(b)
        })
        .collect();
    let t = Instant::now();
    let mut size = 0u64;
    while size < READ_FILE_BYTES && (t.elapsed() < budget.mul_f64(0.1) || size < (64 << 20)) {
        let mut hs = Vec::new();
        for buf in bufs.iter_mut() {
            // The last group's writes have all been awaited.
            if let Some(b) = Rc::get_mut(buf) {
                stamp(b.as_bytes_mut(), size);
            }
            let (f, b, p) = (f.clone(), buf.clone(), size);
            hs.push(glommio::spawn_local(async move { f.write(b, p).await }));
            size += 1 << 20;
        }
        for h in hs {
            h.await?;
        }
    }
    f.fdatasync().await?;
    progress("sequential read 256 KiB x 16");
    let (seq_read, _) = read_point(&f, size, 256 << 10, 16, false, read_slice).await?;
    progress("random read 4 KiB x 32");
    let (_, iops) = read_point(&f, size, 4 << 10, 32, true, read_slice).await?;
    Ok(Results {
        seq_write,
        fdatasync,
        seq_read_bytes_per_sec: seq_read,
        rand_read_4k_iops: iops,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Results {
    /// The io-properties these figures give: the smallest block whose best
    /// bandwidth is within 10% of the best of all, the smallest depth that
    /// gets that block within 10% of its best, and the fdatasync after a
    /// write of that block as the executor sees it (what a shard waits for).
    pub fn properties(&self) -> IoProperties {
        let best_of = |b: usize| {
            self.seq_write
                .iter()
                .filter(|p| p.block_bytes == b)
                .map(|p| p.write_bytes_per_sec)
                .fold(0.0, f64::max)
        };
        let best = BLOCK_SIZES.iter().map(|b| best_of(*b)).fold(0.0, f64::max);
        let chunk = BLOCK_SIZES
            .iter()
            .copied()
            .find(|b| best_of(*b) >= 0.9 * best)
            .unwrap_or(limits::TAIL_BUFFER_BYTES_DEFAULT);
        let depth = self
            .seq_write
            .iter()
            .filter(|p| p.block_bytes == chunk && p.write_bytes_per_sec >= 0.9 * best_of(chunk))
            .map(|p| p.depth)
            .min()
            .unwrap_or(limits::WRITE_BEHIND_DEFAULT);
        let sync = self
            .fdatasync
            .iter()
            .find(|s| s.write_bytes == chunk)
            .map_or(0, |s| s.executor_fdatasync_p50_us);
        IoProperties {
            write_chunk_bytes: chunk as u64,
            queue_depth: depth as u64,
            sync_latency_us: sync,
            write_bytes_per_sec: best as u64,
            read_bytes_per_sec: self.seq_read_bytes_per_sec as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(b: usize, d: usize, mb: f64) -> WritePoint {
        WritePoint {
            block_bytes: b,
            depth: d,
            write_bytes_per_sec: mb * 1e6,
            latency_p50_us: 0,
            latency_p99_us: 0,
        }
    }

    /// Written data is neither constant nor repeated: random bytes, a
    /// different sequence per seed, and every 4 KiB block of two writes
    /// from one buffer differs.
    #[test]
    fn write_data_does_not_repeat() {
        let (mut a, mut b) = (vec![0u8; 3 * 4096 + 100], vec![0u8; 3 * 4096 + 100]);
        fill_random(&mut a, 1);
        fill_random(&mut b, 2);
        assert_ne!(a, b);
        // Roughly uniform: every byte value shows up in 12 KiB.
        let mut seen = [false; 256];
        a.iter().for_each(|x| seen[*x as usize] = true);
        assert!(seen.iter().all(|s| *s));
        let mut c = a.clone();
        stamp(&mut a, 0);
        stamp(&mut c, a.len() as u64);
        for (x, y) in a.chunks(4096).zip(c.chunks(4096)) {
            assert_ne!(x, y);
            assert_eq!(x[8..], y[8..], "only the stamp differs");
        }
    }

    /// The smallest block near the best bandwidth, the smallest depth
    /// near that block's best, and that block's sync latency as the
    /// executor waits for it.
    #[test]
    fn properties_pick_the_knee() {
        let mut seq_write = Vec::new();
        for (b, bw) in [
            (4 << 10, 100.0),
            (16 << 10, 300.0),
            (64 << 10, 900.0),
            (256 << 10, 1000.0),
            (1 << 20, 1020.0),
        ] {
            for (d, share) in [(1, 0.5), (4, 0.95), (16, 1.0)] {
                seq_write.push(point(b, d, bw * share));
            }
        }
        let r = Results {
            seq_write,
            fdatasync: BLOCK_SIZES
                .iter()
                .map(|b| SyncPoint {
                    write_bytes: *b,
                    fdatasync_p50_us: 1,
                    fdatasync_p99_us: 0,
                    executor_fdatasync_p50_us: *b as u64 / 100,
                    executor_fdatasync_p99_us: 0,
                    syscall_p50_us: 2,
                    syscall_p99_us: 0,
                })
                .collect(),
            seq_read_bytes_per_sec: 2e9,
            rand_read_4k_iops: 1e5,
            seconds: 1.0,
        };
        let p = r.properties();
        assert_eq!(p.write_chunk_bytes, 256 << 10);
        assert_eq!(p.queue_depth, 4);
        assert_eq!(p.sync_latency_us, (256 << 10) / 100);
        assert_eq!(p.write_bytes_per_sec, 1_020_000_000);
        assert_eq!(p.read_bytes_per_sec, 2_000_000_000);
        // The properties pass their own validation.
        IoProperties::from_toml(&p.to_toml()).unwrap();
    }

    /// A short real run on this machine's disk: every point measured, the
    /// scratch files gone.
    #[test]
    fn measures_and_cleans_up() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let d = dir.path().to_path_buf();
        let r = crate::runtime::executor_builder(
            glommio::Placement::Unbound,
            256 * 1024,
            Duration::ZERO,
        )
        .spawn(move || async move { measure(&d, Duration::from_millis(1500), |_| {}).await })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
        assert_eq!(r.seq_write.len(), BLOCK_SIZES.len() * DEPTHS.len());
        assert!(r.seq_write.iter().all(|p| p.write_bytes_per_sec > 0.0));
        assert!(r.fdatasync.iter().all(|s| s.fdatasync_p50_us > 0
            && s.executor_fdatasync_p50_us > 0
            && s.syscall_p50_us > 0));
        assert!(r.seq_read_bytes_per_sec > 0.0 && r.rand_read_4k_iops > 0.0);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "scratch files removed"
        );
    }
}

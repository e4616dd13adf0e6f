//! The small runtime seam: how a shard's executor is built.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use sluice_tuning::limits;

/// An executor builder with the I/O memory, ring depth and blocking-thread
/// pool the log expects. `io_memory_bytes` must fit the locked-memory limit
/// (see `sluice_tuning::host::io_memory_per_executor`). An executor with
/// no work polls for `idle_poll` before it sleeps in the kernel.
pub fn executor_builder(
    placement: Placement,
    io_memory_bytes: usize,
    idle_poll: Duration,
) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(placement)
        .io_memory(io_memory_bytes)
        .ring_depth(limits::IO_RING_DEPTH)
        .spin_before_park(idle_poll)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(limits::BLOCKING_THREADS))
}

pub use crate::file::{read_paths, ReadPaths};

/// Whether the block device holding `dir` completes I/O by polling
/// (`queue/io_poll` is 1: an NVMe device with poll queues). Read from
/// sysfs, so call it before the shards start, off their threads. A path
/// whose device sysfs does not describe (tmpfs, overlay) is not polled.
pub fn device_polls(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let Ok(node) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else {
        return false;
    };
    // A partition's queue is its disk's.
    let disk = if node.join("partition").exists() {
        node.parent().map(|p| p.to_path_buf()).unwrap_or(node)
    } else {
        node
    };
    std::fs::read_to_string(disk.join("queue/io_poll")).is_ok_and(|s| s.trim() == "1")
}

/// Makes this executor complete O_DIRECT I/O on `dir`'s device by
/// interrupt, on the ring it sleeps on, rather than on its polled
/// (IOPOLL) ring. glommio chooses the ring per device by a probe read at
/// the first O_DIRECT open and takes any success as "polls"; kernels
/// since 5.x complete polled requests on a device without poll queues by
/// interrupt and still report success, so the executor would then have
/// to poll the ring for as long as any write is in flight and could never
/// sleep: a shard writing steadily spins its core at 100% (measured: 370
/// thousand `io_uring_enter` a second per shard) and takes it from the
/// processes beside it. A probe that fails (a file opened for writing
/// only cannot be read) makes glommio record the device as not polled,
/// for this thread, before any log opens a file. Call it first thing on
/// each shard when `device_polls(dir)` is false; `shard` names the probe
/// file, so shards starting together do not share one.
pub async fn use_interrupt_ring(dir: &std::path::Path, shard: usize) -> std::io::Result<()> {
    let probe = dir.join(format!(".ring-probe-{shard}"));
    let file = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(&probe)
        .await
        .map_err(crate::error::glommio_io)?;
    let _ = file.close().await;
    let _ = glommio::io::remove(&probe).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// After `use_interrupt_ring`, a log file's O_DIRECT writes go on the
    /// ring the executor sleeps on, none on the polled ring; the probe
    /// file is gone. (On a device glommio's own probe takes for polled,
    /// as this kind of machine's virtual disk, the write would otherwise
    /// go on the polled ring.)
    #[test]
    fn writes_complete_on_the_ring_the_executor_sleeps_on() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().to_path_buf();
        executor_builder(Placement::Unbound, 256 * 1024, Duration::ZERO)
            .make()
            .unwrap()
            .run(async move {
                use_interrupt_ring(&path, 3).await.unwrap();
                assert!(!path.join(".ring-probe-3").exists());
                let f = crate::file::DirectFile::open(&path.join("seg"), true)
                    .await
                    .unwrap();
                let mut b = f.alloc(4096);
                b.as_bytes_mut().fill(7);
                f.write(Rc::new(b), 0).await.unwrap();
                let s = glommio::executor().io_stats();
                assert_eq!(
                    s.poll_ring.file_writes().0,
                    0,
                    "a write went on the polled ring"
                );
                assert_eq!(s.main_ring.file_writes().0, 1);
            });
    }

    #[test]
    fn a_path_without_a_block_device_does_not_poll() {
        assert!(!device_polls(std::path::Path::new("/nonexistent/sluice")));
        assert!(!device_polls(std::path::Path::new("/proc")));
    }
}

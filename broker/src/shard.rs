//! One shard: a pinned glommio executor that owns a set of partitions.

use std::path::PathBuf;
use std::rc::Rc;

use sluice_storage::{LogConfig, PartitionLog, ShardCache, SystemClock};

/// What a shard reports once its partitions are open.
#[derive(Debug)]
pub struct ShardReady {
    pub shard: usize,
    pub partitions: usize,
    pub scanned_bytes: u64,
    pub truncated_bytes: u64,
    pub rebuilt_indexes: usize,
    pub failed: Vec<(PathBuf, String)>,
}

/// Opens (recovering) every partition this shard owns, reports, waits for
/// shutdown, then closes them cleanly.
pub async fn run_shard(
    shard: usize,
    partitions: Vec<PathBuf>,
    cache_bytes_max: usize,
    listen: std::net::SocketAddr,
    ready: flume::Sender<ShardReady>,
    shutdown: flume::Receiver<()>,
) {
    let cache = ShardCache::new(cache_bytes_max);
    let mut logs: Vec<Rc<PartitionLog>> = Vec::new();
    let mut report = ShardReady {
        shard,
        partitions: 0,
        scanned_bytes: 0,
        truncated_bytes: 0,
        rebuilt_indexes: 0,
        failed: Vec::new(),
    };
    for dir in partitions {
        match PartitionLog::open(&dir, LogConfig::default(), &cache, Rc::new(SystemClock)).await {
            Ok(log) => {
                let r = log.open_report();
                tracing::info!(shard, partition = %dir.display(), segments = r.segments,
                    log_start = log.log_start_offset(), log_end = log.log_end_offset(),
                    scanned_bytes = r.scanned_bytes, truncated_bytes = r.truncated_bytes,
                    "partition recovered");
                report.partitions += 1;
                report.scanned_bytes += r.scanned_bytes;
                report.truncated_bytes += r.truncated_bytes;
                report.rebuilt_indexes += r.rebuilt_indexes;
                logs.push(log);
            }
            Err(e) => {
                tracing::error!(shard, partition = %dir.display(), error = %e, "partition failed to open");
                report.failed.push((dir, e.to_string()));
            }
        }
    }
    // Every shard binds the same address (SO_REUSEPORT); the kernel spreads
    // connections across them.
    let stop = Rc::new(std::cell::Cell::new(false));
    let acceptor = match glommio::net::TcpListener::bind(listen) {
        Ok(l) => Some(glommio::spawn_local(crate::connection::accept_loop(
            shard,
            l,
            stop.clone(),
        ))),
        Err(e) => {
            report.failed.push((
                PathBuf::from(listen.to_string()),
                format!("cannot listen: {e}"),
            ));
            None
        }
    };
    let _ = ready.send_async(report).await;
    let _ = shutdown.recv_async().await;
    stop.set(true);
    drop(acceptor);
    for log in logs {
        if let Err(e) = log.close().await {
            tracing::error!(shard, partition = %log.dir().display(), error = %e, "close failed");
        }
    }
}

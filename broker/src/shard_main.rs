//! A shard's life: build its state, open the partitions it owns, listen,
//! report ready, do housekeeping until told to stop, then close every
//! partition cleanly.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_tuning::limits;

use crate::config::BrokerConfig;
use crate::metadata::Snapshot;
use crate::shard::{Job, Shard};

/// What a shard reports once its partitions are open.
#[derive(Debug)]
pub struct ShardReady {
    pub shard: usize,
    pub partitions: usize,
    pub scanned_bytes: u64,
    pub truncated_bytes: u64,
    /// Partitions whose logs a clean stop closed (opened without a scan).
    pub clean: usize,
    pub failed: Vec<(PathBuf, String)>,
    /// The shard's heap, resident, and how long faulting it in took.
    pub heap_bytes: usize,
    pub heap_setup: Duration,
}

/// Everything a shard starts with.
pub struct ShardStart {
    pub shard: usize,
    pub cfg: Arc<BrokerConfig>,
    pub peers: Vec<flume::Sender<Job>>,
    pub inbox: flume::Receiver<Job>,
    pub snap: Arc<Snapshot>,
    /// Users and ACLs as stored.
    pub security: Arc<crate::security::store::Security>,
    pub cache_bytes_max: usize,
    pub request_memory_bytes: usize,
    /// A heap part is reserved for this shard (`shard_heap::reserve`).
    pub heap: bool,
    /// The data directory's device completes I/O by polling (see
    /// `runtime::device_polls`).
    pub polled_io: bool,
    pub ready: flume::Sender<ShardReady>,
    /// Sent once every shard is ready: only then does any shard listen,
    /// so that no connection lands on a shard that is still faulting in
    /// its memory or opening its partitions, and every shard's listener
    /// is in the SO_REUSEPORT group from the first connection on.
    pub listen: flume::Receiver<()>,
    /// Whether this shard's listener opened (`None`) or why not.
    pub listening: flume::Sender<(usize, Option<String>)>,
    pub shutdown: flume::Receiver<()>,
}

pub async fn run_shard(start: ShardStart) {
    let id = start.shard;
    // The shard's memory, faulted in before anything else runs here: a
    // blocking wait of the kernel's zeroing, once, so that no request
    // later meets a fresh page.
    let heap_started = std::time::Instant::now();
    let heap_bytes = if start.heap {
        match sluice_storage::shard_heap::adopt(id) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(shard = id, error = %e, "the shard allocates from the C allocator");
                0
            }
        }
    } else {
        0
    };
    let heap_setup = heap_started.elapsed();
    if !start.polled_io {
        if let Err(e) = sluice_storage::runtime::use_interrupt_ring(&start.cfg.data_dir, id).await {
            tracing::warn!(shard = id, error = %e, "O_DIRECT I/O may complete on the polled ring");
        }
    }
    sluice_storage::stall::configure(
        Some(std::time::Duration::from_millis(
            start.cfg.stall_threshold_ms,
        )),
        Some(describe_work),
    );
    let shard = Shard::new(
        id,
        start.cfg.clone(),
        start.peers,
        start.snap.clone(),
        start.cache_bytes_max,
        start.request_memory_bytes,
    );
    shard.set_security(start.security.clone());
    let inbox = glommio::spawn_local(sluice_storage::stall::watch(
        "inbox",
        shard.clone().run_inbox(start.inbox),
    ))
    .detach();
    let mut failed = shard.apply(start.snap, &Default::default()).await;
    // A node of a cluster coordinates groups from the offsets partitions
    // it leads (`Shard::sync_coordinators`), not from a log of its own.
    let coordinator = match start.cfg.cluster {
        None => Some(shard.open_coordinator().await),
        Some(_) => None,
    };
    let ticks = match coordinator {
        None => None,
        Some(Ok(c)) => Some(
            glommio::spawn_local(sluice_storage::stall::watch(
                "group ticks",
                c.run_ticks(shard.clone()),
            ))
            .detach(),
        ),
        Some(Err(e)) => {
            failed.push((
                crate::groups::offsets_dir(&start.cfg.data_dir, id),
                e.to_string(),
            ));
            None
        }
    };
    let owned = shard.owned();
    let report = ShardReady {
        shard: id,
        partitions: owned.len(),
        scanned_bytes: owned
            .iter()
            .map(|p| p.log.open_report().scanned_bytes)
            .sum(),
        truncated_bytes: owned
            .iter()
            .map(|p| p.log.open_report().truncated_bytes)
            .sum(),
        clean: owned.iter().filter(|p| p.log.open_report().clean).count(),
        failed,
        heap_bytes,
        heap_setup,
    };
    drop(owned);
    let _ = start.ready.send_async(report).await;
    // Every shard binds the same address (SO_REUSEPORT); the kernel spreads
    // connections across them. None binds before all are ready.
    let stop = Rc::new(std::cell::Cell::new(false));
    let mut acceptors = Vec::new();
    if start.listen.recv_async().await.is_ok() {
        let mut failed = None;
        for (index, l) in start.cfg.listeners.iter().enumerate() {
            match glommio::net::TcpListener::bind(l.addr) {
                Ok(listener) => acceptors.push(
                    glommio::spawn_local(sluice_storage::stall::watch(
                        "accept",
                        crate::connection::accept_loop(
                            shard.clone(),
                            listener,
                            index,
                            stop.clone(),
                        ),
                    ))
                    .detach(),
                ),
                Err(e) => {
                    failed = Some(format!("cannot listen on {}://{}: {e}", l.protocol, l.addr));
                    break;
                }
            }
        }
        let _ = start.listening.send_async((id, failed)).await;
    }
    // Shard 0 serves the admin endpoint (metrics, health).
    let admin = match (start.cfg.admin_listen, id) {
        (Some(addr), 0) => match crate::admin_http::bind(addr) {
            Ok(l) => {
                let at = l.local_addr().map_or(addr, |a| a);
                tracing::info!("admin endpoint at http://{at} (/metrics, /health)");
                Some(glommio::spawn_local(crate::admin_http::serve(shard.clone(), l)).detach())
            }
            Err(e) => {
                tracing::warn!(address = %addr, error = %e,
                    "admin endpoint not served (--admin-listen): the broker serves without it");
                None
            }
        },
        _ => None,
    };
    // Shard 0 of a node of a cluster runs the metadata log (and, once it
    // serves, seeds the cluster's users and ACLs from the data directory's
    // when the cluster has none).
    if let (Some(_), 0) = (&start.cfg.cluster, id) {
        let (shard, local) = (shard.clone(), (*start.security).clone());
        glommio::spawn_local(async move {
            for _ in 0..limits::CLUSTER_SEED_SECURITY_WAIT_S * 5 {
                let formed = shard.cluster_view().is_some_and(|v| {
                    v.controller.is_some() && v.state.nodes.contains_key(&shard.cfg.node_id)
                });
                if formed {
                    crate::security::seed_cluster(&shard, local).await;
                    return;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
        .detach();
    }
    let cluster = match (&start.cfg.cluster, id) {
        (Some(c), 0) => {
            let (c, shard) = (c.clone(), shard.clone());
            Some(
                glommio::spawn_local(async move {
                    if let Err(e) = crate::cluster::node::run(shard, c).await {
                        tracing::error!(error = e, "this node takes no part in the cluster");
                    }
                })
                .detach(),
            )
        }
        _ => None,
    };
    // A leader drops followers that fell behind from the ISR.
    let lag_checks = start.cfg.cluster.is_some().then(|| {
        let shard = shard.clone();
        glommio::spawn_local(sluice_storage::stall::watch("replica lag", async move {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
                for p in shard.owned() {
                    crate::cluster::replica::check_lagging(&shard, &p);
                }
            }
        }))
        .detach()
    });
    let housekeeping = glommio::spawn_local(sluice_storage::stall::watch(
        "housekeeping",
        housekeeping(shard.clone()),
    ))
    .detach();
    let _ = start.shutdown.recv_async().await;
    stop.set(true);
    for a in acceptors {
        a.cancel();
    }
    // Stop reading requests and let those read be answered, within a
    // bound; then the logs close under whatever is left.
    shard.stopping.notify_all();
    // Members waiting in a join or sync are answered now (they look for
    // the coordinator again), not held until the drain ends; commits
    // under way finish.
    for c in shard.coordinators_here() {
        c.close();
    }
    let drain = std::time::Instant::now();
    let bound = std::time::Duration::from_millis(sluice_tuning::limits::SHUTDOWN_DRAIN_MS_MAX);
    while shard.stats.get().connections_open > 0 && drain.elapsed() < bound {
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    let open = shard.stats.get().connections_open;
    if open > 0 {
        tracing::warn!(shard = id, connections = open, bound_ms = bound.as_millis() as u64,
            "connections still answering requests when the drain ended; closing the logs under them");
    }
    housekeeping.cancel();
    if let Some(a) = admin {
        a.cancel();
    }
    if let Some(c) = cluster {
        c.cancel();
    }
    if let Some(l) = lag_checks {
        l.cancel();
    }
    if let Some(t) = ticks {
        t.cancel();
    }
    shard.close_all().await;
    let s = shard.stats.get();
    let heap = sluice_storage::shard_heap::stats(id);
    tracing::info!(
        shard = id,
        forwarded_batches = s.forwarded_batches,
        forwarded_batches_copied = s.forwarded_batches_copied,
        fetch_bytes_read = s.fetch_bytes_read,
        stalls = sluice_storage::stall::count(),
        request_memory_peak = shard.request_memory.peak(),
        request_memory_waits = shard.request_memory.waits(),
        heap_peak = heap.peak,
        heap_served = heap.served,
        heap_overflow = heap.overflow,
        heap_borrowed = heap.borrowed,
        "shard stopped"
    );
    inbox.cancel();
}

/// Retention passes and producer-state checkpoints, every
/// `HOUSEKEEPING_INTERVAL_MS`.
async fn housekeeping(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(limits::HOUSEKEEPING_INTERVAL_MS)).await;
        for p in shard.owned() {
            match p.log.apply_retention().await {
                Ok(r) if r.deleted_segments > 0 => {
                    tracing::info!(shard = shard.id, partition = %p.log.dir().display(),
                        deleted_segments = r.deleted_segments, deleted_bytes = r.deleted_bytes,
                        log_start = r.log_start_offset, "retention");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(shard = shard.id, partition = %p.log.dir().display(), error = %e, "retention failed")
                }
            }
            crate::producers::checkpoint(&p).await;
        }
    }
}

/// Names a stall's work for the detector's report: a request by its API.
fn describe_work(label: &'static str, detail: i32) -> String {
    match kafka_protocol::messages::ApiKey::try_from(detail as i16) {
        Ok(api) if label == "request" => format!("{api:?} request"),
        _ => label.to_string(),
    }
}

//! `sluice serve`: start one pinned executor per shard, recover the data
//! directory, wait for SIGINT/SIGTERM, shut down cleanly.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use glommio::Placement;
use sluice_tuning::{host, limits};

use crate::config::{BrokerConfig, IoWorkerPriority};
use crate::metadata;
use crate::shard::Job;
use crate::shard_main::{run_shard, ShardReady, ShardStart};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the locked-memory limit (ulimit -l) is {limit_kib} KiB; glommio needs at least {min_kib} KiB \
         for its io_uring buffers. Raise it (ulimit -l, or LimitMEMLOCK= in a systemd unit) and retry"
    )]
    MemlockTooLow { limit_kib: u64, min_kib: u64 },
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(
        "data directory {0} does not take O_DIRECT writes ({1}; tmpfs?): \
         sluice writes segments with direct I/O; use a directory on ext4 or xfs"
    )]
    NoDirectIo(PathBuf, String),
    #[error(
        "io_uring is not available to this process ({0}): the shards do all their I/O through it. \
         Check kernel.io_uring_disabled and the container's seccomp profile (sluice tune says more)"
    )]
    NoIoUring(String),
    #[error("--cores {0}: must be between 1 and the {1} CPUs this process may use")]
    Cores(usize, usize),
    #[error("shard {shard} could not start: {error} (locked-memory limit {limit})")]
    ShardStart {
        shard: usize,
        error: String,
        limit: String,
    },
    #[error("{0} partition(s) or listener(s) failed to open; see above")]
    PartitionsFailed(usize),
    #[error("{0}")]
    Metadata(#[from] metadata::MetaError),
    #[error("{0}")]
    Security(#[from] crate::security::store::StoreError),
    #[error("{0}")]
    Cluster(String),
}

fn blocked_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// `sluice serve`: starts the broker, waits for SIGINT or SIGTERM, stops
/// it cleanly.
pub fn run(cfg: BrokerConfig) -> Result<(), ServeError> {
    // Signals are taken by this thread alone (sigwait below); shard threads
    // inherit the blocked mask and never see them.
    let set = blocked_signals();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("SLUICE_GIT_COMMIT"),
        "sluice starting"
    );
    // A panic on any thread stops the process (see `failstop`).
    crate::failstop::install();
    // SAFETY: changes this thread's signal mask only.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let broker = start(cfg)?;
    if broker.failed == 0 {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits for one of the signals blocked above.
        unsafe { libc::sigwait(&set, &mut sig) };
        tracing::info!(
            signal = sig,
            bound_secs = limits::SHUTDOWN_SECS_MAX,
            "shutting down: stopping the listeners, finishing requests, syncing every partition \
             (a second signal exits at once)"
        );
        watch_the_stop(set, Instant::now());
    }
    broker.stop()?;
    println!("sluice: stopped cleanly");
    Ok(())
}

/// Signals this soon after the first are the same request, not a second.
const SAME_STOP_REQUEST: Duration = Duration::from_millis(250);

/// While the broker stops: a second SIGINT or SIGTERM (later than
/// `SAME_STOP_REQUEST` after the first) exits at once
/// (status 128 + the signal, as the signal's default would), and so does
/// a stop still running after `SHUTDOWN_SECS_MAX` (status 1). Either way
/// the next start recovers the logs by reading their tails.
fn watch_the_stop(set: libc::sigset_t, first: Instant) {
    let spawned = std::thread::Builder::new()
        .name("sluice-stop".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(limits::SHUTDOWN_SECS_MAX);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let bound = libc::timespec {
                    tv_sec: left.as_secs() as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                // SAFETY: waits for the signals this thread inherited
                // blocked; `bound` outlives the call.
                let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &bound) };
                // One request sent twice (a wrapper such as timeout(1)
                // forwarding the signal its group also got) is not a
                // second request.
                if sig > 0 && first.elapsed() < SAME_STOP_REQUEST {
                    continue;
                }
                if sig > 0 {
                    eprintln!(
                        "sluice: signal {sig} during the stop: exiting at once, without a clean stop"
                    );
                    // SAFETY: ends the process without unwinding other threads.
                    unsafe { libc::_exit(128 + sig) };
                }
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            eprintln!(
                "sluice: the stop took longer than {} s: exiting without finishing it",
                limits::SHUTDOWN_SECS_MAX
            );
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no watch on the stop: a second signal will wait for it");
    }
}

/// A broker running in this process: one executor thread per shard,
/// serving until [`Running::stop`].
pub struct Running {
    stops: Vec<flume::Sender<()>>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    failed: usize,
    /// Gives io_uring workers real-time priority.
    promoter: Option<IoWorkerPromoter>,
    /// The data directory's lock: one broker per directory.
    _lock: std::fs::File,
}

impl Running {
    /// Partitions or listeners that failed to open (the broker serves the
    /// rest).
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Stops every shard (each finishes its writes and closes its logs)
    /// and waits for them.
    pub fn stop(self) -> Result<(), ServeError> {
        for s in &self.stops {
            let _ = s.send(());
        }
        for h in self.handles {
            let _ = h.join();
        }
        if let Some(p) = self.promoter {
            p.stop();
        }
        if self.failed > 0 {
            return Err(ServeError::PartitionsFailed(self.failed));
        }
        Ok(())
    }
}

/// Starts the broker: checks the host, recovers the data directory and
/// starts the shards; returns once every shard serves (or failed to open
/// something), after printing the serving line.
pub fn start(cfg: BrokerConfig) -> Result<Running, ServeError> {
    let started = Instant::now();
    // Shard N on the N-th CPU this process may use: the affinity mask (not
    // every online CPU, which would pin shards outside a `taskset` or a
    // cpuset), in ascending order (glommio's CpuSet is a hash set, so its
    // order changes from one start to the next).
    let cpu_ids = host::allowed_cpus();
    let cpus = cpu_ids.len();
    let shards = cfg.cores.unwrap_or(cpus);
    if shards == 0 || shards > cpus {
        return Err(ServeError::Cores(shards, cpus));
    }
    host::keep_freed_memory();
    let dma_populated =
        sluice_storage::dma_memory::populate(shards * limits::DMA_POPULATE_BYTES_PER_SHARD);
    tracing::info!(
        "direct-I/O buffers: {} MiB of the huge-page region faulted in",
        dma_populated >> 20
    );
    let memlock = host::raise_memlock_limit();
    let io_memory =
        host::io_memory_per_executor(memlock, shards).ok_or(ServeError::MemlockTooLow {
            limit_kib: memlock.unwrap_or(0) / 1024,
            min_kib: limits::MEMLOCK_BYTES_MIN / 1024,
        })?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ServeError::DataDir(cfg.data_dir.clone(), e))?;
    // One broker per data directory; held until the process ends.
    let lock = crate::security::store::lock_data_dir(&cfg.data_dir)?;
    // The disk's measured properties (`sluice iotune`) size the logs'
    // writes; without them, the defaults.
    let io_line =
        match sluice_tuning::io_properties::IoProperties::load(&cfg.data_dir) {
            Ok(Some(p)) => {
                let applied = sluice_storage::config::set_device_defaults(
                    sluice_storage::config::DeviceDefaults {
                        tail_buffer_bytes: p.write_chunk_bytes as usize,
                        write_behind: p.queue_depth as usize,
                        flush_interval_ms: p.background_sync_ms(),
                    },
                );
                format!(
                "io-properties {}: writes of {} KiB, {} in flight; expected fdatasync {} us, so \
                 appends nobody waits on (acks 0 and 1) are synced within {} ms{}; \
                 an acks=all produce shares the next sync",
                sluice_tuning::io_properties::path_in(&cfg.data_dir).display(),
                p.write_chunk_bytes / 1024,
                p.queue_depth,
                p.sync_latency_us,
                p.background_sync_ms(),
                if applied { "" } else { " (not applied: set before)" },
            )
            }
            Ok(None) => format!(
                "no io-properties in the data directory (sluice iotune --dir {} writes them): \
             writes of {} KiB, {} in flight; appends nobody waits on (acks 0 and 1) are synced \
             within {} ms; an acks=all produce shares the next sync",
                cfg.data_dir.display(),
                limits::TAIL_BUFFER_BYTES_DEFAULT / 1024,
                limits::WRITE_BEHIND_DEFAULT,
                limits::FLUSH_INTERVAL_MS_DEFAULT
            ),
            Err(e) => {
                tracing::warn!(error = %e, "io-properties ignored; using the defaults");
                format!(
                "io-properties unreadable: writes of {} KiB, {} in flight; appends nobody waits \
                 on are synced within {} ms",
                limits::TAIL_BUFFER_BYTES_DEFAULT / 1024,
                limits::WRITE_BEHIND_DEFAULT,
                limits::FLUSH_INTERVAL_MS_DEFAULT
            )
            }
        };
    tracing::info!("{io_line}");
    // The host checks of `sluice tune`: the broker cannot run without
    // io_uring; everything else short of its recommendation is one
    // warning line.
    for c in
        sluice_tuning::tune::all_checks(&sluice_tuning::tune::Root::host(), &cfg.data_dir, shards)
    {
        use sluice_tuning::tune::Status;
        if c.name == "io_uring" && c.status == Status::Fail {
            return Err(ServeError::NoIoUring(c.current));
        }
        if c.name == sluice_tuning::tune::DIRECT_IO && c.status == Status::Fail {
            return Err(ServeError::NoDirectIo(cfg.data_dir.clone(), c.current));
        }
        if matches!(c.status, Status::Warn | Status::Fail) {
            tracing::warn!(
                check = %c.name,
                current = %c.current,
                recommended = %c.recommended,
                "{} (sluice tune)",
                c.why
            );
        }
    }
    // The metadata names every partition and its owner shard; a data
    // directory from before metadata existed is adopted as it is.
    let (mut snap, changed) = metadata::load_or_adopt(&cfg.data_dir, shards)?;
    // A node's metadata journal that is damaged, or of another cluster,
    // stops the start here, before anything serves; so does a node's data
    // directory started as a single broker.
    match &cfg.cluster {
        Some(c) => crate::cluster::node::check_journal(&cfg.data_dir, c, cfg.node_id)
            .map_err(ServeError::Cluster)?,
        None if crate::cluster::node::has_journal(&cfg.data_dir) => {
            return Err(ServeError::Cluster(format!(
                "data directory {} belongs to a node of a cluster: start it with --node-id and \
                 --cluster as before",
                cfg.data_dir.display()
            )))
        }
        None => {}
    }
    if changed {
        metadata::store(&cfg.data_dir, &snap)?;
    }
    // A node of a cluster serves the topics its metadata log applies,
    // from the first applied state on; none before.
    if cfg.cluster.is_some() {
        snap.topics.clear();
    }
    let snap = std::sync::Arc::new(snap);
    let plan = host::memory_plan(
        host::total_memory_bytes(),
        shards,
        cfg.shard_memory_bytes,
        cfg.cache_bytes_max,
        cfg.request_memory_bytes,
    );
    let (cache_bytes, request_memory) = (plan.cache_bytes, plan.request_bytes);
    // Address space for every shard's heap; each shard faults its part in
    // on its own thread before it serves.
    let heap = match sluice_storage::shard_heap::reserve(plan.heap_bytes, shards) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "shards allocate from the C allocator: receive buffers and cached batches \
                 take fresh pages until the cache is full"
            );
            false
        }
    };

    let security = std::sync::Arc::new(crate::security::store::load(&cfg.data_dir)?);
    if cfg.listeners.iter().any(|l| l.protocol.authorizes()) {
        let anonymous = cfg
            .listeners
            .iter()
            .any(|l| l.protocol == crate::security::Protocol::Ssl && !cfg.tls_client_auth);
        tracing::info!(
            users = security.users.len(),
            acls = security.acls.len(),
            super_users = ?cfg.super_users,
            "secured listeners check every request against the ACLs (a principal no ACL allows is \
             refused){}",
            if anonymous {
                "; SSL clients without --tls-client-ca are User:ANONYMOUS"
            } else {
                ""
            }
        );
    }
    let listen = cfg
        .listeners
        .iter()
        .map(|l| format!("{}://{}", l.protocol, l.addr))
        .collect::<Vec<_>>()
        .join(",");
    let data_dir = cfg.data_dir.clone();
    let cfg = std::sync::Arc::new(cfg);
    let (ready_tx, ready_rx) = flume::bounded::<ShardReady>(shards);
    let (listening_tx, listening_rx) = flume::bounded::<(usize, Option<String>)>(shards);
    let mut listens = Vec::new();
    let mut inboxes = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..shards {
        let (tx, rx) = flume::bounded::<Job>(limits::SHARD_INBOX_DEPTH);
        peers.push(tx);
        inboxes.push(rx);
    }
    let polled_io = sluice_storage::runtime::device_polls(&cfg.data_dir);
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for (shard, inbox) in inboxes.into_iter().enumerate() {
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        stops.push(stop_tx);
        let ready = ready_tx.clone();
        let (listen_tx, listen_rx) = flume::bounded::<()>(1);
        listens.push(listen_tx);
        let placement = match cpu_ids.get(shard) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let limit = memlock.map_or("unlimited".into(), |l| format!("{} KiB", l / 1024));
        let start = ShardStart {
            shard,
            cfg: cfg.clone(),
            peers: peers.clone(),
            inbox,
            snap: snap.clone(),
            security: security.clone(),
            cache_bytes_max: cache_bytes,
            request_memory_bytes: request_memory,
            heap,
            polled_io,
            ready,
            listen: listen_rx,
            listening: listening_tx.clone(),
            shutdown: stop_rx,
        };
        let h = sluice_storage::runtime::executor_builder(
            placement,
            io_memory,
            Duration::from_micros(cfg.idle_poll_us),
        )
        .name(&format!("sluice-shard-{shard}"))
        .spawn(move || run_shard(start))
        .map_err(|e| ServeError::ShardStart {
            shard,
            error: e.to_string(),
            limit,
        })?;
        handles.push(h);
    }
    drop(peers);
    drop(ready_tx);
    drop(listening_tx);
    let mut failed = 0;
    let mut total = (0usize, 0u64, 0u64, 0usize);
    let (mut heap_bytes, mut heap_ms) = (0usize, 0u128);
    for r in ready_rx.iter().take(shards) {
        heap_bytes = heap_bytes.max(r.heap_bytes);
        heap_ms = heap_ms.max(r.heap_setup.as_millis());
        failed += r.failed.len();
        for (what, why) in &r.failed {
            eprintln!("sluice: shard {}: {}: {why}", r.shard, what.display());
        }
        total.0 += r.partitions;
        total.1 += r.scanned_bytes;
        total.2 += r.truncated_bytes;
        total.3 += r.clean;
    }
    // Every shard is set up: now all of them listen.
    for l in &listens {
        let _ = l.send(());
    }
    for (shard, why) in listening_rx.iter().take(shards) {
        if let Some(why) = why {
            failed += 1;
            eprintln!("sluice: shard {shard}: {why}");
        }
    }
    let line = format!(
        "sluice: serving {} partition(s) of {} topic(s) on {shards} shard(s) at {listen} from {} \
         (recovered in {} ms, {} of them closed cleanly, {} bytes scanned, {} bytes of torn tail \
         cut; per shard {} MiB of \
         memory set up in {} ms, of it a {} MiB cache, {} MiB request memory, {} KiB I/O \
         memory)",
        total.0,
        snap.topics.len(),
        data_dir.display(),
        started.elapsed().as_millis(),
        total.3,
        total.1,
        total.2,
        heap_bytes >> 20,
        heap_ms,
        cache_bytes >> 20,
        request_memory >> 20,
        io_memory / 1024,
    );
    println!("{line}");
    let _ = std::io::stdout().flush();
    let promoter = IoWorkerPromoter::for_priority(cfg.io_worker_priority);
    Ok(Running {
        stops,
        handles,
        failed,
        promoter,
        _lock: lock,
    })
}

/// The thread that gives this process's io_uring workers SCHED_FIFO (see
/// `sluice_tuning::io_workers`), until stopped; one warning if the kernel
/// refuses. `sluice serve` runs one, and so does `sluice iotune`, so its
/// figures are what a shard waits for.
pub struct IoWorkerPromoter {
    stop: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl IoWorkerPromoter {
    /// The promoter `priority` asks for: none for normal priority.
    pub fn for_priority(priority: IoWorkerPriority) -> Option<IoWorkerPromoter> {
        match priority {
            IoWorkerPriority::Realtime => IoWorkerPromoter::start(),
            IoWorkerPriority::Normal => None,
        }
    }

    /// Starts the thread (None, with a warning, if it cannot).
    fn start() -> Option<IoWorkerPromoter> {
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(1);
        let started = std::thread::Builder::new()
            .name("sluice-io-prio".into())
            .spawn(move || {
                let p = sluice_tuning::io_workers::Promoter::this_process();
                let promoted = || {
                    tracing::info!(
                        "io_uring workers (extending writes, fdatasync) get SCHED_FIFO {}",
                        sluice_tuning::limits::IO_WORKER_FIFO_PRIORITY
                    )
                };
                if let Some(why) = p.run(&stopped, promoted) {
                    tracing::warn!(
                        error = %why,
                        "io_uring workers stay at normal priority (real-time needs root or \
                         CAP_SYS_NICE): a polling shard can keep an fdatasync or an extending \
                         write off its CPU for a time slice (sluice serve \
                         --io-worker-priority normal does without)"
                    );
                }
            });
        match started {
            Ok(thread) => Some(IoWorkerPromoter { stop, thread }),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring workers stay at normal priority: no thread to promote them");
                None
            }
        }
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

//! One shard: a pinned glommio executor that owns a set of partitions
//! outright, holds the current metadata snapshot, and runs work other
//! shards send it.
//!
//! Shards share nothing mutable. Work crosses shards as a [`Job`] over a
//! bounded channel: a closure (it may carry `Bytes` of a receive buffer,
//! which travel without being copied) that the target runs with its own
//! `Rc<Shard>`. Jobs run one at a time, in arrival order, so appends
//! forwarded from one connection keep their order; a job that has to wait
//! (for durability, for new data) spawns that wait as its own task.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

pub use sluice_storage::notify::Notify;
use sluice_storage::{PartitionLog, ShardCache, SystemClock};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::groups::Coordinator;
use crate::metadata::{partition_dir, SharedSnapshot};
use crate::producers::ProducerTable;

pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Work sent to a shard.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalFuture<()> + Send>;

/// The shard went away (the broker is stopping), or it has no group
/// coordinator (see [`Shard::call_coordinator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardGone;

/// A partition on its owner shard.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Rc<PartitionLog>,
    /// Notified after every append.
    pub appended: Rc<Notify>,
    pub producers: RefCell<ProducerTable>,
    /// Held by a produce from its sequence checks to its last append, so
    /// the check and the append of a batch are one step for every other
    /// request on this partition.
    pub append_gate: glommio::sync::Semaphore,
    /// On a node of a cluster: role, followers, high watermark waits.
    pub replication: crate::cluster::replica::Replication,
    /// Record bytes and records produced to it (leader appends), for
    /// `/metrics`; this shard's alone, summed at scrape time.
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
    /// Record bytes and records clients fetched from it.
    pub bytes_out: Cell<u64>,
    pub records_out: Cell<u64>,
}

impl Partition {
    /// The partition's leader epoch on this node (0 on a single broker).
    pub fn leader_epoch(&self) -> i32 {
        self.replication
            .role
            .borrow()
            .as_ref()
            .map_or(0, |r| r.leader_epoch)
    }

    /// Checks a request's CurrentLeaderEpoch (-1 when the client gave
    /// none) against this node's (KIP-320): an older one is fenced, a
    /// newer one is not known here yet.
    pub fn check_leader_epoch(&self, current: i32) -> Result<(), i16> {
        use kafka_protocol::ResponseError;
        let epoch = self.leader_epoch();
        match current {
            c if c < 0 || c == epoch => Ok(()),
            c if c < epoch => Err(ResponseError::FencedLeaderEpoch.code()),
            _ => Err(ResponseError::UnknownLeaderEpoch.code()),
        }
    }

    /// A leader whose high watermark has not reached the start of its
    /// own epoch (it took the lead and its followers have not yet
    /// caught up) cannot say where the committed log ends: Kafka answers
    /// OFFSET_NOT_AVAILABLE then.
    pub fn high_watermark_pending(&self) -> bool {
        let epoch = self.leader_epoch();
        self.replication
            .role
            .borrow()
            .as_ref()
            .is_some_and(|r| r.leader)
            && self
                .log
                .leader_epochs()
                .last()
                .is_some_and(|&(e, start)| e == epoch && self.log.high_watermark() < start)
    }
}

/// Counters a test or an operator can read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    /// Produce batches appended on this shard that arrived on another.
    pub forwarded_batches: u64,
    /// Of those, batches whose bytes were not where the receiving shard's
    /// receive buffer put them (a copy happened on the way). Always 0.
    pub forwarded_batches_copied: u64,
    /// Record bytes fetch reads took from the log on this shard.
    pub fetch_bytes_read: u64,
    /// Client connections accepted, open now, and closed at once because
    /// the shard held `CONNECTIONS_PER_SHARD_MAX`.
    pub connections_accepted: u64,
    pub connections_open: u64,
    pub connections_refused: u64,
}

/// See `Shard::nodes`.
#[derive(Debug, Clone)]
pub struct Nodes {
    pub cluster_id: String,
    pub controller: i32,
    /// (node id, host, port).
    pub brokers: Vec<(i32, String, i32)>,
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<BrokerConfig>,
    peers: Vec<flume::Sender<Job>>,
    meta: RefCell<SharedSnapshot>,
    partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
    cache: Rc<ShardCache>,
    pub controller: Option<Controller>,
    /// Group coordinators by slot (`groups::GroupHome`): a single
    /// broker's one, or one per offsets partition this shard leads.
    coordinators: RefCell<HashMap<i32, Rc<Coordinator>>>,
    /// Replica fetchers by leader node (`cluster::replica::Fetcher`).
    pub fetchers: RefCell<HashMap<i32, Rc<crate::cluster::replica::Fetcher>>>,
    /// Offsets partitions being loaded, with the epoch they load at.
    coordinators_loading: RefCell<HashSet<(i32, i32)>>,
    pub stats: Cell<ShardStats>,
    /// Held by `apply` from start to end, so snapshots apply one at a time
    /// and in the order they were sent.
    apply_gate: Rc<glommio::sync::Semaphore>,
    /// Request bytes this shard's connections hold (see `memory`).
    pub request_memory: Rc<crate::memory::RequestMemory>,
    /// The cluster as this node last applied it (`--cluster` only).
    cluster: crate::cluster::node::ViewCell,
    /// Shard 0 of a node of a cluster: proposes metadata commands.
    cluster_handle: std::cell::OnceCell<crate::cluster::node::NodeHandle>,
    /// Users' credentials (see `security::store`): shard 0 changes them
    /// and sends every shard the new state.
    security: RefCell<Arc<crate::security::store::Security>>,
    /// Held by `security::update` on shard 0: one change at a time.
    pub security_gate: glommio::sync::Semaphore,
    /// Notified once, when the broker starts to stop: connections read
    /// no more requests and long-poll fetches answer with what they have.
    pub stopping: Rc<Notify>,
}

impl Shard {
    pub fn new(
        id: usize,
        cfg: Arc<BrokerConfig>,
        peers: Vec<flume::Sender<Job>>,
        meta: SharedSnapshot,
        cache_bytes_max: usize,
        request_memory_bytes: usize,
    ) -> Rc<Shard> {
        let controller = (id == 0).then(|| Controller::new(meta.clone()));
        Rc::new(Shard {
            id,
            shards: peers.len(),
            cfg,
            peers,
            meta: RefCell::new(meta),
            partitions: RefCell::new(HashMap::new()),
            cache: ShardCache::new(cache_bytes_max),
            controller,
            coordinators: RefCell::new(HashMap::new()),
            coordinators_loading: RefCell::new(HashSet::new()),
            fetchers: RefCell::new(HashMap::new()),
            stats: Cell::new(ShardStats::default()),
            apply_gate: Rc::new(glommio::sync::Semaphore::new(1)),
            request_memory: Rc::new(crate::memory::RequestMemory::new(request_memory_bytes)),
            cluster: Default::default(),
            cluster_handle: std::cell::OnceCell::new(),
            security: RefCell::new(Arc::default()),
            security_gate: glommio::sync::Semaphore::new(1),
            stopping: Rc::new(Notify::default()),
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.generation() > 0
    }

    /// The users and ACLs as this shard last received them (on a node of
    /// a cluster, the metadata log's).
    pub fn security(&self) -> Arc<crate::security::store::Security> {
        if self.cfg.cluster.is_some() {
            return self
                .cluster_view()
                .map(|v| v.state.security.clone())
                .unwrap_or_default();
        }
        self.security.borrow().clone()
    }

    pub fn set_security(&self, s: Arc<crate::security::store::Security>) {
        *self.security.borrow_mut() = s;
    }

    /// Opens this shard's group coordinator (its offsets log is replayed):
    /// a single broker's; a node of a cluster loads one per offsets
    /// partition it leads instead (`sync_coordinators`).
    pub async fn open_coordinator(&self) -> Result<Rc<Coordinator>, sluice_storage::StorageError> {
        let dir = crate::groups::offsets_dir(&self.cfg.data_dir, self.id);
        let store = crate::groups::offsets::OffsetStore::open(
            &dir,
            &self.cache,
            sluice_tuning::limits::OFFSETS_SEGMENT_BYTES,
            sluice_tuning::limits::OFFSETS_COMPACT_BYTES_MIN,
        )
        .await?;
        let c = Rc::new(Coordinator::new(store));
        let old = self
            .coordinators
            .borrow_mut()
            .insert(crate::groups::LOCAL_SLOT, c.clone());
        assert!(old.is_none(), "opened once");
        Ok(c)
    }

    /// The batch cache's counters.
    pub fn cache_stats(&self) -> sluice_storage::CacheStats {
        self.cache.stats()
    }

    /// The batch cache's budget.
    pub fn cache_budget(&self) -> usize {
        self.cache.budget_bytes()
    }

    /// Every coordinator open on this shard.
    pub fn coordinators_here(&self) -> Vec<Rc<Coordinator>> {
        self.coordinators.borrow().values().cloned().collect()
    }

    /// The coordinator of slot `slot` here, if it is open.
    pub fn coordinator(&self, slot: i32) -> Option<Rc<Coordinator>> {
        self.coordinators.borrow().get(&slot).cloned()
    }

    /// Runs `f` with the group coordinator at `home`. A coordinator that
    /// is not open (its offsets log failed to open, or is loading, or
    /// the lead just moved) answers as a shard that is gone, which group
    /// requests answer with COORDINATOR_NOT_AVAILABLE. `None` as the home
    /// (a group another node coordinates) is answered the same way: the
    /// client looks the coordinator up again.
    pub async fn call_coordinator<R, F, Fut>(
        self: &Rc<Self>,
        home: Option<crate::groups::GroupHome>,
        f: F,
    ) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Coordinator>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let home = home.ok_or(ShardGone)?;
        self.call(home.shard, move |s| async move {
            match s.coordinator(home.slot) {
                Some(c) => Some(f(c).await),
                None => None,
            }
        })
        .await?
        .ok_or(ShardGone)
    }

    /// `f` of every coordinator open on shard `target`.
    pub async fn call_coordinators<R, F>(self: &Rc<Self>, target: usize, f: F) -> Vec<R>
    where
        R: Send + 'static,
        F: Fn(&Coordinator) -> R + Send + 'static,
    {
        self.call(target, move |s| async move {
            s.coordinators.borrow().values().map(|c| f(c)).collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Where `group`'s coordinator is on this node, or `None` when another
    /// node coordinates it (or none does yet): on a single broker the
    /// shard its id hashes to; on a node of a cluster the shard holding
    /// the group's offsets partition, when this node leads it.
    pub fn group_owner(&self, group: &str) -> Option<crate::groups::GroupHome> {
        use crate::groups::{GroupHome, OFFSETS_TOPIC};
        if self.cfg.cluster.is_none() {
            return Some(GroupHome {
                shard: crate::groups::coordinator_shard(group, self.shards),
                slot: crate::groups::LOCAL_SLOT,
            });
        }
        let meta = self.meta();
        let t = meta.topic(OFFSETS_TOPIC)?;
        let slot = crate::groups::offsets_partition(group, t.owners.len());
        match meta.route(OFFSETS_TOPIC, slot) {
            crate::metadata::Route::Shard(shard) => Some(GroupHome { shard, slot }),
            _ => None,
        }
    }

    /// On a node of a cluster: a coordinator for every offsets partition
    /// this shard leads, loaded from the partition's log at the epoch it
    /// leads at; those it no longer leads (or leads at a newer epoch:
    /// followers may hold commits it never saw) are closed.
    fn sync_coordinators(self: &Rc<Self>) {
        use crate::groups::OFFSETS_TOPIC;
        if self.cfg.cluster.is_none() {
            return;
        }
        let leads = |slot: i32| -> Option<(Rc<Partition>, i32)> {
            let p = self.partition(OFFSETS_TOPIC, slot)?;
            let epoch = p
                .replication
                .role
                .borrow()
                .as_ref()
                .filter(|r| r.leader)
                .map(|r| r.leader_epoch)?;
            Some((p, epoch))
        };
        self.coordinators.borrow_mut().retain(|&slot, c| {
            let keep = leads(slot).is_some_and(|(_, e)| Some(e) == c.offsets.epoch());
            if !keep {
                tracing::info!(
                    shard = self.id,
                    partition = slot,
                    groups = c.list().len(),
                    "no longer coordinating the groups of this offsets partition"
                );
                c.close();
            }
            keep
        });
        let meta = self.meta();
        let Some(t) = meta.topic(OFFSETS_TOPIC) else {
            return;
        };
        for slot in 0..t.owners.len() as i32 {
            let Some((p, epoch)) = leads(slot) else {
                continue;
            };
            if self.coordinators.borrow().contains_key(&slot)
                || !self.coordinators_loading.borrow_mut().insert((slot, epoch))
            {
                continue;
            }
            let replicas = t.roles.get(slot as usize).map_or(1, |r| r.replicas.len());
            let min_insync = usize::from(crate::metadata::min_insync(&t.configs, replicas as u16));
            let shard = self.clone();
            glommio::spawn_local(async move {
                let started = std::time::Instant::now();
                let r = crate::groups::offsets::OffsetStore::load(
                    p.clone(),
                    epoch,
                    min_insync,
                    sluice_tuning::limits::OFFSETS_COMPACT_BYTES_MIN,
                )
                .await;
                shard
                    .coordinators_loading
                    .borrow_mut()
                    .remove(&(slot, epoch));
                let store = match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(shard = shard.id, partition = slot, epoch, error = %e,
                            "offsets partition failed to load: its groups are unavailable");
                        return;
                    }
                };
                // The lead may have moved on while the log was read.
                if !store.leading() {
                    return;
                }
                let offsets = store.len();
                let c = Rc::new(Coordinator::new(store));
                if let Some(old) = shard.coordinators.borrow_mut().insert(slot, c.clone()) {
                    old.close();
                }
                tracing::info!(
                    shard = shard.id,
                    partition = slot,
                    epoch,
                    offsets,
                    load_ms = started.elapsed().as_millis() as u64,
                    "coordinating the groups of this offsets partition"
                );
                glommio::spawn_local(sluice_storage::stall::watch(
                    "group ticks",
                    c.run_ticks(shard.clone()),
                ))
                .detach();
            })
            .detach();
        }
    }

    /// The controller; only shard 0 has one, and only work sent to shard 0
    /// asks for it.
    pub fn controller(&self) -> &Controller {
        self.controller
            .as_ref()
            .expect("controller work runs on shard 0")
    }

    /// The cluster as this node last applied it; `None` for a cluster of
    /// one, or before the node applied anything.
    pub fn cluster_view(&self) -> Option<Arc<crate::cluster::node::ClusterView>> {
        self.cluster.get()
    }

    pub fn set_cluster_view(&self, v: Arc<crate::cluster::node::ClusterView>) {
        self.cluster.set(v);
    }

    /// On shard 0 of a node of a cluster, once its metadata log runs.
    pub fn cluster_handle(&self) -> Option<&crate::cluster::node::NodeHandle> {
        self.cluster_handle.get()
    }

    pub fn set_cluster_handle(&self, h: crate::cluster::node::NodeHandle) {
        let _ = self.cluster_handle.set(h);
    }

    /// The nodes clients connected to listener `listener` are told of:
    /// every registered node of the cluster with a listener of the same
    /// protocol, at that listener's address, and the controller (-1
    /// while none is known); or this broker alone as its own controller.
    pub fn nodes(&self, listener: usize) -> Nodes {
        let protocol = self.cfg.listeners[listener].protocol;
        let own_id = self.meta().cluster_id.clone();
        match (&self.cfg.cluster, self.cluster_view()) {
            (Some(_), Some(v)) => Nodes {
                cluster_id: if v.state.cluster_id.is_empty() {
                    own_id
                } else {
                    v.state.cluster_id.clone()
                },
                controller: v.controller.unwrap_or(-1),
                brokers: v
                    .state
                    .nodes
                    .values()
                    .filter_map(|n| {
                        let (h, p) = crate::security::listener::endpoint_for(&n.kafka, protocol)?;
                        Some((n.id, h, p))
                    })
                    .collect(),
            },
            (Some(_), None) => Nodes {
                cluster_id: own_id,
                controller: -1,
                brokers: vec![self.own_endpoint(listener)],
            },
            (None, _) => Nodes {
                cluster_id: own_id,
                controller: self.cfg.node_id,
                brokers: vec![self.own_endpoint(listener)],
            },
        }
    }

    /// This node's address on listener `listener`.
    pub fn own_endpoint(&self, listener: usize) -> (i32, String, i32) {
        let l = &self.cfg.listeners[listener];
        (
            self.cfg.node_id,
            l.advertised_host.clone(),
            i32::from(l.advertised_port),
        )
    }

    pub fn meta(&self) -> SharedSnapshot {
        self.meta.borrow().clone()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), index))
            .cloned()
    }

    pub fn note(&self, f: impl FnOnce(&mut ShardStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Runs `f` on shard `target` (started in its job order) and returns
    /// its result.
    /// On this shard it runs directly.
    pub async fn call<R, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if target == self.id {
            return Ok(f(self.clone()).await);
        }
        let (tx, rx) = flume::bounded(1);
        self.send(
            target,
            Box::new(move |s| {
                Box::pin(async move {
                    let _ = tx.send_async(f(s).await).await;
                })
            }),
        )
        .await?;
        rx.recv_async().await.map_err(|_| ShardGone)
    }

    /// Queues a job on shard `target` (waits while its inbox is full).
    pub async fn send(&self, target: usize, job: Job) -> Result<(), ShardGone> {
        self.peers[target]
            .send_async(job)
            .await
            .map_err(|_| ShardGone)
    }

    /// Runs jobs from other shards until every sender is gone, each as a
    /// task of its own, started in the order they came, at most
    /// `SHARD_INBOX_JOBS_IN_FLIGHT_MAX` at once. Work that must not
    /// overlap takes a gate as its first step (`apply`, a partition's
    /// `append_gate`), and gates are first come, first served.
    pub async fn run_inbox(self: Rc<Self>, inbox: flume::Receiver<Job>) {
        let slots = Rc::new(glommio::sync::Semaphore::new(
            sluice_tuning::limits::SHARD_INBOX_JOBS_IN_FLIGHT_MAX as u64,
        ));
        while let Ok(job) = inbox.recv_async().await {
            // Past the bound, the inbox is not read (senders wait on its
            // depth) until a job ends.
            let Ok(slot) = slots.acquire_static_permit(1).await else {
                return;
            };
            let shard = self.clone();
            glommio::spawn_local(sluice_storage::stall::watch("forwarded job", async move {
                job(shard).await;
                drop(slot);
            }))
            .detach();
        }
    }

    /// Makes this shard's partitions match `snap`: opens partitions it now
    /// owns (after removing any leftover directory of a `fresh` one, a
    /// partition created just now), closes and deletes the data of
    /// partitions that no longer exist, applies changed topic configs, and
    /// takes `snap` as its view. Returns the partitions that failed to open.
    pub async fn apply(
        self: &Rc<Self>,
        snap: SharedSnapshot,
        fresh: &HashSet<(String, i32)>,
    ) -> Vec<(PathBuf, String)> {
        let _gate = self.apply_gate.acquire_permit(1).await;
        let data_dir = self.cfg.data_dir.clone();
        let mut failed = Vec::new();
        // Deleted partitions (or recreated topics: a new id) first, so a new
        // topic of the same name never finds the old data.
        let old: Vec<((String, i32), Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let old_meta = self.meta();
        for ((topic, index), p) in old {
            let keep = snap.owner(&topic, index) == Some(self.id)
                && snap.topic(&topic).map(|t| &t.id) == old_meta.topic(&topic).map(|t| &t.id);
            if keep {
                continue;
            }
            self.partitions.borrow_mut().remove(&(topic.clone(), index));
            if let Err(e) = p.log.close().await {
                tracing::warn!(shard = self.id, topic, index, error = %e, "close of deleted partition failed");
            }
            p.appended.notify_all();
            if let Some((_, _, stop)) = p.replication.following.borrow_mut().take() {
                stop.set(true);
            }
            let dir = p.log.dir().to_path_buf();
            // On a node of a cluster a partition also goes from here when
            // a reassignment moved its replica away, or its topic was
            // deleted and made again (a new id): its data goes too.
            let moved_away = self.cfg.cluster.is_some()
                && snap.topic(&topic).is_some_and(|t| {
                    Some(&t.id) != old_meta.topic(&topic).map(|o| &o.id)
                        || t.owners
                            .get(index as usize)
                            .is_none_or(|&o| o == crate::metadata::NOT_HOSTED)
                });
            if snap.topic(&topic).is_none() || fresh.contains(&(topic.clone(), index)) || moved_away
            {
                remove_dir(dir).await;
            }
        }
        // New partitions, and config changes of kept ones.
        for t in snap.topics.values() {
            let cfg = t.log_config();
            for (i, &owner) in t.owners.iter().enumerate() {
                if owner != self.id {
                    continue;
                }
                let index = i as i32;
                if let Some(p) = self.partition(&t.name, index) {
                    let changed = old_meta.topic(&t.name).map(|o| &o.configs) != Some(&t.configs);
                    if changed {
                        if let Err(e) = p.log.set_config(cfg.clone()) {
                            tracing::error!(shard = self.id, topic = t.name, index, error = %e, "config not applied");
                        }
                    }
                    continue;
                }
                let dir = partition_dir(&data_dir, &t.name, i);
                if fresh.contains(&(t.name.clone(), index)) {
                    remove_dir(dir.clone()).await;
                } else if !exists(dir.clone()).await {
                    // The metadata names this partition but its data is gone
                    // (deleted by hand, or another disk): it starts empty,
                    // and an operator should know.
                    tracing::warn!(shard = self.id, partition = %dir.display(),
                        "partition directory missing; the partition starts empty");
                }
                match PartitionLog::open(&dir, cfg.clone(), &self.cache, Rc::new(SystemClock)).await
                {
                    Ok(log) => {
                        log.set_high_watermark(log.log_end_offset());
                        let r = log.open_report();
                        tracing::info!(shard = self.id, partition = %dir.display(), segments = r.segments,
                            log_start = log.log_start_offset(), log_end = log.log_end_offset(),
                            scanned_bytes = r.scanned_bytes, truncated_bytes = r.truncated_bytes,
                            "partition opened");
                        let producers = crate::producers::recover(&log).await;
                        self.partitions.borrow_mut().insert(
                            (t.name.clone(), index),
                            Rc::new(Partition {
                                topic: t.name.clone(),
                                index,
                                log,
                                appended: Rc::new(Notify::default()),
                                producers: RefCell::new(producers),
                                append_gate: glommio::sync::Semaphore::new(1),
                                replication: Default::default(),
                                bytes_in: Cell::new(0),
                                records_in: Cell::new(0),
                                bytes_out: Cell::new(0),
                                records_out: Cell::new(0),
                            }),
                        );
                    }
                    Err(e) => {
                        tracing::error!(shard = self.id, partition = %dir.display(), error = %e, "partition failed to open");
                        failed.push((dir, e.to_string()));
                    }
                }
            }
        }
        // Each partition's role here (a node of a cluster).
        for t in snap.topics.values() {
            if t.roles.is_empty() {
                continue;
            }
            let id = *t.uuid().as_bytes();
            for (i, role) in t.roles.iter().enumerate() {
                if let Some(p) = self.partition(&t.name, i as i32) {
                    crate::cluster::replica::set_role(self, &p, id, Some(role.clone()));
                }
            }
        }
        *self.meta.borrow_mut() = snap;
        self.sync_coordinators();
        failed
    }

    /// Every partition this shard owns.
    pub fn owned(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Closes every partition, and the offsets log, cleanly (shutdown).
    pub async fn close_all(&self) {
        let coordinators: Vec<Rc<Coordinator>> = self
            .coordinators
            .borrow_mut()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in coordinators {
            c.close();
            if let Err(e) = c.offsets.close().await {
                tracing::error!(shard = self.id, error = %e, "offsets log close failed");
            }
        }
        let parts: Vec<Rc<Partition>> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in parts {
            let st = p.log.stats();
            tracing::info!(shard = self.id, partition = %p.log.dir().display(), appends = st.appends,
                appended_bytes = st.appended_bytes, syncs = st.syncs, writes = st.writes,
                disk_reads = st.disk_reads, cache_reads = st.cache_reads, "partition closing");
            crate::producers::checkpoint(&p).await;
            if let Err(e) = p.log.close().await {
                tracing::error!(shard = self.id, partition = %p.log.dir().display(), error = %e, "close failed");
            }
        }
    }
}

async fn exists(dir: PathBuf) -> bool {
    glommio::executor()
        .spawn_blocking(move || dir.exists())
        .await
}

async fn remove_dir(dir: PathBuf) {
    let shown = dir.display().to_string();
    let r = glommio::executor()
        .spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        })
        .await;
    if let Err(e) = r {
        tracing::error!(dir = shown, error = %e, "could not delete partition data");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::run;

    // A shard whose group coordinator did not open answers group work as
    // unavailable instead of panicking (which took every partition of the
    // shard down with it), and serves it once the coordinator is open.
    #[test]
    fn group_work_without_a_coordinator_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        run(move || async move {
            let cfg = BrokerConfig::with_defaults("127.0.0.1:0".parse().unwrap(), &data);
            let (tx, _rx) = flume::bounded::<Job>(1);
            let snap = Arc::new(crate::metadata::Snapshot::default());
            let shard = Shard::new(0, Arc::new(cfg), vec![tx], snap, 1 << 20, 256 << 20);
            let home = shard.group_owner("g");
            let got = shard
                .call_coordinator(home, |c| async move { c.list().len() })
                .await;
            assert_eq!(got, Err(ShardGone));
            shard.open_coordinator().await.unwrap();
            let got = shard
                .call_coordinator(home, |c| async move { c.list().len() })
                .await;
            assert_eq!(got, Ok(0));
        });
    }
}

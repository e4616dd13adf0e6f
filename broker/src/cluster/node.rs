//! A node of a cluster (`--cluster`): runs the metadata log on shard 0.
//!
//! - The journal lives in `<data-dir>/cluster/metalog.journal`; each step's
//!   batch is appended and synced (off the shard thread) before the
//!   step's messages leave. It is compacted into a snapshot of the
//!   `ClusterState` once it grew by `JOURNAL_COMPACT_BYTES`.
//! - Links: this node connects to every other node and sends its Raft
//!   messages over that connection (one `RaftMessages` frame per step and
//!   recipient); it receives theirs on the connections they open to its
//!   `--replication-listen`. Each connection starts with `Hello`; a node
//!   of another cluster, or one not in `--cluster`, is refused with the
//!   reason, and a frame that fails its checks closes the link.
//! - Every applied change is published to every shard as a
//!   `ClusterView`, which the Kafka APIs answer from.
//!
//! Raft ids are Kafka node ids plus one (Raft reserves 0).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use raft::prelude::Message;
use sluice_net::cluster::{
    encode, read_frame, write_frame, Frame, Hello, HelloReply, Outgoing, RaftMessages,
    ReplicaFetch, FRAME_VERSION,
};
use sluice_tuning::limits;

use super::metalog::{from_wire, to_wire, Metalog, MetalogConfig};
use super::state::{ClusterState, Command, NodeId, NodeInfo, Proposal, Refused};
use crate::config::ClusterConfig;
use crate::metadata::{self, Role, Snapshot, TopicMeta, NOT_HOSTED};
use crate::shard::Shard;

/// The journal is compacted once it grew by this much since the last
/// compaction.
const JOURNAL_COMPACT_BYTES: u64 = 4 << 20;

/// The controller's heartbeat interval, in ticks (a tenth of the
/// election timeout each).
const HEARTBEAT_TICKS: usize = 2;

/// Closed node links not yet seen by the log's driver, at most (more are
/// dropped: the election timeout still runs).
const CLOSED_LINKS_MAX: usize = 64;

/// A connection must say `Hello` within this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Raft messages received and not yet stepped; past this, new ones are
/// dropped (Raft sends again).
const INBOX_MAX: usize = 4096;

/// What every shard knows of the cluster: the state as this node last
/// applied it, and who leads the metadata log.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub state: Arc<ClusterState>,
    /// The controller (the metadata log's leader), if this node knows one.
    pub controller: Option<NodeId>,
    pub term: u64,
    pub commit: u64,
    /// On the controller: each voter's progress.
    pub voters: Vec<VoterStatus>,
}

/// A voter as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterStatus {
    pub id: NodeId,
    /// The highest metadata log index known to be in its log.
    pub log_end: u64,
    /// When a message from it last arrived (ms since the epoch); the
    /// controller's own entry is now.
    pub last_heard_ms: Option<u64>,
}

/// Why a proposed command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("{0}")]
    Refused(Refused),
    #[error("the cluster has no controller right now")]
    NoController,
    #[error("the command was not applied within {0:?} (a controller change may have dropped it)")]
    TimedOut(Duration),
    #[error("this node's metadata log is not running")]
    Stopped,
}

/// How work on shard 0 proposes commands and learns their outcome.
/// What a proposal's caller is told: the command's outcome (a value for
/// an allocation), or why it did not take effect.
type Reply = flume::Sender<Result<Option<i64>, ProposeError>>;

#[derive(Clone)]
pub struct NodeHandle {
    tx: flume::Sender<(Command, Reply)>,
}

/// A proposal not applied within this long is answered as timed out.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Proposals of this node waiting to be applied, at most.
const PROPOSALS_PENDING_MAX: usize = 1024;

impl NodeHandle {
    /// Proposes `cmd` and waits until this node applied it (or refused
    /// it, or it timed out).
    pub async fn propose(&self, cmd: Command) -> Result<(), ProposeError> {
        self.propose_value(cmd).await.map(|_| ())
    }

    /// As `propose`, returning the value the command's outcome carries
    /// (the first id of an `AllocateProducerIds`).
    pub async fn propose_value(&self, cmd: Command) -> Result<Option<i64>, ProposeError> {
        let (tx, rx) = flume::bounded(1);
        self.tx
            .send_async((cmd, tx))
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.recv_async().await.map_err(|_| ProposeError::Stopped)?
    }
}

fn raft_id(n: NodeId) -> u64 {
    n as u64 + 1
}
fn node_id(r: u64) -> NodeId {
    (r - 1) as NodeId
}

/// The cluster's identity in `Hello`: its voters. Nodes given different
/// `--cluster` lists refuse each other.
fn cluster_name(cfg: &ClusterConfig) -> String {
    let ids: Vec<String> = cfg.nodes.iter().map(|(n, _)| n.to_string()).collect();
    format!("voters:{}", ids.join(","))
}

fn journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("metalog.journal")
}

fn metalog_config(cfg: &ClusterConfig, me: NodeId) -> MetalogConfig {
    MetalogConfig {
        node_id: raft_id(me),
        voters: cfg.nodes.iter().map(|(n, _)| raft_id(*n)).collect(),
        election_ticks: 10,
        heartbeat_ticks: HEARTBEAT_TICKS,
        election_ticks_range: None,
    }
}

/// `f`, or the error `why` once `limit` passed.
pub(crate) async fn within<T>(
    limit: Duration,
    why: &str,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    future::or(f, async {
        glommio::timer::sleep(limit).await;
        Err(why.to_string())
    })
    .await
}

/// The next frame of a link, within `limit`; the link's end is an error.
pub(crate) async fn next_frame(
    stream: &mut glommio::net::TcpStream,
    limit: Duration,
    why: &str,
) -> Result<Frame, String> {
    within(limit, why, async {
        read_frame(stream)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "closed".to_string())
    })
    .await
}

/// Whether the data directory holds a node's metadata journal.
pub fn has_journal(data_dir: &Path) -> bool {
    journal_path(data_dir).exists()
}

/// Reads and replays the node's journal (blocking: before the shards
/// start): a damaged journal, or one of another cluster, is an error
/// that names the file.
pub fn check_journal(data_dir: &Path, cfg: &ClusterConfig, me: NodeId) -> Result<(), String> {
    let path = journal_path(data_dir);
    let journal = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("metadata journal {}: {e}", path.display())),
    };
    let opened = Metalog::open(&metalog_config(cfg, me), &journal)
        .map_err(|e| format!("metadata journal {}: {e}", path.display()))?;
    if let Some((_, image)) = opened.restore {
        ClusterState::from_image(&image)
            .map_err(|e| format!("metadata journal {}: snapshot: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs the node until the shard stops: opens the journal, listens,
/// links to the other nodes and drives the metadata log. An error is a
/// journal that cannot be read or written, or a listener that cannot
/// bind; the caller logs it and the node takes no part in the cluster.
pub async fn run(shard: Rc<Shard>, cfg: ClusterConfig) -> Result<(), String> {
    let me = shard.cfg.node_id;
    let path = journal_path(&shard.cfg.data_dir);
    let read_path = path.clone();
    let journal = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            std::fs::create_dir_all(read_path.parent().unwrap())?;
            match std::fs::read(&read_path) {
                Ok(b) => Ok(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| format!("metadata journal {}: {e}", path.display()))?;
    let tick = Duration::from_millis((cfg.election_timeout_ms / 10).max(1));
    let mcfg = metalog_config(&cfg, me);
    let opened = Metalog::open(&mcfg, &journal).map_err(|e| e.to_string())?;
    if opened.intact_bytes < journal.len() {
        tracing::warn!(
            path = %path.display(),
            torn_bytes = journal.len() - opened.intact_bytes,
            "metadata journal: a torn last step was dropped"
        );
    }
    let file = Journal::open(path.clone(), opened.intact_bytes as u64).await?;
    let mut state = match opened.restore {
        Some((_, image)) => ClusterState::from_image(&image)
            .map_err(|e| format!("metadata journal snapshot: {e}"))?,
        None => ClusterState::default(),
    };
    let mut metalog = opened.metalog;

    let listener = glommio::net::TcpListener::bind(cfg.listen)
        .map_err(|e| format!("cannot listen for nodes on {}: {e}", cfg.listen))?;
    let (inbox_tx, inbox) = flume::bounded::<Message>(INBOX_MAX);
    let (closed_tx, closed) = flume::bounded::<NodeId>(CLOSED_LINKS_MAX);
    let name = cluster_name(&cfg);
    let voters: Vec<NodeId> = cfg.nodes.iter().map(|(n, _)| *n).collect();
    let mut tasks = vec![glommio::spawn_local(accept_loop(
        shard.clone(),
        listener,
        name.clone(),
        voters.clone(),
        inbox_tx,
        closed_tx,
    ))
    .detach()];
    let mut links: HashMap<u64, flume::Sender<Outgoing>> = HashMap::new();
    for (n, addr) in cfg.nodes.iter().filter(|(n, _)| *n != me) {
        let (tx, rx) = flume::bounded(limits::CLUSTER_LINK_QUEUE_MAX);
        links.insert(raft_id(*n), tx);
        tasks.push(glommio::spawn_local(link(*n, addr.clone(), name.clone(), me, rx)).detach());
    }
    let (prop_tx, proposals) = flume::bounded(PROPOSALS_PENDING_MAX);
    shard.set_cluster_handle(NodeHandle { tx: prop_tx });
    tracing::info!(node = me, nodes = ?voters, listen = %cfg.listen, "cluster node started");

    let incarnation = now_ms();
    let info = NodeInfo {
        id: me,
        kafka: crate::security::listener::endpoints(&shard.cfg.listeners),
        replication: cfg
            .nodes
            .iter()
            .find(|(n, _)| *n == me)
            .map(|(_, a)| a.clone())
            .unwrap_or_default(),
        incarnation,
    };
    let mut driver = Driver {
        shard: shard.clone(),
        me,
        metalog: &mut metalog,
        state: &mut state,
        file,
        links,
        published: (None, 0, 0),
        published_at: Instant::now(),
        heard: HashMap::new(),
        shared: Arc::new(ClusterState::default()),
        next_req: 0,
        pending: HashMap::new(),
        dead_after_ms: cfg.election_timeout_ms,
        controlling_since: None,
        grace: tick * 2 * HEARTBEAT_TICKS as u32,
        failovers: HashMap::new(),
        offsets_topic_proposed: None,
        last_judged: None,
        completions: HashMap::new(),
        may_lead: false,
        info,
    };
    let mut next_tick = Instant::now() + tick;
    let mut next_propose = Instant::now();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        let got = future::or(
            async { inbox.recv_async().await.ok().map(Event::Message) },
            future::or(
                async { proposals.recv_async().await.ok().map(Event::Propose) },
                async {
                    glommio::timer::sleep(wait).await;
                    None
                },
            ),
        )
        .await;
        match got {
            Some(Event::Propose((cmd, reply))) => {
                driver.propose(cmd, reply);
                while let Ok((cmd, reply)) = proposals.try_recv() {
                    driver.propose(cmd, reply);
                }
            }
            Some(Event::Message(m)) => {
                driver.heard.insert(node_id(m.from), now_ms());
                let _ = driver.metalog.step(m);
                while let Ok(m) = inbox.try_recv() {
                    driver.heard.insert(node_id(m.from), now_ms());
                    let _ = driver.metalog.step(m);
                }
            }
            None => {}
        }
        while let Ok(n) = closed.try_recv() {
            if driver.metalog.leader() == Some(raft_id(n)) {
                tracing::info!(
                    node = n,
                    "the controller's link closed: its lease ends here"
                );
                driver.metalog.end_lease();
            }
        }
        if Instant::now() >= next_tick {
            driver.metalog.tick();
            next_tick += tick;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + tick;
            }
        }
        // Until this start of the node is registered, ask now and then (a
        // follower's proposal goes to the controller, and may be lost);
        // a new cluster's first controller names it.
        if Instant::now() >= next_propose {
            next_propose = Instant::now() + 4 * tick;
            if !driver.registered() {
                let cmd = Command::RegisterNode(driver.info.clone());
                let _ = driver.metalog.propose(cmd.encode());
            }
            if driver.metalog.is_leader() && driver.state.cluster_id.is_empty() {
                let cluster_id = shard.meta().cluster_id.clone();
                let _ = driver
                    .metalog
                    .propose(Command::InitCluster { cluster_id }.encode());
            }
        }
        if let Err(e) = driver.step().await {
            for t in tasks {
                t.cancel();
            }
            return Err(e);
        }
    }
}

enum Event {
    Message(Message),
    Propose((Command, Reply)),
}

struct Driver<'a> {
    shard: Rc<Shard>,
    me: NodeId,
    metalog: &'a mut Metalog,
    state: &'a mut ClusterState,
    file: Journal,
    links: HashMap<u64, flume::Sender<Outgoing>>,
    /// What was last published (controller, term, applied), and when.
    published: (Option<NodeId>, u64, u64),
    published_at: Instant,
    /// When a message from each node last arrived.
    heard: HashMap<NodeId, u64>,
    /// The state as the shards and the view last took it (shared, so the
    /// view published every second does not copy it).
    shared: Arc<ClusterState>,
    next_req: u64,
    /// This node's proposals not yet applied: their callers and deadlines.
    pending: HashMap<u64, (Reply, Instant)>,
    /// A node not heard from for this long is taken for dead (ms).
    dead_after_ms: u64,
    /// Since when this node is the controller.
    controlling_since: Option<Instant>,
    /// How long a new controller waits before it judges nodes dead.
    grace: Duration,
    /// Failover changes proposed, by (topic, partition, partition
    /// epoch), and when: one not applied (a proposal can be lost with a
    /// change of controller) is proposed again after `dead_after_ms`.
    failovers: HashMap<(String, u32, i32), Instant>,
    /// When the controller last judged which nodes are alive.
    last_judged: Option<Instant>,
    /// When the controller last proposed the offsets topic.
    offsets_topic_proposed: Option<Instant>,
    /// Reassignment completions proposed, by (topic, partition, partition
    /// epoch), and when (proposed again after a while if not applied).
    completions: HashMap<(String, u32, i32), Instant>,
    /// This start of the node, as it registers.
    info: NodeInfo,
    /// This node has caught up with the metadata log since it started,
    /// so the leadership it holds there is current: until then it leads
    /// nothing (its journal may name it leader of partitions that moved
    /// on while it was down).
    may_lead: bool,
}

impl Driver<'_> {
    /// This start of the node is registered in the applied state.
    fn registered(&self) -> bool {
        self.state.nodes.get(&self.me) == Some(&self.info)
    }

    fn propose(&mut self, cmd: Command, reply: Reply) {
        if self.pending.len() >= PROPOSALS_PENDING_MAX {
            let _ = reply.try_send(Err(ProposeError::TimedOut(Duration::ZERO)));
            return;
        }
        self.next_req += 1;
        let p = Proposal {
            req: Some((self.me, self.next_req)),
            cmd,
        };
        match self.metalog.propose(p.encode()) {
            Ok(()) => {
                self.pending
                    .insert(self.next_req, (reply, Instant::now() + PROPOSAL_TIMEOUT));
            }
            Err(_) => {
                let _ = reply.try_send(Err(ProposeError::NoController));
            }
        }
    }

    /// Polls the log: journal, then messages, then applying.
    async fn step(&mut self) -> Result<(), String> {
        let out = self.metalog.poll().map_err(|e| e.to_string())?;
        if !out.journal.is_empty() {
            self.file.append(out.journal).await?;
        }
        let mut by_node: BTreeMap<u64, Vec<sluice_net::cluster::RaftMessage>> = BTreeMap::new();
        for m in &out.messages {
            by_node.entry(m.to).or_default().push(to_wire(m));
        }
        for (to, messages) in by_node {
            let Some(link) = self.links.get(&to) else {
                continue;
            };
            let body = RaftMessages {
                from: raft_id(self.me) as u32,
                group: 0,
                messages,
            };
            match encode(&body, vec![]) {
                // A full queue (the node is unreachable) drops the frame.
                Ok(f) => {
                    let _ = link.try_send(f);
                }
                Err(e) => tracing::error!(to = node_id(to), error = %e, "raft frame not encoded"),
            }
        }
        if let Some((_, image)) = out.restore {
            *self.state = ClusterState::from_image(&image)
                .map_err(|e| format!("snapshot from the controller: {e}"))?;
        }
        // Answered once the shards took the change.
        let mut replies = Vec::new();
        for c in out.committed {
            let applied = self
                .state
                .apply(c.index, &c.data)
                .map_err(|e| e.to_string())?;
            if let Err(refused) = &applied.outcome {
                tracing::debug!(index = c.index, %refused, "metadata command refused");
            }
            if let Some((node, req)) = applied.req {
                if node == self.me {
                    if let Some((reply, _)) = self.pending.remove(&req) {
                        replies.push((reply, applied.outcome.map_err(ProposeError::Refused)));
                    }
                }
            }
        }
        let now = Instant::now();
        self.pending.retain(|_, (reply, deadline)| {
            if *deadline > now {
                return true;
            }
            let _ = reply.try_send(Err(ProposeError::TimedOut(PROPOSAL_TIMEOUT)));
            false
        });
        // Caught up, and this start of the node registered: leading
        // before that would continue the epochs of the node's previous
        // start (see `Command::RegisterNode`).
        let caught_up = !self.may_lead
            && self.metalog.leader().is_some()
            && self.state.applied >= self.metalog.commit_index()
            && self.registered();
        if caught_up {
            self.may_lead = true;
            tracing::info!(
                applied = self.state.applied,
                "caught up with the metadata log: taking the partitions this node leads"
            );
        }
        // The shards' topics follow what was applied: partitions with a
        // replica here opened, the others gone, leadership as applied.
        if self.state.applied != self.shared.applied || caught_up {
            self.shared = Arc::new(self.state.clone());
            let prev = self.shard.meta();
            let next = derive(self.state, self.me, self.may_lead, self.shard.shards, &prev);
            if next.topics != prev.topics {
                self.shard.controller().adopt(&self.shard, next).await;
            }
        }
        for (reply, outcome) in replies {
            let _ = reply.try_send(outcome);
        }
        self.fail_over();
        self.create_offsets_topic();
        self.complete_reassignments();
        if self.file.since_compaction > JOURNAL_COMPACT_BYTES && self.state.applied > 0 {
            let image = self
                .metalog
                .compact(self.state.applied, self.state.image())
                .map_err(|e| e.to_string())?;
            self.file.replace(image).await?;
        }
        let now = (
            self.metalog.leader().map(node_id),
            self.metalog.term(),
            self.state.applied,
        );
        if now.0 != self.published.0 {
            tracing::info!(controller = ?now.0, term = now.1, role = self.metalog.role(), "metadata log leader changed");
        }
        // On a change, and every second for the progress figures.
        if now != self.published || self.published_at.elapsed() >= Duration::from_secs(1) {
            self.published = now;
            self.published_at = Instant::now();
            let at = now_ms();
            let voters = self
                .metalog
                .progress()
                .into_iter()
                .map(|(id, log_end)| {
                    let id = node_id(id);
                    VoterStatus {
                        id,
                        log_end,
                        last_heard_ms: if id == self.me {
                            Some(at)
                        } else {
                            self.heard.get(&id).copied()
                        },
                    }
                })
                .collect();
            let view = Arc::new(ClusterView {
                state: self.shared.clone(),
                controller: now.0,
                term: now.1,
                commit: self.metalog.commit_index(),
                voters,
            });
            publish(&self.shard, view).await;
        }
        Ok(())
    }
}

impl Driver<'_> {
    /// On the controller: moves the leadership of partitions led by nodes
    /// not heard from for the election timeout to live in-sync replicas,
    /// and drops those nodes from every ISR (`ClusterState::failover`).
    /// A new controller first gives every node two heartbeat intervals
    /// to answer it.
    fn fail_over(&mut self) {
        if !self.metalog.is_leader() {
            self.controlling_since = None;
            return;
        }
        // A driver that was held up (a step that waited for the shards to
        // open many partitions) has not read what the others sent
        // meanwhile: they get the grace again rather than be taken for
        // dead.
        let checked = self.last_judged.replace(Instant::now());
        if checked.is_some_and(|t| t.elapsed() > Duration::from_millis(self.dead_after_ms / 2)) {
            self.controlling_since = Some(Instant::now());
        }
        // Live voters answer a new leader's first heartbeats within a few
        // milliseconds; two heartbeat intervals is their grace.
        let since = *self.controlling_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.grace {
            return;
        }
        let now = now_ms();
        let dead: BTreeSet<NodeId> = self
            .state
            .nodes
            .keys()
            .copied()
            .filter(|&n| {
                n != self.me
                    && self
                        .heard
                        .get(&n)
                        .is_none_or(|&t| now.saturating_sub(t) > self.dead_after_ms)
            })
            .collect();
        // Forget changes that were applied (or refused): their partition
        // epoch moved on.
        let state = &*self.state;
        self.failovers.retain(|(t, p, e), _| {
            state
                .topics
                .get(t)
                .and_then(|t| t.partitions.get(*p as usize))
                .is_some_and(|p| p.partition_epoch == *e)
        });
        if dead.is_empty() {
            return;
        }
        for cmd in self.state.failover(&dead) {
            let Command::ChangePartition {
                topic,
                partition,
                partition_epoch,
                leader,
                ..
            } = &cmd
            else {
                continue;
            };
            let key = (topic.clone(), *partition, *partition_epoch);
            let again = Duration::from_millis(self.dead_after_ms);
            if self
                .failovers
                .get(&key)
                .is_some_and(|at| at.elapsed() < again)
            {
                continue;
            }
            tracing::info!(topic, partition, leader, dead = ?dead, "failover: proposing a new leader and ISR");
            if self.metalog.propose(cmd.encode()).is_ok() {
                self.failovers.insert(key, Instant::now());
            }
        }
    }
}

impl Driver<'_> {
    /// On the controller: completes each reassignment whose target
    /// replicas are all in sync (`ClusterState::completions`).
    fn complete_reassignments(&mut self) {
        if !self.metalog.is_leader() {
            return;
        }
        let again = Duration::from_millis(self.dead_after_ms);
        for cmd in self.state.completions() {
            let Command::CompleteReassignment {
                topic,
                partition,
                partition_epoch,
            } = &cmd
            else {
                continue;
            };
            let key = (topic.clone(), *partition, *partition_epoch);
            if self
                .completions
                .get(&key)
                .is_some_and(|at| at.elapsed() < again)
            {
                continue;
            }
            tracing::info!(
                topic,
                partition,
                "reassignment: every new replica in sync, completing it"
            );
            if self.metalog.propose(cmd.encode()).is_ok() {
                self.completions.insert(key, Instant::now());
            }
        }
        self.completions
            .retain(|_, at| at.elapsed() < Duration::from_secs(60));
    }

    /// On the controller: creates the internal offsets topic
    /// (`groups::OFFSETS_TOPIC`) once the cluster is named and as many
    /// nodes registered as its replicas need (three, or every node of a
    /// smaller cluster), so a group's offsets are never on fewer disks.
    /// A lost proposal is made again after a while; a second one that
    /// meets the topic created is refused by the state, as on every node.
    fn create_offsets_topic(&mut self) {
        use crate::groups::OFFSETS_TOPIC;
        use sluice_tuning::limits::{
            OFFSETS_SEGMENT_BYTES, OFFSETS_TOPIC_PARTITIONS, OFFSETS_TOPIC_REPLICAS_MAX,
        };
        if !self.metalog.is_leader()
            || self.state.cluster_id.is_empty()
            || self.state.topics.contains_key(OFFSETS_TOPIC)
            || self
                .offsets_topic_proposed
                .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        let voters = self.shard.cfg.cluster.as_ref().map_or(1, |c| c.nodes.len());
        let factor = voters.min(OFFSETS_TOPIC_REPLICAS_MAX);
        let Some(replicas) = self.state.assign(OFFSETS_TOPIC_PARTITIONS, factor) else {
            return; // fewer nodes registered than replicas
        };
        let configs = [
            // Offsets go only by the coordinator's compaction.
            ("retention.ms", "-1".to_string()),
            ("retention.bytes", "-1".to_string()),
            ("segment.bytes", OFFSETS_SEGMENT_BYTES.to_string()),
            // A commit is one batch, as large as its request.
            (
                "max.message.bytes",
                sluice_tuning::limits::BATCH_BYTES_MAX.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cmd = Command::CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            id: metadata::new_topic_id(),
            replicas,
            configs,
        };
        tracing::info!(
            partitions = OFFSETS_TOPIC_PARTITIONS,
            replicas = factor,
            "creating the cluster's offsets topic"
        );
        if self.metalog.propose(cmd.encode()).is_ok() {
            self.offsets_topic_proposed = Some(Instant::now());
        }
    }
}

/// The topics a node's shards serve, from the cluster's state: every
/// topic, each partition with a replica here on a shard (the one it had
/// in `prev`, else the shard holding the fewest), the others
/// `NOT_HOSTED`, and each partition's role here.
/// With `may_lead` false, this node leads nothing yet.
pub fn derive(
    state: &ClusterState,
    me: NodeId,
    may_lead: bool,
    shards: usize,
    prev: &Snapshot,
) -> Snapshot {
    let mut next = prev.clone();
    next.topics.clear();
    for t in state.topics.values() {
        next.topics.insert(
            t.name.clone(),
            TopicMeta {
                name: t.name.clone(),
                id: t.id.clone(),
                owners: vec![NOT_HOSTED; t.partitions.len()],
                configs: t.configs.clone(),
                roles: t
                    .partitions
                    .iter()
                    .map(|p| Role {
                        leader: may_lead && p.leader == me,
                        leader_id: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                    })
                    .collect(),
            },
        );
    }
    // Kept placements first, so new ones balance against them.
    let mut placed = Vec::new();
    for t in state.topics.values() {
        let old = prev.topics.get(&t.name).filter(|o| o.id == t.id);
        for (i, p) in t.partitions.iter().enumerate() {
            if !p.replicas.contains(&me) {
                continue;
            }
            match old.and_then(|o| o.owners.get(i)).filter(|&&o| o < shards) {
                Some(&o) => next.topics.get_mut(&t.name).unwrap().owners[i] = o,
                None => placed.push((t.name.clone(), i)),
            }
        }
    }
    for (name, i) in placed {
        let o = metadata::assign_owners(&next, shards, 1)[0];
        next.topics.get_mut(&name).unwrap().owners[i] = o;
    }
    if !state.cluster_id.is_empty() {
        next.cluster_id = state.cluster_id.clone();
    }
    next
}

/// Every shard takes the new view.
async fn publish(shard: &Rc<Shard>, view: Arc<ClusterView>) {
    for target in 0..shard.shards {
        let v = view.clone();
        let _ = shard
            .call(target, move |s| async move { s.set_cluster_view(v) })
            .await;
    }
}

/// The journal file: appended and synced off the shard thread.
struct Journal {
    path: PathBuf,
    file: Arc<std::fs::File>,
    len: u64,
    since_compaction: u64,
}

impl Journal {
    /// Opens the journal for appending, cut to its intact length.
    async fn open(path: PathBuf, intact: u64) -> Result<Journal, String> {
        let p = path.clone();
        let file = glommio::executor()
            .spawn_blocking(move || -> std::io::Result<std::fs::File> {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)?;
                if f.metadata()?.len() != intact {
                    f.set_len(intact)?;
                    f.sync_all()?;
                }
                Ok(f)
            })
            .await
            .map_err(|e| format!("metadata journal {}: {e}", path.display()))?;
        Ok(Journal {
            path,
            file: Arc::new(file),
            len: intact,
            since_compaction: intact,
        })
    }

    async fn append(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        let f = self.file.clone();
        let n = bytes.len() as u64;
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                (&*f).write_all(&bytes)?;
                f.sync_data()
            })
            .await
            .map_err(|e| format!("metadata journal {}: {e}", self.path.display()))?;
        self.len += n;
        self.since_compaction += n;
        Ok(())
    }

    /// Replaces the journal with `image`: written beside it, synced,
    /// renamed over it, the directory synced.
    async fn replace(&mut self, image: Vec<u8>) -> Result<(), String> {
        let path = self.path.clone();
        let n = image.len() as u64;
        let file = glommio::executor()
            .spawn_blocking(move || -> std::io::Result<std::fs::File> {
                let tmp = path.with_extension("journal.tmp");
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&image)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(path.parent().unwrap())?.sync_all()?;
                std::fs::OpenOptions::new().append(true).open(&path)
            })
            .await
            .map_err(|e| format!("metadata journal {}: {e}", self.path.display()))?;
        self.file = Arc::new(file);
        self.len = n;
        self.since_compaction = 0;
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Takes the connections other nodes open, each on its own task.
async fn accept_loop(
    shard: Rc<Shard>,
    listener: glommio::net::TcpListener,
    name: String,
    voters: Vec<NodeId>,
    inbox: flume::Sender<Message>,
    closed: flume::Sender<NodeId>,
) {
    let me = shard.cfg.node_id;
    // Each other node's Raft link and its followers' fetch links (one per
    // followed partition); past the limit new connections are refused at
    // once, so a flood of connections holds no memory.
    let max = limits::NODE_LINKS_MAX;
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok(stream) if open.get() >= max => {
                tracing::warn!(peer = ?stream.peer_addr().ok(), max, "node link refused: too many");
            }
            Ok(stream) => {
                // A fetch answer is written as its header and then its
                // batches: with Nagle's algorithm the batches waited for
                // the header's ACK, which the follower delays (up to 40
                // ms on Linux), on every answer.
                let _ = stream.set_nodelay(true);
                let (name, voters, inbox) = (name.clone(), voters.clone(), inbox.clone());
                let closed = closed.clone();
                let open = open.clone();
                let shard = shard.clone();
                open.set(open.get() + 1);
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    if let Err(why) =
                        inbound(&shard, stream, &name, me, &voters, inbox, closed).await
                    {
                        tracing::info!(peer = ?peer, reason = why, "node link closed");
                    }
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "node listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One node's connection to this one: `Hello`, then Raft frames (its
/// messages to this node's metadata log) or replica fetches (answered on
/// the same connection).
async fn inbound(
    shard: &Rc<Shard>,
    mut stream: glommio::net::TcpStream,
    name: &str,
    me: NodeId,
    voters: &[NodeId],
    inbox: flume::Sender<Message>,
    closed: flume::Sender<NodeId>,
) -> Result<(), String> {
    let first = next_frame(&mut stream, HELLO_TIMEOUT, "no Hello in time").await?;
    let hello: Hello = first.decode().map_err(|e| e.to_string())?;
    let from = hello.node_id as NodeId;
    let refused = if hello.cluster != name {
        Some(format!(
            "node {from} is of cluster {:?}, this node ({me}) of {name:?}",
            hello.cluster
        ))
    } else if !voters.contains(&from) || from == me {
        Some(format!("node {from} is not another node of {name:?}"))
    } else if hello.versions.0 > FRAME_VERSION || hello.versions.1 < FRAME_VERSION {
        Some(format!(
            "node {from} speaks frame versions {:?}, this node {FRAME_VERSION}",
            hello.versions
        ))
    } else {
        None
    };
    let reply = HelloReply {
        node_id: me as u32,
        refused: refused.clone(),
    };
    let f = encode(&reply, vec![]).map_err(|e| e.to_string())?;
    write_frame(&mut stream, &f)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(why) = refused {
        return Err(why);
    }
    let mut raft_link = false;
    loop {
        let frame = read_frame(&mut stream).await.map_err(|e| e.to_string());
        let Ok(Some(frame)) = frame else {
            // The node's Raft messages stopped coming: tell the log's
            // driver (if that node leads it, its lease ends here).
            if raft_link {
                let _ = closed.try_send(from);
            }
            return Err(frame.err().unwrap_or_else(|| "closed".into()));
        };
        if frame.kind == sluice_net::cluster::Kind::ReplicaFetch {
            let req: ReplicaFetch = frame.decode().map_err(|e| e.to_string())?;
            if req.replica as NodeId != from {
                return Err(format!("node {from} fetched as replica {}", req.replica));
            }
            let reply = answer_fetch(shard, from, req).await?;
            write_frame(&mut stream, &reply)
                .await
                .map_err(|e| e.to_string())?;
            continue;
        }
        let body = frame.view::<RaftMessages>().map_err(|e| e.to_string())?;
        raft_link = true;
        for m in body.messages.iter() {
            let m = from_wire(m)?;
            if m.from != raft_id(from) {
                return Err(format!("node {from} sent a message from {}", m.from));
            }
            // A full inbox drops the message; Raft sends again.
            let _ = inbox.try_send(m);
        }
    }
}

/// Answers a follower's fetch: the partitions grouped by the shard that
/// holds them, each shard's group answered there, all at once. A fetch
/// with nothing new anywhere waits (up to its `max_wait_ms`) for an
/// append to any of its partitions; the first shard to answer with news
/// ends the others' waits, so the answer carries whatever is there.
async fn answer_fetch(
    shard: &Rc<Shard>,
    from: NodeId,
    req: ReplicaFetch,
) -> Result<Outgoing, String> {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;
    if req.partitions.len() > limits::REPLICA_FETCH_PARTITIONS_MAX {
        return Err(format!("a fetch of {} partitions", req.partitions.len()));
    }
    let wait = Duration::from_millis(u64::from(
        req.max_wait_ms.min(limits::REPLICA_FETCH_WAIT_MS_MAX),
    ));
    let meta = shard.meta();
    let mut by_owner: BTreeMap<usize, Vec<super::replica::FetchItem>> = BTreeMap::new();
    for (i, fp) in req.partitions.iter().enumerate() {
        let topic = meta
            .topic_by_id(uuid::Uuid::from_bytes(fp.topic_id))
            .map(|t| t.name.clone());
        let owner = topic
            .as_ref()
            .and_then(|t| meta.owner(t, fp.partition as i32));
        if let (Some(topic), Some(owner)) = (topic, owner) {
            by_owner.entry(owner).or_default().push((i, topic, *fp));
        }
    }
    type Call = Pin<Box<dyn Future<Output = Vec<(usize, super::replica::Answer)>>>>;
    let (cancel_tx, cancel_rx) = flume::bounded::<()>(1);
    let mut cancel = Some(cancel_tx);
    let mut calls: Vec<Option<Call>> = by_owner
        .into_iter()
        .map(|(owner, items)| {
            let (shard, cancel) = (shard.clone(), cancel_rx.clone());
            let call: Call = Box::pin(async move {
                shard
                    .call(owner, move |s| async move {
                        super::replica::serve_fetches(&s, from, items, wait, cancel).await
                    })
                    .await
                    .unwrap_or_default()
            });
            Some(call)
        })
        .collect();
    drop(cancel_rx);
    let mut answers: Vec<Option<super::replica::Answer>> =
        (0..req.partitions.len()).map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        for slot in calls.iter_mut() {
            let Some(call) = slot else { continue };
            if let Poll::Ready(got) = call.as_mut().poll(cx) {
                *slot = None;
                if got.iter().any(|(_, a)| super::replica::has_news(a)) {
                    // The others stop waiting and answer what they have.
                    cancel.take();
                }
                for (i, a) in got {
                    answers[i] = Some(a);
                }
            }
        }
        if calls.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let mut fetched = Vec::with_capacity(answers.len());
    let mut raw = Vec::new();
    for (a, fp) in answers.into_iter().zip(&req.partitions) {
        let a = a.unwrap_or_else(|| super::replica::Answer {
            fetched: sluice_net::cluster::FetchedPartition {
                topic_id: fp.topic_id,
                partition: fp.partition,
                error: kafka_protocol::ResponseError::NotLeaderOrFollower.code(),
                high_watermark: -1,
                log_start: -1,
                diverging: None,
                raw_len: 0,
            },
            raw: Vec::new(),
        });
        fetched.push(a.fetched);
        raw.extend(a.raw);
    }
    let reply = sluice_net::cluster::ReplicaFetchReply {
        correlation: req.correlation,
        partitions: fetched,
    };
    encode(&reply, raw).map_err(|e| e.to_string())
}

/// A connection to node `to` that said `Hello` (for a follower's fetch
/// loop).
pub(crate) async fn connect_node(
    to: NodeId,
    addr: &str,
    shard: &Shard,
) -> Result<glommio::net::TcpStream, String> {
    let Some(cfg) = shard.cfg.cluster.as_ref() else {
        return Err("not a node of a cluster".into());
    };
    connect(to, addr, &cluster_name(cfg), shard.cfg.node_id).await
}

/// This node's connection to node `to`: connect (again after any
/// failure, backing off), `Hello`, then send what the queue holds.
async fn link(
    to: NodeId,
    addr: String,
    name: String,
    me: NodeId,
    queue: flume::Receiver<Outgoing>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut logged = false;
    loop {
        match connect(to, &addr, &name, me).await {
            Ok(mut stream) => {
                tracing::info!(node = to, addr, "node link up");
                logged = false;
                backoff = Duration::from_millis(50);
                while let Ok(f) = queue.recv_async().await {
                    if let Err(e) = write_frame(&mut stream, &f).await {
                        tracing::info!(node = to, error = %e, "node link down");
                        break;
                    }
                }
            }
            Err(why) => {
                if !logged {
                    tracing::info!(node = to, addr, reason = why, "node not reachable");
                    logged = true;
                }
            }
        }
        // What queued while the link was down is stale.
        while queue.try_recv().is_ok() {}
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Connects to node `to` and exchanges `Hello`, all within
/// `HELLO_TIMEOUT`.
async fn connect(
    to: NodeId,
    addr: &str,
    name: &str,
    me: NodeId,
) -> Result<glommio::net::TcpStream, String> {
    within(
        HELLO_TIMEOUT,
        "no answer to Hello in time",
        say_hello(to, addr, name, me),
    )
    .await
}

async fn say_hello(
    to: NodeId,
    addr: &str,
    name: &str,
    me: NodeId,
) -> Result<glommio::net::TcpStream, String> {
    let a = addr.to_string();
    let resolved = glommio::executor()
        .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&a).map(|mut i| i.next()))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no address")?;
    let mut stream = within(Duration::from_secs(2), "connect timed out", async {
        glommio::net::TcpStream::connect(resolved)
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    let _ = stream.set_nodelay(true);
    let hello = Hello {
        cluster: name.to_string(),
        node_id: me as u32,
        versions: (FRAME_VERSION, FRAME_VERSION),
    };
    let f = encode(&hello, vec![]).map_err(|e| e.to_string())?;
    write_frame(&mut stream, &f)
        .await
        .map_err(|e| e.to_string())?;
    let reply: HelloReply = read_frame(&mut stream)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before HelloReply")?
        .decode()
        .map_err(|e| e.to_string())?;
    if let Some(why) = reply.refused {
        return Err(format!("refused: {why}"));
    }
    if reply.node_id as NodeId != to {
        return Err(format!("answered as node {}", reply.node_id));
    }
    Ok(stream)
}

/// The shard-side hold of the view.
#[derive(Default)]
pub struct ViewCell(RefCell<Option<Arc<ClusterView>>>);

impl ViewCell {
    pub fn get(&self) -> Option<Arc<ClusterView>> {
        self.0.borrow().clone()
    }
    pub fn set(&self, v: Arc<ClusterView>) {
        *self.0.borrow_mut() = Some(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Route;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        let mut i = 0;
        let mut apply = |s: &mut ClusterState, c: Command| {
            i += 1;
            assert_eq!(s.apply(i, &c.encode()).unwrap().outcome, Ok(None));
        };
        for id in 1..=3 {
            apply(
                &mut s,
                Command::RegisterNode(NodeInfo {
                    id,
                    kafka: format!("h:{id}"),
                    replication: format!("h:{}", id + 10),
                    incarnation: 1,
                }),
            );
        }
        apply(
            &mut s,
            Command::CreateTopic {
                name: "t".into(),
                id: "ab".into(),
                replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 3]],
                configs: Default::default(),
            },
        );
        s
    }

    /// A node serves every topic, holds only its replicas (spread over
    /// its shards, kept where they were), and routes only what it leads.
    #[test]
    fn a_node_holds_its_replicas_and_routes_what_it_leads() {
        let s = state();
        let d = derive(&s, 1, true, 2, &Snapshot::default());
        let t = &d.topics["t"];
        assert_eq!(t.owners[1], NOT_HOSTED);
        assert!(t.owners[0] < 2 && t.owners[2] < 2 && t.owners[3] < 2);
        assert_ne!(t.owners[0], t.owners[2], "spread over the shards");
        assert_eq!(d.route("t", 0), Route::Shard(t.owners[0]));
        // Node 1 follows partition 2 (led by 3) and holds no replica of 1.
        assert_eq!(d.route("t", 2), Route::NotLeader);
        assert_eq!(d.route("t", 1), Route::NotLeader);
        assert_eq!(d.route("t", 4), Route::Unknown);
        assert_eq!(d.route("u", 0), Route::Unknown);
        assert_eq!(d.owner("t", 1), None);
        assert_eq!(t.roles[0].replicas, vec![1, 2]);
        assert_eq!(
            t.roles[0].isr,
            vec![1, 2],
            "a new partition's replicas in sync"
        );
        assert_eq!(t.roles[2].leader_id, 3);
        // Placement is kept from one derivation to the next, even when the
        // balance would choose otherwise.
        let mut prev = d.clone();
        let o = prev.topics.get_mut("t").unwrap();
        o.owners[0] = 1;
        o.owners[2] = 1;
        o.owners[3] = 1;
        let again = derive(&s, 1, true, 2, &prev);
        assert_eq!(again.topics["t"].owners, prev.topics["t"].owners);
        // A recreated topic (new id) is placed afresh.
        let mut other = prev.clone();
        other.topics.get_mut("t").unwrap().id = "cd".into();
        assert_eq!(
            derive(&s, 1, true, 2, &other).topics["t"].owners,
            d.topics["t"].owners
        );
    }
}

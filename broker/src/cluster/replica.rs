//! Partition replication between nodes (Kafka's model, ARCHITECTURE.md
//! "Cluster"): followers fetch from the leader with `ReplicaFetch` frames
//! and append what they get as it is (`PartitionLog::append_replica`);
//! the leader tracks each follower's fsynced end and when it last asked
//! for the log end, keeps the high watermark at the smallest fsynced end
//! over the in-sync replicas,
//! and asks the controller to add a follower that caught up to the ISR
//! and to drop one that fell behind for `REPLICA_LAG_MAX`.
//!
//! Leader side: `serve_fetches` answers the partitions of a follower's
//! fetch that one shard holds, waiting (up to the fetch's `max_wait_ms`)
//! for an append to any of them when none has news. Follower side: each
//! shard runs one `Fetcher` per leader node, fetching every partition it
//! follows from that node in one request per round, over one connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_net::cluster::{Diverging, FetchPartition, FetchedPartition, TopicId};
use sluice_storage::notify::Notify;

use super::state::{Command, NodeId};
use crate::metadata::Role;
use crate::shard::{Partition, Shard};

/// A follower out of step with the leader's log end for this long leaves
/// the ISR (Kafka's replica.lag.time.max.ms; 30 s there).
pub const REPLICA_LAG_MAX: Duration = Duration::from_secs(10);

/// What the leader knows of one follower of one partition.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    pub durable_end: i64,
    /// When its fetch last asked for the leader's log end (it had it all).
    pub caught_up: Instant,
}

/// A partition's replication state on the shard that holds it.
#[derive(Default)]
pub struct Replication {
    /// The partition's role as last applied; `None` on a single broker.
    pub role: RefCell<Option<Role>>,
    /// Followers' progress, on the leader.
    pub followers: RefCell<HashMap<NodeId, FollowerState>>,
    /// Notified when the high watermark moves.
    pub hw_moved: Rc<Notify>,
    /// An ISR change of this partition is being proposed.
    pub isr_change: Cell<bool>,
    /// Replicas proposed into the ISR against a partition epoch: they
    /// count toward the high watermark from the moment they are proposed
    /// (Kafka's maximal ISR), since the proposal may commit at any time
    /// until that epoch moves on. Otherwise the high watermark could pass
    /// what a replica joining the ISR has, and a later leader from the
    /// ISR could lack exposed records.
    pub adding: RefCell<(i32, Vec<NodeId>)>,
    /// Since when this node leads the partition.
    pub led_since: Cell<Option<Instant>>,
    /// The log end when this node took the lead (Kafka's leader epoch
    /// start offset): a follower joins the ISR only with everything below
    /// it on disk, so it holds whatever this node exposed before.
    pub lead_start: Cell<i64>,
    /// This node's fetch loop for the partition, while it follows.
    pub following: RefCell<Option<Following>>,
    /// The leader's log start as this follower last took it (see
    /// `apply_answer`).
    pub leader_log_start: Cell<i64>,
}

/// A running fetch loop: the leader and epoch it follows, and the flag
/// that stops it.
pub type Following = (NodeId, i32, Rc<Cell<bool>>);

impl Replication {
    /// The in-sync replicas other than the leader, when this node leads
    /// a partition replicated elsewhere.
    /// Replicas being added to the ISR count (see `adding`).
    pub fn other_in_sync(&self) -> Option<Vec<NodeId>> {
        let role = self.role.borrow();
        let r = role.as_ref()?;
        let adding = self.adding.borrow();
        r.leader.then(|| {
            let mut out: Vec<NodeId> = r
                .isr
                .iter()
                .copied()
                .filter(|&n| n != r.leader_id)
                .collect();
            if adding.0 == r.partition_epoch {
                out.extend(adding.1.iter().filter(|n| !r.isr.contains(n)));
            }
            out
        })
    }
}

/// Moves the high watermark of a partition this node leads: the
/// smallest fsynced end over its in-sync replicas, this node's included;
/// with no other in-sync replica, the log end (as a single broker).
pub fn update_high_watermark(p: &Partition) {
    let Some(others) = p.replication.other_in_sync() else {
        return;
    };
    let replicas = p
        .replication
        .role
        .borrow()
        .as_ref()
        .map_or(1, |r| r.replicas.len());
    let hw = {
        let followers = p.replication.followers.borrow();
        high_watermark(
            p.log.durable_offset(),
            p.log.log_end_offset(),
            others
                .iter()
                .map(|n| followers.get(n).map_or(0, |f| f.durable_end)),
            replicas,
        )
    };
    let before = p.log.high_watermark();
    p.log.set_high_watermark(hw);
    if p.log.high_watermark() != before {
        p.replication.hw_moved.notify_all();
        // Consumers waiting at the old high watermark read on.
        p.appended.notify_all();
    }
}

// The protocol's decisions, free of I/O, so the replication simulation
// (broker/tests/replication_sim.rs) drives the same rules as the nodes.

/// The high watermark a leader computes: the smallest fsynced end over
/// its in-sync replicas, its own included (`others`: the other in-sync
/// replicas' reported fsynced ends). A partition with one replica has
/// its log end, as a single broker; one with more whose ISR shrank to
/// the leader alone has the leader's fsynced end, so a consumer never
/// reads what a crash of that one node would take back.
pub fn high_watermark(
    leader_durable: i64,
    leader_end: i64,
    others: impl Iterator<Item = i64>,
    replicas: usize,
) -> i64 {
    if replicas <= 1 {
        return leader_end;
    }
    others.fold(leader_durable, i64::min)
}

/// The leader's check of a follower's fetch (KIP-595's diverging epoch):
/// where the follower's last epoch ends in the leader's log, when that is
/// before the fetch offset or the leader has no such epoch. `end_for` is
/// the leader's `end_offset_for_epoch`.
pub fn divergence(
    end_for: impl Fn(i32) -> (i32, i64),
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<Diverging> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end_offset) = end_for(last_fetched_epoch);
    (epoch < last_fetched_epoch || end_offset < fetch_offset)
        .then_some(Diverging { epoch, end_offset })
}

/// Where a follower cuts its log on the leader's divergence answer `d`:
/// the end of the leader's epoch when this log's history has that epoch
/// (the smaller of the two ends); the end of this log's latest epoch
/// before it otherwise (the next fetch asks about that one); the high
/// watermark when the leader could not place the epoch at all. `end_for`
/// is the follower's `end_offset_for_epoch`.
pub fn truncation_target(
    end_for: impl Fn(i32) -> (i32, i64),
    log_end: i64,
    high_watermark: i64,
    d: Diverging,
) -> i64 {
    if d.end_offset < 0 {
        high_watermark
    } else if d.epoch < 0 {
        d.end_offset.min(log_end)
    } else {
        match end_for(d.epoch) {
            (e, mine) if e == d.epoch => d.end_offset.min(mine),
            (e, mine) if e >= 0 => mine,
            _ => d.end_offset.min(log_end),
        }
    }
}

/// How an acks=all append's wait for the high watermark ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicated {
    /// Every in-sync replica has it on disk.
    Yes,
    /// Not within the wait.
    TimedOut,
    /// This node stopped leading the partition (or the epoch changed):
    /// the batch may or may not survive, the client retries at the new
    /// leader (a retried idempotent batch is recognised there).
    LeaderChanged,
}

/// Waits until the high watermark passes `offset` (an acks=all append
/// made while this node led at `epoch`), `timeout`, or a change of this
/// node's leadership.
pub async fn wait_high_watermark(
    p: &Partition,
    offset: i64,
    epoch: i32,
    timeout: Duration,
) -> Replicated {
    let deadline = Instant::now() + timeout;
    let leading = || {
        p.replication
            .role
            .borrow()
            .as_ref()
            .is_some_and(|r| r.leader && r.leader_epoch == epoch)
    };
    loop {
        if !leading() {
            return Replicated::LeaderChanged;
        }
        if p.log.high_watermark() > offset {
            return Replicated::Yes;
        }
        let now = Instant::now();
        if now >= deadline {
            return Replicated::TimedOut;
        }
        let seen = p.replication.hw_moved.generation();
        update_high_watermark(p);
        if p.log.high_watermark() > offset {
            return Replicated::Yes;
        }
        futures_lite::future::or(p.replication.hw_moved.changed(seen), async {
            glommio::timer::sleep(deadline - now).await;
        })
        .await;
    }
}

/// One partition's answer to a follower, and its batches.
pub struct Answer {
    pub fetched: FetchedPartition,
    pub raw: Vec<Bytes>,
}

fn refuse(topic_id: TopicId, partition: u32, code: i16) -> Answer {
    refuse_at(topic_id, partition, code, -1)
}

/// A refusal that names the leader's log start (OFFSET_OUT_OF_RANGE).
fn refuse_at(topic_id: TopicId, partition: u32, code: i16, log_start: i64) -> Answer {
    Answer {
        fetched: FetchedPartition {
            topic_id,
            partition,
            error: code,
            high_watermark: -1,
            log_start,
            diverging: None,
            raw_len: 0,
        },
        raw: Vec::new(),
    }
}

/// One partition of a follower's fetch on the shard that holds it: its
/// place in the request, its topic, and what the follower asked.
pub type FetchItem = (usize, String, FetchPartition);

/// Whether an answer tells the follower anything beyond "nothing new".
pub fn has_news(a: &Answer) -> bool {
    a.fetched.error != 0 || a.fetched.diverging.is_some() || a.fetched.raw_len > 0
}

/// Answers the partitions of follower `from`'s fetch that this shard
/// holds. When none has anything new it waits (up to `wait`) for an
/// append to any of them, or until `cancel` closes (another shard
/// answered with news for the same fetch), and answers them all again.
pub async fn serve_fetches(
    shard: &Rc<Shard>,
    from: NodeId,
    items: Vec<FetchItem>,
    wait: Duration,
    cancel: flume::Receiver<()>,
) -> Vec<(usize, Answer)> {
    // Generations first: an append while the first answers are read
    // ends the wait at once.
    let watched: Vec<(Rc<Notify>, u64)> = items
        .iter()
        .filter_map(|(_, t, fp)| shard.partition(t, fp.partition as i32))
        .map(|p| (p.appended.clone(), p.appended.generation()))
        .collect();
    let mut out = Vec::with_capacity(items.len());
    for (i, t, fp) in &items {
        out.push((*i, serve_fetch(shard, from, t, *fp).await));
    }
    if wait.is_zero() || out.iter().any(|(_, a)| has_news(a)) {
        return out;
    }
    let mut changes: Vec<_> = watched
        .iter()
        .map(|(n, seen)| Box::pin(n.changed(*seen)))
        .collect();
    let any_append = futures_lite::future::poll_fn(|cx| {
        for c in changes.iter_mut() {
            if std::future::Future::poll(c.as_mut(), cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    });
    futures_lite::future::or(
        any_append,
        futures_lite::future::or(
            async {
                glommio::timer::sleep(wait).await;
            },
            async {
                let _ = cancel.recv_async().await;
            },
        ),
    )
    .await;
    out.clear();
    for (i, t, fp) in &items {
        out.push((*i, serve_fetch(shard, from, t, *fp).await));
    }
    out
}

/// Answers one partition of follower `from`'s fetch, on the shard that
/// holds it: records the follower's progress, moves the high watermark,
/// proposes the follower into the ISR once it caught up, and reads from
/// its offset (`serve_fetches` waits when nothing is new).
async fn serve_fetch(shard: &Rc<Shard>, from: NodeId, topic: &str, fp: FetchPartition) -> Answer {
    let (tid, pi) = (fp.topic_id, fp.partition);
    let Some(p) = shard.partition(topic, pi as i32) else {
        return refuse(tid, pi, ResponseError::NotLeaderOrFollower.code());
    };
    let Some(role) = p.replication.role.borrow().clone() else {
        return refuse(tid, pi, ResponseError::NotLeaderOrFollower.code());
    };
    if !role.leader {
        return refuse(tid, pi, ResponseError::NotLeaderOrFollower.code());
    }
    if fp.current_leader_epoch < role.leader_epoch {
        return refuse(tid, pi, ResponseError::FencedLeaderEpoch.code());
    }
    if fp.current_leader_epoch > role.leader_epoch {
        return refuse(tid, pi, ResponseError::UnknownLeaderEpoch.code());
    }
    if !role.replicas.contains(&from) || from == role.leader_id {
        return refuse(tid, pi, ResponseError::ReplicaNotAvailable.code());
    }
    if p.log.latest_epoch() < role.leader_epoch {
        // This node's epoch is not in its history yet (being written).
        return refuse(tid, pi, ResponseError::UnknownLeaderEpoch.code());
    }
    // A follower whose whole log lies below this log's start (it was
    // away while retention or the offsets compaction deleted what it
    // lacks) restarts at that start: nothing it holds matters.
    if fp.fetch_offset < p.log.log_start_offset() {
        return refuse_at(
            tid,
            pi,
            ResponseError::OffsetOutOfRange.code(),
            p.log.log_start_offset(),
        );
    }
    // Where the follower's log leaves this one (KIP-101/KIP-595): its
    // last epoch ends earlier here, or never led here at all. It must cut
    // its log back before it fetches again.
    let d = divergence(
        |e| p.log.end_offset_for_epoch(e),
        fp.last_fetched_epoch,
        fp.fetch_offset,
    );
    if d.is_some() {
        return answer(&p, tid, pi, d, Vec::new());
    }
    let end = p.log.log_end_offset();
    if fp.fetch_offset > end || fp.fetch_offset < p.log.log_start_offset() {
        return refuse(tid, pi, ResponseError::OffsetOutOfRange.code());
    }
    let now = Instant::now();
    {
        let mut followers = p.replication.followers.borrow_mut();
        let f = followers.entry(from).or_insert(FollowerState {
            durable_end: 0,
            caught_up: now,
        });
        f.durable_end = fp.durable_end.min(fp.fetch_offset);
        if fp.fetch_offset >= end {
            f.caught_up = now;
        }
    }
    // The followers have more on disk than this node: sync, so the high
    // watermark is not held back by this node's flush interval.
    if fp.durable_end > p.log.durable_offset() && role.isr.contains(&from) {
        let log = p.log.clone();
        let p2 = p.clone();
        glommio::spawn_local(async move {
            if log.sync().await.is_ok() {
                update_high_watermark(&p2);
            }
        })
        .detach();
    }
    update_high_watermark(&p);
    // It joins once it has the high watermark and the start of this
    // node's lead on disk: a follower that fetched up to them but crashes
    // before its sync would join lacking records already exposed.
    let caught_up = fp.durable_end.min(fp.fetch_offset);
    if !role.isr.contains(&from)
        && caught_up >= p.log.high_watermark()
        && caught_up >= p.replication.lead_start.get()
    {
        let mut isr = role.isr.clone();
        isr.push(from);
        propose_isr(shard, &p, topic, &role, isr);
    }
    let mut raw = Vec::new();
    if fp.fetch_offset < p.log.log_end_offset() {
        match p
            .log
            .read(fp.fetch_offset, fp.max_bytes.max(1) as usize)
            .await
        {
            Ok(batches) => {
                for b in batches {
                    for c in b.chunks() {
                        raw.push(c.clone());
                    }
                }
            }
            Err(e) => return refuse(tid, pi, e.kafka_code()),
        }
    }
    answer(&p, tid, pi, None, raw)
}

/// A partition's answer with its high watermark and log start.
fn answer(
    p: &Partition,
    topic_id: TopicId,
    partition: u32,
    diverging: Option<Diverging>,
    raw: Vec<Bytes>,
) -> Answer {
    Answer {
        fetched: FetchedPartition {
            topic_id,
            partition,
            error: 0,
            high_watermark: p.log.high_watermark(),
            log_start: p.log.log_start_offset(),
            diverging,
            raw_len: raw.iter().map(Bytes::len).sum::<usize>() as u32,
        },
        raw,
    }
}

/// Proposes a new ISR for a partition this node leads (one change at a
/// time per partition), through the metadata log on shard 0.
pub fn propose_isr(
    shard: &Rc<Shard>,
    p: &Rc<Partition>,
    topic: &str,
    role: &Role,
    isr: Vec<NodeId>,
) {
    if p.replication.isr_change.replace(true) {
        return;
    }
    {
        let mut adding = p.replication.adding.borrow_mut();
        if adding.0 != role.partition_epoch {
            *adding = (role.partition_epoch, Vec::new());
        }
        for n in isr.iter().filter(|n| !role.isr.contains(n)) {
            if !adding.1.contains(n) {
                adding.1.push(*n);
            }
        }
    }
    let cmd = Command::ChangePartition {
        topic: topic.to_string(),
        partition: p.index as u32,
        partition_epoch: role.partition_epoch,
        leader: role.leader_id,
        isr,
    };
    let (shard, p) = (shard.clone(), p.clone());
    glommio::spawn_local(async move {
        let r = shard
            .call(0, move |s| async move {
                match s.cluster_handle() {
                    Some(h) => h.propose(cmd).await.map_err(|e| e.to_string()),
                    None => Err("no metadata log on this node".to_string()),
                }
            })
            .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::info!(
                partition = p.index,
                topic = p.topic,
                error = e,
                "ISR change not made"
            ),
            Err(_) => {}
        }
        p.replication.isr_change.set(false);
    })
    .detach();
}

/// Drops followers that fell behind for `REPLICA_LAG_MAX` from the ISR of
/// a partition this node leads (run now and then).
pub fn check_lagging(shard: &Rc<Shard>, p: &Rc<Partition>) {
    let Some(role) = p.replication.role.borrow().clone() else {
        return;
    };
    if !role.leader {
        return;
    }
    let now = Instant::now();
    let followers = p.replication.followers.borrow().clone();
    let since = p.replication.led_since.get().unwrap_or(now);
    let lagging = |n: &NodeId| match followers.get(n) {
        // Never fetched since this node took the lead: measured from then.
        None => now.duration_since(since) > REPLICA_LAG_MAX,
        // Caught up means a fetch that asked for the log end: a follower
        // that stopped fetching falls behind with no new data too.
        Some(f) => now.duration_since(f.caught_up) > REPLICA_LAG_MAX,
    };
    if role.isr.iter().any(|n| *n != role.leader_id && lagging(n)) {
        let isr: Vec<NodeId> = role
            .isr
            .iter()
            .copied()
            .filter(|n| *n == role.leader_id || !lagging(n))
            .collect();
        propose_isr(shard, p, &p.topic, &role, isr);
    }
}

/// Takes a partition's role as applied: a leader stamps its epoch into
/// what it appends and starts counting its followers afresh on a new
/// epoch; a follower (re)starts its fetch loop when its leader or epoch
/// changed, and stops it when it no longer follows.
pub fn set_role(shard: &Rc<Shard>, p: &Rc<Partition>, topic_id: TopicId, role: Option<Role>) {
    let old = p.replication.role.replace(role.clone());
    // acks=all waits look again: a leader that lost the lead answers them.
    p.replication.hw_moved.notify_all();
    let Some(role) = role else {
        return;
    };
    if old.is_none() && role.replicas.len() > 1 {
        // Opened with no knowledge of how much of the log was committed
        // (its end at open may hold records no other replica has): the
        // high watermark starts from the log start and is learned again
        // from the leader, or from the in-sync replicas' fetches.
        p.log.reset_high_watermark(p.log.log_start_offset());
    }
    let new_epoch = old.as_ref().map(|o| o.leader_epoch) != Some(role.leader_epoch);
    if role.leader {
        p.log.set_leader_epoch(role.leader_epoch);
        if p.log.latest_epoch() < role.leader_epoch {
            // The epoch's start in the history is what followers' fetches
            // are checked against; until it is written they wait.
            let (log, epoch) = (p.log.clone(), role.leader_epoch);
            glommio::spawn_local(async move {
                if let Err(e) = log.begin_epoch(epoch).await {
                    tracing::error!(log = %log.dir().display(), epoch, error = %e,
                        "leader epoch not recorded");
                }
            })
            .detach();
        }
        if new_epoch || p.replication.led_since.get().is_none() {
            p.replication.led_since.set(Some(Instant::now()));
            p.replication.lead_start.set(p.log.log_end_offset());
            p.replication.followers.borrow_mut().clear();
        }
        // A smaller ISR may let the high watermark move (and the acks=all
        // produces waiting on it answer).
        update_high_watermark(p);
    } else {
        p.replication.led_since.set(None);
    }
    let me = shard.cfg.node_id;
    // Not while the state names this node leader (it has not yet caught
    // up with the metadata log, and leads nothing until it has).
    let want = (!role.leader
        && role.leader_id >= 0
        && role.leader_id != me
        && role.replicas.contains(&me))
    .then_some((role.leader_id, role.leader_epoch));
    let mut following = p.replication.following.borrow_mut();
    let have = following.as_ref().map(|(l, e, _)| (*l, *e));
    if have == want {
        return;
    }
    if let Some((_, _, stop)) = following.take() {
        stop.set(true);
    }
    if let Some((leader, epoch)) = want {
        let stop = Rc::new(Cell::new(false));
        *following = Some((leader, epoch, stop.clone()));
        follow(
            shard,
            leader,
            Followed {
                p: p.clone(),
                topic_id,
                epoch,
                stop,
                retry_at: None,
                failing: None,
            },
        );
    }
}

/// A partition a shard follows: its leader epoch, the flag that ends the
/// following, and when a refused partition is asked about again.
struct Followed {
    p: Rc<Partition>,
    topic_id: TopicId,
    epoch: i32,
    stop: Rc<Cell<bool>>,
    retry_at: Option<Instant>,
    /// Why the last answer was not applied, while it keeps failing the
    /// same way: a warning is logged once per new reason, not per round.
    failing: Option<String>,
}

/// The partitions one shard follows from one leader node, fetched
/// together, over one connection, in one `ReplicaFetch` per round (Kafka's
/// replica fetcher): the fetches are the partitions' heartbeats too.
#[derive(Default)]
pub struct Fetcher {
    partitions: RefCell<HashMap<(TopicId, u32), Followed>>,
}

/// Adds a partition to this shard's fetcher for `leader`, starting the
/// fetcher when there is none.
fn follow(shard: &Rc<Shard>, leader: NodeId, f: Followed) {
    let key = (f.topic_id, f.p.index as u32);
    let fetcher = shard.fetchers.borrow().get(&leader).cloned();
    if let Some(fetcher) = fetcher {
        fetcher.partitions.borrow_mut().insert(key, f);
        return;
    }
    // The partition first: a task may start running at its spawn.
    let fetcher = Rc::new(Fetcher::default());
    fetcher.partitions.borrow_mut().insert(key, f);
    shard.fetchers.borrow_mut().insert(leader, fetcher.clone());
    glommio::spawn_local(sluice_storage::stall::watch(
        "replica fetch",
        run_fetcher(shard.clone(), leader, fetcher),
    ))
    .detach();
}

/// Bytes a follower asks for per partition per fetch.
const FETCH_BYTES_MAX: u32 = 8 << 20;
/// How long the leader may hold a fetch with nothing to send.
const FETCH_WAIT_MS: u32 = 500;

/// A fetcher's loop: fetch every followed partition from its log end,
/// append what comes as it is, sync, report the fsynced ends in the next
/// fetch. Partitions are processed at once, each on a task of its own
/// (their syncs overlap). Reconnects after a failure of the connection;
/// a partition the leader refused is asked about again after a pause;
/// ends when it follows nothing.
async fn run_fetcher(shard: Rc<Shard>, leader: NodeId, fetcher: Rc<Fetcher>) {
    let me = shard.cfg.node_id;
    let mut backoff = Duration::from_millis(50);
    let mut correlation = 0u64;
    let mut stream: Option<glommio::net::TcpStream> = None;
    loop {
        fetcher.partitions.borrow_mut().retain(|_, f| !f.stop.get());
        if fetcher.partitions.borrow().is_empty() {
            let mut fetchers = shard.fetchers.borrow_mut();
            if fetchers
                .get(&leader)
                .is_some_and(|f| Rc::ptr_eq(f, &fetcher))
            {
                fetchers.remove(&leader);
            }
            return;
        }
        let Some(conn) = stream.as_mut() else {
            let addr = shard
                .cluster_view()
                .and_then(|v| v.state.nodes.get(&leader).map(|n| n.replication.clone()));
            let connected = match addr {
                Some(addr) => super::node::connect_node(leader, &addr, &shard)
                    .await
                    .map_err(|why| {
                        tracing::debug!(
                            leader,
                            addr,
                            reason = why,
                            "replica fetch: leader not reachable"
                        )
                    }),
                None => Err(()),
            };
            match connected {
                Ok(s) => {
                    stream = Some(s);
                    backoff = Duration::from_millis(50);
                }
                Err(()) => {
                    glommio::timer::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            continue;
        };
        let now = Instant::now();
        let asked: Vec<(Rc<Partition>, FetchPartition)> = fetcher
            .partitions
            .borrow()
            .values()
            .filter(|f| f.retry_at.is_none_or(|at| at <= now))
            .map(|f| {
                let p = &f.p;
                (
                    p.clone(),
                    FetchPartition {
                        topic_id: f.topic_id,
                        partition: p.index as u32,
                        current_leader_epoch: f.epoch,
                        fetch_offset: p.log.log_end_offset(),
                        durable_end: p.log.durable_offset(),
                        last_fetched_epoch: p.log.latest_epoch(),
                        max_bytes: FETCH_BYTES_MAX,
                    },
                )
            })
            .collect();
        if asked.is_empty() {
            // Every partition refused a moment ago.
            glommio::timer::sleep(REFUSED_PAUSE).await;
            continue;
        }
        correlation += 1;
        let req = sluice_net::cluster::ReplicaFetch {
            replica: me as u32,
            correlation,
            max_wait_ms: FETCH_WAIT_MS,
            partitions: asked.iter().map(|(_, fp)| *fp).collect(),
        };
        let answers = match fetch_round(conn, &req).await {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(
                    leader,
                    partitions = asked.len(),
                    reason = why,
                    "replica fetch failed"
                );
                stream = None;
                continue;
            }
        };
        // Each partition's answer on a task of its own.
        let mut tasks = Vec::with_capacity(answers.len());
        for ((p, fp), (a, raw)) in asked.into_iter().zip(answers) {
            tasks.push((
                (fp.topic_id, fp.partition),
                glommio::spawn_local(apply_answer(p, a, raw, fp.current_leader_epoch)),
            ));
        }
        for (key, task) in tasks {
            let outcome = task.await;
            let mut partitions = fetcher.partitions.borrow_mut();
            let Some(f) = partitions.get_mut(&key) else {
                continue;
            };
            let progress = match outcome {
                Ok(progress) => {
                    f.failing = None;
                    progress
                }
                Err(why) => {
                    if f.failing.as_ref() != Some(&why) {
                        tracing::warn!(
                            leader,
                            topic = f.p.topic,
                            partition = key.1,
                            reason = why,
                            "replica fetch: answer not applied (retried; logged again when the reason changes)"
                        );
                        f.failing = Some(why);
                    }
                    false
                }
            };
            f.retry_at = (!progress).then(|| Instant::now() + REFUSED_PAUSE);
        }
    }
}

/// How long a partition the leader refused (not the leader, an epoch not
/// yet applied here) waits before it is asked about again.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// One fetch round trip: each partition's answer and its batches, in
/// the order asked.
async fn fetch_round(
    stream: &mut glommio::net::TcpStream,
    req: &sluice_net::cluster::ReplicaFetch,
) -> Result<Vec<(FetchedPartition, Bytes)>, String> {
    let f = sluice_net::cluster::encode(req, vec![]).map_err(|e| e.to_string())?;
    sluice_net::cluster::write_frame(stream, &f)
        .await
        .map_err(|e| e.to_string())?;
    let wait = Duration::from_millis(u64::from(req.max_wait_ms)) + Duration::from_secs(10);
    let frame = super::node::next_frame(stream, wait, "no answer in time").await?;
    let reply: sluice_net::cluster::ReplicaFetchReply =
        frame.decode().map_err(|e| e.to_string())?;
    if reply.correlation != req.correlation {
        return Err("an answer to another fetch".into());
    }
    if reply.partitions.len() != req.partitions.len()
        || reply
            .partitions
            .iter()
            .zip(&req.partitions)
            .any(|(a, q)| (a.topic_id, a.partition) != (q.topic_id, q.partition))
    {
        return Err("an answer for other partitions".into());
    }
    let mut at = 0usize;
    let mut out = Vec::with_capacity(reply.partitions.len());
    for a in reply.partitions {
        let n = a.raw_len as usize;
        let raw = frame
            .raw
            .get(at..at + n)
            .map(|_| frame.raw.slice(at..at + n))
            .ok_or("an answer shorter than its partitions' batches")?;
        at += n;
        out.push((a, raw));
    }
    Ok(out)
}

/// Applies one partition's answer: appends what came and syncs, cuts a
/// diverging log back, restarts a log the leader's start passed, takes
/// the leader's high watermark and log start. `Ok(false)` when the
/// leader refused the partition (or there was no progress to make).
async fn apply_answer(
    p: Rc<Partition>,
    a: FetchedPartition,
    raw: Bytes,
    leader_epoch: i32,
) -> Result<bool, String> {
    let leader_start = a.log_start;
    if a.error == ResponseError::OffsetOutOfRange.code() && leader_start > p.log.log_end_offset() {
        tracing::info!(
            partition = p.index,
            topic = p.topic,
            log_end = p.log.log_end_offset(),
            leader_log_start = leader_start,
            "the leader's log starts past this log's end: restarting the log there"
        );
        let _gate = p
            .append_gate
            .acquire_permit(1)
            .await
            .map_err(|_| "the partition was closed".to_string())?;
        p.log
            .restart_at(leader_start)
            .await
            .map_err(|e| format!("restart at {leader_start}: {e}"))?;
        *p.producers.borrow_mut() = crate::producers::recover(&p.log).await;
        return Ok(true);
    }
    if a.error != 0 {
        tracing::debug!(
            partition = p.index,
            topic = p.topic,
            error = a.error,
            "replica fetch refused"
        );
        return Ok(false);
    }
    if let Some(d) = a.diverging {
        // No progress (a history the leader cannot place, and nothing
        // above the high watermark to cut): wait as for a refusal.
        return truncate_diverged(&p, d).await;
    }
    if !raw.is_empty() {
        for b in sluice_storage::batch::split_batches(&raw).map_err(|e| e.to_string())? {
            let h = sluice_storage::BatchHeader::parse(&b);
            // The frame's CRC covered the batch's leader epoch; a leader
            // never sends one from an epoch after its own.
            if let Some(h) = h
                .as_ref()
                .filter(|h| h.partition_leader_epoch > leader_epoch)
            {
                return Err(format!(
                    "a replicated batch at offset {} from leader epoch {}, past the leader's {leader_epoch}",
                    h.base_offset, h.partition_leader_epoch
                ));
            }
            // Its own CRC is checked here, before anything is written.
            let info = p
                .log
                .append_replica(b)
                .await
                .map_err(|e| format!("append of a replicated batch: {e}"))?;
            // The follower keeps the producers' state as the leader does,
            // so it can take over deduplicating their retries.
            if let Some(h) = h {
                p.producers.borrow_mut().record_stored(&h, info.base_offset);
            }
        }
        p.appended.notify_all();
        p.log.sync().await.map_err(|e| e.to_string())?;
    }
    // A follower's high watermark is its leader's, within its own log.
    p.log.set_high_watermark(a.high_watermark);
    // The leader's log start moved (retention, or the offsets store's
    // compaction, which moves it only once every in-sync replica has
    // the checkpoint): once this log holds all the leader has committed,
    // its whole segments below that start go too. Never before: an
    // offsets log must keep the records a checkpoint it lacks replaces.
    if leader_start > p.replication.leader_log_start.get()
        && p.log.log_end_offset() >= a.high_watermark
    {
        p.replication.leader_log_start.set(leader_start);
        if leader_start > p.log.log_start_offset() {
            p.log
                .delete_segments_below(leader_start)
                .await
                .map_err(|e| format!("deleting segments below the leader's log start: {e}"))?;
        }
    }
    Ok(true)
}

/// Cuts a follower's log back to where the leader says it diverges: to
/// the end of the leader's epoch `d.epoch` in this log, when this log's
/// own history has that epoch; to the end of this log's latest epoch
/// before it otherwise (the next fetch then asks about that one); to the
/// high watermark when the leader could not place the epoch at all. The
/// producers' state is rebuilt from what is left.
async fn truncate_diverged(p: &Partition, d: Diverging) -> Result<bool, String> {
    let end = p.log.log_end_offset();
    let to = truncation_target(
        |e| p.log.end_offset_for_epoch(e),
        end,
        p.log.high_watermark(),
        d,
    );
    tracing::info!(
        partition = p.index,
        topic = p.topic,
        epoch = d.epoch,
        leader_end = d.end_offset,
        from = end,
        to,
        "log diverges from the leader's: truncating"
    );
    let epoch_before = p.log.latest_epoch();
    let new_end = p
        .log
        .truncate_to(to)
        .await
        .map_err(|e| format!("truncation to {to}: {e}"))?;
    // The producers' table survives a cut that removed none of the
    // batches it remembers (no replay); otherwise it is rebuilt.
    if new_end < end && !p.producers.borrow_mut().truncate(new_end) {
        *p.producers.borrow_mut() = crate::producers::recover(&p.log).await;
    }
    // Progress: batches or (empty) epochs went, so the next fetch names
    // an earlier epoch.
    Ok(new_end < end || p.log.latest_epoch() != epoch_before)
}

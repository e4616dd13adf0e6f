//! Deterministic simulation of partition replication and failover: three
//! nodes holding one partition (replicas 1, 2, 3; min.insync.replicas 2),
//! driven step by step by a seeded scheduler, over a network that drops,
//! delays, duplicates and reorders messages and cuts nodes off, with
//! nodes that crash (keeping only what they fsynced) and restart.
//!
//! The nodes run the protocol's own decisions, not copies of them: the
//! metadata is `ClusterState` (commands applied in order on every node,
//! each node applying with its own delay, so nodes act on stale views),
//! the controller's failover is `ClusterState::failover`, each log's
//! epoch history is storage's `EpochHistory` (written ahead of the
//! batches, so a crash keeps it whole), and the leader's high watermark,
//! its divergence check of a fetch and the follower's truncation point
//! are `cluster::replica::{high_watermark, divergence,
//! truncation_target}`. The metadata log's consensus itself is simulated
//! in `metalog_sim.rs`; here its committed sequence is one list every
//! node applies from.
//!
//! After every step: every offset any leader exposed below its high
//! watermark (everything acks=all acknowledged among it) keeps its record
//! on every in-sync replica; no node appends in an epoch another node
//! appended in; a replicated record never takes an epoch older than the
//! log's latest. After the faults heal: a leader, every replica back in
//! sync, every log the same (liveness).
//!
//! SLUICE_SIM_SEEDS (default 1000) seeds run; a failure names its seed,
//! and SLUICE_SIM_SEED=N replays just that one:
//!
//!     SLUICE_SIM_SEED=N cargo test -p sluice-broker --test replication_sim
//!
//! (with SLUICE_SIM_TRACE=1 it prints every node's state at every step
//! and every committed command). What the simulation found in the
//! protocol, each fixed in the broker and in this model: a follower
//! joined the ISR with records it had fetched but not synced; a replica
//! proposed into the ISR did not hold the high watermark back until the
//! proposal settled (Kafka's maximal ISR); a partition whose ISR shrank to
//! its leader exposed unsynced records; a restarted node's high watermark
//! was its log end; a restarted leader kept its epoch, so a follower
//! holding records the leader lost in the crash could not see they
//! differed from the ones appended again at those offsets.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::Rng;
use sluice_broker::cluster::replica::{divergence, high_watermark, truncation_target};
use sluice_broker::cluster::state::{ClusterState, Command, NodeId, NodeInfo, PartitionState};
use sluice_net::cluster::Diverging;
use sluice_storage::epochs::EpochHistory;

const NODES: [NodeId; 3] = [1, 2, 3];
const MIN_INSYNC: usize = 2;
/// The controller takes a node not heard from for this many steps for
/// dead (the election timeout).
const DEAD_AFTER: u64 = 12;
/// A leader drops a follower that did not fetch up to its log end for
/// this many steps (REPLICA_LAG_MAX).
const LAG_MAX: u64 = 40;
const FAULT_STEPS: u64 = 1500;
const HEAL_STEPS: u64 = 1500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    epoch: i32,
    value: u64,
}

#[derive(Debug, Clone)]
enum Msg {
    Fetch {
        from: NodeId,
        epoch: i32,
        offset: i64,
        durable: i64,
        last_epoch: i32,
    },
    FetchReply {
        from: NodeId,
        epoch: i32,
        offset: i64,
        answer: Answer,
    },
    /// To the controller: a leader's ISR change, or a heartbeat.
    Propose(Command),
    Heartbeat(NodeId),
}

#[derive(Debug, Clone)]
enum Answer {
    Records { records: Vec<Record>, hw: i64 },
    Diverging(Diverging),
    Refused,
}

struct Flight {
    at: u64,
    to: NodeId, // 0: the controller
    msg: Msg,
}

struct Node {
    id: NodeId,
    up: bool,
    log: Vec<Record>,
    durable: usize,
    epochs: EpochHistory,
    hw: i64,
    /// The metadata as this node applied it, and how far.
    view: ClusterState,
    applied: usize,
    /// Caught up with the metadata since it started: may lead.
    may_lead: bool,
    /// Leader side: each follower's fsynced end and when it last asked
    /// for the log end.
    followers: HashMap<NodeId, (i64, u64)>,
    led_since: u64,
    /// Follower side: the step its fetch went out (none in flight: None).
    fetching: Option<u64>,
    /// acks=all appends waiting: (offset, value, epoch).
    pending: Vec<(i64, u64, i32)>,
    isr_change_at: u64,
    /// Replicas this leader proposed into the ISR against a partition
    /// epoch: they count toward its high watermark (`Replication::adding`).
    adding: (i32, Vec<NodeId>),
    /// The log end when this node took the lead (in this process): a
    /// follower joins the ISR only with everything below it on disk.
    lead_start: i64,
    /// This start of the node; it leads nothing before its registration
    /// with it is applied here (a restart leads in a new epoch).
    incarnation: u64,
}

impl Node {
    fn part(&self) -> Option<&PartitionState> {
        self.view.topics.get("t").map(|t| &t.partitions[0])
    }
    fn leads(&self) -> Option<i32> {
        let p = self.part()?;
        (self.may_lead && p.leader == self.id).then_some(p.leader_epoch)
    }
    fn end(&self) -> i64 {
        self.log.len() as i64
    }
    fn latest_epoch(&self) -> i32 {
        self.epochs.latest().map_or(-1, |(e, _)| e)
    }
    fn truncate(&mut self, to: i64) {
        let to = to.clamp(0, self.end()) as usize;
        self.log.truncate(to);
        self.durable = self.durable.min(to);
        self.epochs.truncate_from_end(to as i64);
        self.hw = self.hw.min(to as i64);
    }
}

struct Sim {
    rng: Rng,
    step: u64,
    nodes: Vec<Node>,
    /// The committed metadata commands, in order.
    committed: Vec<Vec<u8>>,
    truth: ClusterState,
    heard: HashMap<NodeId, u64>,
    net: Vec<Flight>,
    cut: BTreeSet<NodeId>,
    faults: bool,
    next_value: u64,
    /// Every offset a leader exposed below its high watermark, and its
    /// record.
    exposed: BTreeMap<i64, Record>,
    acked: BTreeMap<i64, u64>,
    /// The node that appended in each epoch.
    appended_in: HashMap<i32, NodeId>,
    failovers: u64,
    truncations: u64,
}

fn info(id: NodeId, incarnation: u64) -> NodeInfo {
    NodeInfo {
        id,
        kafka: format!("n{id}:9092"),
        replication: format!("n{id}:9093"),
        incarnation,
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut s = Sim {
            rng: Rng(seed),
            step: 0,
            nodes: NODES
                .iter()
                .map(|&id| Node {
                    id,
                    up: true,
                    log: Vec::new(),
                    durable: 0,
                    epochs: EpochHistory::default(),
                    hw: 0,
                    view: ClusterState::default(),
                    applied: 0,
                    may_lead: false,
                    followers: HashMap::new(),
                    led_since: 0,
                    fetching: None,
                    pending: Vec::new(),
                    isr_change_at: 0,
                    adding: (-1, Vec::new()),
                    lead_start: 0,
                    incarnation: 1,
                })
                .collect(),
            committed: Vec::new(),
            truth: ClusterState::default(),
            heard: HashMap::new(),
            net: Vec::new(),
            cut: BTreeSet::new(),
            faults: true,
            next_value: 0,
            exposed: BTreeMap::new(),
            acked: BTreeMap::new(),
            appended_in: HashMap::new(),
            failovers: 0,
            truncations: 0,
        };
        for id in NODES {
            s.commit(Command::RegisterNode(info(id, 1)));
        }
        s.commit(Command::CreateTopic {
            name: "t".into(),
            id: "00".into(),
            replicas: vec![vec![1, 2, 3]],
            configs: BTreeMap::new(),
        });
        s
    }

    /// The controller commits a command (refused ones are committed too:
    /// every node refuses them alike).
    fn commit(&mut self, cmd: Command) {
        if std::env::var("SLUICE_SIM_TRACE").is_ok() {
            eprintln!("{} commit {:?}", self.step, cmd);
        }
        let data = cmd.encode();
        self.committed.push(data.clone());
        self.truth
            .apply(self.committed.len() as u64, &data)
            .expect("applies");
    }

    fn send(&mut self, to: NodeId, msg: Msg) {
        let from_cut = |m: &Msg| match m {
            Msg::Fetch { from, .. } | Msg::FetchReply { from, .. } => Some(*from),
            Msg::Heartbeat(n) => Some(*n),
            Msg::Propose(_) => None,
        };
        if self.faults {
            if self.rng.chance(80) {
                return;
            }
            if self.cut.contains(&to) || from_cut(&msg).is_some_and(|f| self.cut.contains(&f)) {
                return;
            }
        }
        let delay = 1 + self.rng.below(if self.faults { 6 } else { 2 }) as u64;
        if self.faults && self.rng.chance(40) {
            self.net.push(Flight {
                at: self.step + delay + 3,
                to,
                msg: msg.clone(),
            });
        }
        self.net.push(Flight {
            at: self.step + delay,
            to,
            msg,
        });
    }

    fn run(&mut self) {
        for _ in 0..FAULT_STEPS {
            self.tick();
        }
        self.faults = false;
        self.cut.clear();
        for i in 0..NODES.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        let mut settled = false;
        for _ in 0..HEAL_STEPS {
            self.tick();
            if self.converged() {
                settled = true;
                break;
            }
        }
        assert!(
            settled,
            "no convergence after the faults healed: truth {:?}, logs {:?}, hws {:?}",
            self.truth.topics["t"].partitions[0],
            self.nodes.iter().map(|n| n.log.len()).collect::<Vec<_>>(),
            self.nodes.iter().map(|n| n.hw).collect::<Vec<_>>(),
        );
    }

    fn converged(&self) -> bool {
        let p = &self.truth.topics["t"].partitions[0];
        let leader = p.leader;
        leader > 0
            && p.isr.len() == NODES.len()
            && self
                .nodes
                .iter()
                .all(|n| n.up && n.applied == self.committed.len())
            && self
                .nodes
                .iter()
                .all(|n| n.log == self.nodes[(leader - 1) as usize].log)
            && self.nodes[(leader - 1) as usize].hw == self.nodes[(leader - 1) as usize].end()
            && self.nodes[(leader - 1) as usize].pending.is_empty()
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = true;
        // Only what was fsynced survives; the history was written ahead.
        let d = n.durable as i64;
        n.truncate(d);
        // A restarted node knows no committed point but its log start.
        n.hw = 0;
        n.may_lead = false;
        n.incarnation += 1;
        n.followers.clear();
        n.fetching = None;
        n.pending.clear();
    }

    fn tick(&mut self) {
        self.step += 1;
        let now = self.step;
        if std::env::var("SLUICE_SIM_TRACE").is_ok() {
            for n in &self.nodes {
                eprintln!(
                    "{now} node {} up {} log {} durable {} hw {} applied {} leads {:?} epochs {:?}",
                    n.id,
                    n.up,
                    n.log.len(),
                    n.durable,
                    n.hw,
                    n.applied,
                    n.leads(),
                    n.epochs.entries()
                );
            }
        }
        // Faults.
        if self.faults {
            if self.rng.chance(8) {
                let i = self.rng.below(NODES.len());
                if self.nodes[i].up {
                    self.nodes[i].up = false;
                } else {
                    self.restart(i);
                }
            }
            if self.rng.chance(6) {
                let n = NODES[self.rng.below(NODES.len())];
                if !self.cut.remove(&n) && self.cut.is_empty() {
                    self.cut.insert(n);
                }
            }
        }
        // Deliveries due now, in a shuffled order.
        let mut due: Vec<Flight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        for k in (1..due.len()).rev() {
            let j = self.rng.below(k + 1);
            due.swap(k, j);
        }
        for f in due {
            self.deliver(f);
        }
        // The controller: failover of nodes not heard from.
        let dead: BTreeSet<NodeId> = NODES
            .iter()
            .copied()
            .filter(|n| now.saturating_sub(*self.heard.get(n).unwrap_or(&0)) > DEAD_AFTER)
            .collect();
        if now > DEAD_AFTER && !dead.is_empty() && dead.len() < NODES.len() {
            for cmd in self.truth.failover(&dead) {
                self.failovers += 1;
                self.commit(cmd);
            }
        }
        for i in 0..NODES.len() {
            if self.nodes[i].up {
                self.node_step(i);
            }
        }
        self.check();
    }

    fn node_step(&mut self, i: usize) {
        let now = self.step;
        let id = self.nodes[i].id;
        let cut = self.cut.contains(&id);
        self.send(0, Msg::Heartbeat(id));
        let inc = self.nodes[i].incarnation;
        let registered = |n: &Node| n.view.nodes.get(&n.id).map(|x| x.incarnation) == Some(inc);
        if !registered(&self.nodes[i]) && now.is_multiple_of(4) {
            self.send(0, Msg::Propose(Command::RegisterNode(info(id, inc))));
        }
        // Apply metadata, with a delay of its own; a node that caught up
        // since it started, its registration included, may lead.
        let n = &mut self.nodes[i];
        let catching_up = !n.may_lead && n.applied == self.committed.len() && registered(n) && !cut;
        if catching_up || !cut && n.applied < self.committed.len() && self.rng.chance(500) {
            let was = n.leads();
            let upto = (n.applied + 1 + self.rng.below(self.committed.len() - n.applied))
                .min(self.committed.len());
            while n.applied < upto {
                n.applied += 1;
                n.view
                    .apply(n.applied as u64, &self.committed[n.applied - 1])
                    .expect("applies");
            }
            if n.applied == self.committed.len() && registered(n) {
                n.may_lead = true;
            }
            let now_leads = n.leads();
            if now_leads != was {
                // Pending acks=all appends of a lost lead fail.
                n.pending.clear();
                n.followers.clear();
                n.led_since = now;
                n.lead_start = n.end();
                if let Some(e) = now_leads {
                    // begin_epoch: the epoch starts at the log end.
                    if n.latest_epoch() < e {
                        n.epochs
                            .assign(e, n.end())
                            .expect("a new leader's epoch is newer");
                    }
                }
            }
        }
        // Disk.
        if self.rng.chance(300) {
            let n = &mut self.nodes[i];
            n.durable = n.log.len();
        }
        let n = &self.nodes[i];
        let Some(p) = n.part().cloned() else {
            return;
        };
        if let Some(epoch) = n.leads() {
            // A client's acks=all produce, refused below min.insync.
            if self.rng.chance(250) && p.isr.len() >= MIN_INSYNC && self.next_value < 100_000 {
                self.next_value += 1;
                let value = self.next_value;
                if let Some(&other) = self.appended_in.get(&epoch) {
                    assert_eq!(
                        other, id,
                        "nodes {other} and {id} both appended in epoch {epoch}"
                    );
                }
                self.appended_in.insert(epoch, id);
                let n = &mut self.nodes[i];
                n.epochs
                    .assign(epoch, n.end())
                    .expect("the leader's epoch is its latest");
                n.log.push(Record { epoch, value });
                let off = n.end() - 1;
                n.pending.push((off, value, epoch));
            }
            self.leader_update(i, epoch, &p);
        } else if p.leader > 0 && p.leader != id && p.replicas.contains(&id) {
            let n = &self.nodes[i];
            let stale = n.fetching.is_some_and(|at| now - at > 20);
            if n.fetching.is_none() || stale {
                let msg = Msg::Fetch {
                    from: id,
                    epoch: p.leader_epoch,
                    offset: n.end(),
                    durable: n.durable as i64,
                    last_epoch: n.latest_epoch(),
                };
                self.nodes[i].fetching = Some(now);
                self.send(p.leader, msg);
            }
        }
    }

    /// The leader's high watermark, acks, and ISR shrink.
    fn leader_update(&mut self, i: usize, epoch: i32, p: &PartitionState) {
        let now = self.step;
        let id = self.nodes[i].id;
        let n = &mut self.nodes[i];
        let mut members: Vec<NodeId> = p.isr.clone();
        if n.adding.0 == p.partition_epoch {
            members.extend(n.adding.1.iter().filter(|r| !p.isr.contains(r)));
        }
        let others: Vec<i64> = members
            .iter()
            .filter(|&&r| r != id)
            .map(|r| n.followers.get(r).map_or(0, |f| f.0))
            .collect();
        let hw = high_watermark(
            n.durable as i64,
            n.end(),
            others.into_iter(),
            p.replicas.len(),
        );
        let before = n.hw;
        n.hw = hw.clamp(n.hw, n.end());
        for o in before..n.hw {
            let r = n.log[o as usize];
            if let Some(old) = self.exposed.insert(o, r) {
                assert_eq!(
                    old, r,
                    "offset {o} exposed as {old:?}, now as {r:?} by node {id}"
                );
            }
        }
        let hw = n.hw;
        let mut acked = Vec::new();
        n.pending.retain(|&(o, v, e)| {
            if e != epoch {
                return false;
            }
            if hw > o {
                acked.push((o, v));
                return false;
            }
            true
        });
        for (o, v) in acked {
            assert_eq!(self.exposed.get(&o).map(|r| r.value), Some(v));
            self.acked.insert(o, v);
        }
        let n = &mut self.nodes[i];
        let lagging: Vec<NodeId> = p
            .isr
            .iter()
            .copied()
            .filter(|&r| {
                r != id && now - n.followers.get(&r).map_or(n.led_since, |f| f.1) > LAG_MAX
            })
            .collect();
        if !lagging.is_empty() && now - n.isr_change_at > 10 {
            n.isr_change_at = now;
            let isr = p
                .isr
                .iter()
                .copied()
                .filter(|r| !lagging.contains(r))
                .collect();
            self.send(
                0,
                Msg::Propose(Command::ChangePartition {
                    topic: "t".into(),
                    partition: 0,
                    partition_epoch: p.partition_epoch,
                    leader: id,
                    isr,
                }),
            );
        }
    }

    fn deliver(&mut self, f: Flight) {
        if f.to == 0 {
            match f.msg {
                Msg::Heartbeat(n) => {
                    self.heard.insert(n, self.step);
                }
                Msg::Propose(cmd) => self.commit(cmd),
                _ => unreachable!(),
            }
            return;
        }
        let i = (f.to - 1) as usize;
        if !self.nodes[i].up {
            return;
        }
        match f.msg {
            Msg::Fetch {
                from,
                epoch,
                offset,
                durable,
                last_epoch,
            } => self.serve_fetch(i, from, epoch, offset, durable, last_epoch),
            Msg::FetchReply {
                from,
                epoch,
                offset,
                answer,
            } => self.take_reply(i, from, epoch, offset, answer),
            _ => unreachable!(),
        }
    }

    fn serve_fetch(
        &mut self,
        i: usize,
        from: NodeId,
        epoch: i32,
        offset: i64,
        durable: i64,
        last_epoch: i32,
    ) {
        let now = self.step;
        let n = &mut self.nodes[i];
        let me = n.id;
        let reply = |answer| Msg::FetchReply {
            from: me,
            epoch,
            offset,
            answer,
        };
        let Some(p) = n.part().cloned() else {
            return;
        };
        if n.leads() != Some(epoch) || !p.replicas.contains(&from) {
            self.send(from, reply(Answer::Refused));
            return;
        }
        let epochs = n.epochs.clone();
        let end = n.end();
        if let Some(d) = divergence(|e| epochs.end_offset_for(e, end), last_epoch, offset) {
            self.send(from, reply(Answer::Diverging(d)));
            return;
        }
        if offset > end {
            self.send(from, reply(Answer::Refused));
            return;
        }
        let f = n.followers.entry(from).or_insert((0, now));
        f.0 = durable.min(offset);
        if offset >= end {
            f.1 = now;
        }
        let records: Vec<Record> = n.log[offset as usize..].iter().take(4).copied().collect();
        self.leader_update(i, epoch, &p);
        let n = &mut self.nodes[i];
        if !p.isr.contains(&from)
            && durable.min(offset) >= n.hw.max(n.lead_start)
            && now - n.isr_change_at > 3
        {
            n.isr_change_at = now;
            if n.adding.0 != p.partition_epoch {
                n.adding = (p.partition_epoch, Vec::new());
            }
            if !n.adding.1.contains(&from) {
                n.adding.1.push(from);
            }
            let mut isr = p.isr.clone();
            isr.push(from);
            self.send(
                0,
                Msg::Propose(Command::ChangePartition {
                    topic: "t".into(),
                    partition: 0,
                    partition_epoch: p.partition_epoch,
                    leader: me,
                    isr,
                }),
            );
        }
        let hw = self.nodes[i].hw;
        self.send(from, reply(Answer::Records { records, hw }));
    }

    fn take_reply(&mut self, i: usize, from: NodeId, epoch: i32, offset: i64, answer: Answer) {
        let n = &mut self.nodes[i];
        let Some(p) = n.part().cloned() else {
            return;
        };
        // Only the answer to this node's current fetch of its current
        // leader counts; anything older or duplicated is dropped.
        if p.leader != from || p.leader_epoch != epoch || offset != n.end() || n.fetching.is_none()
        {
            return;
        }
        n.fetching = None;
        match answer {
            Answer::Refused => {}
            Answer::Diverging(d) => {
                let epochs = n.epochs.clone();
                let end = n.end();
                let to = truncation_target(|e| epochs.end_offset_for(e, end), end, n.hw, d);
                if to < end {
                    self.truncations += 1;
                }
                n.truncate(to);
            }
            Answer::Records { records, hw } => {
                for r in records {
                    let at = n.end();
                    assert!(
                        n.epochs.assign(r.epoch, at).is_ok(),
                        "node {}: a record of epoch {} at {at} after epoch {}",
                        n.id,
                        r.epoch,
                        n.latest_epoch()
                    );
                    n.log.push(r);
                }
                n.hw = hw.clamp(n.hw, n.end());
            }
        }
    }

    /// Every exposed offset keeps its record on every in-sync replica
    /// (those that are down keep their fsynced log).
    fn check(&self) {
        let p = &self.truth.topics["t"].partitions[0];
        for &r in &p.isr {
            let n = &self.nodes[(r - 1) as usize];
            let log = if n.up {
                &n.log[..]
            } else {
                &n.log[..n.durable]
            };
            for (&o, rec) in &self.exposed {
                assert_eq!(
                    log.get(o as usize),
                    Some(rec),
                    "step {}: offset {o} ({rec:?}) is not on in-sync replica {r} (ISR {:?}, leader {}, epoch {})",
                    self.step,
                    p.isr,
                    p.leader,
                    p.leader_epoch
                );
            }
        }
    }
}

fn run_seed(seed: u64) -> Sim {
    let mut s = Sim::new(seed);
    s.run();
    s
}

#[test]
fn replication_and_failover_keep_every_exposed_record() {
    if let Some(seed) = std::env::var("SLUICE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let s = run_seed(seed);
        eprintln!(
            "seed {seed}: {} acknowledged, {} failovers, {} truncations",
            s.acked.len(),
            s.failovers,
            s.truncations
        );
        return;
    }
    let seeds: u64 = std::env::var("SLUICE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let base = 0x52u64 << 32;
    let (mut acked, mut failovers, mut truncations) = (0, 0, 0);
    for s in 0..seeds {
        let seed = base + s;
        let sim = std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|e| {
            panic!(
                "seed {seed} failed; replay: SLUICE_SIM_SEED={seed} cargo test -p sluice-broker \
                 --test replication_sim ({:?})",
                e.downcast_ref::<String>()
            )
        });
        acked += sim.acked.len();
        failovers += sim.failovers;
        truncations += sim.truncations;
    }
    eprintln!(
        "{seeds} seeds: {acked} acknowledged, {failovers} failovers, {truncations} truncations"
    );
    // The runs did what they are for: writes acknowledged, leaders
    // replaced, divergent tails cut.
    if seeds >= 100 {
        assert!(acked > seeds as usize * 10, "{acked}");
        assert!(failovers > seeds, "{failovers}");
        assert!(truncations > seeds / 10, "{truncations}");
    }
}

/// A seed replays exactly.
#[test]
fn a_seed_replays_exactly() {
    let a = run_seed(7);
    let b = run_seed(7);
    assert_eq!(a.acked, b.acked);
    assert_eq!(a.step, b.step);
    assert_eq!(
        a.nodes.iter().map(|n| n.log.clone()).collect::<Vec<_>>(),
        b.nodes.iter().map(|n| n.log.clone()).collect::<Vec<_>>()
    );
}

//! Deterministic simulation of the cluster metadata log (`cluster::metalog`):
//! three or five nodes driven by a seeded single-threaded scheduler with a
//! virtual clock, over a network that drops, delays, duplicates, reorders
//! and partitions (every message crossing it as a cluster frame), with
//! nodes that crash and restart from their journal (`cluster::journal`:
//! each poll's batch is on the simulated disk before its messages leave;
//! a crash during a poll leaves a random prefix of that poll's batch), and
//! that compact their journals now and then into an image of the
//! commands they applied (so lagging nodes are sent snapshots). After
//! every step: at most one leader per term,
//! every node's committed commands agree index by index (so each node's
//! sequence is a prefix of the longest), a node's commit index never goes
//! back, and nothing a leader reported committed is lost. After the faults
//! heal: a leader is elected, a new command commits, and every node
//! applies everything committed (liveness).
//!
//! SLUICE_SIM_SEEDS (default 1000) seeds run; a failure names its seed, and
//! SLUICE_SIM_SEED=N replays just that one:
//!
//!     SLUICE_SIM_SEED=N cargo test -p sluice-broker --test metalog_sim

mod common;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use common::Rng;
use raft::prelude::Message;
use sluice_broker::cluster::metalog::{from_wire, to_wire, Metalog, MetalogConfig};
use sluice_net::cluster::{encode, Frame, RaftMessages};

const ELECTION_TICKS: usize = 10;
const HEARTBEAT_TICKS: usize = 2;
/// A node compacts its journal once it grew by this many bytes since the
/// last compaction (small, so that compactions and snapshots happen in
/// most seeds).
const COMPACT_BYTES: usize = 3000;

/// A command a node applied.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    index: u64,
    term: u64,
    data: Vec<u8>,
}

/// A node's state as a snapshot image.
fn encode_state(state: &[Applied]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in state {
        out.extend_from_slice(&a.index.to_le_bytes());
        out.extend_from_slice(&a.term.to_le_bytes());
        out.extend_from_slice(&(a.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&a.data);
    }
    out
}

fn decode_state(mut b: &[u8]) -> Vec<Applied> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let index = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let term = u64::from_le_bytes(b[8..16].try_into().unwrap());
        let len = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
        out.push(Applied {
            index,
            term,
            data: b[20..20 + len].to_vec(),
        });
        b = &b[20 + len..];
    }
    out
}

/// A message on its way, as the cluster frame that carries it (so every
/// message of every seed crosses the frame codec and its validation).
struct Flight {
    at: u64,
    to: u64,
    frame: Bytes,
}

struct Sim {
    rng: Rng,
    now: u64,
    ids: Vec<u64>,
    cfgs: HashMap<u64, MetalogConfig>,
    /// Each node's journal as its disk holds it, and its length after
    /// the last compaction.
    disks: HashMap<u64, Vec<u8>>,
    compacted_len: HashMap<u64, usize>,
    /// Ordered, so every walk over the nodes is the same for a seed.
    nodes: BTreeMap<u64, Option<Metalog>>,
    net: Vec<Flight>,
    /// Pairs that cannot reach each other (both ways).
    cut: Vec<(u64, u64)>,
    // Faults, per mille per tick.
    drop: u64,
    dup: u64,
    delay_max: u64,
    crash: u64,
    // What was seen.
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    /// Each node's state: the commands it applied, in order.
    applied: HashMap<u64, Vec<Applied>>,
    /// Snapshots installed and compactions done, to show both happen.
    restores: u64,
    compactions: u64,
    commit_seen: HashMap<u64, u64>,
    proposed: u64,
    trace: Vec<String>,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let ids: Vec<u64> = (1..=n as u64).collect();
        let mut sim = Sim {
            rng: Rng(seed),
            now: 0,
            ids: ids.clone(),
            cfgs: HashMap::new(),
            disks: HashMap::new(),
            compacted_len: HashMap::new(),
            nodes: BTreeMap::new(),
            net: Vec::new(),
            cut: Vec::new(),
            drop: 0,
            dup: 0,
            delay_max: 1,
            crash: 0,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: HashMap::new(),
            restores: 0,
            compactions: 0,
            commit_seen: HashMap::new(),
            proposed: 0,
            trace: Vec::new(),
        };
        // Each node's election timeout: one value, distinct per node, in
        // an order the seed picks (raft-rs would draw it unseeded).
        let mut timeouts: Vec<usize> = (0..n).map(|k| ELECTION_TICKS + 3 * k).collect();
        for i in (1..timeouts.len()).rev() {
            let j = sim.rng.below(i + 1);
            timeouts.swap(i, j);
        }
        for (&id, &t) in ids.iter().zip(&timeouts) {
            let cfg = MetalogConfig {
                node_id: id,
                voters: ids.clone(),
                election_ticks: ELECTION_TICKS,
                heartbeat_ticks: HEARTBEAT_TICKS,
                election_ticks_range: Some((t, t + 1)),
            };
            let node = Metalog::open(&cfg, &[]).unwrap().metalog;
            sim.disks.insert(id, Vec::new());
            sim.cfgs.insert(id, cfg);
            sim.nodes.insert(id, Some(node));
            sim.applied.insert(id, Vec::new());
        }
        sim
    }

    fn fail(&self, seed: u64, what: &str) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(30).collect();
        panic!(
            "seed {seed}: {what} at tick {}\nlast events (newest first):\n{tail:#?}\nreplay: \
             SLUICE_SIM_SEED={seed} cargo test -p sluice-broker --test metalog_sim",
            self.now
        );
    }

    fn reachable(&self, a: u64, b: u64) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Sends what a node produced: its messages to each other node in one
    /// frame (as a link does), each frame lost, duplicated or delayed
    /// whole.
    fn send(&mut self, from: u64, msgs: Vec<Message>) {
        let mut by_node: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for m in msgs {
            by_node.entry(m.to).or_default().push(m);
        }
        for (to, msgs) in by_node {
            if !self.reachable(from, to) || self.rng.chance(self.drop) {
                continue;
            }
            let body = RaftMessages {
                from: from as u32,
                group: 0,
                messages: msgs.iter().map(to_wire).collect(),
            };
            let frame = encode(&body, vec![])
                .expect("Raft messages frame")
                .to_bytes();
            let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + self.rng.below(self.delay_max as usize + 1) as u64;
                self.net.push(Flight {
                    at,
                    to,
                    frame: frame.clone(),
                });
            }
        }
    }

    /// Polls a node: its batch onto its disk, then what it sends onto
    /// the network; checks what it committed; compacts a long journal.
    fn poll(&mut self, seed: u64, id: u64) {
        let out = {
            let Some(Some(node)) = self.nodes.get_mut(&id) else {
                return;
            };
            node.poll()
                .unwrap_or_else(|e| panic!("seed {seed}: poll of {id}: {e}"))
        };
        self.disks.get_mut(&id).unwrap().extend(&out.journal);
        self.send(id, out.messages);
        if let Some((index, image)) = out.restore {
            self.restores += 1;
            self.trace.push(format!(
                "t{}: node {id} restores a snapshot at {index}",
                self.now
            ));
            self.restore(seed, id, index, &image);
        }
        for c in out.committed {
            self.apply(seed, id, c.index, c.term, c.data);
        }
        let base = self.compacted_len.get(&id).copied().unwrap_or(0);
        if self.disks[&id].len() > base + COMPACT_BYTES {
            let node = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
            let index = node.applied();
            let image = encode_state(&self.applied[&id]);
            let journal = node
                .compact(index, image)
                .unwrap_or_else(|e| panic!("seed {seed}: compaction of {id}: {e}"));
            self.compactions += 1;
            self.compacted_len.insert(id, journal.len());
            self.disks.insert(id, journal);
        }
        let node = self.nodes[&id].as_ref().unwrap();
        let (commit, term, leader) = (node.commit_index(), node.term(), node.is_leader());
        let seen = self.commit_seen.entry(id).or_insert(0);
        if commit < *seen {
            let what = format!("node {id}'s commit index went back from {seen} to {commit}");
            self.fail(seed, &what);
        }
        *seen = commit;
        if leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    let what = format!("nodes {other} and {id} both lead term {term}");
                    self.fail(seed, &what);
                }
                Some(_) => {}
                None => {
                    self.trace
                        .push(format!("t{}: node {id} leads term {term}", self.now));
                    self.leaders.insert(term, id);
                }
            }
        }
    }

    /// A node applies one committed command: it must agree with what
    /// any node committed at that index and come after what it applied.
    fn apply(&mut self, seed: u64, id: u64, index: u64, term: u64, data: Vec<u8>) {
        match self.committed.get(&index) {
            Some((t, d)) if *t != term || *d != data => {
                let what = format!(
                    "node {id} committed index {index} as term {term} {:?}, another node as term {t} {:?}",
                    String::from_utf8_lossy(&data),
                    String::from_utf8_lossy(d)
                );
                self.fail(seed, &what);
            }
            Some(_) => {}
            None => {
                self.committed.insert(index, (term, data.clone()));
            }
        }
        let applied = self.applied.get_mut(&id).unwrap();
        if let Some(last) = applied.last().filter(|l| l.index >= index) {
            let what = format!("node {id} applied index {index} after {}", last.index);
            self.fail(seed, &what);
        }
        applied.push(Applied { index, term, data });
    }

    /// A node's state replaced by a snapshot image (from its own journal
    /// on restart, or from a leader): every command in it must agree with
    /// what was committed.
    fn restore(&mut self, seed: u64, id: u64, index: u64, image: &[u8]) {
        let state = decode_state(image);
        if state.last().is_some_and(|a| a.index > index) {
            self.fail(
                seed,
                &format!("node {id}'s snapshot at {index} holds later commands"),
            );
        }
        self.applied.insert(id, Vec::new());
        for a in state {
            self.apply(seed, id, a.index, a.term, a.data);
        }
    }

    fn step(&mut self, seed: u64, faults: bool) {
        self.now += 1;
        // Faults: crash or restart a node, cut or heal a link.
        if faults {
            let id = self.ids[self.rng.below(self.ids.len())];
            if self.rng.chance(self.crash) {
                let live = self.nodes.values().filter(|n| n.is_some()).count();
                match self.nodes.get(&id).unwrap().is_some() {
                    // Keep a majority up most of the time, not always.
                    true if live > self.ids.len() / 2 || self.rng.chance(200) => {
                        self.trace.push(format!("t{}: crash {id}", self.now));
                        // Sometimes during a poll: part of its batch
                        // reaches the disk, nothing of it leaves.
                        if self.rng.chance(300) {
                            let node = self.nodes.get_mut(&id).unwrap().as_mut().unwrap();
                            let j = node.poll().expect("poll").journal;
                            let keep = self.rng.below(j.len() + 1);
                            self.disks.get_mut(&id).unwrap().extend(&j[..keep]);
                        }
                        self.nodes.insert(id, None);
                        self.applied.insert(id, Vec::new());
                        self.commit_seen.remove(&id);
                    }
                    true => {}
                    false => self.restart(seed, id),
                }
            }
            if self.rng.chance(10) {
                let a = self.ids[self.rng.below(self.ids.len())];
                let b = self.ids[self.rng.below(self.ids.len())];
                if a != b && self.reachable(a, b) {
                    self.trace.push(format!("t{}: cut {a}-{b}", self.now));
                    self.cut.push((a, b));
                }
            }
            if self.rng.chance(20) && !self.cut.is_empty() {
                let i = self.rng.below(self.cut.len());
                let (a, b) = self.cut.swap_remove(i);
                self.trace.push(format!("t{}: heal {a}-{b}", self.now));
            }
        }
        // Deliver what is due, in a random order (reordering).
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= self.now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        while !due.is_empty() {
            let f = due.swap_remove(self.rng.below(due.len()));
            let frame = Frame::from_bytes(f.frame).expect("a frame as sent");
            let body = frame.view::<RaftMessages>().expect("a valid body");
            for m in body.messages.iter() {
                let m = from_wire(m).expect("a known message");
                if let Some(Some(node)) = self.nodes.get_mut(&f.to) {
                    // A message a node cannot use is refused, never a panic.
                    let _ = node.step(m);
                }
            }
            self.poll(seed, f.to);
        }
        // Each node's clock, then what it has ready.
        let ids = self.ids.clone();
        for id in ids {
            if let Some(Some(node)) = self.nodes.get_mut(&id) {
                node.tick();
            }
            self.poll(seed, id);
        }
        // Now and then a command to whoever believes it leads.
        if self.rng.chance(300) {
            let ids = self.ids.clone();
            for id in ids {
                if let Some(Some(node)) = self.nodes.get_mut(&id) {
                    if node.is_leader() {
                        self.proposed += 1;
                        let data = format!("cmd-{}-by-{id}", self.proposed).into_bytes();
                        let _ = node.propose(data);
                        self.poll(seed, id);
                        break;
                    }
                }
            }
        }
    }

    fn restart(&mut self, seed: u64, id: u64) {
        self.trace.push(format!("t{}: restart {id}", self.now));
        let opened = Metalog::open(&self.cfgs[&id], &self.disks[&id])
            .unwrap_or_else(|e| panic!("seed {seed}: node {id} does not reopen: {e}"));
        self.disks
            .get_mut(&id)
            .unwrap()
            .truncate(opened.intact_bytes);
        self.nodes.insert(id, Some(opened.metalog));
        self.applied.insert(id, Vec::new());
        if let Some((index, image)) = opened.restore {
            self.restore(seed, id, index, &image);
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, n)| n.as_ref().is_some_and(|n| n.is_leader()))
            .map(|(&id, _)| id)
    }
}

fn run_seed(seed: u64) -> Sim {
    let mut rng = Rng(seed ^ 0x5EED);
    let n = if rng.chance(300) { 5 } else { 3 };
    let mut sim = Sim::new(seed, n);
    sim.drop = rng.below(150) as u64;
    sim.dup = rng.below(50) as u64;
    sim.delay_max = 1 + rng.below(2 * ELECTION_TICKS) as u64;
    sim.crash = rng.below(15) as u64;
    for _ in 0..1000 {
        sim.step(seed, true);
    }
    // Heal: every link, every node, no loss; within bounded ticks a
    // leader, a new command committed, and every node caught up.
    sim.trace.push(format!("t{}: heal all", sim.now));
    sim.cut.clear();
    sim.drop = 0;
    sim.dup = 0;
    sim.delay_max = 1;
    let down: Vec<u64> = sim
        .nodes
        .iter()
        .filter(|(_, n)| n.is_none())
        .map(|(&id, _)| id)
        .collect();
    for id in down {
        sim.restart(seed, id);
    }
    // As a client would, propose again while nothing proposed since the
    // heal has committed (a leader that loses its term drops proposals).
    let mut attempt = 0u64;
    let heal_committed = |sim: &Sim| {
        sim.committed
            .values()
            .any(|(_, d)| d.starts_with(b"after-heal-"))
    };
    for tick in 0..(40 * ELECTION_TICKS) {
        sim.step(seed, false);
        if tick % (2 * ELECTION_TICKS) == 0 && !heal_committed(&sim) {
            if let Some(l) = sim.leader() {
                attempt += 1;
                let data = format!("after-heal-{attempt}").into_bytes();
                let node = sim.nodes.get_mut(&l).unwrap().as_mut().unwrap();
                if node.propose(data).is_ok() {
                    sim.poll(seed, l);
                }
            }
        }
    }
    let Some(leader) = sim.leader() else {
        sim.fail(seed, "no leader after the faults healed");
    };
    let Some((&top, _)) = sim
        .committed
        .iter()
        .rev()
        .find(|(_, (_, d))| d.starts_with(b"after-heal-"))
    else {
        sim.fail(seed, "the command proposed after healing never committed");
    };
    for &id in &sim.ids {
        // A restarted node starts from its snapshot and re-applies the
        // rest of its log: it must reach the last committed index, with
        // every committed command in its state.
        let applied: Vec<u64> = sim.applied[&id].iter().map(|a| a.index).collect();
        let want: Vec<u64> = sim.committed.range(..=top).map(|(&i, _)| i).collect();
        if applied.last().copied().unwrap_or(0) < top || !want.iter().all(|i| applied.contains(i)) {
            let what =
                format!("node {id} applied {applied:?}, the leader {leader} committed {want:?}");
            sim.fail(seed, &what);
        }
    }
    sim
}

#[test]
fn metadata_log_is_safe_and_live_under_faults() {
    if let Ok(s) = std::env::var("SLUICE_SIM_SEED") {
        run_seed(s.parse().expect("SLUICE_SIM_SEED is a number"));
        return;
    }
    let seeds: u64 = std::env::var("SLUICE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let base = 0x51u64 << 32;
    let (mut restores, mut compactions) = (0, 0);
    for s in 0..seeds {
        let seed = base + s;
        // A panic inside raft-rs (one of its own checks) names the seed too.
        let sim = std::panic::catch_unwind(|| run_seed(seed)).unwrap_or_else(|e| {
            panic!(
                "seed {seed} failed; replay: SLUICE_SIM_SEED={seed} cargo test -p sluice-broker \
                 --test metalog_sim ({:?})",
                e.downcast_ref::<String>()
            )
        });
        restores += sim.restores;
        compactions += sim.compactions;
    }
    // The runs exercised compaction and snapshots sent to lagging nodes.
    if seeds >= 100 {
        assert!(
            compactions > 0 && restores > 0,
            "{compactions} compactions, {restores} restores"
        );
    }
}

/// A seed replays: the same seed gives the same events and the same
/// committed log.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3u64, 347892351766] {
        let (a, b) = (run_seed(seed), run_seed(seed));
        assert_eq!(a.trace, b.trace, "seed {seed}");
        assert_eq!(a.committed, b.committed, "seed {seed}");
        assert_eq!(a.leaders, b.leaders, "seed {seed}");
    }
}

/// The checks can fail: two nodes that each believe themselves alone in
/// a cluster of one both lead term 1, and the simulation's election check
/// must say so.
#[test]
#[should_panic(expected = "both lead term")]
fn the_election_check_catches_two_leaders() {
    let mut sim = Sim::new(7, 2);
    for id in [1u64, 2] {
        let cfg = MetalogConfig {
            node_id: id,
            voters: vec![id],
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: HEARTBEAT_TICKS,
            election_ticks_range: Some((ELECTION_TICKS, ELECTION_TICKS + 1)),
        };
        sim.nodes
            .insert(id, Some(Metalog::open(&cfg, &[]).unwrap().metalog));
        sim.disks.insert(id, Vec::new());
    }
    for _ in 0..(4 * ELECTION_TICKS) {
        sim.step(7, false);
    }
}

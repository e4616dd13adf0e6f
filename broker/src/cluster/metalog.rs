//! The cluster metadata log: the controller's commands, replicated on the
//! nodes of `--cluster` by raft-rs's `RawNode`.
//!
//! Sans-IO: the owner ticks it on a timer, steps it with messages that
//! arrived, proposes commands, and after each of those calls `poll`,
//! which persists what raft asks to persist (here into its `MemStorage`;
//! a crash keeps exactly what `poll` stored) and returns the messages to
//! send and the commands committed since the last poll, in log order. No
//! clock, no socket and no thread here: the shard's loop drives it in the
//! broker, and a seeded scheduler with a virtual clock drives it in the
//! simulation (`broker/tests/metalog_sim.rs`).

use raft::prelude::{ConfState, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

/// How a node's metadata log is set up.
#[derive(Debug, Clone)]
pub struct MetalogConfig {
    /// This node (never 0).
    pub node_id: u64,
    /// Every voting node, this one included.
    pub voters: Vec<u64>,
    /// Ticks without hearing from a leader before a follower campaigns
    /// (raft-rs randomises it over [election, 2 x election)).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MetalogError {
    #[error("metadata log: {0}")]
    Raft(#[from] raft::Error),
    #[error("metadata log: this node ({0}) is not the leader")]
    NotLeader(u64),
}

/// A command committed to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// What one `poll` produced.
#[derive(Debug, Default)]
pub struct Output {
    /// To send to other nodes (each names its recipient in `to`).
    pub messages: Vec<Message>,
    /// Committed commands, in log order, not handed out before.
    pub committed: Vec<Committed>,
}

/// A node's replica of the metadata log.
pub struct Metalog {
    node: RawNode<MemStorage>,
    id: u64,
}

impl Metalog {
    /// An empty log for a new cluster of `cfg.voters`.
    pub fn bootstrap_storage(cfg: &MetalogConfig) -> MemStorage {
        MemStorage::new_with_conf_state(ConfState::from((cfg.voters.clone(), vec![])))
    }

    /// Opens the node on `storage`: a fresh one from `bootstrap_storage`,
    /// or what a node that stopped (or crashed) had persisted. Commands
    /// already committed are handed out again by the first polls, from
    /// the start of the log.
    pub fn open(cfg: &MetalogConfig, storage: MemStorage) -> Result<Metalog, MetalogError> {
        let rc = raft::Config {
            id: cfg.node_id,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            // A node cut off cannot win an election it would lose on
            // reconnecting (pre-vote), and a leader that loses its quorum
            // steps down (check quorum).
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        rc.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Ok(Metalog {
            node: RawNode::new(&rc, storage, &logger)?,
            id: cfg.node_id,
        })
    }

    /// One tick of the node's clock.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// A message from another node. Messages from nodes outside the
    /// cluster or otherwise unusable are refused with an error and change
    /// nothing.
    pub fn step(&mut self, m: Message) -> Result<(), MetalogError> {
        Ok(self.node.step(m)?)
    }

    /// Appends a command, on the leader only.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), MetalogError> {
        if !self.is_leader() {
            return Err(MetalogError::NotLeader(self.id));
        }
        Ok(self.node.propose(vec![], data)?)
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        let l = self.node.raft.leader_id;
        (l != raft::INVALID_ID).then_some(l)
    }

    /// The highest index this node knows committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// Persists what raft has ready and returns what to send and apply.
    /// Entries and the hard state are stored before any message that
    /// depends on them is returned (raft-rs's persisted messages).
    pub fn poll(&mut self) -> Result<Output, MetalogError> {
        let mut out = Output::default();
        if !self.node.has_ready() {
            return Ok(out);
        }
        let mut ready = self.node.ready();
        out.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.node.mut_store().wl().apply_snapshot(snap)?;
        }
        Self::collect(&mut out, ready.take_committed_entries());
        if !ready.entries().is_empty() {
            self.node.mut_store().wl().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.node.mut_store().wl().set_hardstate(hs.clone());
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        out.messages.extend(light.take_messages());
        Self::collect(&mut out, light.take_committed_entries());
        self.node.advance_apply();
        Ok(out)
    }

    fn collect(out: &mut Output, entries: Vec<raft::prelude::Entry>) {
        for e in entries {
            // A new leader's empty entry commits its term; membership
            // changes are not proposed yet.
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                out.committed.push(Committed {
                    index: e.index,
                    term: e.term,
                    data: e.data.to_vec(),
                });
            }
        }
    }
}

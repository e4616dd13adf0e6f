//! The cluster metadata log: the controller's commands, replicated on the
//! nodes of `--cluster` by raft-rs's `RawNode`.
//!
//! Sans-IO: the owner ticks it on a timer, steps it with messages that
//! arrived, proposes commands, and after each of those calls `poll`,
//! which returns the journal bytes to append (see `journal`), the
//! messages to send once those bytes are durable, and the commands
//! committed since the last poll, in log order. The owner compacts the
//! journal now and then with `compact` and the state the commands built.
//! No clock, no socket, no file and no thread here: the shard's loop
//! drives it in the broker, and a seeded scheduler with a virtual clock
//! and disk drives it in the simulation (`broker/tests/metalog_sim.rs`).

use protobuf::ProtobufEnum;
use raft::prelude::{EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use sluice_net::cluster as wire;

use super::journal::{self, Batch, JournalError, LogStore};

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
    /// The range `[lo, hi)` the election timeout is drawn from; `None` is
    /// raft-rs's `[election_ticks, 2 x election_ticks)`. raft-rs draws it
    /// from an unseeded generator, so the simulation gives each node a
    /// range of one value (`(t, t + 1)`), distinct per node, to stay
    /// deterministic.
    pub election_ticks_range: Option<(usize, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetalogError {
    #[error("metadata log: {0}")]
    Raft(#[from] raft::Error),
    #[error("metadata log: node {0} knows no leader")]
    NotLeader(u64),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("metadata log: {0}")]
    Store(String),
    #[error(
        "metadata log: this node's journal names the voters {journal:?}, the configuration \
         {configured:?} (the data directory belongs to another cluster, or --cluster changed)"
    )]
    Voters {
        journal: Vec<u64>,
        configured: Vec<u64>,
    },
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
    /// To append to the journal and make durable before sending
    /// `messages` (empty when nothing changed).
    pub journal: Vec<u8>,
    /// To send to other nodes (each names its recipient in `to`).
    pub messages: Vec<Message>,
    /// A state image a leader sent, with the index it covers: the state
    /// built so far is to be replaced by it, before applying `committed`.
    pub restore: Option<(u64, Vec<u8>)>,
    /// Committed commands, in log order, not handed out before.
    pub committed: Vec<Committed>,
}

/// A node's replica of the metadata log.
pub struct Metalog {
    node: RawNode<LogStore>,
    id: u64,
    /// Records not yet handed out by `poll` (a new node's voters).
    pending: Batch,
}

/// A node opened on its journal.
pub struct Opened {
    pub metalog: Metalog,
    /// The state image of the last compaction and the index it covers:
    /// the state to start from before applying what `poll` hands out.
    pub restore: Option<(u64, Vec<u8>)>,
    /// The journal's length without a torn tail: cut it to this before
    /// appending.
    pub intact_bytes: usize,
}

impl Metalog {
    /// Opens the node on its journal: empty for a new node of a new
    /// cluster, or what a node that stopped (or crashed) had made
    /// durable. Commands already committed after the last compaction are
    /// handed out again by the first polls.
    pub fn open(cfg: &MetalogConfig, journal: &[u8]) -> Result<Opened, MetalogError> {
        let replayed = journal::replay(journal)?;
        let mut pending = Batch::default();
        let store = if replayed.intact_bytes == 0 {
            let store = LogStore::new(&cfg.voters);
            pending.conf(&raft::prelude::ConfState::from((
                cfg.voters.clone(),
                vec![],
            )));
            store
        } else {
            let mut have = replayed.store.voters().to_vec();
            let mut want = cfg.voters.clone();
            have.sort_unstable();
            want.sort_unstable();
            if have != want {
                return Err(MetalogError::Voters {
                    journal: have,
                    configured: want,
                });
            }
            replayed.store
        };
        let restore = store.snapshot_image().map(|(i, d)| (i, d.to_vec()));
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
            min_election_tick: cfg.election_ticks_range.map_or(0, |r| r.0),
            max_election_tick: cfg.election_ticks_range.map_or(0, |r| r.1),
            ..Default::default()
        };
        rc.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        Ok(Opened {
            metalog: Metalog {
                node: RawNode::new(&rc, store, &logger)?,
                id: cfg.node_id,
                pending,
            },
            restore,
            intact_bytes: replayed.intact_bytes,
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

    /// Appends a command: on the leader, or sent to the leader by a node
    /// that knows one (a proposal sent on may be lost: the owner asks
    /// again until it sees the command applied).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), MetalogError> {
        if self.leader().is_none() {
            return Err(MetalogError::NotLeader(self.id));
        }
        Ok(self.node.propose(vec![], data)?)
    }

    /// The leader's connection to this node closed (its process is
    /// likely gone): a follower stops refusing votes for the rest of the
    /// leader's lease (check-quorum), so the first of the others to
    /// campaign wins rather than waiting out a second election timeout.
    /// Its own campaign keeps its timer; safety does not rest on leases.
    pub fn end_lease(&mut self) {
        let r = &mut self.node.raft;
        if r.state == raft::StateRole::Follower {
            r.election_elapsed = r.election_elapsed.max(r.election_timeout());
        }
    }

    /// The node's Raft role, for logs.
    pub fn role(&self) -> &'static str {
        match self.node.raft.state {
            raft::StateRole::Follower => "follower",
            raft::StateRole::Candidate => "candidate",
            raft::StateRole::Leader => "leader",
            raft::StateRole::PreCandidate => "pre-candidate",
        }
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

    /// On the leader, each voter's Raft id and the highest index known
    /// to be in its log (the leader's own last index for itself); empty
    /// elsewhere.
    pub fn progress(&self) -> Vec<(u64, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut out: Vec<(u64, u64)> = self
            .node
            .raft
            .prs()
            .iter()
            .map(|(&id, p)| (id, p.matched))
            .collect();
        out.sort_unstable();
        out
    }

    /// The highest index this node knows committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The index of the last command handed out by `poll`.
    pub fn applied(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// Collects what raft has ready: the journal bytes that make it
    /// durable, the messages to send once they are, and what committed.
    /// Entries and the hard state go into the journal before any message
    /// that depends on them is returned (raft-rs's persisted messages).
    pub fn poll(&mut self) -> Result<Output, MetalogError> {
        let mut out = Output::default();
        let mut batch = std::mem::take(&mut self.pending);
        if self.node.has_ready() {
            self.ready(&mut out, &mut batch)?;
        }
        out.journal = batch.finish();
        // The leader's snapshots are small and sent whole: count each as
        // delivered. One that is lost leaves the follower behind, which
        // rejects the next append, and the leader sends it again.
        for m in &out.messages {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.node.report_snapshot(m.to, SnapshotStatus::Finish);
            }
        }
        Ok(out)
    }

    fn ready(&mut self, out: &mut Output, batch: &mut Batch) -> Result<(), MetalogError> {
        let mut ready = self.node.ready();
        out.messages.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            batch.snapshot(&snap);
            out.restore = Some((snap.get_metadata().index, snap.data.to_vec()));
            self.node.mut_store().apply_snapshot(snap);
        }
        Self::collect(out, ready.take_committed_entries());
        if !ready.entries().is_empty() {
            batch.entries(ready.entries());
            self.node
                .mut_store()
                .append(ready.entries())
                .map_err(MetalogError::Store)?;
        }
        if let Some(hs) = ready.hs() {
            batch.hard(hs);
            self.node.mut_store().set_hard_state(hs.clone());
        }
        out.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.node.store().hard_state().clone();
            hs.commit = commit;
            batch.hard(&hs);
            self.node.mut_store().set_hard_state(hs);
        }
        out.messages.extend(light.take_messages());
        Self::collect(out, light.take_committed_entries());
        self.node.advance_apply();
        Ok(())
    }

    /// Compacts the log up to `index` (at most `applied()`), which
    /// `image`, the state after applying every command up to it,
    /// replaces. Returns the whole new journal, for the owner to write
    /// beside the old one, sync and rename over it.
    pub fn compact(&mut self, index: u64, image: Vec<u8>) -> Result<Vec<u8>, MetalogError> {
        if index > self.applied() {
            return Err(MetalogError::Store(format!(
                "compaction to {index} past the applied index {}",
                self.applied()
            )));
        }
        self.node
            .mut_store()
            .compact(index, image)
            .map_err(MetalogError::Store)?;
        // The image holds the voters too.
        self.pending = Batch::default();
        Ok(self.node.store().image())
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

/// raft-rs's message as the cluster frames carry it.
pub fn to_wire(m: &Message) -> wire::RaftMessage {
    let entry = |e: &raft::prelude::Entry| wire::RaftEntry {
        entry_type: e.get_entry_type() as i32,
        term: e.term,
        index: e.index,
        data: e.data.to_vec(),
        context: e.context.to_vec(),
    };
    let snapshot = m.snapshot.as_ref().map(|s| {
        let meta = s.get_metadata();
        let cs = meta.get_conf_state();
        wire::RaftSnapshot {
            data: s.data.to_vec(),
            conf_state: wire::RaftConfState {
                voters: cs.voters.clone(),
                learners: cs.learners.clone(),
                voters_outgoing: cs.voters_outgoing.clone(),
                learners_next: cs.learners_next.clone(),
                auto_leave: cs.auto_leave,
            },
            index: meta.index,
            term: meta.term,
        }
    });
    wire::RaftMessage {
        msg_type: m.get_msg_type() as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(entry).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        snapshot,
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        priority: m.priority,
    }
}

/// A message that came in a cluster frame (already validated as an
/// archive), back into raft-rs's type. A message or entry type this
/// build does not know is an error (the link that carried it closes).
// rust-protobuf's types carry hidden fields, so they are built from their
// default and then set, as raft-rs itself does.
#[allow(clippy::field_reassign_with_default)]
pub fn from_wire(m: &wire::ArchivedRaftMessage) -> Result<Message, String> {
    use raft::prelude::{ConfState as PbConfState, Entry, MessageType, Snapshot, SnapshotMetadata};
    let msg_type = MessageType::from_i32(m.msg_type.to_native())
        .ok_or_else(|| format!("unknown Raft message type {}", m.msg_type))?;
    let mut out = Message::default();
    out.set_msg_type(msg_type);
    out.to = m.to.to_native();
    out.from = m.from.to_native();
    out.term = m.term.to_native();
    out.log_term = m.log_term.to_native();
    out.index = m.index.to_native();
    for e in m.entries.iter() {
        let t = EntryType::from_i32(e.entry_type.to_native())
            .ok_or_else(|| format!("unknown Raft entry type {}", e.entry_type))?;
        let mut entry = Entry::default();
        entry.set_entry_type(t);
        entry.term = e.term.to_native();
        entry.index = e.index.to_native();
        entry.data = e.data.as_slice().to_vec().into();
        entry.context = e.context.as_slice().to_vec().into();
        out.entries.push(entry);
    }
    out.commit = m.commit.to_native();
    out.commit_term = m.commit_term.to_native();
    if let Some(s) = m.snapshot.as_ref() {
        let mut cs = PbConfState::default();
        let ws = &s.conf_state;
        cs.voters = ws.voters.iter().map(|v| v.to_native()).collect();
        cs.learners = ws.learners.iter().map(|v| v.to_native()).collect();
        cs.voters_outgoing = ws.voters_outgoing.iter().map(|v| v.to_native()).collect();
        cs.learners_next = ws.learners_next.iter().map(|v| v.to_native()).collect();
        cs.auto_leave = ws.auto_leave;
        let mut meta = SnapshotMetadata::default();
        meta.set_conf_state(cs);
        meta.index = s.index.to_native();
        meta.term = s.term.to_native();
        let mut snap = Snapshot::default();
        snap.data = s.data.as_slice().to_vec().into();
        snap.set_metadata(meta);
        out.set_snapshot(snap);
    }
    out.request_snapshot = m.request_snapshot.to_native();
    out.reject = m.reject;
    out.reject_hint = m.reject_hint.to_native();
    out.context = m.context.as_slice().to_vec().into();
    out.priority = m.priority.to_native();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use raft::prelude::{ConfState as PbConfState, Entry, MessageType, Snapshot, SnapshotMetadata};
    use sluice_net::cluster::{encode, Frame, RaftMessages};

    fn through_a_frame(msgs: &[Message]) -> Vec<Message> {
        let body = RaftMessages {
            from: 1,
            group: 0,
            messages: msgs.iter().map(to_wire).collect(),
        };
        let frame = Frame::from_bytes(encode(&body, vec![]).unwrap().to_bytes()).unwrap();
        let view = frame.view::<RaftMessages>().unwrap();
        view.messages
            .iter()
            .map(|m| from_wire(m).unwrap())
            .collect()
    }

    /// Every message type, with entries, a snapshot and every field set,
    /// comes out of a frame as it went in.
    #[test]
    fn raft_messages_cross_a_frame_unchanged() {
        let mut msgs = Vec::new();
        for t in 0..=MessageType::MsgRequestPreVoteResponse as i32 {
            let Some(t) = MessageType::from_i32(t) else {
                continue;
            };
            let mut m = Message::default();
            m.set_msg_type(t);
            m.to = 2;
            m.from = 3;
            m.term = 4;
            m.log_term = 5;
            m.index = 6;
            for i in 0..3u64 {
                let mut e = Entry::default();
                e.set_entry_type(if i == 1 {
                    EntryType::EntryConfChangeV2
                } else {
                    EntryType::EntryNormal
                });
                e.term = 4;
                e.index = 7 + i;
                e.data = vec![i as u8; 10 * i as usize].into();
                e.context = b"ctx".to_vec().into();
                m.entries.push(e);
            }
            m.commit = 8;
            m.commit_term = 4;
            let mut cs = PbConfState::default();
            cs.voters = vec![1, 2, 3];
            cs.learners = vec![4];
            cs.voters_outgoing = vec![1, 2];
            cs.learners_next = vec![5];
            cs.auto_leave = true;
            let mut meta = SnapshotMetadata::default();
            meta.set_conf_state(cs);
            meta.index = 9;
            meta.term = 3;
            let mut snap = Snapshot::default();
            snap.data = b"state".to_vec().into();
            snap.set_metadata(meta);
            m.set_snapshot(snap);
            m.request_snapshot = 10;
            m.reject = true;
            m.reject_hint = 11;
            m.context = b"c".to_vec().into();
            m.priority = -12;
            msgs.push(m);
        }
        assert!(msgs.len() >= 19, "every message type: {}", msgs.len());
        assert_eq!(through_a_frame(&msgs), msgs);
        let plain = Message::default();
        assert_eq!(through_a_frame(std::slice::from_ref(&plain)), vec![plain]);
    }

    #[test]
    fn an_unknown_message_or_entry_type_is_refused() {
        let mut w = to_wire(&Message::default());
        w.msg_type = 999;
        let body = RaftMessages {
            from: 1,
            group: 0,
            messages: vec![w.clone()],
        };
        let frame = Frame::from_bytes(encode(&body, vec![]).unwrap().to_bytes()).unwrap();
        let view = frame.view::<RaftMessages>().unwrap();
        assert!(from_wire(&view.messages[0]).unwrap_err().contains("999"));
        w.msg_type = 0;
        w.entries.push(wire::RaftEntry {
            entry_type: 77,
            term: 1,
            index: 1,
            data: vec![],
            context: vec![],
        });
        let body = RaftMessages {
            from: 1,
            group: 0,
            messages: vec![w],
        };
        let frame = Frame::from_bytes(encode(&body, vec![]).unwrap().to_bytes()).unwrap();
        let view = frame.view::<RaftMessages>().unwrap();
        assert!(from_wire(&view.messages[0]).unwrap_err().contains("77"));
    }
}

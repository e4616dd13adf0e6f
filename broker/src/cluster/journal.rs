//! The metadata log's storage: what raft-rs reads (`LogStore`, its
//! `Storage`) and the journal that makes it durable.
//!
//! The journal is an append-only sequence of batches, each
//! `[length u32 LE][CRC32C of the rest u32 LE][records]`, one batch per
//! step of the log, and each record `[length u32 LE][kind u8][protobuf
//! message of raft-rs's own types]`:
//!
//! - `CONF`: the voters (written once, when a node first starts);
//! - `ENTRY`: one log entry; any entries at or after its index are
//!   replaced (a follower's log truncated by a new leader);
//! - `HARD`: term, vote and commit;
//! - `SNAPSHOT`: everything up to an index, as a state image; entries up
//!   to it are dropped.
//!
//! `Metalog::poll` hands out each step's batch; the owner appends it and
//! makes it durable before sending what depends on it (and before
//! appending the next). `Metalog::compact` hands out a whole new journal
//! (snapshot, then the entries after it), which the owner writes beside
//! the old one and renames over it. Replaying the batches rebuilds the
//! store exactly.
//!
//! A crash during an append leaves a torn last batch; replay drops it (it
//! was never durable, so nothing was sent that depends on it). A batch
//! that fails its check with an intact batch after it is damage to what
//! was durable (the later batch was appended only once the earlier one
//! was synced), and replay refuses it rather than forget a vote or a
//! committed entry.

// rust-protobuf's types carry hidden fields, so they are built from their
// default and then set, as raft-rs itself does.
#![allow(clippy::field_reassign_with_default)]

use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const CONF: u8 = 1;
const ENTRY: u8 = 2;
const HARD: u8 = 3;
const SNAPSHOT: u8 = 4;

const BATCH_HEADER: usize = 8;
/// The longest batch replay accepts: a step's entries or a snapshot of
/// the cluster's metadata are far smaller.
pub const JOURNAL_BATCH_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalError {
    #[error(
        "metadata journal damaged at byte {at}: {why}, and an intact record follows at byte {next} \
         (durable records were lost; restore the node's data directory or replace the node)"
    )]
    Damaged { at: usize, next: usize, why: String },
    #[error("metadata journal record at byte {at}: {why}")]
    Invalid { at: usize, why: String },
}

/// What raft-rs reads: the hard state, the voters, the last snapshot and
/// the entries after it, all in memory (the cluster's metadata is small).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStore {
    hard: HardState,
    conf: ConfState,
    /// Index and term of the last entry the snapshot covers (0 and 0 for
    /// none), and its state image.
    snap: Snapshot,
    /// The entries after the snapshot: `entries[0].index == snap index + 1`.
    entries: Vec<Entry>,
}

impl LogStore {
    pub fn new(voters: &[u64]) -> LogStore {
        let mut s = LogStore::default();
        s.conf.voters = voters.to_vec();
        s
    }

    pub fn voters(&self) -> &[u64] {
        &self.conf.voters
    }
    pub fn hard_state(&self) -> &HardState {
        &self.hard
    }
    pub fn snapshot_index(&self) -> u64 {
        self.snap.get_metadata().index
    }
    fn snapshot_term(&self) -> u64 {
        self.snap.get_metadata().term
    }
    /// The state image of the snapshot, with the index it covers; `None`
    /// before the first compaction.
    pub fn snapshot_image(&self) -> Option<(u64, &[u8])> {
        let i = self.snapshot_index();
        (i > 0).then_some((i, &self.snap.data[..]))
    }
    fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }
    fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    /// Appends entries, replacing any at or after the first one's index.
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), String> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index < self.first() || first.index > self.last() + 1 {
            return Err(format!(
                "entry {} outside the log [{}, {}]",
                first.index,
                self.first(),
                self.last() + 1
            ));
        }
        for w in ents.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(format!("entry {} follows entry {}", w[1].index, w[0].index));
            }
        }
        self.entries.truncate((first.index - self.first()) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard = hs;
    }

    /// Takes a snapshot a leader sent (or one replayed): the log becomes
    /// the snapshot alone. An older one than held changes nothing.
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        if meta.index <= self.snapshot_index() {
            return;
        }
        self.hard.term = self.hard.term.max(meta.term);
        self.hard.commit = self.hard.commit.max(meta.index);
        self.conf = meta.get_conf_state().clone();
        self.entries.clear();
        self.snap = snap;
    }

    /// Drops the entries up to `index`, which `image` (the state after
    /// applying them) replaces.
    pub fn compact(&mut self, index: u64, image: Vec<u8>) -> Result<(), String> {
        if index <= self.snapshot_index() {
            return Ok(());
        }
        if index > self.last() || index > self.hard.commit {
            return Err(format!(
                "compaction to {index} past the committed log (commit {}, last {})",
                self.hard.commit,
                self.last()
            ));
        }
        let term = self.entries[(index - self.first()) as usize].term;
        self.entries
            .drain(..(index - self.snapshot_index()) as usize);
        let mut snap = Snapshot::default();
        snap.data = image.into();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf.clone());
        self.snap = snap;
        Ok(())
    }

    /// The whole store as a journal: replaying it gives this store.
    pub fn image(&self) -> Vec<u8> {
        let mut b = Batch::default();
        b.conf(&self.conf);
        if self.snapshot_index() > 0 {
            b.snapshot(&self.snap);
        }
        b.entries(&self.entries);
        b.hard(&self.hard);
        b.finish()
    }
}

/// The records of one step, appended and made durable together: one
/// length and one checksum over all of them, so a crash during the
/// append loses the whole step or nothing of it.
#[derive(Debug, Default)]
pub struct Batch {
    buf: Vec<u8>,
}

impl Batch {
    fn push(&mut self, kind: u8, m: &impl PbMessage) {
        if self.buf.is_empty() {
            self.buf.extend_from_slice(&[0; BATCH_HEADER]);
        }
        let body = m.write_to_bytes().expect("raft-rs messages encode");
        self.buf
            .extend_from_slice(&(1 + body.len() as u32).to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(&body);
    }
    pub fn conf(&mut self, cs: &ConfState) {
        self.push(CONF, cs);
    }
    pub fn entries(&mut self, ents: &[Entry]) {
        for e in ents {
            self.push(ENTRY, e);
        }
    }
    pub fn hard(&mut self, hs: &HardState) {
        self.push(HARD, hs);
    }
    pub fn snapshot(&mut self, s: &Snapshot) {
        self.push(SNAPSHOT, s);
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The bytes to append (none for an empty batch).
    pub fn finish(mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            return self.buf;
        }
        let len = (self.buf.len() - BATCH_HEADER) as u32;
        let crc = crc32c::crc32c(&self.buf[BATCH_HEADER..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// The batch at `at`, if one is there intact: its records and its length.
fn batch_at(buf: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let rest = &buf[at..];
    if rest.len() < BATCH_HEADER {
        return Err(format!("{} bytes, shorter than a batch header", rest.len()));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    if len == 0 || len > JOURNAL_BATCH_BYTES_MAX {
        return Err(format!("batch length {len}"));
    }
    if rest.len() - BATCH_HEADER < len {
        return Err(format!(
            "batch of {len} bytes, {} left",
            rest.len() - BATCH_HEADER
        ));
    }
    let body = &rest[BATCH_HEADER..BATCH_HEADER + len];
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok((body, BATCH_HEADER + len))
}

/// What replay found.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub store: LogStore,
    /// Bytes of the journal that hold intact records; a torn tail after
    /// them is to be cut off before appending.
    pub intact_bytes: usize,
}

/// Rebuilds the store from a journal. A torn last batch is dropped; a
/// damaged batch with an intact one after it, or records that do not
/// make a log (a gap, a commit past the end), are refused. A journal with
/// no intact batch (a node that crashed before its first step was
/// durable) gives an empty store and `intact_bytes` 0.
pub fn replay(buf: &[u8]) -> Result<Replayed, JournalError> {
    let mut store = LogStore::default();
    let mut at = 0;
    while at < buf.len() {
        let (mut records, len) = match batch_at(buf, at) {
            Ok(r) => r,
            Err(why) => {
                if let Some(next) = (at + 1..buf.len()).find(|&i| batch_at(buf, i).is_ok()) {
                    return Err(JournalError::Damaged { at, next, why });
                }
                break;
            }
        };
        let invalid = |why: String| JournalError::Invalid { at, why };
        while !records.is_empty() {
            let len = match records.get(..4) {
                Some(l) => u32::from_le_bytes(l.try_into().unwrap()) as usize,
                None => return Err(invalid("a record header cut short".into())),
            };
            let Some(rec) = records.get(4..4 + len).filter(|r| !r.is_empty()) else {
                return Err(invalid(format!("a record of {len} bytes does not fit")));
            };
            records = &records[4 + len..];
            let (kind, body) = (rec[0], &rec[1..]);
            let parse_err = |e: protobuf::ProtobufError| invalid(e.to_string());
            match kind {
                CONF => store.conf = ConfState::parse_from_bytes(body).map_err(parse_err)?,
                ENTRY => {
                    let e = Entry::parse_from_bytes(body).map_err(parse_err)?;
                    store.append(&[e]).map_err(invalid)?;
                }
                HARD => store.hard = HardState::parse_from_bytes(body).map_err(parse_err)?,
                SNAPSHOT => {
                    let s = Snapshot::parse_from_bytes(body).map_err(parse_err)?;
                    if s.get_metadata().index == 0 {
                        return Err(invalid("snapshot at index 0".into()));
                    }
                    store.apply_snapshot(s);
                }
                k => return Err(invalid(format!("unknown record kind {k}"))),
            }
        }
        at += len;
    }
    if store.hard.commit > store.last() {
        return Err(JournalError::Invalid {
            at,
            why: format!(
                "commit index {} past the last entry {} (committed entries are missing)",
                store.hard.commit,
                store.last()
            ),
        });
    }
    let invalid = |why: String| Err(JournalError::Invalid { at: 0, why });
    if store.hard.commit < store.snapshot_index() {
        return invalid(format!(
            "commit index {} below the snapshot's {}",
            store.hard.commit,
            store.snapshot_index()
        ));
    }
    if at > 0 {
        // Only plain voter sets are written (membership changes are not
        // proposed): anything else is not this build's journal.
        let c = &store.conf;
        let mut v = c.voters.clone();
        v.sort_unstable();
        v.dedup();
        if v.is_empty() || v.len() != c.voters.len() || v.contains(&0) {
            return invalid(format!("voters {:?}", c.voters));
        }
        if !c.learners.is_empty()
            || !c.voters_outgoing.is_empty()
            || !c.learners_next.is_empty()
            || c.auto_leave
        {
            return invalid(format!("a membership change in progress ({c:?})"));
        }
    }
    Ok(Replayed {
        store,
        intact_bytes: at,
    })
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard.clone(), self.conf.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let mut out = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index() {
            return Ok(self.snapshot_term());
        }
        if idx < self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Only the last compaction's snapshot exists; a follower asks for
        // one only when the entries it lacks were compacted into it.
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snap.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = data.as_bytes().to_vec().into();
        e
    }

    fn hard(term: u64, vote: u64, commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = term;
        h.vote = vote;
        h.commit = commit;
        h
    }

    /// A journal as a node writes it, one batch per step: voters,
    /// entries (a follower's tail replaced), hard states. Returns it, the
    /// store it gives and where its last batch starts.
    fn sample() -> (Vec<u8>, LogStore, usize) {
        let mut store = LogStore::new(&[1, 2, 3]);
        let mut j = Vec::new();
        let mut b = Batch::default();
        b.conf(&store.conf);
        let ents = [entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")];
        store.append(&ents).unwrap();
        b.entries(&ents);
        store.set_hard_state(hard(1, 2, 1));
        b.hard(&store.hard);
        j.extend(b.finish());
        let last = j.len();
        let mut b = Batch::default();
        let ents = [entry(3, 2, "C"), entry(4, 2, "d")];
        store.append(&ents).unwrap();
        b.entries(&ents);
        store.set_hard_state(hard(2, 3, 4));
        b.hard(&store.hard);
        j.extend(b.finish());
        (j, store, last)
    }

    #[test]
    fn replay_rebuilds_the_store_exactly() {
        let (j, store, _) = sample();
        let r = replay(&j).unwrap();
        assert_eq!(r.store, store);
        assert_eq!(r.intact_bytes, j.len());
        assert_eq!(r.store.term(3).unwrap(), 2);
        assert_eq!(r.store.last(), 4);
        // The store's own image replays to the same store.
        assert_eq!(replay(&store.image()).unwrap().store, store);
    }

    #[test]
    fn compaction_keeps_the_entries_after_it_and_the_image() {
        let (_, mut store, _) = sample();
        store.compact(2, b"state-at-2".to_vec()).unwrap();
        assert_eq!(store.first(), 3);
        assert_eq!(store.term(2).unwrap(), 1);
        assert_eq!(
            store.term(1).unwrap_err(),
            raft::Error::Store(StorageError::Compacted)
        );
        assert_eq!(store.snapshot_image(), Some((2, &b"state-at-2"[..])));
        assert_eq!(store.snapshot(2, 9).unwrap().get_metadata().index, 2);
        let r = replay(&store.image()).unwrap();
        assert_eq!(r.store, store);
        // Not past the commit index.
        let mut s = store.clone();
        s.set_hard_state(hard(2, 3, 3));
        assert!(s.compact(4, vec![]).is_err());
    }

    /// A crash mid-append leaves a prefix of the last batch: replay drops
    /// exactly that batch, wherever the cut falls.
    #[test]
    fn a_torn_tail_is_dropped() {
        let (j, _, last) = sample();
        let want = replay(&j[..last]).unwrap().store;
        assert_eq!(want.last(), 3);
        for cut in last..j.len() {
            let r = replay(&j[..cut]).unwrap();
            assert_eq!(r.store, want, "cut at {cut}");
            assert_eq!(r.intact_bytes, last);
        }
        // Zeros after the tail (a block the crash left unwritten).
        let mut z = j.clone();
        z.extend_from_slice(&[0; 4096]);
        assert_eq!(replay(&z).unwrap().intact_bytes, j.len());
        // A damaged last batch is a torn one too.
        let mut d = j.clone();
        d[last + 20] ^= 4;
        assert_eq!(replay(&d).unwrap().intact_bytes, last);
    }

    /// A flipped bit in a durable batch with a batch after it is refused,
    /// never skipped.
    #[test]
    fn damage_before_the_tail_is_refused() {
        let (j, _, last) = sample();
        for byte in [0, 3, 5, 9, last / 2, last - 1] {
            let mut d = j.clone();
            d[byte] ^= 0x10;
            match replay(&d) {
                Err(JournalError::Damaged { at: 0, next, .. }) => assert_eq!(next, last),
                other => panic!("byte {byte}: {other:?}"),
            }
        }
    }

    #[test]
    fn records_that_do_not_make_a_log_are_refused() {
        let one = |f: &dyn Fn(&mut Batch)| {
            let mut b = Batch::default();
            b.conf(&LogStore::new(&[1]).conf);
            f(&mut b);
            replay(&b.finish())
        };
        let gap = one(&|b| b.entries(&[entry(1, 1, "a"), entry(3, 1, "gap")]));
        assert!(matches!(gap, Err(JournalError::Invalid { .. })), "{gap:?}");
        let e = one(&|b| {
            b.entries(&[entry(1, 1, "a")]);
            b.hard(&hard(1, 1, 2));
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("commit index 2 past the last entry 1"), "{e}");
        assert_eq!(replay(&[]).unwrap().intact_bytes, 0);
        let no_voters = one(&|_| {});
        assert!(no_voters.is_ok());
        let mut b = Batch::default();
        b.hard(&hard(1, 1, 0));
        assert!(matches!(
            replay(&b.finish()),
            Err(JournalError::Invalid { .. })
        ));
        // Voter sets raft-rs would refuse to start from (found by the
        // fuzzer as a panic inside raft-rs before these checks).
        for conf in [
            ConfState::from((vec![1, 1], vec![])),
            ConfState::from((vec![1, 2], vec![3])),
            ConfState::from((vec![0, 2], vec![])),
        ] {
            let mut b = Batch::default();
            b.conf(&conf);
            let e = replay(&b.finish()).unwrap_err().to_string();
            assert!(e.contains("voters") || e.contains("membership"), "{e}");
        }
    }
}

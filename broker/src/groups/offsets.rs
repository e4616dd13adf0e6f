//! Committed offsets of the groups one shard coordinates, kept durably in
//! an internal log of that shard (`<data-dir>/__sluice-offsets.<shard>`, a
//! name no topic directory can have). Each OffsetCommit appends one batch
//! of records (key: group, topic, partition; value: offset, leader epoch,
//! commit time, metadata; an empty value deletes) and is answered only
//! once the batch is durable. On start the log is replayed into memory.
//!
//! Compaction keeps the replay short: once more than
//! `max(compact_bytes_min, 2 x the last checkpoint)` has been appended
//! since the last checkpoint, the whole current map is appended again as
//! a checkpoint and every segment wholly before it is deleted. A replay
//! then reads at most one segment of older records, the checkpoint, and
//! what came after it.
//!
//! On a node of a cluster the log is instead one partition of the
//! replicated internal topic `__sluice_offsets` (`super::OFFSETS_TOPIC`),
//! and the store exists only on the node leading it, at one leader epoch:
//! loaded by replaying the partition when the lead arrives, dropped when
//! it leaves. A commit there is answered once every in-sync replica has
//! it on disk (acks=all), and a checkpoint's older segments are deleted
//! only then, so a replica that becomes leader always holds a checkpoint
//! whole or the records before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::{BufMut, Bytes};
use kafka_protocol::ResponseError;
use sluice_storage::batch::{self, build};
use sluice_storage::{LogConfig, PartitionLog, ShardCache, StorageError, SystemClock};

use crate::shard::Partition;

/// Why offsets were not stored.
#[derive(Debug)]
pub enum StoreError {
    Storage(StorageError),
    /// This node no longer leads the offsets partition (at the epoch the
    /// store was loaded at): the group's coordinator moved.
    NotLeader,
    /// Fewer in-sync replicas than min.insync.replicas; nothing written.
    NotEnoughReplicas,
    /// Written, but not on every in-sync replica within the wait.
    NotReplicated,
}

impl StoreError {
    /// The group APIs' answer: a coordinator that moved is NOT_COORDINATOR
    /// (the client looks it up again); one that cannot replicate now is
    /// COORDINATOR_NOT_AVAILABLE (retriable), as Kafka maps them.
    pub fn kafka_code(&self) -> i16 {
        match self {
            StoreError::Storage(e) => e.kafka_code(),
            StoreError::NotLeader => ResponseError::NotCoordinator.code(),
            StoreError::NotEnoughReplicas | StoreError::NotReplicated => {
                ResponseError::CoordinatorNotAvailable.code()
            }
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Storage(e) => write!(f, "{e}"),
            StoreError::NotLeader => write!(f, "this node no longer leads the offsets partition"),
            StoreError::NotEnoughReplicas => {
                write!(
                    f,
                    "fewer in-sync replicas of the offsets partition than min.insync.replicas"
                )
            }
            StoreError::NotReplicated => write!(
                f,
                "not on every in-sync replica of the offsets partition within {} s",
                REPLICATION_WAIT.as_secs()
            ),
        }
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> StoreError {
        StoreError::Storage(e)
    }
}

/// How long a commit waits for the offsets partition's in-sync replicas.
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The offsets partition a store writes to, on the node leading it.
struct Replicated {
    partition: Rc<Partition>,
    /// The leader epoch the store was loaded at: it writes only while
    /// this node still leads at that epoch.
    epoch: i32,
    min_insync: usize,
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_time_ms: i64,
}

/// (group, topic, partition)
pub type OffsetKey = (String, String, i32);

/// The entries of `group`: a range of the sorted keys, not a scan.
fn group_entries<'a>(
    map: &'a BTreeMap<OffsetKey, Committed>,
    group: &'a str,
) -> impl Iterator<Item = (&'a OffsetKey, &'a Committed)> + 'a {
    map.range((group.to_string(), String::new(), i32::MIN)..)
        .take_while(move |((g, _, _), _)| g == group)
}

/// The groups of `map`, in order: one lookup per group, however many
/// offsets each holds.
fn group_ids(map: &BTreeMap<OffsetKey, Committed>) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = map.keys().next().map(|k| k.0.clone());
    while let Some(g) = next {
        // Every key of a later group sorts at or after `g` + NUL.
        let past = (format!("{g}\0"), String::new(), i32::MIN);
        next = map.range(past..).next().map(|(k, _)| k.0.clone());
        out.push(g);
    }
    out
}

pub struct OffsetStore {
    log: Rc<PartitionLog>,
    /// `None`: the shard's own log (a single broker).
    replicated: Option<Replicated>,
    offsets: std::cell::RefCell<BTreeMap<OffsetKey, Committed>>,
    /// Orders appends against checkpoints: a checkpoint must not be
    /// written between a commit's append and its map update.
    lock: glommio::sync::Semaphore,
    appended_since_checkpoint: std::cell::Cell<u64>,
    checkpoint_bytes: std::cell::Cell<u64>,
    compact_bytes_min: u64,
}

/// Records per checkpoint batch.
const CHECKPOINT_BATCH_RECORDS: usize = 1000;

/// A key's encoding, or an error for a name its 16-bit length cannot say
/// (the APIs refuse longer names first; a silently wrapped length was
/// replayed at restart as another group's offsets).
fn encode_key(k: &OffsetKey) -> Result<Vec<u8>, StorageError> {
    if k.0.len() > u16::MAX as usize || k.1.len() > u16::MAX as usize {
        return Err(StorageError::InvalidRecord(format!(
            "offset key of a {}-byte group id and a {}-byte topic name",
            k.0.len(),
            k.1.len()
        )));
    }
    let mut b = Vec::with_capacity(8 + k.0.len() + k.1.len());
    b.put_u16(k.0.len() as u16);
    b.extend_from_slice(k.0.as_bytes());
    b.put_u16(k.1.len() as u16);
    b.extend_from_slice(k.1.as_bytes());
    b.put_i32(k.2);
    Ok(b)
}

fn decode_key(b: &[u8]) -> Option<OffsetKey> {
    let take_str = |b: &[u8], at: &mut usize| -> Option<String> {
        let n = u16::from_be_bytes(b.get(*at..*at + 2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(*at + 2..*at + 2 + n)?)
            .ok()?
            .to_string();
        *at += 2 + n;
        Some(s)
    };
    let mut at = 0;
    let g = take_str(b, &mut at)?;
    let t = take_str(b, &mut at)?;
    let p = i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    Some((g, t, p))
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.put_u8(0); // format version
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    b.put_i64(c.commit_time_ms);
    match &c.metadata {
        Some(m) => {
            b.put_i32(m.len() as i32);
            b.extend_from_slice(m.as_bytes());
        }
        None => b.put_i32(-1),
    }
    b
}

fn decode_value(b: &[u8]) -> Option<Committed> {
    if b.first() != Some(&0) || b.len() < 25 {
        return None;
    }
    let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let n = i32::from_be_bytes(b[21..25].try_into().unwrap());
    let metadata = if n < 0 {
        None
    } else {
        Some(String::from_utf8_lossy(b.get(25..25 + n as usize)?).into_owned())
    };
    Some(Committed {
        offset: i64_at(1),
        leader_epoch: i32::from_be_bytes(b[9..13].try_into().unwrap()),
        commit_time_ms: i64_at(13),
        metadata,
    })
}

impl OffsetStore {
    /// Opens (recovering) the log and replays it.
    pub async fn open(
        dir: &Path,
        cache: &Rc<ShardCache>,
        segment_bytes: u64,
        compact_bytes_min: u64,
    ) -> Result<OffsetStore, StorageError> {
        let cfg = LogConfig {
            segment_bytes,
            // Offsets are never deleted by age or size, only by compaction.
            retention_ms: -1,
            retention_bytes: -1,
            // A commit is one batch, as large as its request.
            batch_bytes_max: sluice_tuning::limits::BATCH_BYTES_MAX,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir, cfg, cache, Rc::new(SystemClock)).await?;
        let store = OffsetStore::replay(log, None, compact_bytes_min).await?;
        store.log.set_high_watermark(store.log.log_end_offset());
        Ok(store)
    }

    /// A store over the offsets partition `partition`, which this node
    /// leads at `epoch`: its log replayed to its end (records above the
    /// high watermark included: as leader, this node's log is the one
    /// the followers will hold).
    pub async fn load(
        partition: Rc<Partition>,
        epoch: i32,
        min_insync: usize,
        compact_bytes_min: u64,
    ) -> Result<OffsetStore, StorageError> {
        let log = partition.log.clone();
        let replicated = Replicated {
            partition,
            epoch,
            min_insync,
        };
        OffsetStore::replay(log, Some(replicated), compact_bytes_min).await
    }

    async fn replay(
        log: Rc<PartitionLog>,
        replicated: Option<Replicated>,
        compact_bytes_min: u64,
    ) -> Result<OffsetStore, StorageError> {
        let mut offsets = BTreeMap::new();
        let mut at = log.log_start_offset();
        let end = log.log_end_offset();
        while at < end {
            let batches = log
                .read(at, sluice_tuning::limits::READ_AHEAD_BYTES_DEFAULT)
                .await?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let h = b.header();
                let body = b.body();
                batch::read_records(&body, h.record_count, |k, v| {
                    let Some(key) = k.and_then(decode_key) else {
                        return;
                    };
                    match decode_value(v) {
                        Some(c) => {
                            offsets.insert(key, c);
                        }
                        None => {
                            offsets.remove(&key);
                        }
                    }
                })?;
                at = at.max(b.next_offset());
            }
        }
        let replayed: u64 = log.segments().iter().map(|s| s.bytes).sum();
        Ok(OffsetStore {
            log,
            replicated,
            offsets: std::cell::RefCell::new(offsets),
            lock: glommio::sync::Semaphore::new(1),
            appended_since_checkpoint: std::cell::Cell::new(replayed),
            checkpoint_bytes: std::cell::Cell::new(0),
            compact_bytes_min,
        })
    }

    /// The leader epoch of the offsets partition this store was loaded
    /// at; `None` for a single broker's own log.
    pub fn epoch(&self) -> Option<i32> {
        self.replicated.as_ref().map(|r| r.epoch)
    }

    /// Whether the store may still write: always for its own log; for an
    /// offsets partition while this node leads it at the store's epoch.
    pub fn leading(&self) -> bool {
        self.replicated.as_ref().is_none_or(|r| {
            r.partition
                .replication
                .role
                .borrow()
                .as_ref()
                .is_some_and(|role| role.leader && role.leader_epoch == r.epoch)
        })
    }

    /// Appends one batch: to its own log, or as the offsets partition's
    /// leader (checked: still leading at the store's epoch, enough in-sync
    /// replicas), moving the partition's high watermark as a produce does.
    async fn append_batch(&self, batch: Bytes) -> Result<sluice_storage::AppendInfo, StoreError> {
        let Some(r) = &self.replicated else {
            let info = self.log.append(batch).await?;
            self.log.set_high_watermark(info.last_offset + 1);
            return Ok(info);
        };
        if !self.leading() {
            return Err(StoreError::NotLeader);
        }
        let in_sync = r
            .partition
            .replication
            .role
            .borrow()
            .as_ref()
            .map_or(0, |role| role.isr.len());
        if in_sync < r.min_insync {
            return Err(StoreError::NotEnoughReplicas);
        }
        let p = &r.partition;
        let _gate = p
            .append_gate
            .acquire_permit(1)
            .await
            .map_err(|_| StoreError::NotLeader)?;
        let info = p.log.append(batch).await?;
        crate::cluster::replica::update_high_watermark(p);
        p.appended.notify_all();
        Ok(info)
    }

    /// Waits until `last` is durable: on this disk, and for an offsets
    /// partition on every in-sync replica's.
    async fn wait_stored(&self, last: i64) -> Result<(), StoreError> {
        self.log.wait_durable(last).await?;
        let Some(r) = &self.replicated else {
            return Ok(());
        };
        use crate::cluster::replica::{wait_high_watermark, Replicated as Outcome};
        match wait_high_watermark(&r.partition, last, r.epoch, REPLICATION_WAIT).await {
            Outcome::Yes => Ok(()),
            Outcome::TimedOut => Err(StoreError::NotReplicated),
            Outcome::LeaderChanged => Err(StoreError::NotLeader),
        }
    }

    /// Bytes the log holds (what a replay would read).
    pub fn log_bytes(&self) -> u64 {
        self.log.segments().iter().map(|s| s.bytes).sum()
    }

    /// Appends records for `items` in batches of `batch_records`; returns
    /// the last offset.
    async fn append(
        &self,
        items: &[(OffsetKey, Option<Committed>)],
        batch_records: usize,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut last = -1;
        for chunk in items.chunks(batch_records.max(1)) {
            let keys: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(k, _)| encode_key(k))
                .collect::<Result<_, _>>()?;
            let values: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(_, c)| c.as_ref().map(encode_value).unwrap_or_default())
                .collect();
            let records: Vec<build::Record<'_>> = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| build::Record {
                    key: Some(k),
                    value: v,
                    timestamp: now,
                })
                .collect();
            let batch: Bytes = build::batch(&records);
            let len = batch.len() as u64;
            let info = self.append_batch(batch).await?;
            self.appended_since_checkpoint
                .set(self.appended_since_checkpoint.get() + len);
            last = info.last_offset;
        }
        Ok(last)
    }

    /// Rewrites the current offsets as a checkpoint and deletes the
    /// segments wholly before it, when enough has been appended since the
    /// last one. Returns whether it compacted.
    pub async fn maybe_compact(&self) -> Result<bool, StoreError> {
        let due = self.compact_bytes_min.max(2 * self.checkpoint_bytes.get());
        if self.appended_since_checkpoint.get() < due {
            return Ok(false);
        }
        let (start, last) = {
            let _l = self
                .lock
                .acquire_permit(1)
                .await
                .map_err(|_| StorageError::Closed)?;
            if !self.leading() {
                return Ok(false);
            }
            let start = self.log.log_end_offset();
            let items: Vec<(OffsetKey, Option<Committed>)> = self
                .offsets
                .borrow()
                .iter()
                .map(|(k, c)| (k.clone(), Some(c.clone())))
                .collect();
            self.appended_since_checkpoint.set(0);
            // A checkpoint cut short by a failure only repeats values the
            // log already holds, so it may span batches.
            let last = self.append(&items, CHECKPOINT_BATCH_RECORDS).await?;
            self.checkpoint_bytes
                .set(self.appended_since_checkpoint.get());
            (start, last)
        };
        // Replicated: every in-sync replica holds the whole checkpoint
        // before the records it replaces go (see the module's note).
        if last >= 0 {
            self.wait_stored(last).await?;
        }
        let out = self.log.delete_segments_below(start).await?;
        tracing::info!(log = %self.log.dir().display(), offsets = self.offsets.borrow().len(),
            deleted_segments = out.deleted_segments, deleted_bytes = out.deleted_bytes,
            "offsets log compacted");
        Ok(true)
    }

    /// Stores commits (`None` deletes) durably. They are visible from the
    /// moment they are appended (in append order, which a checkpoint must
    /// see); the caller answers only once this returns.
    pub async fn commit(
        &self,
        items: Vec<(OffsetKey, Option<Committed>)>,
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let last = {
            let _l = self
                .lock
                .acquire_permit(1)
                .await
                .map_err(|_| StorageError::Closed)?;
            // One batch: a commit is stored whole or not at all, so a
            // refused commit never comes back in part at the next replay.
            let last = self.append(&items, items.len()).await?;
            let mut offsets = self.offsets.borrow_mut();
            for (k, c) in items {
                match c {
                    Some(c) => {
                        offsets.insert(k, c);
                    }
                    None => {
                        offsets.remove(&k);
                    }
                }
            }
            last
        };
        self.wait_stored(last).await
    }

    /// Offsets to expire: those of topics that no longer exist, and those
    /// of `idle` groups committed longer than `retention_ms` ago.
    pub fn expired(
        &self,
        now_ms: i64,
        retention_ms: i64,
        topic_exists: impl Fn(&str) -> bool,
        idle: impl Fn(&str) -> bool,
    ) -> Vec<OffsetKey> {
        self.offsets
            .borrow()
            .iter()
            .filter(|((g, t, _), c)| {
                !topic_exists(t) || idle(g) && now_ms - c.commit_time_ms > retention_ms
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Committed offsets held.
    pub fn len(&self) -> usize {
        self.offsets.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.borrow().is_empty()
    }

    pub fn contains(&self, key: &OffsetKey) -> bool {
        self.offsets.borrow().contains_key(key)
    }

    pub fn get(&self, key: &OffsetKey) -> Option<Committed> {
        self.offsets.borrow().get(key).cloned()
    }

    /// Every committed offset of a group.
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        group_entries(&self.offsets.borrow(), group)
            .map(|((_, t, p), c)| (t.clone(), *p, c.clone()))
            .collect()
    }

    /// Whether a group has any committed offset.
    pub fn has_group(&self, group: &str) -> bool {
        group_entries(&self.offsets.borrow(), group)
            .next()
            .is_some()
    }

    /// Groups that have committed offsets, in order.
    pub fn groups(&self) -> Vec<String> {
        group_ids(&self.offsets.borrow())
    }

    /// Closes its own log; an offsets partition's log is the partition's
    /// to close.
    pub async fn close(&self) -> Result<(), StorageError> {
        match self.replicated {
            None => self.log.close().await,
            Some(_) => Ok(()),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::run;

    fn tempdir() -> tempfile::TempDir {
        crate::test_support::tempdir("sluice-offsets-")
    }

    fn commit_of(offset: i64) -> Committed {
        Committed {
            offset,
            leader_epoch: 0,
            metadata: Some("m".into()),
            commit_time_ms: 1_000,
        }
    }

    /// Group lookups by key range, with ids that prefix one another
    /// and topics that sort before and after the group's own name.
    #[test]
    fn group_ranges_find_exactly_their_group() {
        let mut map = BTreeMap::new();
        for (g, t, p) in [
            ("", "t", 0),
            ("g", "", 1),
            ("g", "z", 2),
            ("g\0", "a", 3),
            ("g-1", "a", 4),
            ("g-1", "b", 5),
            ("ga", "a", 6),
            ("h", "a", 7),
        ] {
            map.insert((g.to_string(), t.to_string(), p), commit_of(p.into()));
        }
        let parts = |g: &str| -> Vec<i32> { group_entries(&map, g).map(|(k, _)| k.2).collect() };
        assert_eq!(parts(""), vec![0]);
        assert_eq!(parts("g"), vec![1, 2]);
        assert_eq!(parts("g\0"), vec![3]);
        assert_eq!(parts("g-1"), vec![4, 5]);
        assert_eq!(parts("ga"), vec![6]);
        assert_eq!(parts("gb"), Vec::<i32>::new());
        assert_eq!(parts("i"), Vec::<i32>::new());
        assert_eq!(group_ids(&map), vec!["", "g", "g\0", "g-1", "ga", "h"]);
        assert!(group_ids(&BTreeMap::new()).is_empty());
    }

    /// Many commits over few keys: compaction keeps the log (what a replay
    /// reads) to about the size of the live offsets, and a reopened store
    /// holds exactly the last commit of each key.
    #[test]
    fn compaction_bounds_the_log_and_keeps_the_latest() {
        let dir = tempdir();
        let path = dir.path().to_path_buf();
        let (log_bytes, written) = run(move || async move {
            let cache = ShardCache::new(8 << 20);
            let s = OffsetStore::open(&path, &cache, 16 * 1024, 64 * 1024)
                .await
                .unwrap();
            let mut written = 0u64;
            for i in 0..3_000i64 {
                let key = ("g".to_string(), format!("t{}", i % 20), 0);
                s.commit(vec![(key, Some(commit_of(i)))]).await.unwrap();
                written += 100;
                s.maybe_compact().await.unwrap();
            }
            s.commit(vec![(("g".into(), "t0".into(), 0), None)])
                .await
                .unwrap();
            let b = s.log_bytes();
            s.close().await.unwrap();
            (b, written)
        });
        assert!(
            log_bytes < written / 4,
            "log {log_bytes} bytes after {written} written"
        );
        let path = dir.path().to_path_buf();
        let got = run(move || async move {
            let cache = ShardCache::new(8 << 20);
            let s = OffsetStore::open(&path, &cache, 16 * 1024, 64 * 1024)
                .await
                .unwrap();
            let g = s.of_group("g");
            s.close().await.unwrap();
            g
        });
        assert_eq!(got.len(), 19, "t0 was deleted");
        for (t, _, c) in got {
            let k: i64 = t[1..].parse().unwrap();
            assert_eq!(c.offset, 2_980 + k, "{t}: the last commit");
        }
    }

    /// Offsets of deleted topics expire at once; those of idle groups after
    /// the retention time; those of active groups never.
    #[test]
    fn expiry() {
        let dir = tempdir();
        let path = dir.path().to_path_buf();
        let expired = run(move || async move {
            let cache = ShardCache::new(8 << 20);
            let s = OffsetStore::open(&path, &cache, 1 << 20, 1 << 20)
                .await
                .unwrap();
            s.commit(vec![
                (("idle".into(), "t".into(), 0), Some(commit_of(1))),
                (("busy".into(), "t".into(), 0), Some(commit_of(1))),
                (("busy".into(), "gone".into(), 0), Some(commit_of(1))),
            ])
            .await
            .unwrap();
            let early = s.expired(2_000, 10_000, |t| t != "gone", |g| g == "idle");
            let late = s.expired(20_000, 10_000, |t| t != "gone", |g| g == "idle");
            s.close().await.unwrap();
            (early, late)
        });
        assert_eq!(expired.0, vec![("busy".into(), "gone".into(), 0)]);
        assert_eq!(
            expired.1,
            vec![
                ("busy".into(), "gone".into(), 0),
                ("idle".into(), "t".into(), 0)
            ]
        );
    }

    /// Keys and values encode and decode to the same thing.
    #[test]
    fn records_round_trip() {
        let k = ("group-1".to_string(), "orders".to_string(), 7);
        assert_eq!(decode_key(&encode_key(&k).unwrap()), Some(k));
        for metadata in [None, Some("m".to_string()), Some(String::new())] {
            let c = Committed {
                offset: 42,
                leader_epoch: 3,
                metadata,
                commit_time_ms: 1_700_000_000_000,
            };
            assert_eq!(decode_value(&encode_value(&c)), Some(c));
        }
        assert_eq!(decode_value(&[]), None);
        assert_eq!(decode_key(&[0, 9, b'x']), None);
    }

    // A commit of many partitions is one batch, stored whole or not at
    // all (it used to be split every 1000 records, so a refused later
    // batch left the earlier ones to be replayed at restart); and a key
    // whose names a 16-bit length cannot say is refused, nothing written
    // (it used to wrap and replay as another group's offsets).
    #[test]
    fn a_commit_is_one_batch_and_long_keys_are_refused() {
        let dir = tempdir();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let cache = ShardCache::new(8 << 20);
            let s = OffsetStore::open(&path, &cache, 16 << 20, 64 << 20)
                .await
                .unwrap();
            let items: Vec<(OffsetKey, Option<Committed>)> = (0..2_500)
                .map(|p| (("g".to_string(), "t".to_string(), p), Some(commit_of(7))))
                .collect();
            s.commit(items).await.unwrap();
            let batches = s.log.read(0, 64 << 20).await.unwrap();
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].next_offset(), 2_500);

            let mut long = "g".to_string();
            long.push_str(&"x".repeat(65_536));
            let r = s
                .commit(vec![
                    (("h".to_string(), "t".to_string(), 0), Some(commit_of(1))),
                    ((long, "t".to_string(), 0), Some(commit_of(1))),
                ])
                .await;
            assert!(r.is_err());
            assert_eq!(s.log.log_end_offset(), 2_500, "nothing written");
            assert!(s.of_group("h").is_empty());
            s.close().await.unwrap();
            let s = OffsetStore::open(&path, &cache, 16 << 20, 64 << 20)
                .await
                .unwrap();
            assert_eq!(s.of_group("g").len(), 2_500);
            assert!(s.of_group("h").is_empty());
            s.close().await.unwrap();
        });
    }
}

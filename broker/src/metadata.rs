//! Topic metadata: names, ids, partition counts, owner shards and topic
//! configs. The controller (shard 0) owns the authoritative copy and stores
//! it durably in `<data-dir>/sluice-meta.json` (written to a temporary file,
//! synced, renamed, directory synced); every shard holds an immutable
//! `Arc<Snapshot>` it is sent after each change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_storage::{LogConfig, TimestampType};

/// The file holding the metadata, under the data directory.
pub const META_FILE: &str = "sluice-meta.json";

/// The owner of a partition this node does not hold (a node of a
/// cluster holds only the partitions it has a replica of).
pub const NOT_HOSTED: usize = usize::MAX;

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (a UUID), as 32 hex digits.
    pub id: String,
    /// Owner shard of each partition, by partition index (`NOT_HOSTED`
    /// for a partition without a replica on this node).
    pub owners: Vec<usize>,
    /// Topic configs set explicitly (Kafka names); the rest are defaults.
    pub configs: BTreeMap<String, String>,
    /// On a node of a cluster, each partition's role here, by partition
    /// index; empty for a single broker, which leads every partition.
    #[serde(skip)]
    pub roles: Vec<Role>,
}

/// A partition's replication as this node applies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// This node leads the partition.
    pub leader: bool,
    /// The leader's node id (-1: none).
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// Bumped by every change of leader or ISR (see `cluster::state`).
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Where a partition's requests go on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Its leader is here, on this shard.
    Shard(usize),
    /// It exists, but another node leads it.
    NotLeader,
    /// No such topic or partition.
    Unknown,
}

impl TopicMeta {
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).unwrap_or_default()
    }
    /// The log configuration these topic configs give.
    pub fn log_config(&self) -> LogConfig {
        log_config(&self.configs).expect("stored configs were validated")
    }
}

/// Every topic, plus the controller's producer-id reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Bumped by every change.
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Producer ids below this may have been handed out.
    pub producer_ids_reserved: i64,
    /// Kafka cluster id, chosen when the data directory is first used.
    #[serde(default)]
    pub cluster_id: String,
}

impl Snapshot {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }
    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.uuid() == id)
    }
    /// The owner shard of a partition, if it exists and this node holds
    /// it.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.owners.get(p).copied())
            .filter(|&o| o != NOT_HOSTED)
    }

    /// Where a partition's produce, fetch and offset requests go.
    pub fn route(&self, topic: &str, partition: i32) -> Route {
        let Some(t) = self.topics.get(topic) else {
            return Route::Unknown;
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .filter(|&p| p < t.owners.len())
        else {
            return Route::Unknown;
        };
        let led = t.roles.get(p).is_none_or(|r| r.leader);
        match t.owners[p] {
            o if o != NOT_HOSTED && led => Route::Shard(o),
            _ => Route::NotLeader,
        }
    }
    /// Partitions each shard owns.
    pub fn load(&self, shards: usize) -> Vec<usize> {
        let mut n = vec![0; shards];
        for t in self.topics.values() {
            for &o in &t.owners {
                if o < shards {
                    n[o] += 1;
                }
            }
        }
        n
    }
}

/// The directory of a partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: usize) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("metadata file {0} is damaged: {1}")]
    Parse(PathBuf, String),
}

/// Loads the metadata, or `None` when there is no metadata file yet.
pub fn load(data_dir: &Path) -> Result<Option<Snapshot>, MetaError> {
    let path = data_dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| MetaError::Parse(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetaError::Io(path, e)),
    }
}

/// Stores the metadata durably: a crash leaves either the old file or the
/// new one, never a mix. Blocking: run it off the shard threads.
pub fn store(data_dir: &Path, snap: &Snapshot) -> Result<(), MetaError> {
    let body = serde_json::to_vec_pretty(snap).expect("metadata serializes");
    replace_file(data_dir, META_FILE, &body, 0o644)
        .map_err(|e| MetaError::Io(data_dir.join(META_FILE), e))
}

/// Replaces `dir/name` with `body` durably: written to a temporary file
/// (created with `mode`), synced, renamed over the old one, directory
/// synced; a crash leaves the old file or the new one. Blocking.
pub fn replace_file(dir: &Path, name: &str, body: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Why a topic name or config was refused, as Kafka answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    pub fn new(e: kafka_protocol::ResponseError, message: impl Into<String>) -> Refusal {
        Refusal {
            code: e.code(),
            message: message.into(),
        }
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
/// Refuses a client's creation, deletion, new partitions of, or appends
/// to the cluster's internal offsets topic (`groups::OFFSETS_TOPIC`):
/// only the group coordinators write it, and its partition count places
/// every group.
pub fn check_not_internal(name: &str) -> Result<(), Refusal> {
    if name == crate::groups::OFFSETS_TOPIC {
        return Err(Refusal::new(
            kafka_protocol::ResponseError::InvalidTopicException,
            format!("{name:?} is the internal topic of the cluster's committed offsets"),
        ));
    }
    Ok(())
}

pub fn check_topic_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= sluice_tuning::limits::TOPIC_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Refusal::new(
            kafka_protocol::ResponseError::InvalidTopicException,
            format!("invalid topic name {name:?}: use 1 to 249 of [a-zA-Z0-9._-]"),
        ))
    }
}

/// The topic configs the log honours, with their defaults.
pub fn config_defaults() -> Vec<(&'static str, String)> {
    let d = LogConfig::default();
    vec![
        ("cleanup.policy", "delete".into()),
        ("max.message.bytes", d.batch_bytes_max.to_string()),
        ("min.insync.replicas", "1".into()),
        ("message.timestamp.type", "CreateTime".into()),
        ("retention.bytes", d.retention_bytes.to_string()),
        ("retention.ms", d.retention_ms.to_string()),
        ("segment.bytes", d.segment_bytes.to_string()),
        ("segment.ms", d.segment_ms.to_string()),
    ]
}

/// The log configuration for a set of topic configs, or why they are
/// refused (unknown name, bad value, out of limits).
pub fn log_config(configs: &BTreeMap<String, String>) -> Result<LogConfig, Refusal> {
    use kafka_protocol::ResponseError::InvalidConfig;
    let mut cfg = LogConfig::default();
    for (k, v) in configs {
        let int = || {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Refusal::new(InvalidConfig, format!("{k}={v}: not an integer")))
        };
        match k.as_str() {
            "retention.ms" => cfg.retention_ms = int()?,
            "retention.bytes" => cfg.retention_bytes = int()?,
            "segment.bytes" => cfg.segment_bytes = int()?.max(0) as u64,
            "segment.ms" => cfg.segment_ms = int()?,
            "max.message.bytes" => cfg.batch_bytes_max = int()?.max(0) as usize,
            "message.timestamp.type" => {
                cfg.timestamp_type = match v.as_str() {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => {
                        return Err(Refusal::new(
                            InvalidConfig,
                            format!("{k}={v}: expected CreateTime or LogAppendTime"),
                        ))
                    }
                }
            }
            "min.insync.replicas" => {
                if !(1..=i64::from(i16::MAX)).contains(&int()?) {
                    return Err(Refusal::new(
                        InvalidConfig,
                        format!("{k}={v}: must be at least 1"),
                    ));
                }
            }
            "cleanup.policy" => {
                if v != "delete" {
                    return Err(Refusal::new(
                        InvalidConfig,
                        format!("{k}={v}: only cleanup.policy=delete is supported (compaction is not built yet)"),
                    ));
                }
            }
            _ => {
                return Err(Refusal::new(
                    InvalidConfig,
                    format!("unknown or unsupported topic config {k:?}"),
                ))
            }
        }
    }
    cfg.validate()
        .map_err(|e| Refusal::new(InvalidConfig, e.to_string()))?;
    Ok(cfg)
}

/// The in-sync replicas an acks=all produce needs: the topic's
/// `min.insync.replicas`, else 2 where there are 3 or more replicas and 1
/// otherwise.
pub fn min_insync(configs: &BTreeMap<String, String>, replicas: u16) -> u16 {
    configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<u16>().ok())
        .unwrap_or(if replicas >= 3 { 2 } else { 1 })
}

/// The broker's own floors on what a client may set (see
/// `--segment-bytes-min`, `--segment-ms-min`): a topic whose settings would
/// roll a segment every few appends is refused with INVALID_CONFIG.
pub fn check_topic_floors(
    configs: &BTreeMap<String, String>,
    cfg: &LogConfig,
    broker: &crate::config::BrokerConfig,
) -> Result<(), Refusal> {
    use kafka_protocol::ResponseError::InvalidConfig;
    if configs.contains_key("segment.bytes") && cfg.segment_bytes < broker.segment_bytes_min {
        return Err(Refusal::new(
            InvalidConfig,
            format!(
                "segment.bytes={}: at least {} on this broker (--segment-bytes-min)",
                cfg.segment_bytes, broker.segment_bytes_min
            ),
        ));
    }
    if configs.contains_key("segment.ms") && cfg.segment_ms < broker.segment_ms_min {
        return Err(Refusal::new(
            InvalidConfig,
            format!(
                "segment.ms={}: at least {} on this broker (--segment-ms-min)",
                cfg.segment_ms, broker.segment_ms_min
            ),
        ));
    }
    Ok(())
}

/// A fresh random topic id.
pub fn new_topic_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    assert_eq!(n, 16, "getrandom failed");
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .simple()
        .to_string()
}

/// Picks owner shards for `count` new partitions: each goes to the shard
/// owning the fewest partitions so far (lowest index on ties).
pub fn assign_owners(snap: &Snapshot, shards: usize, count: usize) -> Vec<usize> {
    let mut load = snap.load(shards);
    (0..count)
        .map(|_| {
            let (s, _) = load
                .iter()
                .enumerate()
                .min_by_key(|&(i, n)| (*n, i))
                .expect("at least one shard");
            load[s] += 1;
            s
        })
        .collect()
}

/// Partition directories under the data directory (`<topic>-<partition>`),
/// as (topic, partition).
pub fn partition_dirs(data_dir: &Path) -> std::io::Result<Vec<(String, usize)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(data_dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((t, p)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(p) = p.parse::<usize>() else { continue };
        if e.file_type()?.is_dir() && check_topic_name(t).is_ok() {
            out.push((t.to_string(), p));
        }
    }
    out.sort();
    Ok(out)
}

/// The metadata to start with: the stored file, or, on a data directory
/// written before metadata existed, one adopting every partition directory
/// found (so no data is ever orphaned). Partitions whose owner is beyond
/// the current shard count are reassigned.
pub fn load_or_adopt(data_dir: &Path, shards: usize) -> Result<(Snapshot, bool), MetaError> {
    let io = |e| MetaError::Io(data_dir.to_path_buf(), e);
    let (mut snap, mut changed) = match load(data_dir)? {
        Some(s) => (s, false),
        None => {
            let mut snap = Snapshot::default();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for (t, p) in partition_dirs(data_dir).map_err(io)? {
                let c = counts.entry(t).or_default();
                *c = (*c).max(p + 1);
            }
            for (name, count) in counts {
                let owners = assign_owners(&snap, shards, count);
                snap.topics.insert(
                    name.clone(),
                    TopicMeta {
                        name,
                        id: new_topic_id(),
                        owners,
                        configs: BTreeMap::new(),
                        roles: Vec::new(),
                    },
                );
            }
            (snap, true)
        }
    };
    if snap.cluster_id.is_empty() {
        snap.cluster_id = new_topic_id();
        changed = true;
    }
    // Fewer shards than when the partitions were created: move the
    // partitions of vanished shards to the least loaded ones.
    let names: Vec<String> = snap.topics.keys().cloned().collect();
    for name in names {
        for p in 0..snap.topics[&name].owners.len() {
            if snap.topics[&name].owners[p] >= shards {
                let o = assign_owners(&snap, shards, 1)[0];
                snap.topics.get_mut(&name).unwrap().owners[p] = o;
                changed = true;
            }
        }
    }
    Ok((snap, changed))
}

/// Shared, immutable view handed to every shard.
pub type SharedSnapshot = Arc<Snapshot>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored metadata reads back identical; a damaged file is an error,
    /// not an empty broker.
    #[test]
    fn store_load_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut s = Snapshot {
            version: 3,
            producer_ids_reserved: 2000,
            ..Default::default()
        };
        s.topics.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                id: new_topic_id(),
                owners: vec![0, 1, 0],
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                roles: Vec::new(),
            },
        );
        store(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));
        std::fs::write(dir.path().join(META_FILE), b"{\"version\": 3, \"top").unwrap();
        assert!(matches!(load(dir.path()), Err(MetaError::Parse(..))));
    }

    /// Directories from before metadata existed are adopted as topics.
    #[test]
    fn adopts_partition_dirs_without_metadata() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a-0", "a-2", "b-c-0", "not_a_partition", "x-y"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let (s, changed) = load_or_adopt(dir.path(), 2).unwrap();
        assert!(changed);
        assert_eq!(s.topics["a"].owners.len(), 3);
        assert_eq!(s.topics["b-c"].owners.len(), 1);
        assert_eq!(s.topics.len(), 2);
        assert_eq!(s.load(2), vec![2, 2]);
    }

    /// Configs map onto the log's; unknown names and bad values are refused.
    #[test]
    fn topic_configs() {
        let c = |k: &str, v: &str| [(k.to_string(), v.to_string())].into();
        assert_eq!(
            log_config(&c("retention.ms", "5000")).unwrap().retention_ms,
            5000
        );
        assert_eq!(
            log_config(&c("message.timestamp.type", "LogAppendTime"))
                .unwrap()
                .timestamp_type,
            TimestampType::LogAppendTime
        );
        for (k, v) in [
            ("retention.ms", "soon"),
            ("segment.bytes", "1"),
            ("cleanup.policy", "compact"),
            ("no.such.config", "1"),
            ("message.timestamp.type", "Now"),
        ] {
            assert!(log_config(&c(k, v)).is_err(), "{k}={v}");
        }
        assert!(check_topic_name("ok.topic_name-1").is_ok());
        for bad in ["", ".", "..", "a/b", "spaces here", &"x".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad}");
        }
    }

    /// New partitions go to the least loaded shards.
    #[test]
    fn owners_balance() {
        let s = Snapshot::default();
        assert_eq!(assign_owners(&s, 3, 5), vec![0, 1, 2, 0, 1]);
    }
}

//! The group coordinator. On a single broker every shard coordinates the
//! groups whose id hashes to it (`coordinator_shard`), their offsets in a
//! log of its own; on a node of a cluster a coordinator exists for each
//! partition of `OFFSETS_TOPIC` the node leads, on the shard holding it,
//! for the groups that hash to that partition. Requests for a group that
//! land on another shard are forwarded there like partition requests. A
//! coordinator holds its groups' state machines (`group.rs`) and their
//! committed offsets (`offsets.rs`).

pub mod group;
pub mod offsets;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use sluice_tuning::limits;

use group::{Group, JoinRequest, JoinResult, State, SyncResult};
use offsets::{Committed, OffsetKey, OffsetStore, StoreError};

/// The shard that coordinates `group`.
pub fn coordinator_shard(group: &str, shards: usize) -> usize {
    (crc32c::crc32c(group.as_bytes()) as usize) % shards.max(1)
}

/// The internal topic of a cluster's committed offsets (`offsets.rs`): a
/// group's coordinator is the node leading its partition of it
/// (`offsets_partition`), on the shard holding that partition. Its
/// records are sluice's own (not Kafka's `__consumer_offsets` format),
/// hence its own name; clients may read it, never write it.
pub const OFFSETS_TOPIC: &str = "__sluice_offsets";

/// The partition of `OFFSETS_TOPIC` holding `group`'s offsets, of
/// `partitions` (the topic's count as created: it never changes).
pub fn offsets_partition(group: &str, partitions: usize) -> i32 {
    (crc32c::crc32c_append(0x9e37_79b9, group.as_bytes()) as usize % partitions.max(1)) as i32
}

/// The coordinator slot of a single broker's shard (its own offsets log);
/// on a node of a cluster a slot is an offsets partition.
pub const LOCAL_SLOT: i32 = -1;

/// Where a group's coordinator is on this node: a shard, and the
/// coordinator on it (`LOCAL_SLOT`, or the group's offsets partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHome {
    pub shard: usize,
    pub slot: i32,
}

/// The internal offsets log of a shard, under the data directory. The name
/// cannot be a topic partition directory (`<topic>-<partition>`).
pub fn offsets_dir(data_dir: &std::path::Path, shard: usize) -> std::path::PathBuf {
    data_dir.join(format!("__sluice-offsets.{shard}"))
}

/// The topics of a consumer-protocol subscription (ConsumerProtocol
/// Subscription: version, topic names, ...); empty when it is not one.
pub fn subscription_topics(meta: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(n) = meta
        .get(2..6)
        .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
    else {
        return out;
    };
    let mut at = 6;
    for _ in 0..n.clamp(0, 10_000) {
        let Some(len) = meta
            .get(at..at + 2)
            .map(|b| i16::from_be_bytes(b.try_into().unwrap()))
        else {
            break;
        };
        let Some(name) = meta.get(at + 2..at + 2 + len.max(0) as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        at += 2 + len.max(0) as usize;
    }
    out
}

/// What DescribeGroups shows of a member.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: bytes::Bytes,
    pub assignment: bytes::Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupView {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

pub struct Coordinator {
    groups: RefCell<BTreeMap<String, Group>>,
    pub offsets: OffsetStore,
    /// Member commits accepted and not yet stored, per group: an
    /// OffsetFetch for the group waits for them, so a member given a
    /// partition never starts below a commit the group already accepted.
    pending_commits: RefCell<BTreeMap<String, usize>>,
    commits_stored: Rc<crate::shard::Notify>,
    /// Set when the coordinator is dropped (its offsets partition's lead
    /// left this node): its ticks end.
    closed: std::cell::Cell<bool>,
}

impl Coordinator {
    pub fn new(offsets: OffsetStore) -> Coordinator {
        Coordinator {
            groups: RefCell::new(BTreeMap::new()),
            offsets,
            pending_commits: RefCell::new(BTreeMap::new()),
            commits_stored: Rc::new(crate::shard::Notify::default()),
            closed: std::cell::Cell::new(false),
        }
    }

    /// Stops coordinating: the groups' members waiting in a join or sync
    /// are answered (their channels close: COORDINATOR_NOT_AVAILABLE, so
    /// they look the coordinator up again), and the ticks end.
    pub fn close(&self) {
        self.closed.set(true);
        self.groups.borrow_mut().clear();
        self.commits_stored.notify_all();
    }

    fn with_group<R>(&self, id: &str, f: impl FnOnce(&mut Group) -> R) -> R {
        let mut groups = self.groups.borrow_mut();
        let g = groups
            .entry(id.to_string())
            .or_insert_with(|| Group::new(id));
        f(g)
    }

    pub fn join(&self, group: &str, req: JoinRequest) -> flume::Receiver<JoinResult> {
        let (tx, rx) = flume::bounded(1);
        let full = {
            let groups = self.groups.borrow();
            !groups.contains_key(group) && groups.len() >= limits::GROUPS_PER_SHARD_MAX
        };
        if full {
            tracing::warn!(
                group,
                limit = limits::GROUPS_PER_SHARD_MAX,
                "group limit reached; a new group's JoinGroup is refused"
            );
            let _ = tx.try_send(JoinResult::error(
                ResponseError::PolicyViolation,
                &req.member_id,
            ));
            return rx;
        }
        self.with_group(group, |g| g.join(req, Instant::now(), tx));
        rx
    }

    /// Refuses a commit that would add committed-offset keys past
    /// `OFFSET_KEYS_PER_SHARD_MAX`.
    pub fn check_offset_keys(&self, items: &[(OffsetKey, Option<Committed>)]) -> Result<(), i16> {
        self.check_offset_keys_within(items, limits::OFFSET_KEYS_PER_SHARD_MAX)
    }

    fn check_offset_keys_within(
        &self,
        items: &[(OffsetKey, Option<Committed>)],
        max: usize,
    ) -> Result<(), i16> {
        let new = items
            .iter()
            .filter(|(k, c)| c.is_some() && !self.offsets.contains(k))
            .count();
        if new > 0 && self.offsets.len() + new > max {
            tracing::warn!(
                held = self.offsets.len(),
                new,
                limit = max,
                "committed-offset limit reached; a commit adding keys is refused"
            );
            return Err(ResponseError::PolicyViolation.code());
        }
        Ok(())
    }

    pub fn sync(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> flume::Receiver<SyncResult> {
        let (tx, rx) = flume::bounded(1);
        self.with_group(group, |g| {
            g.sync(
                member_id,
                instance_id,
                generation,
                assignments,
                Instant::now(),
                tx,
            )
        });
        rx
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        match self.groups.borrow_mut().get_mut(group) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, Instant::now()),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    pub fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        match self.groups.borrow_mut().get_mut(group) {
            Some(g) => g.leave(members, Instant::now()),
            None => vec![ResponseError::UnknownMemberId.code(); members.len()],
        }
    }

    /// Checks a commit against the group: generation -1 with no member is
    /// a commit from outside group management (allowed while the group
    /// has no members).
    pub fn check_commit(
        &self,
        group: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), i16> {
        let groups = self.groups.borrow();
        let g = groups.get(group);
        if generation < 0 && member_id.is_empty() {
            return match g {
                Some(g) if g.state != State::Empty => Err(ResponseError::UnknownMemberId.code()),
                _ => Ok(()),
            };
        }
        match g {
            Some(g) => g.check_commit(member_id, instance_id, generation),
            None => Err(ResponseError::UnknownMemberId.code()),
        }
    }

    pub fn committed(&self, key: &OffsetKey) -> Option<Committed> {
        self.offsets.get(key)
    }

    /// Groups with members or committed offsets: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, (String, &'static str)> = groups
            .values()
            .filter(|g| g.state != State::Empty || self.offsets.has_group(&g.id))
            .map(|g| {
                (
                    g.id.clone(),
                    (
                        g.protocol_type.as_deref().unwrap_or("consumer").to_string(),
                        g.state.name(),
                    ),
                )
            })
            .collect();
        for id in self.offsets.groups() {
            out.entry(id)
                .or_insert(("consumer".into(), State::Empty.name()));
        }
        out.into_iter().map(|(id, (t, s))| (id, t, s)).collect()
    }

    pub fn describe(&self, group: &str) -> Option<GroupView> {
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group) else {
            return self.offsets.has_group(group).then(|| GroupView {
                group_id: group.to_string(),
                state: State::Empty.name(),
                protocol_type: "consumer".into(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let protocol = g.protocol.as_deref().unwrap_or_default();
        Some(GroupView {
            group_id: g.id.clone(),
            state: g.state.name(),
            protocol_type: g.protocol_type.as_deref().unwrap_or_default().into(),
            protocol: protocol.into(),
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// DeleteGroups: a group without members loses its offsets and is
    /// forgotten. Answered once the deletion is durable.
    pub fn delete_group(self: &Rc<Self>, group: &str) -> flume::Receiver<i16> {
        let (tx, rx) = flume::bounded(1);
        let known = self.groups.borrow().get(group).map(|g| g.is_idle());
        let offsets = self.offsets.of_group(group);
        match known {
            Some(false) => {
                let _ = tx.try_send(ResponseError::NonEmptyGroup.code());
            }
            None if offsets.is_empty() => {
                let _ = tx.try_send(ResponseError::GroupIdNotFound.code());
            }
            _ => {
                self.groups.borrow_mut().remove(group);
                let items = offsets
                    .into_iter()
                    .map(|(t, p, _)| ((group.to_string(), t, p), None))
                    .collect();
                self.spawn_commit(items, tx);
            }
        }
        rx
    }

    /// OffsetDelete: removes a group's offsets for partitions of topics
    /// its members are not subscribed to. Returns the group's error, then
    /// one code per partition, once durable.
    pub fn delete_offsets(
        self: &Rc<Self>,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> flume::Receiver<(i16, Vec<i16>)> {
        let (tx, rx) = flume::bounded(1);
        let groups = self.groups.borrow();
        let g = groups.get(group);
        if g.is_none() && !self.offsets.has_group(group) {
            let _ = tx.try_send((ResponseError::GroupIdNotFound.code(), Vec::new()));
            return rx;
        }
        let subscribed = |topic: &str| {
            g.is_some_and(|g| {
                g.members.values().any(|m| {
                    m.protocols
                        .iter()
                        .any(|(_, meta)| subscription_topics(meta).iter().any(|t| t == topic))
                })
            })
        };
        let codes: Vec<i16> = partitions
            .iter()
            .map(|(t, _)| {
                if subscribed(t) {
                    ResponseError::GroupSubscribedToTopic.code()
                } else {
                    0
                }
            })
            .collect();
        drop(groups);
        let items = partitions
            .into_iter()
            .zip(&codes)
            .filter(|(_, &c)| c == 0)
            .map(|((t, p), _)| ((group.to_string(), t, p), None))
            .collect();
        let (done_tx, done_rx) = flume::bounded(1);
        self.spawn_commit(items, done_tx);
        glommio::spawn_local(async move {
            let code = done_rx
                .recv_async()
                .await
                .unwrap_or(ResponseError::CoordinatorNotAvailable.code());
            let _ = tx.try_send((code, codes));
        })
        .detach();
        rx
    }

    /// A member's commit for `group`: stored like `spawn_commit`, and
    /// counted as pending until it is (see `wait_for_commits`).
    pub fn spawn_group_commit(
        self: &Rc<Self>,
        group: &str,
        items: Vec<(OffsetKey, Option<Committed>)>,
        tx: flume::Sender<i16>,
    ) {
        *self
            .pending_commits
            .borrow_mut()
            .entry(group.to_string())
            .or_default() += 1;
        // One task stores the commit and then answers (a second task and
        // channel per commit cost more than the storing on a busy shard).
        let (c, group) = (self.clone(), group.to_string());
        glommio::spawn_local(async move {
            let code = c.store(items).await;
            {
                let mut p = c.pending_commits.borrow_mut();
                if let Some(n) = p.get_mut(&group) {
                    *n -= 1;
                    if *n == 0 {
                        p.remove(&group);
                    }
                }
            }
            c.commits_stored.notify_all();
            let _ = tx.try_send(code);
        })
        .detach();
    }

    /// Returns once no commit accepted for `group` is still being stored.
    pub async fn wait_for_commits(&self, group: &str) {
        loop {
            let seen = self.commits_stored.generation();
            if !self.pending_commits.borrow().contains_key(group) {
                return;
            }
            self.commits_stored.changed(seen).await;
        }
    }

    /// Stores offset changes durably on a task of its own; the error code
    /// (0 on success) comes on `tx`.
    pub fn spawn_commit(
        self: &Rc<Self>,
        items: Vec<(OffsetKey, Option<Committed>)>,
        tx: flume::Sender<i16>,
    ) {
        let c = self.clone();
        glommio::spawn_local(async move {
            let code = c.store(items).await;
            let _ = tx.try_send(code);
        })
        .detach();
    }

    /// Stores offsets durably; the Kafka error code of the outcome.
    async fn store(&self, items: Vec<(OffsetKey, Option<Committed>)>) -> i16 {
        match self.offsets.commit(items).await {
            Ok(()) => 0,
            Err(e @ StoreError::Storage(_)) => {
                tracing::error!(error = %e, "offsets not stored");
                e.kafka_code()
            }
            Err(e) => {
                tracing::info!(error = %e, "offsets not stored");
                e.kafka_code()
            }
        }
    }

    /// Session and rebalance timeouts every `GROUP_TICK_MS`; beside them,
    /// offsets log compaction when due and offsets expiry every
    /// `OFFSETS_EXPIRY_CHECK_MS`. Both of those store records, and on a
    /// cluster a store waits for the in-sync replicas (up to the commit
    /// timeout): they run apart from the timeouts, so a slow follower
    /// never holds up a session expiry or a rebalance.
    pub async fn run_ticks(self: Rc<Self>, shard: Rc<crate::shard::Shard>) {
        futures_lite::future::zip(self.clone().run_timeouts(), self.run_upkeep(shard)).await;
    }

    async fn run_timeouts(self: Rc<Self>) {
        loop {
            glommio::timer::sleep(Duration::from_millis(limits::GROUP_TICK_MS)).await;
            if self.closed.get() {
                return;
            }
            let now = Instant::now();
            let mut groups = self.groups.borrow_mut();
            for g in groups.values_mut() {
                if g.tick(now) {
                    tracing::info!(
                        group = g.id,
                        state = g.state.name(),
                        generation = g.generation,
                        members = g.members.len(),
                        "group membership changed by a timeout"
                    );
                }
            }
            // Groups with no members and no offsets are forgotten.
            groups.retain(|id, g| !g.is_idle() || self.offsets.has_group(id));
        }
    }

    async fn run_upkeep(self: Rc<Self>, shard: Rc<crate::shard::Shard>) {
        let mut last_expiry = Instant::now();
        loop {
            glommio::timer::sleep(Duration::from_millis(limits::GROUP_TICK_MS)).await;
            if self.closed.get() {
                return;
            }
            if let Err(e) = self.offsets.maybe_compact().await {
                tracing::error!(shard = shard.id, error = %e, "offsets log compaction failed");
            }
            let now = Instant::now();
            if now.duration_since(last_expiry)
                >= Duration::from_millis(limits::OFFSETS_EXPIRY_CHECK_MS)
            {
                last_expiry = now;
                self.expire(&shard).await;
            }
        }
    }

    /// Deletes the offsets of topics that no longer exist, and of empty
    /// groups whose last commit is older than offsets.retention.minutes.
    async fn expire(self: &Rc<Self>, shard: &crate::shard::Shard) {
        let meta = shard.meta();
        let retention_ms = (shard.cfg.offsets_retention_minutes as i64).saturating_mul(60_000);
        let doomed = {
            let groups = self.groups.borrow();
            self.offsets.expired(
                offsets::now_ms(),
                retention_ms,
                |t| meta.topic(t).is_some(),
                |g| groups.get(g).is_none_or(|g| g.is_idle()),
            )
        };
        if doomed.is_empty() {
            return;
        }
        let n = doomed.len();
        match self
            .offsets
            .commit(doomed.into_iter().map(|k| (k, None)).collect())
            .await
        {
            Ok(()) => tracing::info!(shard = shard.id, offsets = n, "expired committed offsets"),
            Err(e) => tracing::error!(shard = shard.id, error = %e, "offsets expiry failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join_req() -> JoinRequest {
        JoinRequest {
            member_id: String::new(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), bytes::Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn commit(offset: i64) -> Option<Committed> {
        Some(Committed {
            offset,
            leader_epoch: 0,
            metadata: None,
            commit_time_ms: 1,
        })
    }

    /// Past GROUPS_PER_SHARD_MAX a new group's JoinGroup is refused and
    /// no group is opened; an existing group still takes joins. Past the
    /// committed-offset bound a commit adding keys is refused, one to keys
    /// already held is not.
    #[test]
    fn groups_and_committed_offsets_past_their_limits_are_refused() {
        let dir = crate::test_support::tempdir("sluice-groups-");
        let path = dir.path().to_path_buf();
        crate::test_support::run(move || async move {
            let cache = sluice_storage::ShardCache::new(1 << 20);
            let store = OffsetStore::open(&path, &cache, 1 << 20, 1 << 30)
                .await
                .unwrap();
            let c = Coordinator::new(store);
            for i in 0..limits::GROUPS_PER_SHARD_MAX {
                let r = c.join(&format!("g{i}"), join_req()).try_recv().unwrap();
                assert_eq!(r.error, ResponseError::MemberIdRequired.code());
            }
            let r = c.join("one-more", join_req()).try_recv().unwrap();
            assert_eq!(r.error, ResponseError::PolicyViolation.code());
            assert!(!c.groups.borrow().contains_key("one-more"));
            let r = c.join("g7", join_req()).try_recv().unwrap();
            assert_eq!(r.error, ResponseError::MemberIdRequired.code());

            let key = |p: i32| ("g".to_string(), "t".to_string(), p);
            c.offsets
                .commit(vec![(key(0), commit(1)), (key(1), commit(1))])
                .await
                .unwrap();
            assert_eq!(
                c.check_offset_keys_within(&[(key(2), commit(1))], 2),
                Err(ResponseError::PolicyViolation.code())
            );
            assert_eq!(
                c.check_offset_keys_within(&[(key(1), commit(5))], 2),
                Ok(())
            );
            assert_eq!(c.check_offset_keys_within(&[(key(2), None)], 2), Ok(()));
            assert_eq!(
                c.check_offset_keys_within(&[(key(2), commit(1))], 3),
                Ok(())
            );
        });
    }
}

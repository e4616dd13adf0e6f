//! The controller: shard 0 owns the authoritative topic metadata and makes
//! every change to it, one at a time: validate, store durably, then have
//! every shard apply the new snapshot (open or delete partitions, apply
//! configs) before answering. So when a CreateTopics answer reaches a
//! client, every shard already serves the topic.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use kafka_protocol::ResponseError;
use sluice_tuning::limits;

use crate::metadata::{self, Refusal, Snapshot, TopicMeta};
use crate::shard::Shard;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub partitions: i32,
    /// -1: the default; anything else but 1 is refused (one node).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One change to a topic config (IncrementalAlterConfigs).
#[derive(Debug, Clone)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
    /// Back to every default (AlterConfigs replaces the whole set).
    Clear,
}

pub struct Controller {
    snap: RefCell<Snapshot>,
    lock: Semaphore,
    next_producer_id: Cell<i64>,
    /// On a node of a cluster: the end of the block of producer ids the
    /// metadata log allocated to it.
    cluster_ids_end: Cell<i64>,
    /// One allocation of a block at a time (a node of a cluster).
    ids_lock: Semaphore,
}

impl Controller {
    pub fn new(snap: Arc<Snapshot>) -> Controller {
        let next = snap.producer_ids_reserved;
        Controller {
            snap: RefCell::new((*snap).clone()),
            lock: Semaphore::new(1),
            // Everything below the stored reservation may have been handed
            // out before a restart: start above it.
            next_producer_id: Cell::new(next),
            cluster_ids_end: Cell::new(0),
            ids_lock: Semaphore::new(1),
        }
    }

    /// Takes the topics a node of a cluster derived from the metadata
    /// log (keeping this node's producer-id reservation) and has every
    /// shard apply them.
    pub async fn adopt(&self, shard: &Rc<Shard>, mut next: Snapshot) {
        let _g = self.lock.acquire_permit(1).await;
        next.producer_ids_reserved = self.snap.borrow().producer_ids_reserved;
        next.version = self.snap.borrow().version + 1;
        *self.snap.borrow_mut() = next.clone();
        broadcast(shard, Arc::new(next), HashSet::new()).await;
    }

    /// Stores `next` durably and has every shard apply it.
    async fn commit(
        &self,
        shard: &Rc<Shard>,
        mut next: Snapshot,
        fresh: HashSet<(String, i32)>,
    ) -> Result<(), Refusal> {
        next.version += 1;
        let dir = shard.cfg.data_dir.clone();
        let stored = next.clone();
        glommio::executor()
            .spawn_blocking(move || metadata::store(&dir, &stored))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "metadata not stored");
                Refusal::new(ResponseError::KafkaStorageError, e.to_string())
            })?;
        *self.snap.borrow_mut() = next.clone();
        broadcast(shard, Arc::new(next), fresh).await;
        Ok(())
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, Refusal>> {
        if shard.cfg.cluster.is_some() {
            return crate::cluster::admin::create_topics(shard, topics, validate_only).await;
        }
        let _g = self.lock.acquire_permit(1).await;
        let mut next = self.snap.borrow().clone();
        let mut fresh = HashSet::new();
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            let r = self.plan_create(shard, &mut next, t);
            if let Ok(meta) = &r {
                for i in 0..meta.owners.len() {
                    fresh.insert((meta.name.clone(), i as i32));
                }
            }
            out.push(r);
        }
        if !validate_only && !fresh.is_empty() {
            if let Err(e) = self.commit(shard, next, fresh).await {
                return out.into_iter().map(|_| Err(e.clone())).collect();
            }
        }
        out
    }

    fn plan_create(
        &self,
        shard: &Shard,
        next: &mut Snapshot,
        t: NewTopic,
    ) -> Result<TopicMeta, Refusal> {
        let partitions = check_new_topic(
            shard,
            &t,
            next.topics.contains_key(&t.name),
            next.topics.len(),
        )?;
        if t.replication_factor != -1 && t.replication_factor != 1 {
            return Err(Refusal::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {}: this is a single-node broker (use 1 or -1)",
                    t.replication_factor
                ),
            ));
        }
        let held: usize = next.topics.values().map(|t| t.owners.len()).sum();
        check_partitions_per_broker(held, partitions as usize, partitions_max(shard))?;
        let meta = TopicMeta {
            name: t.name.clone(),
            id: metadata::new_topic_id(),
            owners: metadata::assign_owners(next, shard.shards, partitions as usize),
            configs: t.configs,
            roles: Vec::new(),
        };
        next.topics.insert(t.name, meta.clone());
        Ok(meta)
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<TopicMeta, Refusal>> {
        if shard.cfg.cluster.is_some() {
            return crate::cluster::admin::delete_topics(shard, names).await;
        }
        let _g = self.lock.acquire_permit(1).await;
        let mut next = self.snap.borrow().clone();
        let out: Vec<Result<TopicMeta, Refusal>> = names
            .into_iter()
            .map(|n| {
                next.topics.remove(&n).ok_or_else(|| {
                    Refusal::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("no topic {n:?}"),
                    )
                })
            })
            .collect();
        if out.iter().any(|r| r.is_ok()) {
            if let Err(e) = self.commit(shard, next, HashSet::new()).await {
                return out.into_iter().map(|_| Err(e.clone())).collect();
            }
        }
        out
    }

    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), Refusal>> {
        if shard.cfg.cluster.is_some() {
            return crate::cluster::admin::create_partitions(shard, changes, validate_only).await;
        }
        let _g = self.lock.acquire_permit(1).await;
        let mut next = self.snap.borrow().clone();
        let mut fresh = HashSet::new();
        let mut out = Vec::new();
        for (name, count) in changes {
            let Some(t) = next.topics.get(&name).cloned() else {
                out.push(Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name:?}"),
                )));
                continue;
            };
            let have = t.owners.len() as i32;
            if let Err(e) = check_partition_count(&name, have, count) {
                out.push(Err(e));
                continue;
            }
            let held: usize = next.topics.values().map(|t| t.owners.len()).sum();
            if let Err(e) =
                check_partitions_per_broker(held, (count - have) as usize, partitions_max(shard))
            {
                out.push(Err(e));
                continue;
            }
            let added = metadata::assign_owners(&next, shard.shards, (count - have) as usize);
            for i in have..count {
                fresh.insert((name.clone(), i));
            }
            next.topics.get_mut(&name).unwrap().owners.extend(added);
            out.push(Ok(()));
        }
        if !validate_only && !fresh.is_empty() {
            if let Err(e) = self.commit(shard, next, fresh).await {
                return out.into_iter().map(|_| Err(e.clone())).collect();
            }
        }
        out
    }

    pub async fn alter_configs(
        &self,
        shard: &Rc<Shard>,
        changes: Vec<(String, Vec<ConfigOp>)>,
        validate_only: bool,
    ) -> Vec<Result<(), Refusal>> {
        if shard.cfg.cluster.is_some() {
            return crate::cluster::admin::alter_configs(shard, changes, validate_only).await;
        }
        let _g = self.lock.acquire_permit(1).await;
        let mut next = self.snap.borrow().clone();
        let mut out = Vec::new();
        let mut changed = false;
        for (name, ops) in changes {
            let Some(t) = next.topics.get(&name) else {
                out.push(Err(Refusal::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("no topic {name:?}"),
                )));
                continue;
            };
            let (configs, checked) = configs_after(shard, &t.configs, ops);
            match checked {
                Ok(()) => {
                    changed |= configs != t.configs;
                    next.topics.get_mut(&name).unwrap().configs = configs;
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if !validate_only && changed {
            if let Err(e) = self.commit(shard, next, HashSet::new()).await {
                return out.into_iter().map(|_| Err(e.clone())).collect();
            }
        }
        out
    }

    /// A producer id never handed out before, even across restarts: ids
    /// are reserved durably a block at a time.
    pub async fn allocate_producer_id(&self, shard: &Rc<Shard>) -> Result<i64, Refusal> {
        if shard.cfg.cluster.is_some() {
            // Not under `lock`: the metadata log's driver takes it to
            // apply the change this allocation waits for.
            let _g = self.ids_lock.acquire_permit(1).await;
            return self.allocate_from_cluster(shard).await;
        }
        let _g = self.lock.acquire_permit(1).await;
        let id = self.next_producer_id.get();
        if id >= self.snap.borrow().producer_ids_reserved {
            let mut next = self.snap.borrow().clone();
            next.producer_ids_reserved = id + limits::PRODUCER_ID_BLOCK;
            self.commit(shard, next, HashSet::new()).await?;
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }
}

impl Controller {
    /// A node of a cluster hands out ids from blocks the metadata log
    /// allocated to it, so no two nodes hand out the same one (and none
    /// is handed out twice across restarts: a restart takes a new block).
    async fn allocate_from_cluster(&self, shard: &Rc<Shard>) -> Result<i64, Refusal> {
        let id = self.next_producer_id.get();
        if id >= self.cluster_ids_end.get() {
            let h = shard.cluster_handle().cloned().ok_or_else(|| {
                Refusal::new(
                    ResponseError::NotController,
                    "no metadata log on this node yet",
                )
            })?;
            let first = h
                .propose_value(crate::cluster::state::Command::AllocateProducerIds {
                    count: limits::PRODUCER_ID_BLOCK,
                })
                .await
                .map_err(|e| Refusal::new(ResponseError::CoordinatorNotAvailable, e.to_string()))?
                .ok_or_else(|| {
                    Refusal::new(
                        ResponseError::UnknownServerError,
                        "no producer ids allocated",
                    )
                })?;
            self.next_producer_id.set(first + 1);
            self.cluster_ids_end.set(first + limits::PRODUCER_ID_BLOCK);
            return Ok(first);
        }
        self.next_producer_id.set(id + 1);
        Ok(id)
    }
}

/// The checks every new topic passes, on a single broker or a cluster:
/// its name, that it does not exist, the topic limit, its partition count
/// (-1: the default) and its configs. Returns the partition count.
pub fn check_new_topic(
    shard: &Shard,
    t: &NewTopic,
    exists: bool,
    topics: usize,
) -> Result<i32, Refusal> {
    metadata::check_topic_name(&t.name)?;
    metadata::check_not_internal(&t.name)?;
    if exists {
        return Err(Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {:?} already exists", t.name),
        ));
    }
    if topics >= limits::TOPICS_MAX {
        return Err(Refusal::new(
            ResponseError::PolicyViolation,
            format!("at most {} topics", limits::TOPICS_MAX),
        ));
    }
    let partitions = if t.partitions == -1 {
        shard.cfg.default_partitions as i32
    } else {
        t.partitions
    };
    if partitions < 1 || partitions as u32 > limits::PARTITIONS_PER_TOPIC_MAX {
        return Err(Refusal::new(
            ResponseError::InvalidPartitions,
            format!(
                "{partitions} partitions: must be between 1 and {}",
                limits::PARTITIONS_PER_TOPIC_MAX
            ),
        ));
    }
    let cfg = metadata::log_config(&t.configs)?;
    metadata::check_topic_floors(&t.configs, &cfg, &shard.cfg)?;
    Ok(partitions)
}

/// A topic's new partition count: more than it has, within the limit.
pub fn check_partition_count(name: &str, have: i32, count: i32) -> Result<(), Refusal> {
    if count <= have || count as u32 > limits::PARTITIONS_PER_TOPIC_MAX {
        return Err(Refusal::new(
            ResponseError::InvalidPartitions,
            format!(
                "topic {name:?} has {have} partitions; the new count must be more, and at most {}",
                limits::PARTITIONS_PER_TOPIC_MAX
            ),
        ));
    }
    Ok(())
}

/// A topic's configs after `ops`, and whether the broker takes them.
pub fn configs_after(
    shard: &Shard,
    configs: &BTreeMap<String, String>,
    ops: Vec<ConfigOp>,
) -> (BTreeMap<String, String>, Result<(), Refusal>) {
    let mut configs = configs.clone();
    for op in ops {
        match op {
            ConfigOp::Set(k, v) => {
                configs.insert(k, v);
            }
            ConfigOp::Delete(k) => {
                configs.remove(&k);
            }
            ConfigOp::Clear => configs.clear(),
        }
    }
    let checked = metadata::log_config(&configs)
        .and_then(|cfg| metadata::check_topic_floors(&configs, &cfg, &shard.cfg));
    (configs, checked)
}

/// Has every shard apply `snap`; returns once all have.
pub async fn broadcast(shard: &Rc<Shard>, snap: Arc<Snapshot>, fresh: HashSet<(String, i32)>) {
    let fresh = Arc::new(fresh);
    let mut waits = Vec::new();
    for target in 0..shard.shards {
        let snap = snap.clone();
        let fresh = fresh.clone();
        waits.push(shard.call(target, move |s| async move {
            let failed = s.apply(snap, &fresh).await;
            for (dir, why) in failed {
                tracing::error!(shard = s.id, partition = %dir.display(), error = why, "partition not opened");
            }
        }));
    }
    for w in waits {
        let _ = w.await;
    }
}

/// Partitions this broker may hold: `--partitions-per-shard-max` per shard.
fn partitions_max(shard: &Shard) -> usize {
    shard
        .cfg
        .partitions_per_shard_max
        .saturating_mul(shard.shards)
}

/// Refuses `adding` partitions to a broker that holds `held` when the sum
/// would pass `max`.
fn check_partitions_per_broker(held: usize, adding: usize, max: usize) -> Result<(), Refusal> {
    if held + adding > max {
        return Err(Refusal::new(
            ResponseError::PolicyViolation,
            format!(
                "this broker holds {held} partitions; {adding} more would pass its limit of {max} \
                 (--partitions-per-shard-max times the shards)"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_past_the_broker_limit_are_refused() {
        let max = 2000;
        assert!(check_partitions_per_broker(0, max, max).is_ok());
        assert!(check_partitions_per_broker(max - 1, 1, max).is_ok());
        let e = check_partitions_per_broker(max - 1, 2, max).unwrap_err();
        assert_eq!(e.code, ResponseError::PolicyViolation.code());
        assert!(check_partitions_per_broker(max, 1, max).is_err());
    }
}

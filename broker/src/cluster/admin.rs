//! Topic administration on a node of a cluster: each request is checked
//! against the cluster's state as this node applied it, proposed to the
//! metadata log as a command, and answered once this node applied it (and
//! its shards took the change). The command is checked again where it is
//! applied, on every node alike, so a request made against a state that
//! moved on (a topic created meanwhile) is refused there.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError;

use super::node::ProposeError;
use super::state::{ClusterState, Command, Refused, TopicState};
use crate::controller::{ConfigOp, NewTopic};
use crate::metadata::{self, Refusal, TopicMeta, NOT_HOSTED};
use crate::shard::Shard;

/// The cluster's state as this node applied it (shared, not copied).
fn state(shard: &Shard) -> Arc<ClusterState> {
    shard
        .cluster_view()
        .map(|v| v.state.clone())
        .unwrap_or_default()
}

fn topic<'a>(st: &'a ClusterState, name: &str) -> Result<&'a TopicState, Refusal> {
    st.topics.get(name).ok_or_else(|| no_topic(name))
}

/// NOT_CONTROLLER (which clients retry) while this node knows no
/// controller or no registered node: the cluster is still forming.
fn forming(shard: &Shard) -> Result<(), Refusal> {
    match shard.cluster_view() {
        Some(v) if v.controller.is_some() && !v.state.nodes.is_empty() => Ok(()),
        _ => Err(Refusal::new(
            ResponseError::NotController,
            "the cluster is forming: no controller or registered node yet",
        )),
    }
}

fn no_topic(name: &str) -> Refusal {
    Refusal::new(
        ResponseError::UnknownTopicOrPartition,
        format!("no topic {name:?}"),
    )
}

/// The Kafka answer for a proposal that did not take effect.
fn refusal(e: ProposeError) -> Refusal {
    match e {
        ProposeError::Refused(Refused::TopicExists(t)) => Refusal::new(
            ResponseError::TopicAlreadyExists,
            format!("topic {t:?} already exists"),
        ),
        ProposeError::Refused(Refused::NoTopic(t)) => no_topic(&t),
        ProposeError::Refused(r) => Refusal::new(ResponseError::InvalidRequest, r.to_string()),
        ProposeError::NoController | ProposeError::Stopped => {
            Refusal::new(ResponseError::NotController, e.to_string())
        }
        ProposeError::TimedOut(_) => Refusal::new(ResponseError::RequestTimedOut, e.to_string()),
    }
}

async fn propose(shard: &Shard, cmd: Command) -> Result<(), Refusal> {
    let Some(h) = shard.cluster_handle().cloned() else {
        return Err(refusal(ProposeError::Stopped));
    };
    h.propose(cmd).await.map_err(refusal)
}

/// The replication factor a topic created with `asked` gets: -1 is
/// `default` (`--default-replication-factor`), else `min(3, nodes)`.
fn factor(asked: i16, nodes: usize, default: Option<u16>) -> Result<usize, Refusal> {
    let f = if asked == -1 {
        default.map_or(nodes.min(3), usize::from)
    } else {
        usize::try_from(asked).unwrap_or(0)
    };
    if f == 0 || f > nodes {
        return Err(Refusal::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {asked}: the cluster has {nodes} registered node(s); \
                 use 1 to {nodes}, or -1 for the default"
            ),
        ));
    }
    Ok(f)
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<TopicMeta, Refusal>> {
    let mut out = Vec::with_capacity(topics.len());
    for t in topics {
        let st = state(shard);
        let r = forming(shard).and_then(|()| plan_create(shard, &st, &t));
        let r = match r {
            Ok((cmd, meta)) if !validate_only => propose(shard, cmd).await.map(|()| meta),
            r => r.map(|(_, meta)| meta),
        };
        out.push(r);
    }
    out
}

fn plan_create(
    shard: &Shard,
    st: &ClusterState,
    t: &NewTopic,
) -> Result<(Command, TopicMeta), Refusal> {
    let partitions = crate::controller::check_new_topic(
        shard,
        t,
        st.topics.contains_key(&t.name),
        st.topics.len(),
    )?;
    let default = shard
        .cfg
        .cluster
        .as_ref()
        .and_then(|c| c.default_replication_factor);
    let f = factor(t.replication_factor, st.nodes.len(), default)?;
    let replicas = st
        .assign(partitions as usize, f)
        .expect("factor checked against the nodes");
    let id = metadata::new_topic_id();
    let meta = TopicMeta {
        name: t.name.clone(),
        id: id.clone(),
        owners: vec![NOT_HOSTED; partitions as usize],
        configs: t.configs.clone(),
        roles: Vec::new(),
    };
    let cmd = Command::CreateTopic {
        name: t.name.clone(),
        id,
        replicas,
        configs: t.configs.clone(),
    };
    Ok((cmd, meta))
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    names: Vec<String>,
) -> Vec<Result<TopicMeta, Refusal>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(delete_topic(shard, name).await);
    }
    out
}

async fn delete_topic(shard: &Shard, name: String) -> Result<TopicMeta, Refusal> {
    metadata::check_not_internal(&name)?;
    let st = state(shard);
    let t = topic(&st, &name)?;
    let meta = TopicMeta {
        name: t.name.clone(),
        id: t.id.clone(),
        owners: vec![NOT_HOSTED; t.partitions.len()],
        configs: t.configs.clone(),
        roles: Vec::new(),
    };
    propose(shard, Command::DeleteTopic { name }).await?;
    Ok(meta)
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    changes: Vec<(String, i32)>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let mut out = Vec::with_capacity(changes.len());
    for (name, count) in changes {
        out.push(add_partitions(shard, name, count, validate_only).await);
    }
    out
}

async fn add_partitions(
    shard: &Shard,
    name: String,
    count: i32,
    validate_only: bool,
) -> Result<(), Refusal> {
    metadata::check_not_internal(&name)?;
    let st = state(shard);
    let t = topic(&st, &name)?;
    let have = t.partitions.len() as i32;
    crate::controller::check_partition_count(&name, have, count)?;
    let f = t.partitions[0].replicas.len();
    let replicas = st.assign((count - have) as usize, f).ok_or_else(|| {
        Refusal::new(
            ResponseError::InvalidReplicationFactor,
            format!("topic {name:?} has {f} replicas, more than the registered nodes"),
        )
    })?;
    if validate_only {
        return Ok(());
    }
    propose(shard, Command::AddPartitions { name, replicas }).await
}

pub async fn alter_configs(
    shard: &Rc<Shard>,
    changes: Vec<(String, Vec<ConfigOp>)>,
    validate_only: bool,
) -> Vec<Result<(), Refusal>> {
    let mut out = Vec::with_capacity(changes.len());
    for (name, ops) in changes {
        out.push(alter_config(shard, name, ops, validate_only).await);
    }
    out
}

async fn alter_config(
    shard: &Shard,
    name: String,
    ops: Vec<ConfigOp>,
    validate_only: bool,
) -> Result<(), Refusal> {
    let st = state(shard);
    let t = topic(&st, &name)?;
    let (configs, checked) = crate::controller::configs_after(shard, &t.configs, ops);
    checked?;
    if validate_only || configs == t.configs {
        return Ok(());
    }
    propose(shard, Command::SetConfigs { name, configs }).await
}

/// One partition's reassignment as AlterPartitionReassignments asks it:
/// (topic, partition, target replicas or `None` to cancel).
pub type ReassignRequest = (String, i32, Option<Vec<i32>>);

/// AlterPartitionReassignments on a node of a cluster: each partition's
/// move is checked against the applied state (the target's nodes
/// registered, distinct; a cancel needs a move under way) and proposed;
/// answered once applied. The copy then runs as replication does, and
/// the controller completes the move once every new replica is in sync.
pub async fn reassign(shard: &Rc<Shard>, items: Vec<ReassignRequest>) -> Vec<Result<(), Refusal>> {
    let mut out = Vec::with_capacity(items.len());
    for (topic_name, partition, replicas) in items {
        out.push(reassign_one(shard, topic_name, partition, replicas).await);
    }
    out
}

async fn reassign_one(
    shard: &Shard,
    name: String,
    partition: i32,
    replicas: Option<Vec<i32>>,
) -> Result<(), Refusal> {
    forming(shard)?;
    metadata::check_not_internal(&name)?;
    let st = state(shard);
    let t = topic(&st, &name)?;
    let p = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or_else(|| {
            Refusal::new(
                ResponseError::UnknownTopicOrPartition,
                format!("no partition {name}-{partition}"),
            )
        })?;
    match &replicas {
        None if p.reassigning.is_none() => {
            return Err(Refusal::new(
                ResponseError::NoReassignmentInProgress,
                format!("no reassignment of {name}-{partition} is under way"),
            ))
        }
        None => {}
        Some(r) => {
            let mut seen = std::collections::BTreeSet::new();
            if r.is_empty() || !r.iter().all(|n| seen.insert(*n)) {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("replicas {r:?}: a non-empty set of distinct nodes"),
                ));
            }
            if let Some(n) = r.iter().find(|n| !st.nodes.contains_key(n)) {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!("node {n} is not a registered node of the cluster"),
                ));
            }
        }
    }
    propose(
        shard,
        Command::Reassign {
            topic: name,
            partition: partition as u32,
            replicas,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_factor_is_the_flag_or_three_or_every_node() {
        assert_eq!(factor(-1, 5, None).unwrap(), 3);
        assert_eq!(factor(-1, 2, None).unwrap(), 2);
        assert_eq!(factor(2, 3, None).unwrap(), 2);
        assert_eq!(factor(-1, 5, Some(5)).unwrap(), 5);
        assert_eq!(factor(1, 5, Some(5)).unwrap(), 1);
        // The default is checked against the nodes registered now.
        assert!(factor(-1, 2, Some(3)).is_err());
        for (asked, nodes) in [(4, 3), (0, 3), (-2, 3), (1, 0), (-1, 0)] {
            let e = factor(asked, nodes, None).unwrap_err();
            assert_eq!(e.code, ResponseError::InvalidReplicationFactor.code());
        }
    }
}

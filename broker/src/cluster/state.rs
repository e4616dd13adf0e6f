//! The cluster's metadata as the metadata log builds it: nodes, topics,
//! each partition's replicas, leader, leader epoch and in-sync replicas.
//!
//! Every node applies the same committed commands in the same order to
//! its `ClusterState`, so every node holds the same state at the same log
//! index. `apply` is therefore deterministic and checks each command
//! against the state it meets, not the one it was proposed against: a
//! command made stale by one committed before it (a partition change
//! whose expected partition epoch moved on, a topic that was deleted) is
//! refused identically everywhere and changes nothing.
//!
//! Commands and the state's image are JSON: small, versioned by serde's
//! defaults, readable when a node's journal needs reading by hand. A
//! command a node cannot decode stops that node's metadata log (it would
//! otherwise diverge from the others), see `ApplyError::Undecodable`.

use std::sync::Arc;

use crate::security::store::Security;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A node's id, as Kafka's broker id.
pub type NodeId = i32;

/// A node as it registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// The Kafka listener it advertises, `host:port`.
    pub kafka: String,
    /// Its node-to-node listener, `host:port`.
    pub replication: String,
    /// Changes each time the node starts, so a restart is told from a
    /// repeated registration.
    pub incarnation: u64,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The nodes holding a replica; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// The replicas in sync with the leader (the leader included).
    pub isr: Vec<NodeId>,
    /// -1 when no replica can lead.
    pub leader: NodeId,
    /// Bumped by every change of leader.
    pub leader_epoch: i32,
    /// Bumped by every change at all; a change names the epoch it was
    /// made against (as Kafka's AlterPartition does).
    pub partition_epoch: i32,
    /// A reassignment under way (KIP-455): `replicas` holds the old and
    /// the new replicas until every new one is in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassigning: Option<Reassignment>,
}

/// Where a partition's replicas are moving: the target set (its first the
/// preferred leader) and the set before the move (what a cancel restores).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub target: Vec<NodeId>,
    pub original: Vec<NodeId>,
}

/// The nodes of `from` that `other` lacks, in `from`'s order.
fn not_in(from: &[NodeId], other: &[NodeId]) -> Vec<NodeId> {
    from.iter()
        .copied()
        .filter(|n| !other.contains(n))
        .collect()
}

impl PartitionState {
    /// Replicas being added by the reassignment under way.
    pub fn adding(&self) -> Vec<NodeId> {
        self.reassigning
            .as_ref()
            .map_or(Vec::new(), |r| not_in(&r.target, &r.original))
    }

    /// Replicas being removed by the reassignment under way.
    pub fn removing(&self) -> Vec<NodeId> {
        self.reassigning
            .as_ref()
            .map_or(Vec::new(), |r| not_in(&r.original, &r.target))
    }

    /// Makes `set` the replicas: the ISR keeps its members in it, and a
    /// leader outside it hands the lead to the first of `set` in sync (a
    /// new leader epoch). Refused when none of `set` is in sync.
    fn settle(&mut self, set: Vec<NodeId>) -> Result<(), String> {
        let isr: Vec<NodeId> = set
            .iter()
            .copied()
            .filter(|n| self.isr.contains(n))
            .collect();
        let Some(&first) = isr.first() else {
            return Err(format!(
                "no replica of {set:?} is in sync (ISR {:?})",
                self.isr
            ));
        };
        if !set.contains(&self.leader) {
            self.leader = first;
            self.leader_epoch += 1;
        }
        self.replicas = set;
        self.isr = isr;
        self.reassigning = None;
        self.partition_epoch += 1;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    pub name: String,
    /// Kafka topic id, 32 hex digits.
    pub id: String,
    pub partitions: Vec<PartitionState>,
    pub configs: BTreeMap<String, String>,
}

/// The cluster's metadata at some index of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The index of the last command applied.
    pub applied: u64,
    pub cluster_id: String,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicState>,
    /// Producer ids below this may have been handed out.
    pub producer_ids_reserved: i64,
    /// Users' credentials and the ACLs, the same on every node (behind an
    /// `Arc`: every request on a secured listener reads them).
    #[serde(default)]
    pub security: Arc<Security>,
    /// Bumped by every `SetSecurity`.
    #[serde(default)]
    pub security_version: u64,
}

/// A change to the cluster's metadata, as the metadata log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Names the cluster, once: the first command of a new cluster.
    InitCluster {
        cluster_id: String,
    },
    RegisterNode(NodeInfo),
    CreateTopic {
        name: String,
        id: String,
        /// Replicas of each partition, the first the initial leader.
        replicas: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    AddPartitions {
        name: String,
        replicas: Vec<Vec<NodeId>>,
    },
    SetConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Starts moving a partition to `replicas` (its first the preferred
    /// leader), or with `None` cancels the move under way: the new
    /// replicas are added at once and copy the log; the controller
    /// completes the move once all are in sync.
    Reassign {
        topic: String,
        partition: u32,
        replicas: Option<Vec<NodeId>>,
    },
    /// Ends a partition's reassignment (proposed by the controller when
    /// every target replica is in sync): the target becomes the replicas.
    CompleteReassignment {
        topic: String,
        partition: u32,
        partition_epoch: i32,
    },
    /// A new leader and ISR for a partition, made against
    /// `partition_epoch`. A new leader (or none) bumps the leader epoch;
    /// where the epoch begins is the new leader's log end, recorded in
    /// its log's epoch history.
    ChangePartition {
        topic: String,
        partition: u32,
        partition_epoch: i32,
        leader: NodeId,
        isr: Vec<NodeId>,
    },
    ReserveProducerIds {
        below: i64,
    },
    /// Hands the proposing node the next `count` producer ids (its
    /// outcome names the first), so no two nodes hand out the same id.
    AllocateProducerIds {
        count: i64,
    },
    /// Replaces the users and ACLs, made against `based_on` (the
    /// `security_version` its proposer read); refused when another change
    /// came first, so no change is lost (the proposer reads again and
    /// retries).
    SetSecurity {
        based_on: u64,
        security: Security,
    },
}

impl Command {
    /// The command as a log entry, untagged.
    pub fn encode(&self) -> Vec<u8> {
        Proposal {
            req: None,
            cmd: self.clone(),
        }
        .encode()
    }
}

/// A command as the metadata log carries it, tagged by the node that
/// proposed it (its id and a number of its own), so that node can tell
/// its caller what became of it once applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    #[serde(default)]
    pub req: Option<(NodeId, u64)>,
    pub cmd: Command,
}

impl Proposal {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commands serialize")
    }
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The proposer's tag.
    pub req: Option<(NodeId, u64)>,
    /// `Ok(Some(first))` for an allocation of producer ids.
    pub outcome: Result<Option<i64>, Refused>,
}

/// Why a committed command changed nothing. Every node refuses the same
/// command for the same reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("topic {0:?} exists")]
    TopicExists(String),
    #[error("no topic {0:?}")]
    NoTopic(String),
    #[error("no partition {0}-{1}")]
    NoPartition(String, u32),
    #[error(
        "partition {topic}-{partition} is at epoch {now}, the change was made against {against}"
    )]
    StaleEpoch {
        topic: String,
        partition: u32,
        now: i32,
        against: i32,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no reassignment of {0}-{1} is under way")]
    NoReassignment(String, u32),
    #[error("users and ACLs are at version {now}, the change was made against {against}")]
    StaleSecurity { now: u64, against: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A command this build cannot read (a newer node's, or damage that
    /// passed the journal's checksums). Applying past it would make this
    /// node's state differ from the others'.
    #[error("metadata log entry {index} cannot be read by this build: {why}")]
    Undecodable { index: u64, why: String },
    #[error("metadata log entry {index} applied out of order (state at {applied})")]
    OutOfOrder { index: u64, applied: u64 },
}

impl ClusterState {
    /// The state as a snapshot image.
    pub fn image(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("state serializes")
    }

    pub fn from_image(b: &[u8]) -> Result<ClusterState, String> {
        serde_json::from_slice(b).map_err(|e| e.to_string())
    }

    /// Applies the committed entry at `index`. An outcome `Err` is a
    /// command refused (stale or invalid): the state only moved its
    /// applied index.
    pub fn apply(&mut self, index: u64, data: &[u8]) -> Result<Applied, ApplyError> {
        if index <= self.applied {
            return Err(ApplyError::OutOfOrder {
                index,
                applied: self.applied,
            });
        }
        let p: Proposal = serde_json::from_slice(data).map_err(|e| ApplyError::Undecodable {
            index,
            why: e.to_string(),
        })?;
        self.applied = index;
        let outcome = match p.cmd {
            Command::AllocateProducerIds { count } if count > 0 => {
                let first = self.producer_ids_reserved;
                self.producer_ids_reserved = first.saturating_add(count);
                Ok(Some(first))
            }
            Command::AllocateProducerIds { count } => {
                Err(Refused::Invalid(format!("{count} producer ids")))
            }
            cmd => self.apply_command(cmd).map(|()| None),
        };
        Ok(Applied {
            req: p.req,
            outcome,
        })
    }

    fn apply_command(&mut self, cmd: Command) -> Result<(), Refused> {
        match cmd {
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id;
                }
                Ok(())
            }
            Command::RegisterNode(n) => {
                if n.id < 0 {
                    return Err(Refused::Invalid(format!("node id {}", n.id)));
                }
                // A node that started again (a new incarnation) lost
                // whatever it had not synced, and may append at those
                // offsets again: it leads its partitions in a new epoch, so
                // a follower that copied the lost records finds where its
                // log diverges (the same epoch would hide it).
                let restarted = self
                    .nodes
                    .get(&n.id)
                    .is_some_and(|old| old.incarnation != n.incarnation);
                if restarted {
                    for t in self.topics.values_mut() {
                        for p in t.partitions.iter_mut().filter(|p| p.leader == n.id) {
                            p.leader_epoch += 1;
                            p.partition_epoch += 1;
                        }
                    }
                }
                self.nodes.insert(n.id, n);
                Ok(())
            }
            Command::CreateTopic {
                name,
                id,
                replicas,
                configs,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(Refused::TopicExists(name));
                }
                let partitions = self.new_partitions(&replicas)?;
                if partitions.is_empty() {
                    return Err(Refused::Invalid(format!(
                        "topic {name:?} with no partitions"
                    )));
                }
                self.topics.insert(
                    name.clone(),
                    TopicState {
                        name,
                        id,
                        partitions,
                        configs,
                    },
                );
                Ok(())
            }
            Command::DeleteTopic { name } => self
                .topics
                .remove(&name)
                .map(|_| ())
                .ok_or(Refused::NoTopic(name)),
            Command::AddPartitions { name, replicas } => {
                let partitions = self.new_partitions(&replicas)?;
                let t = self.topics.get_mut(&name).ok_or(Refused::NoTopic(name))?;
                t.partitions.extend(partitions);
                Ok(())
            }
            Command::SetSecurity { based_on, security } => {
                if based_on != self.security_version {
                    return Err(Refused::StaleSecurity {
                        now: self.security_version,
                        against: based_on,
                    });
                }
                if security.acls.len() > crate::security::store::ACLS_MAX {
                    return Err(Refused::Invalid(format!(
                        "{} ACLs, past the limit of {}",
                        security.acls.len(),
                        crate::security::store::ACLS_MAX
                    )));
                }
                self.security = Arc::new(security);
                self.security_version += 1;
                Ok(())
            }
            Command::SetConfigs { name, configs } => {
                let t = self.topics.get_mut(&name).ok_or(Refused::NoTopic(name))?;
                t.configs = configs;
                Ok(())
            }
            Command::ChangePartition {
                topic,
                partition,
                partition_epoch,
                leader,
                isr,
            } => {
                let t = self
                    .topics
                    .get_mut(&topic)
                    .ok_or_else(|| Refused::NoTopic(topic.clone()))?;
                let p = t
                    .partitions
                    .get_mut(partition as usize)
                    .ok_or_else(|| Refused::NoPartition(topic.clone(), partition))?;
                if p.partition_epoch != partition_epoch {
                    return Err(Refused::StaleEpoch {
                        topic,
                        partition,
                        now: p.partition_epoch,
                        against: partition_epoch,
                    });
                }
                if isr.iter().any(|r| !p.replicas.contains(r)) || distinct(&isr) != isr.len() {
                    return Err(Refused::Invalid(format!(
                        "ISR {isr:?} is not a set of the replicas {:?}",
                        p.replicas
                    )));
                }
                if leader != -1 && !isr.contains(&leader) {
                    return Err(Refused::Invalid(format!(
                        "leader {leader} is not in the ISR {isr:?}"
                    )));
                }
                if leader != p.leader {
                    p.leader_epoch += 1;
                }
                p.leader = leader;
                p.isr = isr;
                p.partition_epoch += 1;
                Ok(())
            }
            Command::Reassign {
                topic,
                partition,
                replicas,
            } => {
                let registered: Vec<NodeId> = self.nodes.keys().copied().collect();
                let p = self.partition_mut(&topic, partition)?;
                match replicas {
                    None => {
                        let Some(r) = p.reassigning.clone() else {
                            return Err(Refused::NoReassignment(topic, partition));
                        };
                        p.settle(r.original).map_err(Refused::Invalid)
                    }
                    Some(target) => {
                        if target.is_empty() || distinct(&target) != target.len() {
                            return Err(Refused::Invalid(format!("replica set {target:?}")));
                        }
                        if let Some(n) = target.iter().find(|n| !registered.contains(n)) {
                            return Err(Refused::Invalid(format!("node {n} is not registered")));
                        }
                        let original = p
                            .reassigning
                            .as_ref()
                            .map_or(p.replicas.clone(), |r| r.original.clone());
                        // The old replicas first (the lead stays where it
                        // is until the move ends), then the new ones.
                        let mut replicas = p.replicas.clone();
                        replicas.retain(|n| original.contains(n) || target.contains(n));
                        for &n in &target {
                            if !replicas.contains(&n) {
                                replicas.push(n);
                            }
                        }
                        let mut isr = p.isr.clone();
                        isr.retain(|n| replicas.contains(n));
                        if isr.is_empty() {
                            return Err(Refused::Invalid(format!(
                                "no replica in sync (ISR {:?})",
                                p.isr
                            )));
                        }
                        p.replicas = replicas;
                        p.isr = isr;
                        if target == original {
                            p.reassigning = None;
                        } else {
                            p.reassigning = Some(Reassignment { target, original });
                        }
                        p.partition_epoch += 1;
                        Ok(())
                    }
                }
            }
            Command::CompleteReassignment {
                topic,
                partition,
                partition_epoch,
            } => {
                let p = self.partition_mut(&topic, partition)?;
                if p.partition_epoch != partition_epoch {
                    return Err(Refused::StaleEpoch {
                        topic,
                        partition,
                        now: p.partition_epoch,
                        against: partition_epoch,
                    });
                }
                let Some(r) = p.reassigning.clone() else {
                    return Err(Refused::NoReassignment(topic, partition));
                };
                if let Some(n) = r.target.iter().find(|n| !p.isr.contains(n)) {
                    return Err(Refused::Invalid(format!(
                        "replica {n} of the target {:?} is not in sync",
                        r.target
                    )));
                }
                p.settle(r.target).map_err(Refused::Invalid)
            }
            Command::ReserveProducerIds { below } => {
                self.producer_ids_reserved = self.producer_ids_reserved.max(below);
                Ok(())
            }
            Command::AllocateProducerIds { .. } => unreachable!("applied in `apply`"),
        }
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<&mut PartitionState, Refused> {
        self.topics
            .get_mut(topic)
            .ok_or_else(|| Refused::NoTopic(topic.to_string()))?
            .partitions
            .get_mut(partition as usize)
            .ok_or_else(|| Refused::NoPartition(topic.to_string(), partition))
    }

    /// On the controller: the reassignments whose target replicas are
    /// all in sync, as the commands that complete them.
    pub fn completions(&self) -> Vec<Command> {
        let mut out = Vec::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if let Some(r) = &p.reassigning {
                    if r.target.iter().all(|n| p.isr.contains(n)) {
                        out.push(Command::CompleteReassignment {
                            topic: t.name.clone(),
                            partition: i as u32,
                            partition_epoch: p.partition_epoch,
                        });
                    }
                }
            }
        }
        out
    }

    /// Partitions for `replicas`, each led by its first replica, after
    /// checking each replica set names distinct registered nodes.
    fn new_partitions(&self, replicas: &[Vec<NodeId>]) -> Result<Vec<PartitionState>, Refused> {
        replicas
            .iter()
            .map(|r| {
                if r.is_empty() || distinct(r) != r.len() {
                    return Err(Refused::Invalid(format!("replica set {r:?}")));
                }
                if let Some(n) = r.iter().find(|n| !self.nodes.contains_key(n)) {
                    return Err(Refused::Invalid(format!("node {n} is not registered")));
                }
                // Every replica of a new partition holds its whole
                // (empty) log, so all start in sync (as Kafka creates
                // them): acks=all works from the first produce, and a
                // follower counts toward the high watermark with what it
                // reported (nothing until its first fetch), so nothing is
                // exposed that it lacks.
                Ok(PartitionState {
                    replicas: r.clone(),
                    isr: r.clone(),
                    leader: r[0],
                    leader_epoch: 0,
                    partition_epoch: 0,
                    reassigning: None,
                })
            })
            .collect()
    }

    /// Replica sets for `count` new partitions of `factor` replicas each,
    /// on distinct nodes: each partition's leader is the node leading the
    /// fewest partitions so far, its followers the nodes holding the
    /// fewest replicas (lowest id on ties), so leaders and replicas spread
    /// evenly. `None` when there are fewer nodes than `factor`.
    pub fn assign(&self, count: usize, factor: usize) -> Option<Vec<Vec<NodeId>>> {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        if factor == 0 || factor > nodes.len() {
            return None;
        }
        let mut leads: BTreeMap<NodeId, usize> = nodes.iter().map(|&n| (n, 0)).collect();
        let mut holds = leads.clone();
        for t in self.topics.values() {
            for p in &t.partitions {
                if let Some(l) = leads.get_mut(&p.replicas[0]) {
                    *l += 1;
                }
                for r in &p.replicas {
                    if let Some(h) = holds.get_mut(r) {
                        *h += 1;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let leader = *nodes
                .iter()
                .min_by_key(|n| (leads[n], holds[n], **n))
                .expect("at least one node");
            let mut set = vec![leader];
            let mut rest: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != leader).collect();
            rest.sort_by_key(|n| (holds[n], *n));
            set.extend(rest.into_iter().take(factor - 1));
            *leads.get_mut(&leader).unwrap() += 1;
            for n in &set {
                *holds.get_mut(n).unwrap() += 1;
            }
            out.push(set);
        }
        Some(out)
    }

    /// What the controller proposes when the nodes in `dead` stopped
    /// answering: each partition they lead goes to the first replica (in
    /// preference order) still in its ISR and alive, and they leave every
    /// ISR. A partition whose ISR holds no live node keeps its leader (it
    /// waits for it: no replica that may lack acknowledged records is
    /// made leader, as Kafka without unclean election).
    pub fn failover(&self, dead: &BTreeSet<NodeId>) -> Vec<Command> {
        let mut out = Vec::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.isr.iter().any(|n| dead.contains(n)) {
                    continue;
                }
                let isr: Vec<NodeId> = p
                    .isr
                    .iter()
                    .copied()
                    .filter(|n| !dead.contains(n))
                    .collect();
                let leader = if dead.contains(&p.leader) {
                    match p.replicas.iter().find(|r| isr.contains(r)) {
                        Some(&n) => n,
                        None => continue,
                    }
                } else {
                    p.leader
                };
                out.push(Command::ChangePartition {
                    topic: t.name.clone(),
                    partition: i as u32,
                    partition_epoch: p.partition_epoch,
                    leader,
                    isr,
                });
            }
        }
        out
    }

    /// The partitions with fewer in-sync replicas than replicas, and those
    /// with no leader.
    pub fn health(&self) -> Health {
        let mut under = Vec::new();
        let mut leaderless = Vec::new();
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                // Replicas being added by a reassignment copy the log
                // first; they do not make a partition under-replicated.
                let adding = p.adding();
                if p.replicas
                    .iter()
                    .any(|n| !p.isr.contains(n) && !adding.contains(n))
                {
                    under.push((t.name.clone(), i as u32));
                }
                if p.leader == -1 {
                    leaderless.push((t.name.clone(), i as u32));
                }
            }
        }
        Health {
            under_replicated: under,
            leaderless,
        }
    }
}

/// Partitions that lack replicas or a leader, as (topic, partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub under_replicated: Vec<(String, u32)>,
    pub leaderless: Vec<(String, u32)>,
}

fn distinct(v: &[NodeId]) -> usize {
    v.iter().collect::<BTreeSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> Command {
        Command::RegisterNode(NodeInfo {
            id,
            kafka: format!("127.0.0.1:{}", 9092 + id),
            replication: format!("127.0.0.1:{}", 9192 + id),
            incarnation: 1,
        })
    }

    fn apply_all(s: &mut ClusterState, cmds: &[Command]) -> Vec<Result<(), Refused>> {
        cmds.iter()
            .map(|c| {
                s.apply(s.applied + 1, &c.encode())
                    .unwrap()
                    .outcome
                    .map(|_| ())
            })
            .collect()
    }

    /// `three()` with topic "t" (id "x") of these replica sets.
    fn three_with_topic(replicas: Vec<Vec<NodeId>>) -> ClusterState {
        let mut s = three();
        let r = apply_all(
            &mut s,
            &[Command::CreateTopic {
                name: "t".into(),
                id: "x".into(),
                replicas,
                configs: BTreeMap::new(),
            }],
        );
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        s
    }

    fn three() -> ClusterState {
        let mut s = ClusterState::default();
        let r = apply_all(&mut s, &[node(1), node(2), node(3)]);
        assert!(r.iter().all(|r| r.is_ok()));
        s
    }

    #[test]
    fn replicas_spread_over_distinct_nodes_and_leaders_balance() {
        let s = three();
        let a = s.assign(6, 3).unwrap();
        for set in &a {
            assert_eq!(distinct(set), 3, "{set:?}");
        }
        let mut leads = BTreeMap::new();
        for set in &a {
            *leads.entry(set[0]).or_insert(0) += 1;
        }
        assert_eq!(leads.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert!(s.assign(1, 4).is_none());
        assert!(s.assign(1, 0).is_none());
        // Factor 2 on three nodes: every node holds 4 of the 12 replicas.
        let a = s.assign(6, 2).unwrap();
        let mut holds = BTreeMap::new();
        for set in &a {
            for n in set {
                *holds.entry(*n).or_insert(0) += 1;
            }
        }
        assert_eq!(holds.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        // Existing topics count: a second topic's leaders go to the nodes
        // leading fewest.
        let mut s = s;
        let replicas = s.assign(2, 1).unwrap();
        apply_all(
            &mut s,
            &[Command::CreateTopic {
                name: "a".into(),
                id: "x".into(),
                replicas,
                configs: BTreeMap::new(),
            }],
        );
        assert_eq!(s.assign(1, 1).unwrap(), vec![vec![3]]);
    }

    #[test]
    fn leader_changes_bump_the_epoch_and_stale_changes_are_refused() {
        let mut s = three();
        let create = Command::CreateTopic {
            name: "t".into(),
            id: "x".into(),
            replicas: vec![vec![1, 2, 3]],
            configs: BTreeMap::new(),
        };
        let change = |epoch, leader, isr: Vec<NodeId>| Command::ChangePartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: epoch,
            leader,
            isr,
        };
        let r = apply_all(
            &mut s,
            &[
                create.clone(),
                create,
                // Follower 3 leaves the ISR: same leader, same epoch.
                change(0, 1, vec![1, 2]),
                // Two controllers' changes against the same epoch: the
                // first wins, the second is stale.
                change(1, 2, vec![2]),
                change(1, 3, vec![3]),
                // Not a replica, leader outside the ISR, duplicates.
                change(2, 2, vec![2, 4]),
                change(2, 1, vec![2]),
                change(2, 2, vec![2, 2]),
                // Nobody can lead.
                change(2, -1, vec![]),
                change(3, 3, vec![3]),
            ],
        );
        assert_eq!(r[0], Ok(()));
        assert_eq!(r[1], Err(Refused::TopicExists("t".into())));
        assert_eq!(r[2], Ok(()));
        assert_eq!(r[3], Ok(()));
        assert!(matches!(r[4], Err(Refused::StaleEpoch { now: 2, .. })));
        assert!(r[5..8]
            .iter()
            .all(|r| matches!(r, Err(Refused::Invalid(_)))));
        assert_eq!(r[8], Ok(()));
        assert_eq!(r[9], Ok(()));
        let p = &s.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (3, 3, 4));
        assert_eq!(p.isr, vec![3]);
        let h = s.health();
        assert_eq!(h.under_replicated, vec![("t".to_string(), 0)]);
        assert!(h.leaderless.is_empty());
    }

    /// A reassignment adds the new replicas at once (the lead stays), is
    /// completed only with every target replica in sync, then leaves the
    /// target as the replicas with the lead on one of them (a new leader
    /// epoch when it moved); a cancel restores the replicas before it.
    #[test]
    fn a_reassignment_adds_then_settles_or_is_cancelled() {
        let mut s = three_with_topic(vec![vec![1], vec![1, 2]]);
        let reassign = |p: u32, r: Option<Vec<NodeId>>| Command::Reassign {
            topic: "t".into(),
            partition: p,
            replicas: r,
        };
        let r = apply_all(&mut s, &[reassign(0, Some(vec![2, 3]))]);
        assert!(r[0].is_ok(), "{r:?}");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!(p.replicas, vec![1, 2, 3]);
        assert_eq!((p.leader, p.leader_epoch), (1, 0));
        assert_eq!(p.isr, vec![1]);
        assert_eq!((p.adding(), p.removing()), (vec![2, 3], vec![1]));
        assert!(
            s.health().under_replicated.is_empty(),
            "adding replicas copy first"
        );
        // Not complete before both new replicas are in sync.
        assert!(s.completions().is_empty());
        let early = Command::CompleteReassignment {
            topic: "t".into(),
            partition: 0,
            partition_epoch: p.partition_epoch,
        };
        assert!(apply_all(&mut s, &[early])[0].is_err());
        let join = Command::ChangePartition {
            topic: "t".into(),
            partition: 0,
            partition_epoch: p.partition_epoch,
            leader: 1,
            isr: vec![1, 3, 2],
        };
        assert!(apply_all(&mut s, &[join])[0].is_ok());
        let done = s.completions();
        assert_eq!(done.len(), 1);
        assert!(apply_all(&mut s, &done)[0].is_ok());
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!(p.replicas, vec![2, 3]);
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!((p.leader, p.leader_epoch), (2, 1));
        assert!(p.reassigning.is_none());
        assert!(s.completions().is_empty());
        // A cancel restores the replicas; unknown nodes and cancels of
        // nothing are refused.
        assert!(apply_all(&mut s, &[reassign(1, Some(vec![1, 3]))])[0].is_ok());
        assert_eq!(s.topics["t"].partitions[1].replicas, vec![1, 2, 3]);
        assert!(apply_all(&mut s, &[reassign(1, None)])[0].is_ok());
        let p = s.topics["t"].partitions[1].clone();
        assert_eq!(
            (p.replicas.clone(), p.isr.clone()),
            (vec![1, 2], vec![1, 2])
        );
        assert!(p.reassigning.is_none());
        assert!(matches!(
            apply_all(&mut s, &[reassign(1, None)])[0],
            Err(Refused::NoReassignment(..))
        ));
        assert!(apply_all(&mut s, &[reassign(1, Some(vec![1, 9]))])[0].is_err());
        assert!(apply_all(&mut s, &[reassign(1, Some(vec![1, 1]))])[0].is_err());
    }

    #[test]
    fn dead_nodes_lose_their_leadership_to_live_in_sync_replicas() {
        let mut s = three();
        let r = apply_all(
            &mut s,
            &[
                Command::CreateTopic {
                    name: "t".into(),
                    id: "x".into(),
                    replicas: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2], vec![1, 3, 2]],
                    configs: BTreeMap::new(),
                },
                // Partition 0: all in sync. 1: 3 out of sync. 2: only
                // its leader 3 in sync. 3: 3 and 1 in sync.
                Command::ChangePartition {
                    topic: "t".into(),
                    partition: 0,
                    partition_epoch: 0,
                    leader: 1,
                    isr: vec![1, 2, 3],
                },
                Command::ChangePartition {
                    topic: "t".into(),
                    partition: 1,
                    partition_epoch: 0,
                    leader: 2,
                    isr: vec![2, 1],
                },
                Command::ChangePartition {
                    topic: "t".into(),
                    partition: 2,
                    partition_epoch: 0,
                    leader: 3,
                    isr: vec![3],
                },
                Command::ChangePartition {
                    topic: "t".into(),
                    partition: 3,
                    partition_epoch: 0,
                    leader: 1,
                    isr: vec![1, 3],
                },
            ],
        );
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert!(s.failover(&BTreeSet::new()).is_empty());
        let cmds = s.failover(&BTreeSet::from([1]));
        let got: Vec<(u32, NodeId, Vec<NodeId>)> = cmds
            .iter()
            .map(|c| match c {
                Command::ChangePartition {
                    partition,
                    leader,
                    isr,
                    ..
                } => (*partition, *leader, isr.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        // 0: to 2 (first preferred in sync); 1: 1 leaves the ISR, 2 keeps
        // the lead; 2: 1 was never in its ISR; 3: to 3.
        assert_eq!(
            got,
            vec![(0, 2, vec![2, 3]), (1, 2, vec![2]), (3, 3, vec![3])]
        );
        let before = s.topics["t"].partitions[0].leader_epoch;
        let r = apply_all(&mut s, &cmds);
        assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
        assert_eq!(s.topics["t"].partitions[0].leader_epoch, before + 1);
        // Nothing more to do for the same dead node.
        assert!(s.failover(&BTreeSet::from([1])).is_empty());
        // With 3 dead too: partitions 2 and 3 (only 3 in sync) have no
        // one to go to and keep waiting; partition 0 loses 3 from its ISR.
        let cmds = s.failover(&BTreeSet::from([1, 3]));
        assert_eq!(
            cmds,
            vec![Command::ChangePartition {
                topic: "t".into(),
                partition: 0,
                partition_epoch: 2,
                leader: 2,
                isr: vec![2],
            }]
        );
    }

    #[test]
    fn a_restarted_leader_leads_in_a_new_epoch() {
        let mut s = three_with_topic(vec![vec![1, 2, 3], vec![2, 3, 1]]);
        let again = |incarnation| {
            Command::RegisterNode(NodeInfo {
                id: 1,
                kafka: "127.0.0.1:9093".into(),
                replication: "127.0.0.1:9193".into(),
                incarnation,
            })
        };
        // The same start registering again changes no epoch; a new one
        // bumps the epochs of what it leads, and only those.
        apply_all(&mut s, &[again(1)]);
        let epochs = |s: &ClusterState| {
            s.topics["t"]
                .partitions
                .iter()
                .map(|p| (p.leader_epoch, p.partition_epoch))
                .collect::<Vec<_>>()
        };
        assert_eq!(epochs(&s), vec![(0, 0), (0, 0)]);
        apply_all(&mut s, &[again(2)]);
        assert_eq!(epochs(&s), vec![(1, 1), (0, 0)]);
    }

    #[test]
    fn unregistered_nodes_and_bad_commands_change_nothing() {
        let mut s = three();
        let before = s.clone();
        let r = apply_all(
            &mut s,
            &[
                Command::CreateTopic {
                    name: "t".into(),
                    id: "x".into(),
                    replicas: vec![vec![1, 9]],
                    configs: BTreeMap::new(),
                },
                Command::CreateTopic {
                    name: "t".into(),
                    id: "x".into(),
                    replicas: vec![],
                    configs: BTreeMap::new(),
                },
                Command::DeleteTopic { name: "t".into() },
                Command::AddPartitions {
                    name: "t".into(),
                    replicas: vec![vec![1]],
                },
            ],
        );
        assert!(r.iter().all(|r| r.is_err()), "{r:?}");
        assert_eq!(s.topics, before.topics);
        assert_eq!(s.applied, before.applied + 4);
        // Out of order, and bytes that are no command.
        let at = s.applied;
        assert!(matches!(
            s.apply(at, &node(4).encode()),
            Err(ApplyError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.apply(at + 1, b"{\"cmd\":{\"op\":\"launch_rockets\"}}"),
            Err(ApplyError::Undecodable { .. })
        ));
        assert_eq!(s.applied, at);
    }

    /// Two nodes applying the same commands hold the same state, and the
    /// image of one restores it exactly.
    #[test]
    fn same_commands_same_state_and_images_restore() {
        let mut a = three();
        let mut b = three();
        let replicas = a.assign(4, 2).unwrap();
        let cmds = vec![
            Command::InitCluster {
                cluster_id: "c1".into(),
            },
            Command::InitCluster {
                cluster_id: "c2".into(),
            },
            Command::CreateTopic {
                name: "orders".into(),
                id: "ab".into(),
                replicas,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            },
            Command::AddPartitions {
                name: "orders".into(),
                replicas: vec![vec![3, 1]],
            },
            Command::ReserveProducerIds { below: 1000 },
            Command::ReserveProducerIds { below: 10 },
        ];
        assert!(apply_all(&mut a, &cmds).iter().all(|r| r.is_ok()));
        apply_all(&mut b, &cmds);
        assert_eq!(a, b);
        assert_eq!(a.cluster_id, "c1");
        assert_eq!(a.producer_ids_reserved, 1000);
        assert_eq!(a.topics["orders"].partitions.len(), 5);
        assert_eq!(ClusterState::from_image(&a.image()).unwrap(), a);
        // Allocations hand out consecutive, disjoint blocks.
        let at = a.applied;
        let alloc = Command::AllocateProducerIds { count: 100 }.encode();
        assert_eq!(a.apply(at + 1, &alloc).unwrap().outcome, Ok(Some(1000)));
        assert_eq!(a.apply(at + 2, &alloc).unwrap().outcome, Ok(Some(1100)));
        let bad = Command::AllocateProducerIds { count: 0 }.encode();
        assert!(a.apply(at + 3, &bad).unwrap().outcome.is_err());
        assert_eq!(a.producer_ids_reserved, 1200);
        assert!(ClusterState::from_image(b"{").is_err());
    }
}

//! Metadata: this broker (as controller, and leader of every partition),
//! and the topics asked for (all of them when none are named), creating
//! unknown ones when auto-creation is on and the client allows it. With
//! ACLs: topics the principal may not DESCRIBE are left out of an
//! all-topics answer and answered TOPIC_AUTHORIZATION_FAILED when named;
//! auto-creation needs CREATE on the cluster or the topic.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{on_controller, Ctx};
use crate::controller::NewTopic;
use crate::metadata::TopicMeta;
use crate::security::Authz;
use crate::shard::Shard;
use sluice_net::response::ResponseChunks;

/// "Not requested" for authorized-operations fields.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: MetadataRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    use crate::security::acl::Operation::{Create, Describe};
    let described = |name: &str| authz.topic(Describe, name);
    let denied = |name: Option<String>, id| {
        MetadataResponseTopic::default()
            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
            .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
            .with_topic_id(id)
            .with_topic_authorized_operations(OPERATIONS_OMITTED)
    };
    let node = BrokerId(shard.cfg.node_id);
    let meta = shard.meta();
    // Read when each topic is answered: after an auto-creation, the view
    // holds the new topic.
    let cluster = |t: &TopicMeta| {
        shard
            .cluster_view()
            .and_then(|v| v.state.topics.get(&t.name).cloned())
            .filter(|c| c.id == t.id)
    };
    // v0 asks for every topic with an empty list; later versions with null.
    let wanted: Option<Vec<(Option<String>, uuid::Uuid)>> = match req.topics {
        Some(t) if !(t.is_empty() && ctx.version == 0) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
        _ => None,
    };
    let auto_create =
        shard.cfg.auto_create_topics && (ctx.version < 4 || req.allow_auto_topic_creation);
    let mut topics: Vec<MetadataResponseTopic> = Vec::new();
    match wanted {
        None => {
            // Topics the principal may not describe are left out.
            for t in meta.topics.values().filter(|t| described(&t.name)) {
                topics.push(topic_entry(node, t, cluster(t).as_ref()));
            }
        }
        Some(wanted) => {
            // Create the missing topics first, in one controller change.
            let missing: Vec<NewTopic> = wanted
                .iter()
                .filter_map(|(n, _)| n.as_ref())
                .filter(|n| meta.topic(n).is_none())
                .filter(|n| described(n))
                .filter(|n| authz.cluster(Create) || authz.topic(Create, n))
                .map(|n| NewTopic {
                    name: n.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                })
                .collect();
            let mut refused = std::collections::HashMap::new();
            if auto_create && !missing.is_empty() {
                let names: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
                let results = on_controller(shard, move |s| async move {
                    s.controller().create_topics(&s, missing, false).await
                })
                .await
                .unwrap_or_default();
                for (name, r) in names.into_iter().zip(results) {
                    if let Err(e) = r {
                        // Raced with another creation: it exists now.
                        if e.code != ResponseError::TopicAlreadyExists.code() {
                            refused.insert(name, e.code);
                        }
                    }
                }
            }
            let meta = shard.meta();
            for (name, id) in wanted {
                let found = match &name {
                    Some(n) => meta.topic(n),
                    None => meta.topic_by_id(id),
                };
                let allowed = match (&name, found) {
                    (Some(n), _) => described(n),
                    (None, Some(t)) => described(&t.name),
                    (None, None) => true,
                };
                if !allowed {
                    topics.push(denied(name, id));
                    continue;
                }
                topics.push(match found {
                    Some(t) => topic_entry(node, t, cluster(t).as_ref()),
                    None => {
                        let code = name
                            .as_ref()
                            .and_then(|n| refused.get(n).copied())
                            .unwrap_or(ResponseError::UnknownTopicOrPartition.code());
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                            .with_topic_id(id)
                            .with_topic_authorized_operations(OPERATIONS_OMITTED)
                    }
                });
            }
        }
    }
    let nodes = shard.nodes(ctx.listener);
    let body = MetadataResponse::default()
        .with_brokers(
            nodes
                .brokers
                .into_iter()
                .map(|(id, host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(nodes.cluster_id)))
        .with_controller_id(BrokerId(nodes.controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_OMITTED);
    ctx.answer(ResponseKind::Metadata(body))
}

/// A topic's partitions: on a node of a cluster, each one's leader,
/// leader epoch, replicas and in-sync replicas as this node applied them
/// (LEADER_NOT_AVAILABLE while none leads); on a single broker, itself.
fn topic_entry(
    node: BrokerId,
    t: &TopicMeta,
    cluster: Option<&crate::cluster::state::TopicState>,
) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.uuid())
        .with_is_internal(t.name == crate::groups::OFFSETS_TOPIC)
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
        .with_partitions(
            (0..t.owners.len() as i32)
                .map(|i| {
                    let p = MetadataResponsePartition::default().with_partition_index(i);
                    match cluster.and_then(|c| c.partitions.get(i as usize)) {
                        Some(c) => p
                            .with_error_code(if c.leader < 0 {
                                ResponseError::LeaderNotAvailable.code()
                            } else {
                                0
                            })
                            .with_leader_id(BrokerId(c.leader))
                            .with_leader_epoch(c.leader_epoch)
                            .with_replica_nodes(ids(&c.replicas))
                            .with_isr_nodes(ids(&c.isr)),
                        None => p
                            .with_leader_id(node)
                            .with_leader_epoch(0)
                            .with_replica_nodes(vec![node])
                            .with_isr_nodes(vec![node]),
                    }
                })
                .collect(),
        )
}

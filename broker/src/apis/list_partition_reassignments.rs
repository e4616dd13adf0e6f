//! ListPartitionReassignments: the moves under way, as this node applied
//! the cluster's state (of the topics asked, or all): each partition's
//! replicas and those being added and removed. Nothing on a single
//! broker.

use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ResponseKind,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::response::ResponseChunks;

use super::Ctx;
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: ListPartitionReassignmentsRequest,
) -> ResponseChunks {
    let ids = |v: &[i32]| v.iter().map(|&n| BrokerId(n)).collect::<Vec<_>>();
    let mut topics = Vec::new();
    if let Some(view) = shard.cluster_view() {
        let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        for t in view.state.topics.values() {
            let asked = match &wanted {
                None => None,
                Some(w) => match w.iter().find(|(n, _)| *n == t.name) {
                    Some((_, ps)) => Some(ps),
                    None => continue,
                },
            };
            let partitions: Vec<OngoingPartitionReassignment> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    p.reassigning.is_some() && asked.is_none_or(|ps| ps.contains(&(*i as i32)))
                })
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding()))
                        .with_removing_replicas(ids(&p.removing()))
                })
                .collect();
            if !partitions.is_empty() {
                topics.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(StrBytes::from_string(t.name.clone())))
                        .with_partitions(partitions),
                );
            }
        }
    }
    ctx.answer(ResponseKind::ListPartitionReassignments(
        ListPartitionReassignmentsResponse::default().with_topics(topics),
    ))
}

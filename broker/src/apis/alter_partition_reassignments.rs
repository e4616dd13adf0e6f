//! AlterPartitionReassignments (a node of a cluster): moves partitions'
//! replicas to other nodes, or cancels a move under way (null replicas);
//! carried out by the controller (`cluster::admin::reassign`). A single
//! broker has no other node: every partition is refused.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{on_controller_each, Ctx};
use crate::metadata::Refusal;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: AlterPartitionReassignmentsRequest,
) -> ResponseChunks {
    let single = shard.cfg.cluster.is_none();
    let mut shape = Vec::new();
    let mut items = Vec::new();
    for t in &req.topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            shape.push((t.name.clone(), p.partition_index));
            let replicas = p
                .replicas
                .as_ref()
                .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
            items.push(if single {
                Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    "a single broker has no other node to move replicas to",
                ))
            } else {
                Ok((name.clone(), p.partition_index, replicas))
            });
        }
    }
    let results = on_controller_each(shard, items, |s, items| async move {
        crate::cluster::admin::reassign(&s, items).await
    })
    .await;
    let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
    for ((topic, index), r) in shape.into_iter().zip(results) {
        let p = ReassignablePartitionResponse::default().with_partition_index(index);
        let p = match r {
            Ok(()) => p,
            Err(e) => p
                .with_error_code(e.code)
                .with_error_message(Some(StrBytes::from_string(e.message))),
        };
        match responses.last_mut() {
            Some(t) if t.name == topic => t.partitions.push(p),
            _ => responses.push(
                ReassignableTopicResponse::default()
                    .with_name(topic)
                    .with_partitions(vec![p]),
            ),
        }
    }
    ctx.answer(ResponseKind::AlterPartitionReassignments(
        AlterPartitionReassignmentsResponse::default().with_responses(responses),
    ))
}

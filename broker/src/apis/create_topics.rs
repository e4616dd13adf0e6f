//! CreateTopics: the controller validates (name, partitions, replication
//! factor, configs), stores the new metadata and has every shard open the
//! partitions before answering.

use crate::security::acl::Operation;
use crate::security::Authz;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{on_controller_each, Ctx};
use crate::controller::NewTopic;
use crate::metadata::Refusal;
use crate::shard::Shard;

/// CREATE on the cluster, or on each topic.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: CreateTopicsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let on_cluster = authz.cluster(Operation::Create);
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let items = req
        .topics
        .into_iter()
        .map(|t| {
            if !on_cluster && !authz.topic(Operation::Create, &t.name) {
                return Err(Refusal::new(
                    ResponseError::TopicAuthorizationFailed,
                    format!("CREATE on topic {} is not allowed", t.name.as_str()),
                ));
            }
            if !t.assignments.is_empty() {
                return Err(Refusal::new(
                    ResponseError::InvalidReplicaAssignment,
                    "manual replica assignment is not supported on a single node",
                ));
            }
            Ok(NewTopic {
                name: t.name.0.to_string(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                configs: t
                    .configs
                    .into_iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                    .collect(),
            })
        })
        .collect();
    let validate_only = req.validate_only;
    let results = on_controller_each(shard, items, move |s, topics| async move {
        s.controller()
            .create_topics(&s, topics, validate_only)
            .await
    })
    .await;
    let topics = names
        .into_iter()
        .zip(results)
        .map(|(name, r)| {
            let out = CreatableTopicResult::default()
                .with_name(name)
                .with_topic_config_error_code(0)
                .with_replication_factor(1);
            match r {
                Ok(t) => out
                    .with_topic_id(t.uuid())
                    .with_num_partitions(t.owners.len() as i32),
                Err(e) => out
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    ctx.answer(ResponseKind::CreateTopics(
        CreateTopicsResponse::default().with_topics(topics),
    ))
}

//! CreateTopics: the controller validates (name, partitions, replication
//! factor, configs), stores the new metadata and has every shard open the
//! partitions before answering.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{on_controller, Ctx};
use crate::controller::NewTopic;
use crate::metadata::Refusal;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: CreateTopicsRequest) -> ResponseChunks {
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let mut specs = Vec::with_capacity(req.topics.len());
    let mut early: Vec<Option<Refusal>> = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        if !t.assignments.is_empty() {
            early.push(Some(Refusal::new(
                ResponseError::InvalidReplicaAssignment,
                "manual replica assignment is not supported on a single node",
            )));
            continue;
        }
        early.push(None);
        specs.push(NewTopic {
            name: t.name.0.to_string(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .into_iter()
                .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                .collect(),
        });
    }
    let validate_only = req.validate_only;
    let n = specs.len();
    let results = on_controller(shard, move |s| async move {
        let c = s.controller.as_ref().expect("shard 0 is the controller");
        c.create_topics(&s, specs, validate_only).await
    })
    .await
    .unwrap_or_else(|| {
        vec![
            Err(Refusal::new(
                ResponseError::NotController,
                "the broker is stopping"
            ));
            n
        ]
    });
    let mut results = results.into_iter();
    let topics = names
        .into_iter()
        .zip(early)
        .map(|(name, early)| {
            let r = match early {
                Some(e) => Err(e),
                None => results.next().expect("one result per topic"),
            };
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

//! DeleteTopics: the controller removes the topics from the metadata and
//! every owner closes its partitions and deletes their data from disk
//! before the answer.

use crate::metadata::Refusal;
use crate::security::acl::Operation;
use crate::security::Authz;
use kafka_protocol::ResponseError;
use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    DeleteTopicsRequest, DeleteTopicsResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_net::response::ResponseChunks;

use super::{on_controller_each, Ctx};
use crate::shard::Shard;

/// DELETE on each topic.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: DeleteTopicsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let meta = shard.meta();
    // v6 names topics by name or by id; earlier versions by name only.
    let asked: Vec<(Option<TopicName>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let names: Vec<String> = asked
        .iter()
        .map(|(n, id)| match n {
            Some(n) => n.0.to_string(),
            None => meta
                .topic_by_id(*id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
        })
        .collect();
    let items = names
        .iter()
        .map(
            |n| match n.is_empty() || authz.topic(Operation::Delete, n) {
                true => Ok(n.clone()),
                false => Err(Refusal::new(
                    ResponseError::TopicAuthorizationFailed,
                    format!("DELETE on topic {n} is not allowed"),
                )),
            },
        )
        .collect();
    let results = on_controller_each(shard, items, |s, names| async move {
        s.controller().delete_topics(&s, names).await
    })
    .await;
    let responses = asked
        .into_iter()
        .zip(names)
        .zip(results)
        .map(|(((asked_name, id), name), r)| {
            let out = DeletableTopicResult::default();
            let out = match asked_name {
                Some(n) => out.with_name(Some(n)),
                None if !name.is_empty() => {
                    out.with_name(Some(TopicName(StrBytes::from_string(name))))
                }
                None => out,
            };
            match r {
                Ok(t) => out.with_topic_id(t.uuid()),
                Err(e) => out
                    .with_topic_id(id)
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
            }
        })
        .collect();
    ctx.answer(ResponseKind::DeleteTopics(
        DeleteTopicsResponse::default().with_responses(responses),
    ))
}

//! CreatePartitions: grow a topic; new partitions go to the least loaded
//! shards.

use crate::metadata::Refusal;
use crate::security::acl::Operation;
use crate::security::Authz;
use kafka_protocol::ResponseError;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use sluice_net::response::ResponseChunks;

use super::{on_controller_each, Ctx};
use crate::shard::Shard;

/// ALTER on each topic.
pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: CreatePartitionsRequest,
    authz: &Authz<'_>,
) -> ResponseChunks {
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let items = req
        .topics
        .iter()
        .map(|t| match authz.topic(Operation::Alter, &t.name) {
            true => Ok((t.name.0.to_string(), t.count)),
            false => Err(Refusal::new(
                ResponseError::TopicAuthorizationFailed,
                format!("ALTER on topic {} is not allowed", t.name.as_str()),
            )),
        })
        .collect();
    let validate_only = req.validate_only;
    let results = on_controller_each(shard, items, move |s, changes| async move {
        s.controller()
            .create_partitions(&s, changes, validate_only)
            .await
    })
    .await;
    let results = names
        .into_iter()
        .zip(results)
        .map(|(name, r)| {
            let out = CreatePartitionsTopicResult::default().with_name(name);
            match r {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
            }
        })
        .collect();
    ctx.answer(ResponseKind::CreatePartitions(
        CreatePartitionsResponse::default().with_results(results),
    ))
}

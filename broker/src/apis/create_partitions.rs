//! CreatePartitions: grow a topic; new partitions go to the least loaded
//! shards.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{on_controller, Ctx};
use crate::metadata::Refusal;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: CreatePartitionsRequest) -> ResponseChunks {
    let names: Vec<_> = req.topics.iter().map(|t| t.name.clone()).collect();
    let changes: Vec<(String, i32)> = req
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let n = changes.len();
    let validate_only = req.validate_only;
    let results = on_controller(shard, move |s| async move {
        let c = s.controller.as_ref().expect("shard 0 is the controller");
        c.create_partitions(&s, changes, validate_only).await
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

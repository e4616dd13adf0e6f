//! AlterConfigs (the older, non-incremental API that some admin clients
//! still use): replaces a topic's whole set of configs with the one given.

use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::describe_configs::RESOURCE_TOPIC;
use super::{on_controller, Ctx};
use crate::controller::ConfigOp;
use crate::metadata::Refusal;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: AlterConfigsRequest) -> ResponseChunks {
    let resources: Vec<(i8, StrBytes)> = req
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let mut early = Vec::new();
    let mut changes = Vec::new();
    for r in req.resources {
        if r.resource_type != RESOURCE_TOPIC {
            early.push(Some(Refusal::new(
                ResponseError::InvalidRequest,
                "only topic configs can be altered",
            )));
            continue;
        }
        early.push(None);
        let mut ops = vec![ConfigOp::Clear];
        ops.extend(
            r.configs
                .into_iter()
                .filter_map(|c| Some(ConfigOp::Set(c.name.to_string(), c.value?.to_string()))),
        );
        changes.push((r.resource_name.to_string(), ops));
    }
    let n = changes.len();
    let validate_only = req.validate_only;
    let results = on_controller(shard, move |s| async move {
        let c = s.controller.as_ref().expect("shard 0 is the controller");
        c.alter_configs(&s, changes, validate_only).await
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
    let responses = resources
        .into_iter()
        .zip(early)
        .map(|((kind, name), early)| {
            let r = match early {
                Some(e) => Err(e),
                None => results.next().expect("one result per resource"),
            };
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(kind)
                .with_resource_name(name);
            match r {
                Ok(()) => out,
                Err(e) => out
                    .with_error_code(e.code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
            }
        })
        .collect();
    ctx.answer(ResponseKind::AlterConfigs(
        AlterConfigsResponse::default().with_responses(responses),
    ))
}

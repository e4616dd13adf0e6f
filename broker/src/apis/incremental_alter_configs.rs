//! IncrementalAlterConfigs: set or delete topic configs; the controller
//! validates the result against the log's limits, stores it, and every
//! owner applies it to its partitions before the answer.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::describe_configs::RESOURCE_TOPIC;
use super::{on_controller, Ctx};
use crate::controller::ConfigOp;
use crate::metadata::Refusal;
use crate::shard::Shard;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: Ctx,
    req: IncrementalAlterConfigsRequest,
) -> ResponseChunks {
    let mut early: Vec<Option<Refusal>> = Vec::new();
    let mut changes = Vec::new();
    let resources: Vec<(i8, StrBytes)> = req
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    for r in req.resources {
        if r.resource_type != RESOURCE_TOPIC {
            early.push(Some(Refusal::new(
                ResponseError::InvalidRequest,
                "only topic configs can be altered",
            )));
            continue;
        }
        let mut ops = Vec::new();
        let mut bad = None;
        for c in r.configs {
            match (c.config_operation, c.value) {
                (OP_SET, Some(v)) => ops.push(ConfigOp::Set(c.name.to_string(), v.to_string())),
                (OP_DELETE, _) => ops.push(ConfigOp::Delete(c.name.to_string())),
                (op, _) => {
                    bad = Some(Refusal::new(
                        ResponseError::InvalidRequest,
                        format!(
                            "config operation {op} on {:?} is not supported (use SET or DELETE)",
                            c.name.as_str()
                        ),
                    ))
                }
            }
        }
        if let Some(b) = bad {
            early.push(Some(b));
            continue;
        }
        early.push(None);
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
    ctx.answer(ResponseKind::IncrementalAlterConfigs(
        IncrementalAlterConfigsResponse::default().with_responses(responses),
    ))
}

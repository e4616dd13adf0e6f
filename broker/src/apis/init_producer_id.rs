//! InitProducerId: a fresh producer id (epoch 0) for an idempotent
//! producer. Transactions are not supported.

use std::rc::Rc;

use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};
use kafka_protocol::ResponseError;
use sluice_net::response::ResponseChunks;

use super::{on_controller, Ctx};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: Ctx, req: InitProducerIdRequest) -> ResponseChunks {
    let out = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let out = if req.transactional_id.is_some() {
        out.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        let id = on_controller(shard, |s| async move {
            s.controller()
                .allocate_producer_id(&s)
                .await
                .map_err(|e| e.code)
        })
        .await
        .unwrap_or(Err(ResponseError::CoordinatorNotAvailable.code()));
        match id {
            Ok(id) => out.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(code) => out.with_error_code(code),
        }
    };
    ctx.answer(ResponseKind::InitProducerId(out))
}

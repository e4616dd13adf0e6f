//! ApiVersions: the APIs and versions this broker serves. (A request at a
//! version it does not know gets the KIP-511 v0 answer in `connection`.)

use kafka_protocol::messages::ResponseKind;
use sluice_net::response::{api_versions, ResponseChunks};

use super::{Ctx, SUPPORTED};

pub fn handle(ctx: Ctx) -> ResponseChunks {
    ctx.answer(ResponseKind::ApiVersions(api_versions(SUPPORTED, 0)))
}

//! One request and its answer on a glommio connection (for clients that
//! wait for each answer before the next request).

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::client::{encode_request, ClientError};

/// Sends `req` as `api` v`version` with correlation id `id` and decodes
/// the answer.
pub async fn call<Req: Encodable, Resp: Decodable>(
    stream: &mut TcpStream,
    addr: &str,
    api: ApiKey,
    version: i16,
    id: i32,
    req: &Req,
) -> Result<Resp, ClientError> {
    let io = |e| ClientError::Io(addr.to_string(), e);
    let frame = encode_request(api, version, id, "sluice-loadgen", req)?;
    stream.write_all(&frame).await.map_err(io)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(io)?;
    let n = i32::from_be_bytes(len);
    if !(4..=crate::frame::RESPONSE_FRAME_BYTES_MAX as i32).contains(&n) {
        return Err(ClientError::Protocol(format!("answer of {n} bytes")));
    }
    let mut body = vec![0u8; n as usize];
    stream.read_exact(&mut body).await.map_err(io)?;
    let mut b = Bytes::from(body);
    let h = ResponseHeader::decode(&mut b, api.response_header_version(version))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if h.correlation_id != id {
        return Err(ClientError::Protocol(format!(
            "answer for request {} where {id} was expected",
            h.correlation_id
        )));
    }
    Resp::decode(&mut b, version)
        .map_err(|e| ClientError::Protocol(format!("{api:?} v{version}: {e}")))
}

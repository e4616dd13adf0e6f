//! Requests and their answers on a glommio connection, one at a time or
//! with one sent ahead.

use bytes::{Bytes, BytesMut};
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
    send(stream, addr, api, version, id, req).await?;
    receive(stream, addr, api, version, id, &mut None).await
}

/// Sends `req` as `api` v`version` with correlation id `id`.
pub async fn send<Req: Encodable>(
    stream: &mut TcpStream,
    addr: &str,
    api: ApiKey,
    version: i16,
    id: i32,
    req: &Req,
) -> Result<(), ClientError> {
    let frame = encode_request(api, version, id, "sluice-loadgen", req)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| ClientError::Io(addr.to_string(), e))
}

/// Reads and decodes the answer to request `id`. `spare` is a receive
/// buffer to reuse: the previous answer's frame, taken back when nothing
/// refers into it any more (so a stream of large answers does not fault in
/// and zero fresh memory for each); it is left holding this answer's.
pub async fn receive<Resp: Decodable>(
    stream: &mut TcpStream,
    addr: &str,
    api: ApiKey,
    version: i16,
    id: i32,
    spare: &mut Option<Bytes>,
) -> Result<Resp, ClientError> {
    let io = |e| ClientError::Io(addr.to_string(), e);
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(io)?;
    let n = i32::from_be_bytes(len);
    if !(4..=crate::frame::RESPONSE_FRAME_BYTES_MAX as i32).contains(&n) {
        return Err(ClientError::Protocol(format!("answer of {n} bytes")));
    }
    let n = n as usize;
    let mut body = match spare.take().map(Bytes::try_into_mut) {
        // Its bytes up to `len()` are initialized: only growth is zeroed.
        Some(Ok(mut b)) if b.capacity() >= n => {
            if b.len() >= n {
                b.truncate(n);
            } else {
                b.resize(n, 0);
            }
            b
        }
        _ => BytesMut::zeroed(n),
    };
    stream.read_exact(&mut body).await.map_err(io)?;
    let frame = body.freeze();
    *spare = Some(frame.clone());
    let mut b = frame;
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

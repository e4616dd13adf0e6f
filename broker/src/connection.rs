//! One client connection on a shard: read frames, decode requests, answer
//! them in order. A frame that cannot be answered closes this connection
//! only, with one log line.

use std::cell::Cell;
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use sluice_net::frame::FrameDecoder;
use sluice_net::request::{decode_request, Request, RequestError};
use sluice_net::response::{api_versions, api_versions_unsupported, encode_response};
use sluice_tuning::limits::{CONNECTIONS_PER_SHARD_MAX, SOCKET_READ_BYTES};

use crate::apis;

/// Accepts connections until `stop` is set, serving each on its own task.
pub async fn accept_loop(shard: usize, listener: TcpListener, stop: Rc<Cell<bool>>) {
    let open = Rc::new(Cell::new(0usize));
    while !stop.get() {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(shard, error = %e, "accept failed");
                continue;
            }
        };
        if open.get() >= CONNECTIONS_PER_SHARD_MAX {
            tracing::warn!(
                shard,
                limit = CONNECTIONS_PER_SHARD_MAX,
                "connection limit reached; closing a new connection"
            );
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let open = open.clone();
        glommio::spawn_local(async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if let Err(reason) = serve(stream).await {
                tracing::info!(shard, %peer, %reason, "connection closed");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Serves one connection until the client closes it or sends something
/// that cannot be answered; returns why it ended.
async fn serve(mut stream: TcpStream) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let decoder = FrameDecoder::requests();
    let mut buf = BytesMut::with_capacity(SOCKET_READ_BYTES);
    loop {
        let missing = decoder.missing(&buf).map_err(|e| e.to_string())?;
        if missing > 0 {
            let have = buf.len();
            buf.resize(have + missing.max(SOCKET_READ_BYTES), 0);
            let n = stream
                .read(&mut buf[have..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            buf.truncate(have + n);
            if n == 0 {
                return if have == 0 {
                    Ok(())
                } else {
                    Err(format!("closed mid-frame ({have} bytes)"))
                };
            }
            continue;
        }
        let frame = decoder
            .decode(&mut buf)
            .map_err(|e| e.to_string())?
            .expect("a whole frame is present");
        let response = match decode_request(frame, apis::supported) {
            Ok(req) => handle(req)?,
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => api_versions_unsupported(correlation_id, apis::SUPPORTED)
                .map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        stream
            .write_all(&response)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// Answers one decoded request with a whole response frame.
fn handle(req: Request) -> Result<bytes::Bytes, String> {
    let id = req.header.correlation_id;
    let body = match req.body {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(apis::SUPPORTED, 0)),
        // Name the API only: a body's Debug form can be megabytes of records.
        _ => return Err(format!("no handler for {:?} v{}", req.api_key, req.version)),
    };
    encode_response(id, req.api_key, req.version, &body).map_err(|e| e.to_string())
}

//! The admin endpoint (`--admin-listen`, default 127.0.0.1:9644), served
//! on shard 0's loop: `GET /metrics` (Prometheus text format, see
//! `metrics`) and `GET /health` (200 when every shard answers within a
//! second, 503 otherwise). One request per connection, HTTP/1.0 or 1.1,
//! `Connection: close`; a request head past `HEAD_BYTES_MAX` or not
//! whole within `READ_TIMEOUT` is dropped. Connections at once are
//! bounded by `CONNECTIONS_MAX` (more are closed unanswered).

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

const HEAD_BYTES_MAX: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
const CONNECTIONS_MAX: usize = 16;

/// Binds the endpoint; the address it got (a port of 0 picks one).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin endpoint: accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let (shard, open) = (shard.clone(), open.clone());
        glommio::spawn_local(async move {
            if let Err(e) = answer(&shard, stream).await {
                tracing::debug!(error = %e, "admin endpoint: connection ended");
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Reads the request line (and the rest of the head, ignored).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HEAD_BYTES_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(String::from_utf8_lossy(line).trim_end().to_string())
}

async fn answer(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let line = read_head(&mut stream).await?;
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => {
            let shards = ask_all(shard, |s| crate::metrics::collect(&s)).await;
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(&shards),
            )
        }
        ("GET", "/health") => {
            let answered = ask_all(shard, |_| ()).await.len();
            if answered == shard.shards {
                ("200 OK", "text/plain", "ok\n".to_string())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("{answered} of {} shards answered\n", shard.shards),
                )
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".into(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

/// `f` on every shard, in shard order; a shard that does not answer
/// within a second is left out (and named in a warning).
async fn ask_all<R, F>(shard: &Rc<Shard>, f: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(Rc<Shard>) -> R + Clone + Send + 'static,
{
    let mut out = Vec::with_capacity(shard.shards);
    for target in 0..shard.shards {
        let f = f.clone();
        let call = shard.call(target, move |s| async move { f(s) });
        let timeout = glommio::timer::sleep(SHARD_ANSWER_TIMEOUT);
        match futures_lite::future::or(async { call.await.ok() }, async {
            timeout.await;
            None
        })
        .await
        {
            Some(m) => out.push(m),
            None => tracing::warn!(shard = target, "admin endpoint: a shard did not answer"),
        }
    }
    out
}

//! One client connection on a shard.
//!
//! The reader takes whole frames off one receive buffer, decodes them and
//! runs each request's handler up to the point where it only waits (see
//! `apis`); answers, ready or still pending, queue in request order for
//! the writer, at most `INFLIGHT_REQUESTS_PER_CONNECTION_MAX` at a time.
//! The writer sends each answer's chunks with vectored writes, so record
//! bytes shared with the log go to the socket without a copy.
//!
//! A frame that cannot be answered ends this connection only, after the
//! answers to the requests before it are written, with one log line.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;
use sluice_net::frame::FrameDecoder;
use sluice_net::request::{decode_request, RequestError};
use sluice_net::response::{api_versions_unsupported, ResponseChunks};
use sluice_tuning::limits::{
    ACCEPT_BACKOFF_MS_MAX, ACCEPT_BACKOFF_MS_MIN, CONNECTIONS_PER_SHARD_MAX,
    INFLIGHT_REQUESTS_PER_CONNECTION_MAX, INFLIGHT_REQUEST_BYTES_PER_CONNECTION_MAX,
    SOCKET_READ_AHEAD_BYTES_MAX, SOCKET_READ_BYTES,
};

use crate::apis::{self, Reply};
use crate::memory::RequestMemory;
use crate::security::session::{Admit, Session};
use crate::shard::{LocalFuture, Notify, Shard};

/// Accepts connections on listener `index` (of the configuration's)
/// until `stop` is set, serving each on its own task.
pub async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    index: usize,
    stop: Rc<Cell<bool>>,
) {
    let mut failures = 0u32;
    while !stop.get() {
        let stream = match listener.accept().await {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS):
                // the connection waits in the kernel's backlog, and an
                // accept straight away fails again. Back off, doubling
                // up to a limit, and say so at the first failure of a run
                // and then at each doubling, not once per attempt.
                failures += 1;
                let pause = ACCEPT_BACKOFF_MS_MIN
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(ACCEPT_BACKOFF_MS_MAX);
                if failures.is_power_of_two() {
                    tracing::warn!(shard = shard.id, error = %e, failures, pause_ms = pause,
                        "accept failed; pausing accepts (raise the open-file limit if this is EMFILE)");
                }
                glommio::timer::sleep(std::time::Duration::from_millis(pause)).await;
                continue;
            }
        };
        if shard.stats.get().connections_open >= CONNECTIONS_PER_SHARD_MAX as u64 {
            tracing::warn!(
                shard = shard.id,
                limit = CONNECTIONS_PER_SHARD_MAX,
                "connection limit reached; closing a new connection"
            );
            drop(stream);
            shard.note(|s| s.connections_refused += 1);
            continue;
        }
        shard.note(|s| {
            s.connections_accepted += 1;
            s.connections_open += 1;
        });
        let shard = shard.clone();
        glommio::spawn_local(sluice_storage::stall::watch("connection", async move {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if let Err(reason) = serve(&shard, stream, index, &peer).await {
                tracing::info!(shard = shard.id, %peer, %reason, "connection closed");
            }
            shard.note(|s| s.connections_open -= 1);
        }))
        .detach();
    }
}

/// An answer in the writer's queue, with the size of its request.
enum Pending {
    Ready(ResponseChunks, usize),
    /// Polled by the writer when its turn comes (see `Reply::Later`).
    Later(LocalFuture<ResponseChunks>, usize),
    Task(JoinHandle<ResponseChunks>, usize),
}

/// An answer with the size of its request, or why there is none.
type Answer = Result<(ResponseChunks, usize), String>;

/// Awaiting a `Pending` waits for its answer; polling it once (`poll_once`)
/// takes the answer if it is done and leaves it pending otherwise.
impl std::future::Future for Pending {
    type Output = Answer;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Answer> {
        use std::task::Poll;
        match self.get_mut() {
            Pending::Ready(a, bytes) => Poll::Ready(Ok((std::mem::take(a), *bytes))),
            Pending::Later(f, bytes) => f.as_mut().poll(cx).map(|a| Ok((a, *bytes))),
            Pending::Task(h, bytes) => std::pin::Pin::new(h).poll(cx).map(|a| {
                a.map(|a| (a, *bytes))
                    .ok_or_else(|| "a request handler was cancelled".to_string())
            }),
        }
    }
}

/// Bytes of requests read and not yet answered on one connection.
#[derive(Default)]
struct InFlight {
    bytes: Cell<usize>,
    answered: Rc<Notify>,
    /// The writer stopped (the connection is going away).
    writer_gone: Cell<bool>,
    /// Notified once, when the client closed its side: answers still
    /// waiting are dropped.
    reader_closed: Rc<Notify>,
}

/// A connection's byte stream: the socket itself (read and written with
/// `recv` and vectored `sendmsg` on its descriptor), or TLS over it.
type TlsStream = futures_rustls::server::TlsStream<TcpStream<glommio::net::Preallocated>>;

/// Bytes a TLS connection takes from its socket at once. rustls reads
/// 4 KiB at a time; without a buffer under it every 16 KiB record costs
/// four `recv` calls (and a readiness poll each time one comes up short).
const TLS_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Decrypted bytes a TLS connection takes from rustls at once (four
/// records).
const TLS_READ_SCRATCH_BYTES: usize = 64 * 1024;
/// Ciphertext of one TLS record at most: 16 KiB of plaintext, its header
/// and the largest tag and padding.
const TLS_RECORD_BYTES_MAX: usize = 16 * 1024 + 5 + 256;
/// The most a TLS connection's wait for the rest of a frame asks the
/// socket to hold before it ends (see `ReadSide::expect`).
const TLS_LOW_WATER_BYTES_MAX: usize = 256 * 1024;

enum ReadSide {
    Plain(RawFd, futures_lite::io::ReadHalf<TcpStream>),
    Tls {
        fd: RawFd,
        rd: futures_lite::io::ReadHalf<TlsStream>,
        /// The space decrypted bytes are read into.
        scratch: Box<[u8]>,
        /// The socket's receive low-water mark (SO_RCVLOWAT) now.
        low_water: usize,
    },
}

enum WriteSide {
    Plain(RawFd, futures_lite::io::WriteHalf<TcpStream>),
    Tls(futures_lite::io::WriteHalf<TlsStream>),
}

impl ReadSide {
    /// What the stream holds now, up to `want` bytes into `buf`'s spare
    /// room, without waiting.
    async fn recv_now(&mut self, buf: &mut BytesMut, want: usize) -> RecvNow {
        match self {
            ReadSide::Plain(fd, _) => recv_now(*fd, buf, want),
            ReadSide::Tls { rd, scratch, .. } => {
                // Decrypted bytes come out of rustls by copy into an
                // initialised slice: the connection's own scratch, zeroed
                // once, then copied on. (Zeroing the frame's room instead
                // cost a memset of up to the whole frame per 16 KiB
                // record: a third of the shard's time in TLS produce.)
                let want = want.min(buf.capacity() - buf.len()).min(scratch.len());
                let r = futures_lite::future::poll_once(rd.read(&mut scratch[..want])).await;
                match r {
                    Some(Ok(0)) => RecvNow::Closed,
                    Some(Ok(n)) => {
                        buf.extend_from_slice(&scratch[..n]);
                        RecvNow::Got
                    }
                    Some(Err(e)) => RecvNow::Failed(e),
                    None => RecvNow::Empty,
                }
            }
        }
    }

    /// Waits for bytes.
    async fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ReadSide::Plain(_, rd) => rd.read(into).await,
            ReadSide::Tls { rd, .. } => rd.read(into).await,
        }
    }

    /// Before a wait for bytes, `missing` more of the frame being read
    /// are still to come (bytes of plaintext; 0 between frames), and
    /// nothing read is left undecrypted but part of one record. Over
    /// TLS the wait then ends only once the socket holds most of them
    /// (up to `TLS_LOW_WATER_BYTES_MAX`), not at each record the client
    /// writes: a large produce request sent a record per `write` would
    /// otherwise wake the shard, and cost a `recv` and a readiness poll,
    /// every 16 KiB. The mark never exceeds what must still arrive, so a
    /// wait always ends (and the kernel ends it early when its receive
    /// window runs short, or the peer closes).
    fn expect(&mut self, missing: usize) {
        let ReadSide::Tls { fd, low_water, .. } = self else {
            return;
        };
        let mark = missing
            .saturating_sub(TLS_RECORD_BYTES_MAX)
            .clamp(1, TLS_LOW_WATER_BYTES_MAX);
        if mark == *low_water {
            return;
        }
        let v = mark as libc::c_int;
        // SAFETY: setsockopt reads an int from a valid pointer for the
        // size given, on the connection's own descriptor.
        let rc = unsafe {
            libc::setsockopt(
                *fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // Without it the wait ends at the first bytes, as before.
        if rc == 0 {
            *low_water = mark;
        }
    }
}

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_SECS: u64 = 10;

/// Serves one connection until the client closes it or sends something
/// that cannot be answered; returns why it ended.
async fn serve(
    shard: &Rc<Shard>,
    stream: TcpStream,
    index: usize,
    peer: &str,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let protocol = shard.cfg.listeners[index].protocol;
    if !protocol.tls() {
        let (rd, wr) = futures_lite::io::split(stream);
        let session = Session::new(protocol, index, None, host(peer));
        return serve_stream(
            shard,
            ReadSide::Plain(fd, rd),
            WriteSide::Plain(fd, wr),
            session,
            peer,
        )
        .await;
    }
    let config = shard.cfg.tls.clone().ok_or("no TLS configuration")?;
    let stream = stream.buffered_with(glommio::net::Preallocated::new(TLS_READ_BUFFER_BYTES));
    let accept = futures_rustls::TlsAcceptor::from(config).accept(stream);
    let timeout = async {
        glommio::timer::sleep(std::time::Duration::from_secs(TLS_HANDSHAKE_SECS)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {TLS_HANDSHAKE_SECS} s"),
        ))
    };
    let tls = futures_lite::future::or(accept, timeout)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let principal = match tls.get_ref().1.peer_certificates() {
        Some([cert, ..]) if shard.cfg.tls_client_auth => Some(
            crate::security::tls::principal(cert)
                .map_err(|e| format!("client certificate: {e}"))?,
        ),
        _ => None,
    };
    tracing::debug!(%peer, principal = ?principal, "TLS connection");
    let session = Session::new(protocol, index, principal, host(peer));
    let (rd, wr) = futures_lite::io::split(tls);
    let scratch = vec![0u8; TLS_READ_SCRATCH_BYTES].into_boxed_slice();
    serve_stream(
        shard,
        ReadSide::Tls {
            fd,
            rd,
            scratch,
            low_water: 1,
        },
        WriteSide::Tls(wr),
        session,
        peer,
    )
    .await
}

/// A peer's address without its port.
fn host(peer: &str) -> String {
    peer.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

async fn serve_stream(
    shard: &Rc<Shard>,
    mut rd: ReadSide,
    wr: WriteSide,
    session: Session,
    peer: &str,
) -> Result<(), String> {
    let (tx, rx) = local_channel::new_bounded::<Pending>(INFLIGHT_REQUESTS_PER_CONNECTION_MAX);
    let inflight = Rc::new(InFlight::default());
    let done = inflight.clone();
    let mem = shard.request_memory.clone();
    let writer = glommio::spawn_local(sluice_storage::stall::watch("answer writer", async move {
        let r = write_answers(wr, rx, &done, &mem).await;
        done.writer_gone.set(true);
        done.answered.notify_all();
        r
    }));
    let read = read_requests(shard, &mut rd, &tx, &inflight, session, peer).await;
    // The client closed (or broke) the connection: as Kafka does, no
    // answer still waiting (a JoinGroup held for a rebalance, a long
    // Fetch) keeps it open; answers already done are still written. When
    // the broker is stopping, the requests read are answered first (the
    // shard waits for that, within SHUTDOWN_DRAIN_MS_MAX).
    if !shard.is_stopping() {
        inflight.reader_closed.notify_all();
    }
    drop(tx);
    let written = writer.await;
    // Requests read and never answered give their memory back here.
    shard.request_memory.give(inflight.bytes.replace(0));
    read.and(written)
}

/// Writes answers in request order until the reader is done. Answers
/// that are ready together (a group commit's fdatasync releases every
/// commit and acks=all produce it covered) leave in one `sendmsg`: one
/// system call, one loopback or NIC delivery and one client wake-up for
/// the lot, instead of one each.
async fn write_answers(
    mut wr: WriteSide,
    rx: local_channel::LocalReceiver<Pending>,
    inflight: &InFlight,
    mem: &RequestMemory,
) -> Result<(), String> {
    let mut held: Option<Pending> = None;
    loop {
        let mut p = match held.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        // An answer done already is written even after the client closed
        // its side (`or` polls it first); one still waiting then is not.
        let closing = async {
            inflight.reader_closed.changed(0).await;
            None
        };
        let first = match futures_lite::future::or(async { Some((&mut p).await) }, closing).await {
            Some(a) => a?,
            None => {
                return Err(
                    "the client closed the connection; answers still waiting were dropped".into(),
                )
            }
        };
        if first.0.chunks.is_empty() {
            return Err("an answer could not be encoded (see the error above)".into());
        }
        let out = gather(first, &rx).await;
        held = out.held;
        write_chunks(&mut wr, out.chunks)
            .await
            .map_err(|e| format!("write: {e}"))?;
        inflight.bytes.set(inflight.bytes.get() - out.request_bytes);
        mem.give(out.request_bytes);
        inflight.answered.notify_all();
        if let Some(e) = out.failed {
            return Err(e);
        }
    }
}

/// Answers to write in one go.
struct Gathered {
    chunks: Vec<Bytes>,
    /// Bytes of the requests they answer.
    request_bytes: usize,
    /// The next answer in order, not done yet (or one that failed to
    /// encode, which ends the connection once these are written).
    held: Option<Pending>,
    /// The next answer has none (its handler was cancelled).
    failed: Option<String>,
}

/// `first` and the answers queued after it that are done already, in
/// order, up to a write's worth.
async fn gather(
    first: (ResponseChunks, usize),
    rx: &local_channel::LocalReceiver<Pending>,
) -> Gathered {
    let (answer, request_bytes) = first;
    let mut out = Gathered {
        chunks: answer.chunks,
        request_bytes,
        held: None,
        failed: None,
    };
    let mut out_bytes: usize = out.chunks.iter().map(Bytes::len).sum();
    while out_bytes < WRITE_GATHER_BYTES_MAX && out.chunks.len() < IOV_MAX {
        let Some(Some(mut p)) = futures_lite::future::poll_once(rx.recv()).await else {
            break;
        };
        match futures_lite::future::poll_once(&mut p).await {
            Some(Ok((a, b))) if !a.chunks.is_empty() => {
                out_bytes += a.chunks.iter().map(Bytes::len).sum::<usize>();
                out.chunks.extend(a.chunks);
                out.request_bytes += b;
            }
            Some(Ok((a, b))) => {
                out.held = Some(Pending::Ready(a, b));
                break;
            }
            Some(Err(e)) => {
                out.failed = Some(e);
                break;
            }
            None => {
                out.held = Some(p);
                break;
            }
        }
    }
    out
}

/// Gathering stops once this many bytes are ready to go (a large fetch
/// answer goes on its own), or at `IOV_MAX` chunks.
const WRITE_GATHER_BYTES_MAX: usize = 256 * 1024;
/// iovecs per `sendmsg` (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Bytes the read that waits for a quiet socket takes, into a small
/// buffer of the connection's own: a connection waiting between requests
/// holds no receive buffer and no request memory.
const WAIT_READ_BYTES: usize = 2 * 1024;

enum RecvNow {
    Got,
    Empty,
    Closed,
    Failed(std::io::Error),
}

/// How much a connection reads at once. A stream of large produce
/// requests should land each frame whole in one allocation: growing the
/// buffer once a frame's length is known copies what was already read
/// (the frames before it are still held by the log's cache, so the
/// buffer cannot be reused in place).
struct ReadSizer {
    /// Room to make before a frame's length is known, and the largest
    /// frame given room whole once its length is: the size of the frames
    /// this connection has sent in full, halving when they shrink. A
    /// frame larger than that gets room as its bytes arrive.
    ahead: usize,
    /// The last frame fitted the read that waits for a quiet socket.
    small: bool,
}

impl Default for ReadSizer {
    fn default() -> Self {
        ReadSizer {
            ahead: SOCKET_READ_BYTES,
            small: true,
        }
    }
}

/// Room to have before a read: at least `need` bytes free after the data,
/// else a buffer with `grow` bytes free; then read up to `want`.
#[derive(Debug, PartialEq, Eq)]
struct Room {
    need: usize,
    grow: usize,
    want: usize,
}

impl ReadSizer {
    /// The room for a read, holding `have` bytes of a frame that needs
    /// `missing` more (its length prefix counts while incomplete).
    fn room(&self, have: usize, missing: usize) -> Room {
        if have < 4 {
            // Small frames are read many at a time; large ones land whole.
            let g = missing.max(self.ahead);
            Room {
                need: g,
                grow: g,
                want: g,
            }
        } else if have + missing <= self.ahead {
            if missing >= SOCKET_READ_BYTES {
                // A large frame is read to its end and no further, so the
                // next starts an allocation of its own rather than being
                // copied out of this one's tail.
                Room {
                    need: missing,
                    grow: missing,
                    want: missing,
                }
            } else {
                Room {
                    need: missing,
                    grow: SOCKET_READ_BYTES,
                    want: SOCKET_READ_BYTES,
                }
            }
        } else {
            // Larger than any frame this connection has sent: room grows
            // with what arrives, at most doubling what it holds.
            let g = missing.min(have.max(SOCKET_READ_BYTES));
            Room {
                need: g.min(WAIT_READ_BYTES),
                grow: g,
                want: g,
            }
        }
    }

    /// A frame of `len` bytes (without its prefix) was taken off.
    fn saw_frame(&mut self, len: usize) {
        self.small = len + 4 <= WAIT_READ_BYTES;
        self.ahead = (len + 4)
            .max(self.ahead / 2)
            .clamp(SOCKET_READ_BYTES, SOCKET_READ_AHEAD_BYTES_MAX);
    }
}

/// A connection's receive buffer, its room paid for from the shard's
/// request memory before it is allocated.
struct RecvBuf {
    buf: BytesMut,
    /// Request memory held for `buf`'s capacity.
    held: usize,
    mem: Rc<RequestMemory>,
}

impl RecvBuf {
    fn new(mem: Rc<RequestMemory>) -> RecvBuf {
        RecvBuf {
            buf: BytesMut::new(),
            held: 0,
            mem,
        }
    }

    /// At least `need` bytes free after the data: else the data moves to
    /// a buffer with `grow` bytes free (at least `need`), its memory
    /// taken first, waiting while the shard's budget is spent.
    async fn room(&mut self, need: usize, grow: usize) -> Result<(), String> {
        if self.buf.capacity() - self.buf.len() >= need {
            return Ok(());
        }
        let cap = self.buf.len() + grow.max(need);
        self.mem.take(cap).await.map_err(|e| e.to_string())?;
        let mut fresh = BytesMut::with_capacity(cap);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
        self.mem.give(std::mem::replace(&mut self.held, cap));
        Ok(())
    }

    /// Gives the buffer back when it holds nothing.
    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.held > 0 {
            self.buf = BytesMut::new();
            self.mem.give(std::mem::take(&mut self.held));
        }
    }

    /// The next whole frame, and the request memory it carries away with
    /// it (its bytes and its prefix's).
    fn take_frame(&mut self, decoder: &FrameDecoder) -> Result<(Bytes, usize), String> {
        let before = self.buf.capacity();
        let frame = decoder
            .decode(&mut self.buf)
            .map_err(|e| e.to_string())?
            .ok_or("no whole frame")?;
        let taken = (before - self.buf.capacity()).min(self.held);
        self.held -= taken;
        Ok((frame, taken))
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.mem.give(self.held);
    }
}

/// One non-blocking `recv` of up to `want` bytes into `buf`'s spare
/// capacity.
fn recv_now(fd: RawFd, buf: &mut BytesMut, want: usize) -> RecvNow {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(want);
    // SAFETY: recv writes at most `len` bytes into the spare capacity we
    // own (uninitialised memory is a valid target for a write); set_len
    // then covers exactly the bytes it wrote.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr() as *mut libc::c_void,
            len,
            libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        // SAFETY: see above: `n` bytes past the length were just written.
        unsafe { buf.set_len(buf.len() + n as usize) };
        return RecvNow::Got;
    }
    if n == 0 {
        return RecvNow::Closed;
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => RecvNow::Empty,
        _ => RecvNow::Failed(e),
    }
}

async fn read_requests(
    shard: &Rc<Shard>,
    rd: &mut ReadSide,
    tx: &local_channel::LocalSender<Pending>,
    inflight: &InFlight,
    mut session: Session,
    peer: &str,
) -> Result<(), String> {
    let decoder = FrameDecoder::requests();
    let mut rb = RecvBuf::new(shard.request_memory.clone());
    let mut scratch = [0u8; WAIT_READ_BYTES];
    let mut sizer = ReadSizer::default();
    // The last read found the socket emptied (it got less than it asked
    // for).
    let mut drained = false;
    loop {
        if shard.is_stopping() {
            return Ok(());
        }
        // Past the byte limit, read nothing more until answers go out.
        while inflight.bytes.get() > INFLIGHT_REQUEST_BYTES_PER_CONNECTION_MAX {
            if inflight.writer_gone.get() {
                return Err("the writer stopped".into());
            }
            let seen = inflight.answered.generation();
            inflight.answered.changed(seen).await;
        }
        let missing = decoder.missing(&rb.buf).map_err(|e| e.to_string())?;
        if missing > 0 {
            let have = rb.buf.len();
            let room = sizer.room(have, missing);
            // What the socket already holds is taken straight into the
            // buffer's spare room (no zero-filling it first); only when
            // it holds nothing does the read wait, through the stream.
            // Between small frames, after a read that emptied the
            // socket, the wait comes at once: a request answered before
            // the next is sent would otherwise cost a `recv` finding
            // nothing each. (Large frames keep the read that makes room
            // for a whole frame.)
            let now = if have == 0 && drained && sizer.small {
                RecvNow::Empty
            } else {
                rb.room(room.need, room.grow).await?;
                rd.recv_now(&mut rb.buf, room.want).await
            };
            match now {
                RecvNow::Got => {
                    drained = rb.buf.len() - have < room.want;
                    // A long frame arriving in many pieces still lets the
                    // shard's other tasks run.
                    glommio::executor().yield_if_needed().await;
                    continue;
                }
                RecvNow::Closed => {
                    return if have == 0 {
                        Ok(())
                    } else {
                        Err(format!("closed mid-frame ({have} bytes)"))
                    };
                }
                RecvNow::Failed(e) => return Err(format!("read: {e}")),
                RecvNow::Empty => {}
            }
            // Nothing there yet: wait for the next bytes with a small read
            // into the connection's own scratch space (the rest then comes
            // through `recv_now`). Between requests the receive buffer
            // goes back first.
            rb.release_if_empty();
            rd.expect(if have >= 4 { missing } else { 0 });
            let stopping = async {
                shard.stopping.changed(0).await;
                None
            };
            let n = match futures_lite::future::or(
                async { Some(rd.read(&mut scratch).await) },
                stopping,
            )
            .await
            {
                Some(r) => r.map_err(|e| format!("read: {e}"))?,
                // A request already begun is not read to its end.
                None => return Ok(()),
            };
            if n == 0 {
                return if have == 0 {
                    Ok(())
                } else {
                    Err(format!("closed mid-frame ({have} bytes)"))
                };
            }
            drained = n < WAIT_READ_BYTES;
            rb.room(n, room.grow.max(n)).await?;
            rb.buf.extend_from_slice(&scratch[..n]);
            continue;
        }
        let (frame, taken) = rb.take_frame(&decoder)?;
        // Its memory is the request's until it is answered.
        inflight.bytes.set(inflight.bytes.get() + taken);
        // The receive buffer's next part is a fresh allocation when this
        // frame's bytes are still shared (by batches on their way to the
        // log); `reserve` never moves bytes somebody holds.
        let range = (
            frame.as_ptr() as usize,
            frame.as_ptr() as usize + frame.len(),
        );
        let size = frame.len();
        sizer.saw_frame(size);
        let copy = frame.clone();
        let pending = match decode_request(frame, apis::supported) {
            Ok(req) => match session.admit(req.api_key, std::time::Instant::now()) {
                Admit::Refuse(why) => return Err(why),
                Admit::Sasl => {
                    let (answer, close) = sasl(shard, &mut session, req).await;
                    if tx.send(Pending::Ready(answer, taken)).await.is_err() {
                        return Err("the writer stopped".into());
                    }
                    match close {
                        Some(why) => return Err(why),
                        None => continue,
                    }
                }
                Admit::Dispatch => match apis::dispatch(shard, req, range, &session, peer).await {
                    Reply::Nothing => {
                        inflight.bytes.set(inflight.bytes.get() - taken);
                        shard.request_memory.give(taken);
                        continue;
                    }
                    Reply::Now(a) => Pending::Ready(a, taken),
                    Reply::Later(f) => Pending::Later(f, taken),
                    Reply::Task(f) => Pending::Task(
                        glommio::spawn_local(sluice_storage::stall::watch("request", f)).detach(),
                        taken,
                    ),
                },
            },
            Err(RequestError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => Pending::Ready(
                ResponseChunks::single(
                    api_versions_unsupported(correlation_id, apis::SUPPORTED)
                        .map_err(|e| e.to_string())?,
                ),
                taken,
            ),
            // An API this broker does not serve, at a version its codec
            // knows: answer with an error where the response has a place
            // for one.
            Err(
                e @ RequestError::UnsupportedVersion {
                    api_key, version, ..
                },
            ) if api_key.valid_versions().min <= version
                && version <= api_key.valid_versions().max
                && apis::supported(api_key).is_none() =>
            {
                let any = |k: ApiKey| Some((k.valid_versions().min, k.valid_versions().max));
                match decode_request(copy, any)
                    .ok()
                    .and_then(apis::unsupported::answer)
                {
                    Some(a) => Pending::Ready(a, taken),
                    None => return Err(e.to_string()),
                }
            }
            Err(e) => return Err(e.to_string()),
        };
        if tx.send(pending).await.is_err() {
            return Err("the writer stopped".into());
        }
    }
}

/// Answers SaslHandshake or SaslAuthenticate in the session; returns the
/// answer and, when the connection ends after it, why.
async fn sasl(
    shard: &Rc<Shard>,
    session: &mut Session,
    req: sluice_net::request::Request,
) -> (ResponseChunks, Option<String>) {
    use kafka_protocol::messages::RequestKind;
    let ctx = apis::Ctx {
        api_key: req.api_key,
        version: req.version,
        correlation_id: req.header.correlation_id,
        listener: session.listener,
    };
    let answer = match &req.body {
        RequestKind::SaslHandshake(r) => session.handshake(r),
        RequestKind::SaslAuthenticate(r) => {
            let security = shard.security();
            let verify = |cred: crate::security::scram::Credential, mech, password: String| async move {
                glommio::executor()
                    .spawn_blocking(move || cred.matches(mech, &password))
                    .await
            };
            session
                .authenticate(r, &security, shard.cfg.sasl_session_lifetime_ms, verify)
                .await
        }
        _ => unreachable!("admit sends only SASL requests here"),
    };
    (ctx.answer(answer.body), answer.close)
}

/// Bytes of answers a TLS connection encrypts at once: whole TLS records
/// (16 KiB each) rather than one per chunk.
const TLS_WRITE_BYTES: usize = 64 * 1024;
/// Bytes a TLS connection encrypts before the shard's other tasks get a
/// turn (about half a millisecond of AES-GCM).
const TLS_YIELD_BYTES: usize = 1 << 20;

/// Writes every chunk: on a plain socket several per system call, on TLS
/// gathered into records.
async fn write_chunks(wr: &mut WriteSide, chunks: Vec<Bytes>) -> std::io::Result<()> {
    match wr {
        WriteSide::Plain(fd, wr) => write_plain(*fd, wr, chunks).await,
        WriteSide::Tls(wr) => {
            let mut out = Vec::with_capacity(TLS_WRITE_BYTES);
            let mut since_yield = 0;
            for c in chunks {
                let mut c = &c[..];
                while !c.is_empty() {
                    let n = c.len().min(TLS_WRITE_BYTES - out.len());
                    out.extend_from_slice(&c[..n]);
                    c = &c[n..];
                    if out.len() == TLS_WRITE_BYTES {
                        wr.write_all(&out).await?;
                        out.clear();
                        // Encrypting a fetch answer of many megabytes
                        // would otherwise hold the shard for tens of
                        // milliseconds (the socket rarely pushes back,
                        // and the task queue's own preemption comes
                        // later than that): the other tasks run between
                        // every megabyte.
                        since_yield += TLS_WRITE_BYTES;
                        if since_yield >= TLS_YIELD_BYTES {
                            since_yield = 0;
                            futures_lite::future::yield_now().await;
                        }
                    }
                }
            }
            if !out.is_empty() {
                wr.write_all(&out).await?;
            }
            wr.flush().await
        }
    }
}

/// Writes every chunk, several per system call. The socket is
/// non-blocking: `sendmsg` takes what fits now; when nothing fits, the
/// stream's own write waits for room.
async fn write_plain(
    fd: RawFd,
    wr: &mut futures_lite::io::WriteHalf<TcpStream>,
    chunks: Vec<Bytes>,
) -> std::io::Result<()> {
    let mut chunks: std::collections::VecDeque<Bytes> =
        chunks.into_iter().filter(|c| !c.is_empty()).collect();
    while !chunks.is_empty() {
        let iov: Vec<libc::iovec> = chunks
            .iter()
            .take(IOV_MAX)
            .map(|c| libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: a zeroed msghdr is valid; it points at `iov`, which
        // outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // SAFETY: `fd` is the connection's socket, open while `wr` lives;
        // every iovec points into a chunk held by `chunks`.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        let mut sent = if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(e);
            }
            // No room: let the stream wait for it and take the first chunk.
            let first = chunks.pop_front().expect("not empty");
            wr.write_all(&first).await?;
            continue;
        } else {
            n as usize
        };
        while sent > 0 {
            let first = chunks.front_mut().expect("sent bytes belong to chunks");
            if sent >= first.len() {
                sent -= first.len();
                chunks.pop_front();
            } else {
                let _ = first.split_to(sent);
                sent = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::run;

    fn answer(tag: u8, len: usize) -> ResponseChunks {
        ResponseChunks::single(Bytes::from(vec![tag; len]))
    }

    fn tags(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().map(|c| c[0]).collect()
    }

    // Proves answers done together are gathered into one write in request
    // order, and that gathering stops at the first answer not done yet
    // (held for the writer to wait on, the ones after it left queued), at
    // a write's worth of bytes, and at a handler that was cancelled.
    #[test]
    fn answers_done_together_are_gathered_in_order() {
        run(|| async {
            let (tx, rx) = local_channel::new_bounded::<Pending>(16);
            let queue = |p: Pending| assert!(tx.try_send(p).is_ok());
            queue(Pending::Later(Box::pin(async { answer(2, 10) }), 20));
            queue(Pending::Ready(answer(3, 10), 30));
            queue(Pending::Later(Box::pin(std::future::pending()), 40));
            queue(Pending::Ready(answer(5, 10), 50));
            let out = gather((answer(1, 10), 10), &rx).await;
            assert_eq!(tags(&out.chunks), [1, 2, 3]);
            assert_eq!(out.request_bytes, 60);
            assert!(matches!(out.held, Some(Pending::Later(_, 40))));
            assert!(out.failed.is_none());
            assert!(matches!(rx.recv().await, Some(Pending::Ready(_, 50))));

            for tag in 0..4 {
                queue(Pending::Ready(answer(tag, 100 * 1024), 1));
            }
            let out = gather((answer(9, 100 * 1024), 1), &rx).await;
            assert_eq!(tags(&out.chunks), [9, 0, 1], "300 KiB is a write's worth");
            assert!(out.held.is_none());
            let out = gather((answer(8, 10), 1), &rx).await;
            assert_eq!(tags(&out.chunks), [8, 2, 3]);

            let cancelled = glommio::spawn_local(std::future::pending::<ResponseChunks>());
            let cancelled = {
                let handle = cancelled.detach();
                handle.cancel();
                handle
            };
            // The executor drops a cancelled task on its next pass.
            glommio::executor().yield_task_queue_now().await;
            queue(Pending::Ready(answer(4, 10), 1));
            queue(Pending::Task(cancelled, 1));
            let out = gather((answer(7, 10), 1), &rx).await;
            assert_eq!(tags(&out.chunks), [7, 4]);
            assert!(out.held.is_none());
            assert_eq!(
                out.failed.as_deref(),
                Some("a request handler was cancelled")
            );
        });
    }

    // Proves a stream of large frames is read a frame at a time into room
    // made for the whole frame, that small frames are still batched, and
    // that a frame larger than any the connection has sent gets room only
    // as its bytes arrive.
    #[test]
    fn reads_are_sized_by_the_frames_sent() {
        let want = |s: &ReadSizer, have, missing| s.room(have, missing).want;
        let mut s = ReadSizer::default();
        // Nothing known yet: one socket read's worth.
        assert_eq!(want(&s, 0, 4), SOCKET_READ_BYTES);
        assert!(s.small, "a new connection's requests are small");
        // A first 200 KB frame: room at most doubles what arrived.
        let r = s.room(64 * 1024, 200_004 - 64 * 1024);
        assert_eq!((r.grow, r.want), (64 * 1024, 64 * 1024));
        assert_eq!(r.need, WAIT_READ_BYTES);
        let r = s.room(128 * 1024, 200_004 - 128 * 1024);
        assert_eq!(r.grow, 200_004 - 128 * 1024, "never past the frame's end");
        s.saw_frame(200_000);
        assert!(!s.small, "a frame past the waiting read");
        // The next frame's start makes room for a frame of that size.
        assert_eq!(want(&s, 0, 4), 200_004);
        assert_eq!(want(&s, 2, 2), 200_004);
        // A frame of that size once its prefix is in: read to its end
        // exactly, into room for all of it.
        let r = s.room(4, 200_000);
        assert_eq!((r.need, r.grow, r.want), (200_000, 200_000, 200_000));
        // Small frames with their length known: many per read.
        assert_eq!(want(&s, 100, 50), SOCKET_READ_BYTES);
        // Smaller frames shrink the room by halves, never below one read.
        s.saw_frame(100);
        assert!(s.small);
        assert_eq!(want(&s, 0, 4), 100_002);
        for _ in 0..8 {
            s.saw_frame(100);
        }
        assert_eq!(want(&s, 0, 4), SOCKET_READ_BYTES);
        // A prefix claiming 100 MiB gets one read's worth of room.
        let r = s.room(4, 100 * 1024 * 1024);
        assert_eq!(r.grow, SOCKET_READ_BYTES);
        // A huge frame does not make every later read that large.
        s.saw_frame(90 * 1024 * 1024);
        assert_eq!(want(&s, 0, 4), SOCKET_READ_AHEAD_BYTES_MAX);
    }
}

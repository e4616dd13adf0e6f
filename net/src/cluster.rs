//! The node-to-node (and shard-to-shard replication) frame vocabulary.
//!
//! Every message between brokers of a cluster is one frame:
//!
//! ```text
//!  0  magic     4 bytes  b"SLCF"
//!  4  version   u16 LE   FRAME_VERSION
//!  6  kind      u16 LE   which message the body archives (`Kind`)
//!  8  body_len  u32 LE   bytes of the rkyv-archived body
//! 12  raw_len   u32 LE   bytes after the body, not archived (record batches)
//! 16  crc       u32 LE   CRC32C of bytes 0..16, the body and each raw
//!                        record batch's first 21 bytes
//! 20  reserved  u32      zero
//! 24  body, then raw
//! ```
//!
//! The body is a message type archived with rkyv 0.8, its format pinned in
//! Cargo.toml (little endian, aligned, 32-bit relative pointers), and is
//! validated with bytecheck before any field is read. Record batches
//! travel as raw bytes after it, exactly as the leader stored them, so a
//! follower writes what it received without re-encoding it; the body says
//! how the raw bytes divide between partitions.
//!
//! The raw part is Kafka record batches (v2), and each already carries a
//! CRC32C of everything after its first 21 bytes (attributes to the last
//! record). The frame's CRC covers those 21 bytes of every batch (base
//! offset, length, partition leader epoch, magic and the batch's own CRC),
//! so together the two CRCs cover every byte once, and the receiver checks
//! each batch's CRC as it appends it (as Kafka's replica fetcher does): a
//! byte of record data is summed once per hop, not twice.
//!
//! Anything wrong with a frame (magic, version, kind, lengths past the
//! limits, CRC, a body that fails validation) is a `ClusterFrameError`:
//! the link that carried it is closed with that reason, never a panic.

use bytes::{Bytes, BytesMut};
use rkyv::rancor::{Error as RkyvError, Strategy};
use rkyv::util::AlignedVec;
use rkyv::validation::archive::ArchiveValidator;
use rkyv::validation::shared::SharedValidator;
use rkyv::validation::Validator;
use rkyv::{Archive, Deserialize, Serialize};
use sluice_tuning::limits::{CLUSTER_FRAME_BODY_BYTES_MAX, CLUSTER_FRAME_RAW_BYTES_MAX};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SLCF";
/// The frame format and vocabulary this build speaks.
pub const FRAME_VERSION: u16 = 2;
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 24;
/// Alignment of receive buffers for archived bodies (rkyv's
/// `AlignedVec` default; every archived type here needs at most 8).
pub const BODY_ALIGN: usize = 16;

/// Why a frame was refused. Each closes the link it came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterFrameError {
    #[error("bad magic {0:02x?} (not a sluice cluster frame)")]
    Magic([u8; 4]),
    #[error("frame version {0}, this node speaks {FRAME_VERSION}")]
    Version(u16),
    #[error("unknown frame kind {0}")]
    UnknownKind(u16),
    #[error("reserved header bytes are {0:#x}, not zero")]
    Reserved(u32),
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge { len: usize, max: usize },
    #[error("frame raw part of {len} bytes exceeds the limit of {max}")]
    RawTooLarge { len: usize, max: usize },
    #[error("frame is {got} bytes, its header says {want}")]
    Length { got: usize, want: usize },
    #[error("frame CRC32C {got:#010x} does not match its header's {want:#010x}")]
    Crc { got: u32, want: u32 },
    #[error("expected a {want:?} frame, got {got:?}")]
    WrongKind { want: Kind, got: Kind },
    #[error("frame body of kind {kind:?} fails validation: {reason}")]
    Invalid { kind: Kind, reason: String },
    #[error("raw part of {raw} bytes does not match the {said} bytes the body accounts for")]
    RawMismatch { raw: usize, said: u64 },
    #[error("raw part is not whole record batches: {0}")]
    RawBatches(String),
}

/// A record batch's first bytes that its own CRC32C does not cover (base
/// offset, length, partition leader epoch, magic), and that CRC.
const BATCH_PREFIX_BYTES: usize = 21;
/// The smallest batch: a v2 header with no records.
const BATCH_HEADER_BYTES: usize = 61;

/// Moves `at` (chunk, offset in it) on by `n` bytes of `chunks`, copying
/// them into `out` when there is one (`out` is `n` bytes long).
fn advance(chunks: &[Bytes], at: &mut (usize, usize), mut n: usize, mut out: Option<&mut [u8]>) {
    let mut done = 0;
    while n > 0 {
        let c = &chunks[at.0];
        let k = (c.len() - at.1).min(n);
        if let Some(out) = out.as_deref_mut() {
            out[done..done + k].copy_from_slice(&c[at.1..at.1 + k]);
        }
        (done, n, at.1) = (done + k, n - k, at.1 + k);
        if at.1 == c.len() {
            *at = (at.0 + 1, 0);
        }
    }
}

/// Adds every batch's first `BATCH_PREFIX_BYTES` in `chunks` (batches
/// back to back, cut anywhere between chunks) to `crc`.
fn crc_batch_prefixes(mut crc: u32, chunks: &[Bytes]) -> Result<u32, ClusterFrameError> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let (mut at, mut pos) = ((0usize, 0usize), 0usize);
    let mut prefix = [0u8; BATCH_PREFIX_BYTES];
    while pos < total {
        if total - pos < BATCH_HEADER_BYTES {
            return Err(ClusterFrameError::RawBatches(format!(
                "{} bytes left at {pos}, less than a batch header",
                total - pos
            )));
        }
        // The prefix may span chunks.
        advance(chunks, &mut at, BATCH_PREFIX_BYTES, Some(&mut prefix));
        crc = crc32c::crc32c_append(crc, &prefix);
        let len = i32::from_be_bytes(prefix[8..12].try_into().unwrap());
        let size = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&n| n >= BATCH_HEADER_BYTES && n <= total - pos)
            .ok_or_else(|| {
                ClusterFrameError::RawBatches(format!("a batch at {pos} says length {len}"))
            })?;
        // On to the next batch.
        advance(chunks, &mut at, size - BATCH_PREFIX_BYTES, None);
        pos += size;
    }
    Ok(crc)
}

/// Which message a frame's body archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    Hello = 1,
    HelloReply = 2,
    Heartbeats = 3,
    HeartbeatReplies = 4,
    ReplicaFetch = 5,
    ReplicaFetchReply = 6,
    Raft = 7,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::HelloReply,
            3 => Kind::Heartbeats,
            4 => Kind::HeartbeatReplies,
            5 => Kind::ReplicaFetch,
            6 => Kind::ReplicaFetchReply,
            7 => Kind::Raft,
            _ => return None,
        })
    }
}

/// A message of the vocabulary: its frame kind, and whether record bytes
/// may follow its body.
pub trait Message: Archive + for<'a> Serialize<FrameSerializer<'a>>
where
    Self::Archived: for<'a> rkyv::bytecheck::CheckBytes<Strategy<FrameValidator<'a>, RkyvError>>,
{
    const KIND: Kind;
    /// Bytes of raw record batches the archived body accounts for (the
    /// frame's raw part must be exactly that long).
    fn raw_bytes(archived: &Self::Archived) -> u64 {
        let _ = archived;
        0
    }
}

/// The serializer `Message` bodies are written with.
pub type FrameSerializer<'a> =
    rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, RkyvError>;
/// The validator `Message` bodies are checked with.
pub type FrameValidator<'a> = Validator<ArchiveValidator<'a>, SharedValidator>;

/// A 16-byte topic id (Kafka's topic UUID).
pub type TopicId = [u8; 16];

/// The first frame on a link, from the node that opened it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The cluster's name: nodes of different clusters refuse each other.
    pub cluster: String,
    pub node_id: u32,
    /// The frame versions the sender speaks, lowest and highest.
    pub versions: (u16, u16),
}

impl Message for Hello {
    const KIND: Kind = Kind::Hello;
}

/// The answer to `Hello`; a refusal says why and the link closes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub node_id: u32,
    pub refused: Option<String>,
}

impl Message for HelloReply {
    const KIND: Kind = Kind::HelloReply;
}

/// One partition's leader state, in a node's heartbeat to a follower.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBeat {
    pub topic_id: TopicId,
    pub partition: u32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
}

/// The heartbeats of every partition the sender leads with a replica on
/// the receiver, together in one frame (one per node pair per interval,
/// not one per partition).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeats {
    pub from: u32,
    /// The sender's controller term, so a stale leader is recognised.
    pub term: u64,
    pub beats: Vec<PartitionBeat>,
}

impl Message for Heartbeats {
    const KIND: Kind = Kind::Heartbeats;
}

/// A follower's state for one partition, in answer to a heartbeat.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatReply {
    pub topic_id: TopicId,
    pub partition: u32,
    /// A Kafka error code (0 for none): the follower does not host the
    /// partition, or knows a newer epoch.
    pub error: i16,
    pub leader_epoch: i32,
    pub log_end: i64,
    /// End of what the follower has fsynced.
    pub durable_end: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReplies {
    pub from: u32,
    pub replies: Vec<BeatReply>,
}

impl Message for HeartbeatReplies {
    const KIND: Kind = Kind::HeartbeatReplies;
}

/// One partition in a follower's fetch.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    pub topic_id: TopicId,
    pub partition: u32,
    /// The epoch the follower believes current (fenced if stale).
    pub current_leader_epoch: i32,
    pub fetch_offset: i64,
    /// The end of what the follower has fsynced: the leader's high
    /// watermark counts only what every in-sync replica has on disk.
    pub durable_end: i64,
    /// The epoch of the follower's last batch, so the leader can name
    /// where their logs diverge (KIP-320's check, in the fetch).
    pub last_fetched_epoch: i32,
    pub max_bytes: u32,
}

/// A follower's fetch of every partition it follows on one leader node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetch {
    pub replica: u32,
    pub correlation: u64,
    pub max_wait_ms: u32,
    pub partitions: Vec<FetchPartition>,
}

impl Message for ReplicaFetch {
    const KIND: Kind = Kind::ReplicaFetch;
}

/// Where a follower's log leaves the leader's: the follower truncates to
/// `end_offset` of `epoch` before fetching again.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Diverging {
    pub epoch: i32,
    pub end_offset: i64,
}

/// One partition's answer; its record batches are the next `raw_len`
/// bytes of the frame's raw part (partitions in this order).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedPartition {
    pub topic_id: TopicId,
    pub partition: u32,
    pub error: i16,
    pub high_watermark: i64,
    pub log_start: i64,
    pub diverging: Option<Diverging>,
    pub raw_len: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFetchReply {
    pub correlation: u64,
    pub partitions: Vec<FetchedPartition>,
}

impl Message for ReplicaFetchReply {
    const KIND: Kind = Kind::ReplicaFetchReply;
    fn raw_bytes(archived: &ArchivedReplicaFetchReply) -> u64 {
        archived
            .partitions
            .iter()
            .map(|p| u64::from(p.raw_len.to_native()))
            .sum()
    }
}

/// A Raft log entry, field for field as raft-rs has it (the broker
/// converts; this crate does not depend on the Raft implementation).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftEntry {
    pub entry_type: i32,
    pub term: u64,
    pub index: u64,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

/// A Raft membership (voters and learners, and the outgoing half of a
/// joint configuration).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftSnapshot {
    pub data: Vec<u8>,
    pub conf_state: RaftConfState,
    pub index: u64,
    pub term: u64,
}

/// One Raft message, field for field as raft-rs has it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftMessage {
    pub msg_type: i32,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<RaftEntry>,
    pub commit: u64,
    pub commit_term: u64,
    pub snapshot: Option<RaftSnapshot>,
    pub request_snapshot: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: Vec<u8>,
    pub priority: i64,
}

/// Raft messages from one node to another, together in one frame.
/// `group` 0 is the cluster metadata log.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftMessages {
    pub from: u32,
    pub group: u64,
    pub messages: Vec<RaftMessage>,
}

impl Message for RaftMessages {
    const KIND: Kind = Kind::Raft;
}

/// A parsed, not yet CRC-checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub body_len: usize,
    pub raw_len: usize,
    pub crc: u32,
    /// The header's first 16 bytes, which its CRC covers.
    prefix: [u8; 16],
}

/// Checks a header before anything is allocated for its frame.
pub fn parse_header(h: &[u8; HEADER_BYTES]) -> Result<Header, ClusterFrameError> {
    let magic: [u8; 4] = h[0..4].try_into().unwrap();
    if magic != MAGIC {
        return Err(ClusterFrameError::Magic(magic));
    }
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
    let version = u16_at(4);
    if version != FRAME_VERSION {
        return Err(ClusterFrameError::Version(version));
    }
    let kind = Kind::from_u16(u16_at(6)).ok_or(ClusterFrameError::UnknownKind(u16_at(6)))?;
    let body_len = u32_at(8) as usize;
    let raw_len = u32_at(12) as usize;
    if u32_at(20) != 0 {
        return Err(ClusterFrameError::Reserved(u32_at(20)));
    }
    if body_len > CLUSTER_FRAME_BODY_BYTES_MAX {
        return Err(ClusterFrameError::BodyTooLarge {
            len: body_len,
            max: CLUSTER_FRAME_BODY_BYTES_MAX,
        });
    }
    if raw_len > CLUSTER_FRAME_RAW_BYTES_MAX {
        return Err(ClusterFrameError::RawTooLarge {
            len: raw_len,
            max: CLUSTER_FRAME_RAW_BYTES_MAX,
        });
    }
    Ok(Header {
        kind,
        body_len,
        raw_len,
        crc: u32_at(16),
        prefix: h[..16].try_into().unwrap(),
    })
}

/// A frame ready to send: its header and archived body in one buffer,
/// then the raw parts, written after it as they are (gathered by the
/// sender, never copied into the frame).
pub struct Outgoing {
    pub head: Bytes,
    pub raw: Vec<Bytes>,
}

impl Outgoing {
    pub fn len(&self) -> usize {
        self.head.len() + self.raw.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Header, body and raw parts in one buffer (for tests and in-process
    /// links that hand over bytes).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.len());
        b.extend_from_slice(&self.head);
        for r in &self.raw {
            b.extend_from_slice(r);
        }
        b.freeze()
    }
}

/// Why a message could not be framed (a sender's bug or a message past
/// the limits; never the peer's doing).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("archiving a {kind:?} body: {reason}")]
    Archive { kind: Kind, reason: String },
    #[error(transparent)]
    Frame(#[from] ClusterFrameError),
}

/// Frames `msg` with `raw` (record batches, in the order the body
/// accounts for them) after it.
pub fn encode<M: Message>(msg: &M, raw: Vec<Bytes>) -> Result<Outgoing, EncodeError>
where
    M::Archived: for<'a> rkyv::bytecheck::CheckBytes<Strategy<FrameValidator<'a>, RkyvError>>,
{
    let body = rkyv::to_bytes::<RkyvError>(msg).map_err(|e| EncodeError::Archive {
        kind: M::KIND,
        reason: e.to_string(),
    })?;
    Ok(encode_archived(M::KIND, &body, raw)?)
}

/// Frames a body that is already archived (relayed as it came, or, in
/// the fuzzer, arbitrary bytes that then meet validation past the CRC).
pub fn encode_archived(
    kind: Kind,
    body: &[u8],
    raw: Vec<Bytes>,
) -> Result<Outgoing, ClusterFrameError> {
    let raw_len: usize = raw.iter().map(Bytes::len).sum();
    if body.len() > CLUSTER_FRAME_BODY_BYTES_MAX {
        return Err(ClusterFrameError::BodyTooLarge {
            len: body.len(),
            max: CLUSTER_FRAME_BODY_BYTES_MAX,
        });
    }
    if raw_len > CLUSTER_FRAME_RAW_BYTES_MAX {
        return Err(ClusterFrameError::RawTooLarge {
            len: raw_len,
            max: CLUSTER_FRAME_RAW_BYTES_MAX,
        });
    }
    let mut head = BytesMut::with_capacity(HEADER_BYTES + body.len());
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    head.extend_from_slice(&(kind as u16).to_le_bytes());
    head.extend_from_slice(&(body.len() as u32).to_le_bytes());
    head.extend_from_slice(&(raw_len as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&head[..16]);
    crc = crc32c::crc32c_append(crc, body);
    crc = crc_batch_prefixes(crc, &raw)?;
    head.extend_from_slice(&crc.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(body);
    Ok(Outgoing {
        head: head.freeze(),
        raw,
    })
}

/// A received frame whose CRC matched (batches' own CRCs not yet
/// checked): the body in an aligned buffer of
/// its own, the raw part as it arrived.
#[derive(Debug)]
pub struct Frame {
    pub kind: Kind,
    body: AlignedVec<BODY_ALIGN>,
    pub raw: Bytes,
}

impl Frame {
    /// Checks a frame's CRC against its header (`parse_header`'s): the
    /// header, the body and each raw batch's prefix (each batch's own CRC
    /// is the receiver's to check, as it appends the batch).
    /// `body` must be exactly `h.body_len` bytes and `raw` `h.raw_len`.
    pub fn check(
        h: &Header,
        body: AlignedVec<BODY_ALIGN>,
        raw: Bytes,
    ) -> Result<Frame, ClusterFrameError> {
        if body.len() != h.body_len || raw.len() != h.raw_len {
            return Err(ClusterFrameError::Length {
                got: HEADER_BYTES + body.len() + raw.len(),
                want: HEADER_BYTES + h.body_len + h.raw_len,
            });
        }
        let mut crc = crc32c::crc32c(&h.prefix);
        crc = crc32c::crc32c_append(crc, &body);
        crc = crc_batch_prefixes(crc, std::slice::from_ref(&raw))?;
        if crc != h.crc {
            return Err(ClusterFrameError::Crc {
                got: crc,
                want: h.crc,
            });
        }
        Ok(Frame {
            kind: h.kind,
            body,
            raw,
        })
    }

    /// Splits one whole frame off a contiguous buffer (an in-process link,
    /// a test, the fuzzer). The body is copied into an aligned buffer; the
    /// raw part is a slice of `bytes`, not copied.
    pub fn from_bytes(bytes: Bytes) -> Result<Frame, ClusterFrameError> {
        let header: [u8; HEADER_BYTES] = bytes
            .get(..HEADER_BYTES)
            .ok_or(ClusterFrameError::Length {
                got: bytes.len(),
                want: HEADER_BYTES,
            })?
            .try_into()
            .unwrap();
        let h = parse_header(&header)?;
        let want = HEADER_BYTES + h.body_len + h.raw_len;
        if bytes.len() != want {
            return Err(ClusterFrameError::Length {
                got: bytes.len(),
                want,
            });
        }
        let mut body = AlignedVec::<BODY_ALIGN>::with_capacity(h.body_len);
        body.extend_from_slice(&bytes[HEADER_BYTES..HEADER_BYTES + h.body_len]);
        Frame::check(&h, body, bytes.slice(HEADER_BYTES + h.body_len..))
    }

    /// The body as `M`, validated (bytecheck) before it is returned; the
    /// raw part's length is checked against what the body accounts for.
    pub fn view<M: Message>(&self) -> Result<&M::Archived, ClusterFrameError>
    where
        M::Archived: for<'a> rkyv::bytecheck::CheckBytes<Strategy<FrameValidator<'a>, RkyvError>>,
    {
        if self.kind != M::KIND {
            return Err(ClusterFrameError::WrongKind {
                want: M::KIND,
                got: self.kind,
            });
        }
        let archived = rkyv::access::<M::Archived, RkyvError>(&self.body).map_err(|e| {
            ClusterFrameError::Invalid {
                kind: self.kind,
                reason: e.to_string(),
            }
        })?;
        let said = M::raw_bytes(archived);
        if said != self.raw.len() as u64 {
            return Err(ClusterFrameError::RawMismatch {
                raw: self.raw.len(),
                said,
            });
        }
        Ok(archived)
    }

    /// The body as an owned `M` (validated first).
    pub fn decode<M: Message>(&self) -> Result<M, ClusterFrameError>
    where
        M::Archived: for<'a> rkyv::bytecheck::CheckBytes<Strategy<FrameValidator<'a>, RkyvError>>
            + Deserialize<M, Strategy<rkyv::de::Pool, RkyvError>>,
    {
        let archived = self.view::<M>()?;
        rkyv::deserialize::<M, RkyvError>(archived).map_err(|e| ClusterFrameError::Invalid {
            kind: self.kind,
            reason: e.to_string(),
        })
    }
}

/// Why a link stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("link read: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] ClusterFrameError),
}

/// Reads the next whole frame from a link: the header first, checked
/// before the body and raw part get memory (each bounded by its limit);
/// the body lands in an aligned buffer of its own. `Ok(None)` when the
/// link closed between frames; closed mid-frame is an error.
pub async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Frame>, LinkError> {
    use futures_lite::AsyncReadExt;
    let mut header = [0u8; HEADER_BYTES];
    let mut got = 0;
    while got < HEADER_BYTES {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        got += n;
    }
    let h = parse_header(&header)?;
    let mut body = AlignedVec::<BODY_ALIGN>::with_capacity(h.body_len);
    body.resize(h.body_len, 0);
    r.read_exact(&mut body).await?;
    let mut raw = BytesMut::zeroed(h.raw_len);
    r.read_exact(&mut raw).await?;
    Ok(Some(Frame::check(&h, body, raw.freeze())?))
}

/// Writes a frame: header and body, then each raw part as it is.
pub async fn write_frame<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut W,
    f: &Outgoing,
) -> std::io::Result<()> {
    use futures_lite::AsyncWriteExt;
    w.write_all(&f.head).await?;
    for r in &f.raw {
        w.write_all(r).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(value: &[u8]) -> Bytes {
        let mut b = crate::records::BatchBuilder::new(256);
        b.push(Some(b"k"), value, 1);
        b.finish(crate::records::Compression::None).unwrap()
    }

    fn fetch_reply() -> (ReplicaFetchReply, Vec<Bytes>) {
        // Two batches for the first partition, one for the second.
        let raw = vec![
            [batch(b"one"), batch(b"two")].concat().into(),
            batch(b"three"),
        ];
        let msg = ReplicaFetchReply {
            correlation: 7,
            partitions: vec![
                FetchedPartition {
                    topic_id: [1; 16],
                    partition: 0,
                    error: 0,
                    high_watermark: 100,
                    log_start: 0,
                    diverging: None,
                    raw_len: raw[0].len() as u32,
                },
                FetchedPartition {
                    topic_id: [2; 16],
                    partition: 3,
                    error: 0,
                    high_watermark: 5,
                    log_start: 1,
                    diverging: Some(Diverging {
                        epoch: 4,
                        end_offset: 90,
                    }),
                    raw_len: raw[1].len() as u32,
                },
            ],
        };
        (msg, raw)
    }

    #[test]
    fn a_frame_round_trips_with_its_raw_bytes_untouched() {
        let (msg, raw) = fetch_reply();
        let out = encode(&msg, raw.clone()).unwrap();
        let bytes = out.to_bytes();
        let frame = Frame::from_bytes(bytes.clone()).unwrap();
        assert_eq!(frame.kind, Kind::ReplicaFetchReply);
        assert_eq!(frame.decode::<ReplicaFetchReply>().unwrap(), msg);
        let joined: Vec<u8> = raw.iter().flat_map(|r| r.to_vec()).collect();
        assert_eq!(&frame.raw[..], &joined[..]);
        // The raw part is a view of the received bytes, not a copy.
        assert_eq!(
            frame.raw.as_ptr(),
            bytes[bytes.len() - joined.len()..].as_ptr()
        );
        let view = frame.view::<ReplicaFetchReply>().unwrap();
        assert_eq!(view.partitions[1].diverging.as_ref().unwrap().epoch, 4);
    }

    #[test]
    fn every_message_kind_round_trips() {
        let hello = Hello {
            cluster: "c1".into(),
            node_id: 2,
            versions: (1, 1),
        };
        let f = Frame::from_bytes(encode(&hello, vec![]).unwrap().to_bytes()).unwrap();
        assert_eq!(f.decode::<Hello>().unwrap(), hello);
        let reply = HelloReply {
            node_id: 1,
            refused: Some("another cluster".into()),
        };
        let f = Frame::from_bytes(encode(&reply, vec![]).unwrap().to_bytes()).unwrap();
        assert_eq!(f.decode::<HelloReply>().unwrap(), reply);
        let beats = Heartbeats {
            from: 1,
            term: 9,
            beats: (0..1000)
                .map(|p| PartitionBeat {
                    topic_id: [p as u8; 16],
                    partition: p,
                    leader_epoch: 3,
                    high_watermark: i64::from(p) * 10,
                })
                .collect(),
        };
        let f = Frame::from_bytes(encode(&beats, vec![]).unwrap().to_bytes()).unwrap();
        assert_eq!(f.decode::<Heartbeats>().unwrap(), beats);
        let replies = HeartbeatReplies {
            from: 2,
            replies: vec![BeatReply {
                topic_id: [9; 16],
                partition: 1,
                error: 6,
                leader_epoch: 3,
                log_end: 10,
                durable_end: 8,
            }],
        };
        let f = Frame::from_bytes(encode(&replies, vec![]).unwrap().to_bytes()).unwrap();
        assert_eq!(f.decode::<HeartbeatReplies>().unwrap(), replies);
        let fetch = ReplicaFetch {
            replica: 3,
            correlation: 1,
            max_wait_ms: 500,
            partitions: vec![FetchPartition {
                topic_id: [4; 16],
                partition: 0,
                current_leader_epoch: 2,
                fetch_offset: 17,
                durable_end: 15,
                last_fetched_epoch: 1,
                max_bytes: 1 << 20,
            }],
        };
        let f = Frame::from_bytes(encode(&fetch, vec![]).unwrap().to_bytes()).unwrap();
        assert_eq!(f.decode::<ReplicaFetch>().unwrap(), fetch);
    }

    /// A flipped bit anywhere is refused: by the frame's CRC in the
    /// header, the body and each batch's first 21 bytes; by the batch's
    /// own CRC (which the receiver checks as it appends) in the rest.
    #[test]
    fn any_flipped_bit_is_refused_not_misread() {
        let (msg, raw) = fetch_reply();
        let batches: Vec<usize> = {
            let mut at = 0;
            let mut starts = vec![];
            for b in [batch(b"one"), batch(b"two"), batch(b"three")] {
                starts.push(at);
                at += b.len();
            }
            starts
        };
        let raw_len: usize = raw.iter().map(Bytes::len).sum();
        let good = encode(&msg, raw).unwrap().to_bytes();
        let raw_at = good.len() - raw_len;
        let batch_crc_ok = |frame: &Frame| {
            let mut rest = &frame.raw[..];
            while !rest.is_empty() {
                let size = 12 + i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
                let want = u32::from_be_bytes(rest[17..21].try_into().unwrap());
                if crc32c::crc32c(&rest[21..size]) != want {
                    return false;
                }
                rest = &rest[size..];
            }
            true
        };
        for i in 0..good.len() {
            let in_prefix = i < raw_at
                || batches
                    .iter()
                    .any(|&b| (raw_at + b..raw_at + b + BATCH_PREFIX_BYTES).contains(&i));
            for bit in 0..8 {
                let mut bad = good.to_vec();
                bad[i] ^= 1 << bit;
                match Frame::from_bytes(Bytes::from(bad)) {
                    Err(_) => assert!(
                        in_prefix,
                        "byte {i} bit {bit}: the frame refused a batch byte its CRC does not cover"
                    ),
                    Ok(f) => {
                        assert!(!in_prefix, "byte {i} bit {bit} flipped was accepted");
                        assert!(
                            !batch_crc_ok(&f),
                            "byte {i} bit {bit} flipped passed the batch's CRC"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_raw_part_that_is_not_whole_batches_is_refused() {
        let b = batch(b"v");
        for raw in [
            b.slice(..b.len() - 1),
            b.slice(..30),
            [&b[..], &b[..10]].concat().into(),
        ] {
            assert!(matches!(
                encode_archived(Kind::ReplicaFetchReply, b"", vec![raw]),
                Err(ClusterFrameError::RawBatches(_))
            ));
        }
        // A batch cut anywhere between chunks frames as one buffer does.
        let whole = encode_archived(Kind::Heartbeats, b"x", vec![b.clone()]).unwrap();
        for cut in [1, 9, 20, 21, 22, 60, b.len() - 1] {
            let split = encode_archived(
                Kind::Heartbeats,
                b"x",
                vec![b.slice(..cut), Bytes::new(), b.slice(cut..)],
            )
            .unwrap();
            assert_eq!(split.head, whole.head, "cut at {cut}");
        }
    }

    #[test]
    fn headers_are_checked_before_anything_is_allocated() {
        let ok = encode(
            &Hello {
                cluster: "c".into(),
                node_id: 1,
                versions: (1, 1),
            },
            vec![],
        )
        .unwrap()
        .to_bytes();
        let header = |f: &dyn Fn(&mut [u8])| {
            let mut h: [u8; HEADER_BYTES] = ok[..HEADER_BYTES].try_into().unwrap();
            f(&mut h);
            parse_header(&h)
        };
        assert!(matches!(
            header(&|h| h[0] = b'K'),
            Err(ClusterFrameError::Magic(_))
        ));
        assert_eq!(
            header(&|h| h[4..6].copy_from_slice(&1u16.to_le_bytes())),
            Err(ClusterFrameError::Version(1))
        );
        assert_eq!(
            header(&|h| h[6..8].copy_from_slice(&999u16.to_le_bytes())),
            Err(ClusterFrameError::UnknownKind(999))
        );
        assert!(matches!(
            header(&|h| h[8..12].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(ClusterFrameError::BodyTooLarge { .. })
        ));
        assert!(matches!(
            header(&|h| h[12..16].copy_from_slice(&u32::MAX.to_le_bytes())),
            Err(ClusterFrameError::RawTooLarge { .. })
        ));
        assert_eq!(header(&|h| h[20] = 1), Err(ClusterFrameError::Reserved(1)));
        // Truncated and over-long frames.
        assert!(matches!(
            Frame::from_bytes(ok.slice(..ok.len() - 1)),
            Err(ClusterFrameError::Length { .. })
        ));
        assert!(matches!(
            Frame::from_bytes(ok.slice(..10)),
            Err(ClusterFrameError::Length { .. })
        ));
    }

    /// A body that passes the CRC (the sender computed it over garbage)
    /// but is not a valid archive is an error from validation.
    #[test]
    fn a_body_with_a_good_crc_but_bad_contents_fails_validation() {
        let (msg, raw) = fetch_reply();
        let body_len = encode(&msg, raw.clone()).unwrap().head.len() - HEADER_BYTES;
        for fill in [0x00u8, 0x7f, 0xff] {
            let out = encode_archived(Kind::ReplicaFetchReply, &vec![fill; body_len], raw.clone())
                .unwrap();
            let frame = Frame::from_bytes(out.to_bytes()).unwrap();
            assert!(
                frame.view::<ReplicaFetchReply>().is_err(),
                "a body of {fill:#x} bytes was accepted"
            );
        }
        // Too short to hold the root at all.
        let out = encode_archived(Kind::Heartbeats, &[1, 2, 3], vec![]).unwrap();
        let frame = Frame::from_bytes(out.to_bytes()).unwrap();
        assert!(matches!(
            frame.view::<Heartbeats>(),
            Err(ClusterFrameError::Invalid { .. })
        ));
    }

    #[test]
    fn a_frame_read_as_the_wrong_kind_or_with_the_wrong_raw_length_is_refused() {
        let (msg, mut raw) = fetch_reply();
        let frame = Frame::from_bytes(encode(&msg, raw.clone()).unwrap().to_bytes()).unwrap();
        assert!(matches!(
            frame.view::<Heartbeats>(),
            Err(ClusterFrameError::WrongKind { .. })
        ));
        raw.push(batch(b"extra"));
        let frame = Frame::from_bytes(encode(&msg, raw).unwrap().to_bytes()).unwrap();
        assert!(matches!(
            frame.view::<ReplicaFetchReply>(),
            Err(ClusterFrameError::RawMismatch { .. })
        ));
    }

    #[test]
    fn frames_stream_over_a_link_and_a_cut_link_is_an_error() {
        let (msg, raw) = fetch_reply();
        let hello = Hello {
            cluster: "c".into(),
            node_id: 1,
            versions: (1, 1),
        };
        let mut wire = Vec::new();
        futures_lite::future::block_on(async {
            write_frame(&mut wire, &encode(&hello, vec![]).unwrap())
                .await
                .unwrap();
            write_frame(&mut wire, &encode(&msg, raw.clone()).unwrap())
                .await
                .unwrap();
        });
        let whole = wire.clone();
        futures_lite::future::block_on(async {
            let mut r = futures_lite::io::Cursor::new(whole);
            let a = read_frame(&mut r).await.unwrap().unwrap();
            assert_eq!(a.decode::<Hello>().unwrap(), hello);
            let b = read_frame(&mut r).await.unwrap().unwrap();
            assert_eq!(b.decode::<ReplicaFetchReply>().unwrap(), msg);
            assert!(read_frame(&mut r).await.unwrap().is_none());
        });
        // Cut anywhere inside the second frame: an error, never a frame.
        let first = HEADER_BYTES + encode(&hello, vec![]).unwrap().head.len() - HEADER_BYTES;
        for cut in first + 1..wire.len() {
            futures_lite::future::block_on(async {
                let mut r = futures_lite::io::Cursor::new(wire[..cut].to_vec());
                read_frame(&mut r).await.unwrap().unwrap();
                assert!(read_frame(&mut r).await.is_err(), "cut at {cut}");
            });
        }
    }
}

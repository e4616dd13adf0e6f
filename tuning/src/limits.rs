//! Every limit and default that bounds memory, disk and queues, in one place.
//!
//! Names carry their unit last. Values that a topic may override (Kafka's
//! topic configs) have a `_DEFAULT`; hard ceilings that nothing may exceed
//! have a `_MAX`.

/// O_DIRECT alignment sluice assumes for every buffer, position and length.
/// 4096 covers both 512-byte and 4 KiB logical-block devices.
pub const DIRECT_IO_ALIGN_BYTES: usize = 4096;

/// Kafka's `segment.bytes` default: a segment rolls when it would exceed this.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Hard ceiling on `segment.bytes`. Index positions are 32-bit, so a segment
/// must stay below 4 GiB; Kafka caps it at i32::MAX and so do we.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;
/// Smallest `segment.bytes` accepted (Kafka's minimum is 14 bytes; we need
/// at least one page so a segment can hold a batch).
pub const SEGMENT_BYTES_MIN: u64 = DIRECT_IO_ALIGN_BYTES as u64;

/// Kafka's `segment.ms` default: 7 days.
pub const SEGMENT_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `retention.ms` default: 7 days. -1 means keep forever.
pub const RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `retention.bytes` default: -1, no size limit.
pub const RETENTION_BYTES_DEFAULT: i64 = -1;

/// Kafka's `max.message.bytes` default (1 MiB + 12 bytes of batch overhead):
/// the largest record batch a topic accepts.
pub const BATCH_BYTES_DEFAULT: usize = 1_048_588;
/// Hard ceiling on any record batch, whatever the topic says. Equal to the
/// largest request frame the broker will read.
pub const BATCH_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Most bytes a compressed batch may decompress to; Kafka checks a
/// compressed batch's records on append, and so does sluice, streaming,
/// so this bounds the CPU a batch can cost, not memory.
pub const BATCH_DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Compressed batches that decompress to at most this are checked on the
/// shard; larger ones on the executor's blocking pool, so no batch holds
/// a shard for more than about a millisecond of decompression.
pub const BATCH_DECOMPRESSED_INLINE_BYTES_MAX: usize = 1024 * 1024;

/// Bytes of log between two sparse index entries (Kafka's
/// `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;

/// Size of the aligned in-memory tail each active segment appends into.
/// A full tail is written to the file in one DMA write.
pub const TAIL_BUFFER_BYTES_DEFAULT: usize = 1024 * 1024;
/// Bounds on the tail buffer size.
pub const TAIL_BUFFER_BYTES_MIN: usize = DIRECT_IO_ALIGN_BYTES;
pub const TAIL_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Tail buffers written but not yet completed, per log, before an append
/// waits for the oldest (write-behind depth).
pub const WRITE_BEHIND_DEFAULT: usize = 4;
pub const WRITE_BEHIND_MAX: usize = 64;

/// Page-aligned allocations of this size range (direct-I/O buffers) are
/// served from a region of transparent huge pages, so each is physically
/// contiguous: one segment for the device instead of one per 4 KiB page.
pub const DMA_BLOCK_BYTES_MIN: usize = 64 * 1024;
pub const DMA_BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Address space reserved for those buffers, process-wide; its resident
/// size is the peak of the buffers in use at once. Past it, buffers come
/// from the ordinary heap.
pub const DMA_REGION_BYTES: usize = 1024 * 1024 * 1024;
/// Bytes of that region faulted in per shard at start-up (registered I/O
/// memory, tail buffers and read-ahead of a few partitions), so a shard
/// does not wait for a huge page on its first I/O.
pub const DMA_POPULATE_BYTES_PER_SHARD: usize = 16 * 1024 * 1024;

/// Size of one DMA read issued by the log when it reads from disk.
pub const READ_CHUNK_BYTES_DEFAULT: usize = 256 * 1024;
/// Bytes a cold read fetches from disk at once (as concurrent chunks), even
/// when the caller asked for less; the surplus goes into the cache so the
/// next sequential read is served from memory.
pub const READ_AHEAD_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
pub const READ_AHEAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Flush policy for appends nobody waits on: sync once this many bytes are
/// unsynced, or once the oldest unsynced append is this old.
pub const FLUSH_INTERVAL_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 1000;

/// Share of the machine's memory the shards' heaps take together, in
/// percent (`--shard-memory-bytes`, per shard, overrides it). Each shard
/// faults its heap in at start, before it serves: receive buffers and
/// cached batches come from it, never from fresh pages.
pub const SHARD_MEMORY_PERCENT_DEFAULT: u64 = 30;
/// Floor of a shard's heap.
pub const SHARD_MEMORY_BYTES_MIN: usize = 64 * 1024 * 1024;
/// The default cache budget is this share of the shard's heap (percent);
/// the rest holds requests in flight and the blocks' rounding to their
/// size classes (at most a quarter of a block).
pub const CACHE_SHARE_OF_HEAP_PERCENT: u64 = 75;
/// Allocations of this size range made on a shard's thread come from its
/// heap (smaller ones are the C allocator's, reused from its free lists;
/// larger ones, frames of more than 4 MiB, are rare).
pub const HEAP_BLOCK_BYTES_MIN: usize = 4096;
pub const HEAP_BLOCK_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most shards with a heap of their own.
pub const HEAP_PARTS_MAX: usize = 256;
/// Floor of the per-shard cache budget, so small machines still cache the
/// tail of a log.
pub const CACHE_BYTES_MIN: usize = 16 * 1024 * 1024;

/// glommio registers its I/O memory with each of an executor's three
/// io_uring rings, and the kernel charges every registration against
/// RLIMIT_MEMLOCK.
pub const IO_URING_RINGS_PER_EXECUTOR: u64 = 3;
/// Most I/O memory an executor registers; more gives no benefit because
/// larger buffers fall back to the ordinary allocator.
pub const IO_MEMORY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Smallest locked-memory limit glommio starts with at all.
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Submission depth of each io_uring ring of an executor.
pub const IO_RING_DEPTH: usize = 128;
/// Threads in each executor's blocking pool: directory listing, read-ahead
/// (see `LogConfig::read_ahead_on_pool`), and segment reads where the
/// device refuses io_uring O_DIRECT reads.
pub const BLOCKING_THREADS: usize = 4;
/// Segment reads a shard may have queued or running on its blocking pool
/// at once (each up to `READ_CHUNK_BYTES_DEFAULT`): enough that a thread
/// finishing a read finds the next one queued rather than waiting for the
/// shard to hand it over (with at most one read per thread, W4b's
/// catch-up ran at about half the rate), few enough that other blocking
/// work (metadata, directory listing) waits behind a few milliseconds of
/// reads at most.
pub const POOL_READS_IN_FLIGHT_MAX: usize = 32;

/// Largest request frame the broker reads (Kafka's socket.request.max.bytes
/// is 100 MiB); a longer length prefix closes the connection before
/// anything is allocated.
pub const FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Smallest request frame: api key, api version, correlation id and the
/// client id's length (request header v1).
pub const REQUEST_FRAME_BYTES_MIN: usize = 10;

/// Largest archived body of a node-to-node frame (`sluice_net::cluster`):
/// the metadata of one exchange (a heartbeat of every partition two nodes
/// share, a fetch's partition list), never record data. A header that
/// says more closes the link before anything is allocated.
pub const CLUSTER_FRAME_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest raw part of a node-to-node frame: the record batches of one
/// replica fetch answer.
pub const CLUSTER_FRAME_RAW_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Open client connections per shard; past this, new connections are
/// accepted and closed at once, with a log line.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;
/// After a failed accept (EMFILE and kin) a shard pauses its accepts
/// this long, doubling at each failure in a row up to the maximum.
pub const ACCEPT_BACKOFF_MS_MIN: u64 = 5;
pub const ACCEPT_BACKOFF_MS_MAX: u64 = 1_000;
/// Bytes read from a socket at once into a connection's receive buffer.
pub const SOCKET_READ_BYTES: usize = 64 * 1024;
/// Most room a connection's receive buffer makes ahead of a frame whose
/// length it does not know yet, sized by the frames it has been sent (so
/// a stream of large produce requests lands whole, each in one
/// allocation, instead of growing and copying the buffer as each
/// length becomes known).
pub const SOCKET_READ_AHEAD_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A batch smaller than this is copied out of its request when appended,
/// so the cache (which counts the batch's bytes) never pins the receive
/// buffer it shares with other requests; larger frames get a buffer of
/// their own (see the connection's read sizing).
pub const CACHE_COPY_BATCH_BYTES_MAX: usize = SOCKET_READ_BYTES;
/// Requests read from one connection and not yet answered; past this the
/// connection is not read until the oldest answer is written. (Producers
/// pipeline deeply: librdkafka allows a million in flight by default.)
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 128;
/// Bytes of request frames read from one connection and not yet answered;
/// past this the connection is not read (a single larger frame is still
/// read: it is bounded by `FRAME_BYTES_MAX`).
pub const INFLIGHT_REQUEST_BYTES_PER_CONNECTION_MAX: usize = 64 * 1024 * 1024;
/// Share of the machine's memory (percent) the shards together give to
/// request bytes read and not yet answered, and to receive-buffer room
/// (`--request-memory-bytes`, per shard, overrides it).
pub const REQUEST_MEMORY_PERCENT_DEFAULT: u64 = 5;
/// Least request memory a shard may have: one largest frame while its
/// buffer doubles (the old and the new allocation live at once).
pub const REQUEST_MEMORY_BYTES_MIN: usize = 2 * FRAME_BYTES_MAX;
/// Most request memory a shard gets by default, however large the machine.
pub const REQUEST_MEMORY_BYTES_DEFAULT_MAX: usize = 2 << 30;
/// Longest a connection waits for request memory before it is closed.
pub const REQUEST_MEMORY_WAIT_MS_MAX: u64 = 30_000;
/// A task that runs this long without yielding is logged as a stall
/// (`--stall-threshold-ms`).
pub const STALL_THRESHOLD_MS_DEFAULT: u64 = 10;
/// Jobs from other shards one shard runs at once (each its own task, so a
/// slow one, a disk read or a sync, holds up no other); past this its
/// inbox is not read until one ends.
pub const SHARD_INBOX_JOBS_IN_FLIGHT_MAX: usize = 256;
/// Consumer groups one shard's coordinator holds; a JoinGroup for a new
/// group past this is refused with POLICY_VIOLATION.
pub const GROUPS_PER_SHARD_MAX: usize = 100_000;
/// Members of one group, counting member ids handed out and not yet
/// joined (Kafka's group.max.size); past this a new member's JoinGroup is
/// refused with GROUP_MAX_SIZE_REACHED.
pub const GROUP_MEMBERS_MAX: usize = 10_000;
/// Committed offsets (group, topic, partition) one shard's coordinator
/// keeps; an OffsetCommit that would add keys past this is refused with
/// POLICY_VIOLATION (commits to keys already there still succeed).
pub const OFFSET_KEYS_PER_SHARD_MAX: usize = 1_000_000;
/// Messages queued to one shard from the others (forwarded requests,
/// metadata updates) before a sender waits.
pub const SHARD_INBOX_DEPTH: usize = 1024;
/// Longest topic name (Kafka's: a partition directory's name must fit a
/// file name with room for the partition suffix).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Longest group id, group instance id, protocol type or protocol name a
/// group request may store; longer is INVALID_GROUP_ID (the group id) or
/// INVALID_REQUEST. Stored ids are written with a 16-bit length.
pub const GROUP_NAME_BYTES_MAX: usize = 1024;
/// Longest client id a group member is stored with (JoinGroup); longer is
/// INVALID_REQUEST. Other requests only log it.
pub const CLIENT_ID_BYTES_MAX: usize = 1024;
/// Longest metadata string of a committed offset (Kafka's
/// offset.metadata.max.bytes); longer is OFFSET_METADATA_TOO_LARGE.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Protocols one JoinGroup may offer, and the bytes of their metadata
/// together (the subscription); bytes of one member's assignment in a
/// SyncGroup. Past them: INVALID_REQUEST.
pub const GROUP_PROTOCOLS_MAX: usize = 64;
pub const GROUP_MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;

/// Smallest `segment.bytes` and `segment.ms` a client may set on a topic
/// (defaults of `--segment-bytes-min` and `--segment-ms-min`): below them
/// a client could make every append roll a segment (three files each).
/// Redpanda bounds both the same way; Kafka lets 14 bytes and 1 ms pass.
pub const TOPIC_SEGMENT_BYTES_MIN_DEFAULT: u64 = 1024 * 1024;
pub const TOPIC_SEGMENT_MS_MIN_DEFAULT: i64 = 60_000;
/// Partitions (of every topic together) a broker holds per shard, by
/// default (`--partitions-per-shard-max`); past shards times this,
/// CreateTopics and CreatePartitions are refused with POLICY_VIOLATION.
/// Each open partition holds three descriptors, a tail buffer, a flusher
/// and its share of housekeeping; a debug build took 15 s to open 2 000
/// at once here, and a fuzzer growing a topic to thousands of partitions
/// kept both shards of a test broker too busy to answer within 10 s.
/// Redpanda's `topic_partitions_per_shard` defaults to the same.
pub const PARTITIONS_PER_SHARD_MAX_DEFAULT: usize = 1_000;

/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Topics one broker holds.
pub const TOPICS_MAX: usize = 10_000;
/// Bytes of records one fetch answer carries at most, whatever the client
/// asks (the first batch is still returned whole when it is larger: KIP-74).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest long-poll a fetch may ask for.
pub const FETCH_WAIT_MS_MAX: u64 = 60_000;
/// Producer ids the controller reserves durably at once; a restart skips
/// the unused rest of a block, so ids are never handed out twice.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// Recent batches remembered per idempotent producer and partition, to
/// answer a retried batch with its first offsets (Kafka keeps 5).
pub const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// Idempotent producers remembered per partition; the least recently seen
/// is forgotten past this.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
/// How often each shard runs its housekeeping: retention passes and
/// producer-state checkpoints of the partitions it owns.
pub const HOUSEKEEPING_INTERVAL_MS: u64 = 10_000;
/// How often each coordinator checks its groups' session and rebalance
/// timeouts.
pub const GROUP_TICK_MS: u64 = 100;
/// Session timeouts a group member may ask for (Kafka's
/// group.min/max.session.timeout.ms).
pub const GROUP_SESSION_TIMEOUT_MS_MIN: i32 = 1_000;
pub const GROUP_SESSION_TIMEOUT_MS_MAX: i32 = 1_800_000;
/// Segment size of each shard's internal offsets log: small, so that
/// compaction can delete whole segments soon after a checkpoint.
pub const OFFSETS_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Partitions of a cluster's internal offsets topic (Kafka's
/// offsets.topic.num.partitions, 50 there): groups spread over this many
/// coordinators. Fixed when the topic is created.
pub const OFFSETS_TOPIC_PARTITIONS: usize = 12;
/// Replicas of the offsets topic's partitions: this many, or every node
/// of a smaller cluster (Kafka's offsets.topic.replication.factor).
pub const OFFSETS_TOPIC_REPLICAS_MAX: usize = 3;
/// Bytes appended to an offsets log before it is compacted (at least; and
/// at least twice its last checkpoint).
pub const OFFSETS_COMPACT_BYTES_MIN: u64 = 64 * 1024 * 1024;
/// How often committed offsets are checked for expiry.
pub const OFFSETS_EXPIRY_CHECK_MS: u64 = 60_000;
/// Kafka's offsets.retention.minutes default: 7 days.
pub const OFFSETS_RETENTION_MINUTES_DEFAULT: u64 = 7 * 24 * 60;

/// Allocations at least this large get their own mapping from the C
/// allocator (returned to the kernel when freed); smaller ones come from
/// its heap and are reused. Above the largest request frame.
pub const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 256 << 20;
/// Free memory at the top of the C allocator's heap beyond this is handed
/// back to the kernel.
pub const MALLOC_TRIM_THRESHOLD_BYTES: i32 = 1 << 30;

/// How long an idle shard keeps polling before it sleeps in the kernel.
/// Waking a sleeping core costs tens of microseconds on a virtual machine;
/// a request that lands inside the window skips that (the same trade as
/// Seastar's idle poll, whose default is also 200 µs).
pub const IDLE_POLL_US_DEFAULT: u64 = 200;
/// The longest idle poll accepted: past this a shard is just spinning.
pub const IDLE_POLL_US_MAX: u64 = 10_000;

/// How often the broker looks for new io_uring workers to give real-time
/// priority (see `io_workers`). A worker started between two looks runs
/// at normal priority until the next: reading /proc/self/task costs tens
/// of microseconds on a thread of its own.
pub const IO_WORKER_SCAN_MS: u64 = 50;
/// The SCHED_FIFO priority of io_uring workers: the lowest, above every
/// normal thread and below any real-time thread of the host's own.
pub const IO_WORKER_FIFO_PRIORITY: i32 = 1;

/// The node-to-node port when `--cluster` names none for a node.
pub const REPLICATION_PORT_DEFAULT: u16 = 9093;

/// Milliseconds without a controller before a node calls an election
/// (`--election-timeout-ms`); each node waits a random amount more, up
/// to as much again. The metadata log ticks ten times per timeout.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 500;
/// The range `--election-timeout-ms` accepts: below it, a busy host's
/// scheduling delays alone would call elections.
pub const ELECTION_TIMEOUT_MS_RANGE: (u64, u64) = (100, 60_000);

/// Raft messages waiting to go to one node; past this, new ones are
/// dropped (Raft sends again what is lost).
pub const CLUSTER_LINK_QUEUE_MAX: usize = 1024;

/// Node-to-node connections a node holds open at once: each other
/// node's metadata-log link and its followers' fetch links.
pub const NODE_LINKS_MAX: usize = 4096;

/// Partitions one replica fetch may name.
pub const REPLICA_FETCH_PARTITIONS_MAX: usize = 10_000;

/// The longest a leader holds a replica fetch with nothing to send.
pub const REPLICA_FETCH_WAIT_MS_MAX: u32 = 5_000;

/// The longest a stop (SIGINT or SIGTERM) may take before the process
/// exits without finishing it.
pub const SHUTDOWN_SECS_MAX: u64 = 60;

/// How long a stopping shard waits for its connections to finish the
/// requests they had read (a long-poll fetch answers at once; a join
/// waiting for a rebalance may not) before it closes its logs anyway.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;

/// How long a starting node of a cluster waits to join it before giving up
/// seeding the cluster's users and ACLs from its data directory.
pub const CLUSTER_SEED_SECURITY_WAIT_S: u64 = 300;

/// The admin endpoint's default port (`--admin-listen`), as Redpanda's.
pub const ADMIN_PORT_DEFAULT: u16 = 9644;

//! A run: find or create the topic, start one pinned executor per core
//! with its share of producers and consumers, print a line a second,
//! merge every worker's histograms at the end.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_net::client::{Client, ClientError};
use sluice_net::consumer::Fetcher;
use sluice_net::group::GroupMember;
use sluice_net::producer::{Producer, ProducerConfig};

use crate::args::LoadgenArgs;
use crate::payload::{stamp_of, KeyGen, Keys, Payload, Values};
use crate::rate::{Next, Schedule};
use crate::report::{Report, Second};
use crate::stats::{error_name, Stats};

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Args(String),
    #[error("topic {0}: {1}")]
    Topic(String, String),
    /// A partition error a retry may cure (see `retriable`).
    #[error("topic {0}: {1}")]
    Retriable(String, String),
    #[error("cannot start a worker: {0}")]
    Worker(String),
    #[error("cannot write {0}: {1}")]
    Write(std::path::PathBuf, std::io::Error),
}

/// Microseconds since the Unix epoch (what records carry).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// How long consumers keep reading after the producers stop, waiting for
/// every acknowledged message.
const DRAIN: Duration = Duration::from_secs(10);

/// The topic as the run sees it: every partition's leader address.
pub struct Layout {
    pub topic: String,
    pub leaders: Vec<String>,
}

fn metadata(c: &mut Client, topic: &str) -> Result<Option<Layout>, LoadgenError> {
    let (_, r): (i16, MetadataResponse) =
        c.call(ApiKey::Metadata, (4, 12), |_| metadata_request(topic))?;
    match r.topics.first().map(|t| t.error_code) {
        None | Some(3) => return Ok(None), // UNKNOWN_TOPIC_OR_PARTITION
        Some(0) => {}
        Some(e) => return Err(LoadgenError::Topic(topic.into(), error_name(e))),
    }
    Ok(Some(Layout {
        topic: topic.to_string(),
        leaders: leaders_of(&r),
    }))
}

/// A Metadata request for `topic` alone, creating nothing.
fn metadata_request(topic: &str) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]))
        .with_allow_auto_topic_creation(false)
}

/// The leader address of every partition of the answer's first topic
/// (empty where there is none).
fn leaders_of(r: &MetadataResponse) -> Vec<String> {
    let brokers: BTreeMap<i32, String> = r
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let Some(t) = r.topics.first() else {
        return Vec::new();
    };
    let mut leaders = vec![String::new(); t.partitions.len()];
    for p in &t.partitions {
        if let Some(l) = leaders.get_mut(p.partition_index as usize) {
            *l = brokers.get(&p.leader_id.0).cloned().unwrap_or_default();
        }
    }
    leaders
}

/// The topic's layout, creating it with `partitions` when it is missing.
pub fn ensure_topic(c: &mut Client, topic: &str, partitions: i32) -> Result<Layout, LoadgenError> {
    if let Some(l) = metadata(c, topic)? {
        return Ok(l);
    }
    let (_, r): (i16, CreateTopicsResponse) = c.call(ApiKey::CreateTopics, (4, 7), |_| {
        CreateTopicsRequest::default()
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(-1)])
            .with_timeout_ms(30_000)
    })?;
    if let Some(t) = r.topics.first() {
        if t.error_code != 0 && t.error_code != 36 {
            return Err(LoadgenError::Topic(
                topic.into(),
                format!(
                    "cannot create: {}{}",
                    error_name(t.error_code),
                    t.error_message
                        .as_ref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    for _ in 0..50 {
        if let Some(l) = metadata(c, topic)? {
            if l.leaders.iter().all(|a| !a.is_empty()) {
                return Ok(l);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LoadgenError::Topic(
        topic.into(),
        "no leaders after creation".into(),
    ))
}

/// Kafka errors that mean the client's idea of a partition's leader is out
/// of date.
fn stale_leader(code: i16) -> bool {
    matches!(
        code,
        3 | 6 | 74 | 75 | sluice_net::producer::CONNECTION_FAILED
    )
}

/// The topic's leaders, asked of `bootstrap` from a shard thread.
async fn leaders_now(bootstrap: &str, topic: &str) -> Result<Vec<String>, String> {
    let mut stream = glommio::net::TcpStream::connect(bootstrap)
        .await
        .map_err(|e| format!("cannot connect to {bootstrap}: {e}"))?;
    let r: MetadataResponse = sluice_net::aio::call(
        &mut stream,
        bootstrap,
        ApiKey::Metadata,
        9,
        1,
        &metadata_request(topic),
    )
    .await
    .map_err(|e| e.to_string())?;
    if r.topics.is_empty() {
        return Err("no topic in the answer".into());
    }
    Ok(leaders_of(&r))
}

/// The address of `group`'s coordinator.
fn find_coordinator(c: &mut Client, group: &str) -> Result<String, LoadgenError> {
    let (_, r): (i16, FindCoordinatorResponse) = c.call(ApiKey::FindCoordinator, (1, 3), |_| {
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0)
    })?;
    if r.error_code != 0 {
        return Err(LoadgenError::Topic(
            group.into(),
            format!("no coordinator: {}", error_name(r.error_code)),
        ));
    }
    Ok(format!("{}:{}", r.host, r.port))
}

/// The end offset of every partition.
pub fn end_offsets(c: &mut Client, layout: &Layout) -> Result<Vec<i64>, LoadgenError> {
    offsets(c, layout, -1)
}

/// Every partition's offset at `timestamp` (-1: the end, -2: the start),
/// asked of each partition's leader (of a cluster, another node than the
/// one `c` talks to).
pub fn offsets(c: &mut Client, layout: &Layout, timestamp: i64) -> Result<Vec<i64>, LoadgenError> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (p, leader) in layout.leaders.iter().enumerate() {
        by_leader.entry(leader.as_str()).or_default().push(p as i32);
    }
    let mut out = vec![0i64; layout.leaders.len()];
    for (leader, partitions) in by_leader {
        // A topic created a moment ago may not be on its leader yet (a
        // node of a cluster applies it a little after the one that
        // answered the creation): retriable errors are asked again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut lc = None;
        loop {
            let r = if leader == c.addr() || leader.is_empty() {
                offsets_of(c, layout, &partitions, timestamp, &mut out)
            } else {
                let lc = match &mut lc {
                    Some(lc) => lc,
                    None => lc.insert(Client::connect(leader, std::time::Duration::from_secs(10))?),
                };
                offsets_of(lc, layout, &partitions, timestamp, &mut out)
            };
            match r {
                Err(LoadgenError::Retriable(..)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(LoadgenError::Retriable(topic, why)) => {
                    return Err(LoadgenError::Topic(topic, why))
                }
                r => break r?,
            }
        }
    }
    Ok(out)
}

/// Errors of a partition a retry may cure: not yet there, or moving.
fn retriable(code: i16) -> bool {
    use kafka_protocol::ResponseError as E;
    [
        E::UnknownTopicOrPartition,
        E::LeaderNotAvailable,
        E::NotLeaderOrFollower,
        E::OffsetNotAvailable,
        E::UnknownLeaderEpoch,
        E::RequestTimedOut,
    ]
    .iter()
    .any(|e| e.code() == code)
}

fn offsets_of(
    c: &mut Client,
    layout: &Layout,
    partitions: &[i32],
    timestamp: i64,
    out: &mut [i64],
) -> Result<(), LoadgenError> {
    let (_, r): (i16, ListOffsetsResponse) = c.call(ApiKey::ListOffsets, (1, 6), |_| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(layout.topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )])
    })?;
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                let why = format!(
                    "end offset of {}: {}",
                    p.partition_index,
                    error_name(p.error_code)
                );
                return Err(if retriable(p.error_code) {
                    LoadgenError::Retriable(layout.topic.clone(), why)
                } else {
                    LoadgenError::Topic(layout.topic.clone(), why)
                });
            }
            if let Some(o) = out.get_mut(p.partition_index as usize) {
                *o = p.offset;
            }
        }
    }
    Ok(())
}

/// State shared by every worker.
struct Shared {
    start_us: u64,
    measure_from_us: u64,
    /// Producing ends at this time (duration runs).
    produce_until_us: Option<u64>,
    /// Producing stops once this many payload bytes are acknowledged.
    byte_quota: Option<u64>,
    /// Consumers stop at these offsets.
    catch_up: Option<Vec<i64>>,
    /// Every partition's next offset to read, handed between consumers as
    /// the group's assignment moves partitions.
    positions: std::sync::Mutex<Vec<i64>>,
    coordinator: String,
    group: String,
    bootstrap: String,
    producers_left: AtomicUsize,
    acked: AtomicU64,
    acked_bytes: AtomicU64,
    consumed: AtomicU64,
    stop: AtomicBool,
}

/// A worker's counters: this second's and the measured run's.
#[derive(Default)]
struct WorkerStats {
    second: Stats,
    total: Stats,
}

type Tick = (u64, Stats);

struct Plan {
    producers: Vec<(usize, u64)>,
    consumers: usize,
}

pub fn run(args: LoadgenArgs, out: &mut dyn std::io::Write) -> Result<Report, LoadgenError> {
    let payload: Payload = args.payload.parse().map_err(LoadgenError::Args)?;
    let keys: Keys = args.keys.parse().map_err(LoadgenError::Args)?;
    KeyGen::new(keys.clone(), args.key_count, 1).map_err(LoadgenError::Args)?;
    if args.producers == 0 && args.consumers == 0 {
        return Err(LoadgenError::Args(
            "nothing to do: --producers 0 --consumers 0".into(),
        ));
    }
    if args.partitions < 1 {
        return Err(LoadgenError::Args("--partitions must be at least 1".into()));
    }
    if args.backlog.is_some() && args.producers == 0 {
        return Err(LoadgenError::Args("--backlog needs producers".into()));
    }
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("loadgen-{}-{}", std::process::id(), now_us() / 1_000_000));
    let mut client = Client::connect(&args.bootstrap, Duration::from_secs(5))?;
    let layout = Arc::new(ensure_topic(&mut client, &topic, args.partitions)?);
    let coordinator = if args.consumers > 0 {
        find_coordinator(&mut client, &format!("{topic}-group"))?
    } else {
        String::new()
    };
    let ctx = Ctx {
        coordinator,
        args: &args,
        layout: layout.clone(),
        allowed: sluice_tuning::host::allowed_cpus(),
        payload,
        keys,
    };
    let produce_quota = |j: usize| match args.messages {
        Some(m) => m / args.producers as u64 + u64::from((j as u64) < m % args.producers as u64),
        None => u64::MAX,
    };
    let (series, total, produce_secs, consume_secs) = if let Some(backlog) = args.backlog {
        // The backlog first, as fast as the producers go; then the
        // consumers read it from where it starts, and that is measured.
        let starts = offsets(&mut client, &layout, -1)?;
        let _ = writeln!(out, "writing a backlog of {backlog} bytes");
        let produced = ctx.phase(
            Phase {
                producers: (0..args.producers).map(|j| (j, u64::MAX)).collect(),
                byte_quota: Some(backlog),
                ..Phase::default()
            },
            out,
        )?;
        let ends = offsets(&mut client, &layout, -1)?;
        let _ = writeln!(out, "reading the backlog back");
        let consumed = ctx.catch_up(starts, ends, out)?;
        let mut total = produced.1;
        total.merge(&consumed.1);
        let mut series = produced.0;
        series.extend(consumed.0);
        (series, total, produced.2, consumed.2)
    } else if args.producers == 0 {
        // Catch-up only: everything the topic holds now.
        let starts = offsets(&mut client, &layout, -2)?;
        let ends = offsets(&mut client, &layout, -1)?;
        let (series, total, secs) = ctx.catch_up(starts, ends, out)?;
        (series, total, secs, secs)
    } else {
        let ends = offsets(&mut client, &layout, -1)?;
        let (series, total, secs) = ctx.phase(
            Phase {
                producers: (0..args.producers).map(|j| (j, produce_quota(j))).collect(),
                consumers: args.consumers,
                starts: ends,
                warmup: args.warmup,
                duration: args.messages.is_none().then_some(args.duration),
                ..Phase::default()
            },
            out,
        )?;
        (series, total, secs, secs)
    };
    let report = Report::new(
        args.clone(),
        topic,
        &total,
        produce_secs,
        consume_secs,
        series,
    );
    let _ = write!(out, "{}", report.summary());
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("serializable");
        std::fs::write(p, text).map_err(|e| LoadgenError::Write(p.clone(), e))?;
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, report.csv()).map_err(|e| LoadgenError::Write(p.clone(), e))?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, crate::html::page(&report))
            .map_err(|e| LoadgenError::Write(p.clone(), e))?;
    }
    Ok(report)
}

/// What one phase of a run does.
#[derive(Default)]
struct Phase {
    /// (producer number, message quota)
    producers: Vec<(usize, u64)>,
    /// Producing stops once this many payload bytes are acknowledged.
    byte_quota: Option<u64>,
    /// Consumers, in one group.
    consumers: usize,
    /// Where reading starts in each partition.
    starts: Vec<i64>,
    /// Consumers stop at these end offsets (catch-up), and measure no
    /// end-to-end latency (the messages were written before).
    catch_up: Option<Vec<i64>>,
    warmup: Duration,
    /// Producing stops after the warm-up and this long.
    duration: Option<Duration>,
}

struct Ctx<'a> {
    args: &'a LoadgenArgs,
    /// The consumer group's coordinator (empty without consumers).
    coordinator: String,
    layout: Arc<Layout>,
    allowed: Vec<usize>,
    payload: Payload,
    keys: Keys,
}

impl Ctx<'_> {
    /// The consumers reading from `starts` up to `ends`, measured.
    fn catch_up(
        &self,
        starts: Vec<i64>,
        ends: Vec<i64>,
        out: &mut dyn std::io::Write,
    ) -> Result<(Vec<Second>, Stats, f64), LoadgenError> {
        self.phase(
            Phase {
                consumers: self.args.consumers,
                starts,
                catch_up: Some(ends),
                ..Phase::default()
            },
            out,
        )
    }

    /// Runs a phase on one pinned executor per core (producers and
    /// consumers dealt round-robin); prints a line a second. Returns the
    /// series, the measured totals and the measured seconds.
    fn phase(
        &self,
        phase: Phase,
        out: &mut dyn std::io::Write,
    ) -> Result<(Vec<Second>, Stats, f64), LoadgenError> {
        let cpus = self.allowed.len().max(1);
        let workers = self
            .args
            .cores
            .unwrap_or(cpus)
            .clamp(1, cpus)
            .min((phase.producers.len() + phase.consumers).max(1));
        let mut plans: Vec<Plan> = (0..workers)
            .map(|_| Plan {
                producers: Vec::new(),
                consumers: 0,
            })
            .collect();
        let np = phase.producers.len();
        for (i, p) in phase.producers.into_iter().enumerate() {
            plans[i % workers].producers.push(p);
        }
        for k in 0..phase.consumers {
            plans[(np + k) % workers].consumers += 1;
        }
        let start_us = now_us() + 50_000;
        let measure_from_us = start_us + phase.warmup.as_micros() as u64;
        let shared = Arc::new(Shared {
            start_us,
            measure_from_us,
            produce_until_us: phase
                .duration
                .map(|d| measure_from_us + d.as_micros() as u64),
            byte_quota: phase.byte_quota,
            catch_up: phase.catch_up,
            positions: std::sync::Mutex::new(phase.starts),
            coordinator: self.coordinator.clone(),
            group: format!("{}-group", self.layout.topic),
            bootstrap: self.args.bootstrap.clone(),
            producers_left: AtomicUsize::new(np),
            acked: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let (tick_tx, tick_rx) = flume::bounded::<Tick>(4096);
        let (done_tx, done_rx) = flume::bounded::<Stats>(workers);
        let mut handles = Vec::new();
        let rate_limited = self.args.rate.is_some();
        for (w, plan) in plans.into_iter().enumerate() {
            let (args, shared, layout) = (self.args.clone(), shared.clone(), self.layout.clone());
            let (payload, keys) = (self.payload.clone(), self.keys.clone());
            let (tick_tx, done_tx) = (tick_tx.clone(), done_tx.clone());
            let placement = match self.allowed.get(w) {
                Some(&cpu) => Placement::Fixed(cpu),
                None => Placement::Unbound,
            };
            let h = LocalExecutorBuilder::new(placement)
                .name(&format!("loadgen-{w}"))
                .io_memory(256 << 10)
                // At a fixed rate, poll a while before sleeping, as the
                // broker does: a worker that sleeps between sends adds its
                // own wake-up time to every latency it measures. Flat out
                // it never idles but to wait for answers, where polling
                // would only burn CPU.
                .spin_before_park(if rate_limited {
                    IDLE_POLL
                } else {
                    Duration::ZERO
                })
                .spawn(move || async move {
                    let total = worker(plan, args, payload, keys, shared, layout, tick_tx).await;
                    let _ = done_tx.send(total);
                })
                .map_err(|e| LoadgenError::Worker(e.to_string()))?;
            handles.push(h);
        }
        drop(tick_tx);
        drop(done_tx);
        // One line a second, once every worker has reported that second.
        let mut seconds: BTreeMap<u64, (usize, Stats)> = BTreeMap::new();
        let mut series = Vec::new();
        let measure_second = (measure_from_us - start_us) / 1_000_000;
        for (s, st) in tick_rx.iter() {
            let e = seconds.entry(s).or_default();
            e.0 += 1;
            e.1.merge(&st);
            while let Some((&first, (n, _))) = seconds.iter().next() {
                if *n < workers {
                    break;
                }
                let (_, st) = seconds.remove(&first).expect("present");
                let sec = Second::of(first, first < measure_second, &st);
                let _ = writeln!(out, "{}", sec.line());
                series.push(sec);
            }
        }
        for (first, (_, st)) in seconds {
            series.push(Second::of(first, first < measure_second, &st));
        }
        let mut finished_us = 0u64;
        for h in handles {
            let _ = h.join();
        }
        let mut total = Stats::default();
        for st in done_rx.iter() {
            finished_us = finished_us.max(st.finished_us);
            total.merge(&st);
        }
        let measured = match shared.produce_until_us {
            Some(until) => (until - measure_from_us) as f64 / 1e6,
            None => finished_us.saturating_sub(measure_from_us) as f64 / 1e6,
        };
        Ok((series, total, measured))
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    plan: Plan,
    args: LoadgenArgs,
    payload: Payload,
    keys: Keys,
    shared: Arc<Shared>,
    layout: Arc<Layout>,
    tick_tx: flume::Sender<Tick>,
) -> Stats {
    let stats = Rc::new(RefCell::new(WorkerStats::default()));
    let mut tasks = Vec::new();
    for (j, quota) in plan.producers {
        let (args, payload, keys) = (args.clone(), payload.clone(), keys.clone());
        let (shared, layout, stats) = (shared.clone(), layout.clone(), stats.clone());
        tasks.push(glommio::spawn_local(async move {
            if let Err(e) = produce(j, quota, &args, &payload, keys, &shared, &layout, &stats).await
            {
                stats.borrow_mut().second.error(&e, 1);
                stats.borrow_mut().total.error(&e, 1);
            }
            shared.producers_left.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for _ in 0..plan.consumers {
        let (shared, layout, stats) = (shared.clone(), layout.clone(), stats.clone());
        tasks.push(glommio::spawn_local(async move {
            if let Err(e) = consume(&shared, &layout, &stats).await {
                let e = format!("consume: {e}");
                stats.borrow_mut().second.error(&e, 1);
                stats.borrow_mut().total.error(&e, 1);
            }
        }));
    }
    let running = Rc::new(std::cell::Cell::new(tasks.len()));
    let ticker = {
        let (stats, shared, running) = (stats.clone(), shared.clone(), running.clone());
        glommio::spawn_local(async move {
            let mut s = 0u64;
            loop {
                // The second's end, or soon after the last task ends (its
                // partial second is the last tick).
                let due = shared.start_us + (s + 1) * 1_000_000;
                loop {
                    let now = now_us();
                    if now >= due || running.get() == 0 {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_micros((due - now).min(20_000))).await;
                }
                let st = std::mem::take(&mut stats.borrow_mut().second);
                let _ = tick_tx.send_async((s, st)).await;
                s += 1;
                if running.get() == 0 {
                    break;
                }
            }
        })
    };
    for t in tasks {
        t.await;
        running.set(running.get() - 1);
    }
    let finished_us = now_us();
    ticker.await;
    let mut total = std::mem::take(&mut stats.borrow_mut().total);
    total.finished_us = finished_us;
    total
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    j: usize,
    quota: u64,
    args: &LoadgenArgs,
    payload: &Payload,
    keys: Keys,
    shared: &Arc<Shared>,
    layout: &Layout,
    stats: &Rc<RefCell<WorkerStats>>,
) -> Result<(), String> {
    let cfg = ProducerConfig {
        acks: args.acks,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.max_in_flight,
        compression: args.compression.0,
        timeout_ms: 30_000,
    };
    let measure_from = shared.measure_from_us;
    // Set when an answer says the leaders moved: the loop asks for them
    // again before the next batch.
    let stale_flag = Rc::new(std::cell::Cell::new(false));
    let on_ack = {
        let (stats, shared, stale) = (stats.clone(), shared.clone(), stale_flag.clone());
        move |ack: sluice_net::producer::Ack| {
            let now = now_us();
            let mut st = stats.borrow_mut();
            let n = ack.stamps.len() as u64;
            if ack.error != 0 {
                if stale_leader(ack.error) {
                    stale.set(true);
                }
                let e = error_name(ack.error);
                st.second.error(&e, 1);
                if ack.stamps.first().is_some_and(|s| *s >= measure_from) {
                    st.total.error(&e, 1);
                }
                return;
            }
            shared.acked.fetch_add(n, Ordering::SeqCst);
            shared
                .acked_bytes
                .fetch_add(ack.payload_bytes, Ordering::SeqCst);
            let per_msg = ack.payload_bytes / n.max(1);
            let measured = ack.stamps.iter().filter(|s| **s >= measure_from).count() as u64;
            st.second.produced += n;
            st.second.produced_bytes += ack.payload_bytes;
            st.total.produced += measured;
            // A batch straddling the warm-up's end: its measured share
            // of bytes by the average message.
            st.total.produced_bytes += if measured == n {
                ack.payload_bytes
            } else {
                per_msg * measured
            };
            for s in &ack.stamps {
                let lat = now.saturating_sub(*s);
                st.second.produce_latency.record(lat);
                if *s >= measure_from {
                    st.total.produce_latency.record(lat);
                }
            }
        }
    };
    let mut producer = Producer::new(cfg, &layout.topic, layout.leaders.clone(), on_ack);
    let avg = (args.message_bytes.0 + args.message_bytes.1) as f64 / 2.0;
    let schedule = Schedule::new(
        shared.start_us,
        args.rate.map(|r| r.messages_per_sec(avg)),
        args.producers,
    );
    let mut values = Values::new(payload, args.message_bytes, j as u64 + 1);
    let mut keys = KeyGen::new(keys, args.key_count, j as u64 + 7).map_err(|e| e.to_string())?;
    let n = layout.leaders.len() as u32;
    let mut sticky = (j as u32) % n;
    let mut i = 0u64;
    let wait_start = shared.start_us.saturating_sub(now_us());
    glommio::timer::sleep(Duration::from_micros(wait_start)).await;
    while i < quota && !shared.stop.load(Ordering::Relaxed) {
        let now = now_us();
        if shared.produce_until_us.is_some_and(|u| now >= u)
            || shared
                .byte_quota
                .is_some_and(|q| shared.acked_bytes.load(Ordering::Relaxed) >= q)
        {
            break;
        }
        let intended = match schedule.next(i, now) {
            Next::Wait(d) => {
                let linger = producer.send_lingering().await.map_err(|e| e.to_string())?;
                let d = linger.map_or(d, |l| l.min(d));
                // Long waits end early, then the rest is waited for while
                // the executor polls (it polls for `SPIN_AHEAD` before it
                // would sleep again), so the send is on time.
                let t = crate::rate::sleep_before_due(d).unwrap_or(d);
                glommio::timer::sleep(t).await;
                continue;
            }
            Next::Send { intended_us } => intended_us,
        };
        if intended >= measure_from {
            stats
                .borrow_mut()
                .total
                .send_lag
                .record(now.saturating_sub(intended));
        }
        if stale_flag.replace(false) {
            let leaders = leaders_now(&args.bootstrap, &layout.topic).await?;
            producer.set_leaders(leaders);
        }
        let key = keys.next_key();
        let partition = match key {
            Some(k) => crc32c::crc32c(k) % n,
            None => sticky,
        } as i32;
        let (stamp, rest) = values.next_parts(intended);
        let sent_before = producer.batches_sent();
        producer
            .send_parts(
                partition,
                key,
                &[&stamp, rest],
                (intended / 1000) as i64,
                intended,
            )
            .await
            .map_err(|e| e.to_string())?;
        // Without keys, a partition's batch fills and then the next one's
        // (the sticky partitioner).
        if key.is_none() && producer.batches_sent() != sent_before {
            sticky = (sticky + 1) % n;
        }
        i += 1;
        if i.is_multiple_of(256) {
            producer.send_lingering().await.map_err(|e| e.to_string())?;
            glommio::executor().yield_if_needed().await;
        }
    }
    producer.close().await.map_err(|e| e.to_string())
}

/// How long an idle worker polls before it sleeps, at a fixed rate: as
/// long as a sender's early wake-up, so the rest of its wait is polled.
const IDLE_POLL: Duration = crate::rate::SPIN_AHEAD;

/// How often a consumer heartbeats its group.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(300);

/// One member of the run's consumer group: reads the partitions the group
/// gives it from the shared positions, and hands them back on a
/// rebalance.
async fn consume(
    shared: &Arc<Shared>,
    layout: &Layout,
    stats: &Rc<RefCell<WorkerStats>>,
) -> Result<(), String> {
    let partitions = layout.leaders.len() as i32;
    glommio::timer::sleep(Duration::from_micros(
        shared.start_us.saturating_sub(now_us()),
    ))
    .await;
    let mut member = GroupMember::connect(&shared.coordinator, &shared.group, &layout.topic)
        .await
        .map_err(|e| e.to_string())?;
    let r = consume_as_member(&mut member, partitions, shared, layout, stats).await;
    member.leave().await;
    r
}

/// One fetcher per leader of `positions`' partitions.
async fn fetchers_for(
    leaders: &[String],
    topic: &str,
    positions: Vec<(i32, i64)>,
) -> Result<Vec<Fetcher>, String> {
    let mut by_leader: std::collections::BTreeMap<&str, Vec<(i32, i64)>> = Default::default();
    for (p, o) in positions {
        let leader = leaders
            .get(p as usize)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| format!("partition {p} has no leader"))?;
        by_leader.entry(leader).or_default().push((p, o));
    }
    let mut out = Vec::with_capacity(by_leader.len());
    for (leader, positions) in by_leader {
        out.push(
            Fetcher::connect(leader, topic, positions)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

/// Counts and times every record one fetch brings; returns the records
/// and bytes it saw.
fn on_record(
    stats: Rc<RefCell<WorkerStats>>,
    catch_up: bool,
    measure_from: u64,
    seen: Rc<std::cell::Cell<(u64, u64)>>,
) -> impl FnMut(i32, sluice_net::records::RecordView<'_>) {
    move |_, r| {
        let mut st = stats.borrow_mut();
        let bytes = (r.value.map_or(0, |v| v.len()) + r.key.map_or(0, |k| k.len())) as u64;
        st.second.consumed += 1;
        st.second.consumed_bytes += bytes;
        if catch_up {
            // A catch-up measures throughput only: no clock read nor
            // stamp parsed per record.
            st.total.consumed += 1;
            st.total.consumed_bytes += bytes;
        } else if let Some(s) = r.value.and_then(stamp_of) {
            let lat = now_us().saturating_sub(s);
            st.second.end_to_end_latency.record(lat);
            if s >= measure_from {
                st.total.end_to_end_latency.record(lat);
                st.total.consumed += 1;
                st.total.consumed_bytes += bytes;
            }
        }
        let (n, b) = seen.get();
        seen.set((n + 1, b + bytes));
    }
}

async fn consume_as_member(
    member: &mut GroupMember,
    partitions: i32,
    shared: &Arc<Shared>,
    layout: &Layout,
    stats: &Rc<RefCell<WorkerStats>>,
) -> Result<(), String> {
    let measure_from = shared.measure_from_us;
    let catch_up = shared.catch_up.as_ref();
    let mut drained_since: Option<std::time::Instant> = None;
    let mut leaders = layout.leaders.clone();
    'generation: loop {
        let mine = member.join(partitions).await.map_err(|e| e.to_string())?;
        let positions: Vec<(i32, i64)> = {
            let all = shared.positions.lock().expect("not poisoned");
            mine.iter().map(|p| (*p, all[*p as usize])).collect()
        };
        let mut fetchers = fetchers_for(&leaders, &layout.topic, positions).await?;
        let mut beat = std::time::Instant::now();
        loop {
            let done = match catch_up {
                Some(ends) => shared
                    .positions
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .zip(ends)
                    .all(|(o, e)| o >= e),
                None if shared.producers_left.load(Ordering::SeqCst) == 0 => {
                    let since = *drained_since.get_or_insert_with(std::time::Instant::now);
                    shared.consumed.load(Ordering::SeqCst) >= shared.acked.load(Ordering::SeqCst)
                        || since.elapsed() > DRAIN
                }
                None => false,
            };
            if done {
                // What was read is committed, as a consumer would: the
                // group's lag then shows what was left unread.
                let mut mine: Vec<i32> = fetchers
                    .iter()
                    .flat_map(|f| f.positions().iter().map(|(p, _)| *p))
                    .collect();
                for _ in 0..10 {
                    let offsets: Vec<(i32, i64)> = {
                        let all = shared.positions.lock().expect("not poisoned");
                        mine.iter().map(|p| (*p, all[*p as usize])).collect()
                    };
                    if !member.commit(&offsets).await.map_err(|e| e.to_string())? {
                        return Ok(());
                    }
                    // Members that finished first left: take what the
                    // group gives now and commit that.
                    mine = member.join(partitions).await.map_err(|e| e.to_string())?;
                }
                return Err("offsets not committed: the group kept rebalancing".into());
            }
            if beat.elapsed() >= HEARTBEAT_INTERVAL {
                beat = std::time::Instant::now();
                if member.heartbeat().await.map_err(|e| e.to_string())? {
                    continue 'generation;
                }
            }
            if fetchers.is_empty() {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let draining = shared.producers_left.load(Ordering::SeqCst) == 0 || catch_up.is_some();
            // Every leader at once: a fetch waiting on an idle leader
            // does not hold up the others.
            let seen = Rc::new(std::cell::Cell::new((0u64, 0u64)));
            let polls: Vec<_> = fetchers
                .drain(..)
                .map(|mut f| {
                    if draining {
                        f.max_wait_ms = 20;
                    }
                    let cb = on_record(
                        stats.clone(),
                        catch_up.is_some(),
                        measure_from,
                        seen.clone(),
                    );
                    glommio::spawn_local(async move {
                        let got = f.poll(cb).await;
                        (f, got)
                    })
                })
                .collect();
            let mut errors = Vec::new();
            let mut failed = None;
            for poll in polls {
                let (f, got) = poll.await;
                match got {
                    Ok(got) => errors.extend(got.errors),
                    Err(e) => failed = Some(e.to_string()),
                }
                {
                    let mut all = shared.positions.lock().expect("not poisoned");
                    for (p, o) in f.positions() {
                        all[*p as usize] = *o;
                    }
                }
                fetchers.push(f);
            }
            shared.consumed.fetch_add(seen.get().0, Ordering::SeqCst);
            if let Some(e) = failed {
                return Err(e);
            }
            let mut stale = false;
            for (_, code) in errors {
                stale |= stale_leader(code);
                let e = format!("consume: {}", error_name(code));
                stats.borrow_mut().second.error(&e, 1);
                stats.borrow_mut().total.error(&e, 1);
            }
            if stale {
                // Leaders moved: read from the new ones, from here.
                leaders = leaders_now(&shared.bootstrap, &layout.topic).await?;
                let positions: Vec<(i32, i64)> = fetchers
                    .iter()
                    .flat_map(|f| f.positions().iter().copied())
                    .collect();
                fetchers = fetchers_for(&leaders, &layout.topic, positions).await?;
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

//! Consumer groups as librdkafka uses them: subscribe() with three
//! consumers on a 12-partition topic, a member leaving, a member expelled
//! for missing heartbeats, commits, and committed offsets surviving a clean
//! restart and a kill -9. The broker runs on two shards, so group requests
//! are forwarded to the group's coordinator shard.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wire::{name, Wire};
use common::{free_port, tempdir, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const SHARDS: usize = 2;
const PARTITIONS: i32 = 12;

fn create_topic(b: &Broker, topic: &str, partitions: i32) {
    let a: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .unwrap();
    let r = futures_lite::future::block_on(a.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(r[0].is_ok(), "{r:?}");
}

fn produce(b: &Broker, topic: &str, n: usize) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in 0..n {
        let k = format!("k{i}");
        let mut rec = BaseRecord::to(topic).key(&k).payload("v");
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// librdkafka's log lines about offsets, assignment and fetching, kept
/// per partition (bounded) so a violation can say where a consumer's
/// position came from.
#[derive(Clone, Default)]
struct OffsetLog(Arc<Mutex<HashMap<i32, std::collections::VecDeque<String>>>>);

/// Lines kept per partition (and for lines that name none, key -1).
const LOG_LINES_PER_PARTITION: usize = 600;

/// The partition a librdkafka line is about: the first `[N]` in it.
fn line_partition(line: &str) -> i32 {
    line.split('[')
        .skip(1)
        .find_map(|rest| rest.split(']').next()?.parse().ok())
        .unwrap_or(-1)
}

impl OffsetLog {
    fn lines(&self, partition: i32) -> Vec<String> {
        let q = self.0.lock().unwrap();
        let mut out: Vec<String> = q.get(&-1).into_iter().flatten().cloned().collect();
        out.extend(q.get(&partition).into_iter().flatten().cloned());
        out.sort();
        out
    }
}

impl rdkafka::ClientContext for OffsetLog {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        let l = line.to_ascii_lowercase();
        if l.contains("offset") || l.contains("reset") || l.contains("assign") {
            // Timestamped, so lines of several rings merge in order.
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            let mut all = self.0.lock().unwrap();
            let q = all.entry(line_partition(line)).or_default();
            if q.len() >= LOG_LINES_PER_PARTITION {
                q.pop_front();
            }
            q.push_back(format!("{at} {fac}: {line}"));
        }
    }
}
impl rdkafka::consumer::ConsumerContext for OffsetLog {}

fn consumer(b: &Broker, group: &str, log: OffsetLog) -> BaseConsumer<OffsetLog> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("partition.assignment.strategy", "range")
        .set("debug", "cgrp,topic,fetch")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug)
        .create_with_context(log)
        .unwrap()
}

/// What the consumer threads saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// (partition, offset) -> times consumed.
    consumed: HashMap<(i32, i64), u32>,
    /// partition -> highest committed next offset.
    committed: HashMap<i32, i64>,
    /// Reads of an offset below what the group had committed for it.
    violations: Vec<String>,
    /// consumer -> its current assignment.
    assigned: BTreeMap<usize, BTreeSet<i32>>,
}

fn run_consumer(
    b: &Broker,
    idx: usize,
    topic: &'static str,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let log = OffsetLog::default();
    let c = consumer(b, "g", log.clone());
    std::thread::spawn(move || {
        c.subscribe(&[topic]).unwrap();
        let mut since_commit = 0;
        while !stop.load(Ordering::Relaxed) {
            let got = c.poll(Duration::from_millis(100));
            let assigned: BTreeSet<i32> = c
                .assignment()
                .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            seen.lock().unwrap().assigned.insert(idx, assigned);
            let Some(Ok(m)) = got else { continue };
            let (p, o) = (m.partition(), m.offset());
            {
                let mut s = seen.lock().unwrap();
                if let Some(&c) = s.committed.get(&p) {
                    if o < c {
                        // With what librdkafka said about this partition.
                        let lines = log.lines(p);
                        s.violations.push(format!(
                            "consumer {idx} read {p}:{o} below committed {c}; librdkafka:\n{}",
                            lines.join("\n")
                        ));
                    }
                }
                *s.consumed.entry((p, o)).or_default() += 1;
            }
            since_commit += 1;
            if since_commit >= 50 {
                since_commit = 0;
                // What the group has committed, as the coordinator answers
                // it (the consumer's own position can already include a
                // partition assigned after the commit).
                if c.commit_consumer_state(CommitMode::Sync).is_ok() {
                    if let Ok(pos) = c.committed(Duration::from_secs(10)) {
                        let mut s = seen.lock().unwrap();
                        for e in pos.elements() {
                            if let Offset::Offset(o) = e.offset() {
                                let v = s.committed.entry(e.partition()).or_default();
                                *v = (*v).max(o);
                            }
                        }
                    }
                }
            }
        }
        // Leaving: commit what was processed, then leave the group.
        let _ = c.commit_consumer_state(CommitMode::Sync);
        seen.lock().unwrap().assigned.remove(&idx);
        leave(&c);
    })
}

/// Leaves the group before the consumer is dropped: unsubscribe (LeaveGroup)
/// and poll until librdkafka has revoked the assignment. Dropping a
/// consumer while a rebalance is still queued for it can hang for ever in
/// librdkafka's close path (its rd_kafka_assign from the revoke callback
/// is never served, confluentinc/librdkafka#4884); it hung this test once.
fn leave<C: rdkafka::consumer::ConsumerContext>(c: &BaseConsumer<C>) {
    c.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let _ = c.poll(Duration::from_millis(50));
        if c.assignment().map_or(true, |a| a.count() == 0) {
            break;
        }
    }
    // Whatever the revoke left queued is served before the drop closes.
    for _ in 0..4 {
        let _ = c.poll(Duration::from_millis(25));
    }
}

/// Joins a consumer thread, failing (not hanging) if it has not finished
/// within `secs`.
fn join_within(t: std::thread::JoinHandle<()>, secs: u64) {
    wait_until("a consumer stops", secs, || t.is_finished());
    t.join().unwrap();
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The assignments of the running consumers are disjoint and cover every
/// partition.
fn split_among(seen: &Mutex<Seen>, members: usize) -> bool {
    let s = seen.lock().unwrap();
    let sets: Vec<&BTreeSet<i32>> = s.assigned.values().collect();
    let total: usize = sets.iter().map(|a| a.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flat_map(|a| a.iter().copied()).collect();
    sets.len() == members
        && sets.iter().all(|a| !a.is_empty())
        && total == PARTITIONS as usize
        && union.len() == PARTITIONS as usize
}

/// A group member speaking the protocol by hand: it joins with a consumer
/// subscription for `topic`, syncs, then falls silent.
fn silent_member(port: u16, topic: &str) {
    let mut w = Wire::connect(port);
    let r: FindCoordinatorResponse = w.call(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
    );
    assert_eq!(r.error_code, 0);
    let meta = common::wire::subscription(topic);
    let join = |w: &mut Wire, member: &str| -> JoinGroupResponse {
        w.call(
            ApiKey::JoinGroup,
            5,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_session_timeout_ms(2_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_group_instance_id(None)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(meta.clone())]),
        )
    };
    let first = join(&mut w, "");
    assert_eq!(
        first.error_code,
        kafka_protocol::ResponseError::MemberIdRequired.code()
    );
    let joined = join(&mut w, &first.member_id);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let synced: SyncGroupResponse = w.call(
        ApiKey::SyncGroup,
        3,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_group_instance_id(None),
    );
    assert_eq!(synced.error_code, 0);
    assert!(
        !synced.assignment.is_empty(),
        "the leader gave the silent member partitions"
    );
    // No heartbeat from here on.
}

// Three consumers split twelve partitions; one leaves and the other two
// take its partitions; a member that stops heartbeating is expelled and
// its partitions come back. Every message is processed at least once and
// no consumer ever reads below what the group has committed.
//
// The group starts from committed offsets (0 for every partition, as an
// application seeding its group would): with none, librdkafka resets by
// auto.offset.reset through ListOffsets, and a ListOffsets answer that
// arrives after the partition was revoked and assigned again (it waits
// behind the connection's long-polling Fetch) is "outdated", which re-arms
// librdkafka's offset query timer for BEGINNING; the partition then
// starts at its committed offset and, 500 ms later, that timer rewinds it
// to 0 ("timed offset query for offset BEGINNING in state active" in its
// debug log). The client re-reads a partition from 0 whichever broker it
// talks to; this test checks the group coordinator, not that race.
#[test]
fn consumers_share_partitions_through_leave_and_expiry() {
    let data = tempdir();
    let port = free_port();
    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    create_topic(&b, "grp", PARTITIONS);
    produce(&b, "grp", 3_000);
    {
        let c = consumer(&b, "g", OffsetLog::default());
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset("grp", p, Offset::Offset(0))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut threads: Vec<Option<std::thread::JoinHandle<()>>> = (0..3)
        .map(|i| Some(run_consumer(&b, i, "grp", seen.clone(), stops[i].clone())))
        .collect();
    wait_until("three consumers split the partitions", 60, || {
        split_among(&seen, 3)
    });

    // One leaves: the two others take all twelve.
    stops[2].store(true, Ordering::Relaxed);
    join_within(threads[2].take().unwrap(), 60);
    wait_until("two consumers cover the partitions", 60, || {
        split_among(&seen, 2)
    });
    produce(&b, "grp", 3_000);

    // A member that joins and falls silent gets partitions, then is
    // expelled at its session timeout; the two take them back.
    silent_member(port, "grp");
    wait_until("the silent member holds partitions", 60, || {
        let s = seen.lock().unwrap();
        s.assigned.values().map(|a| a.len()).sum::<usize>() < PARTITIONS as usize
    });
    wait_until("the silent member is expelled", 60, || {
        split_among(&seen, 2)
    });
    produce(&b, "grp", 3_000);

    wait_until("every message is consumed", 90, || {
        let s = seen.lock().unwrap();
        s.consumed.len() == 9_000
    });
    for (i, s) in stops.iter().enumerate() {
        s.store(true, Ordering::Relaxed);
        if let Some(t) = threads[i].take() {
            join_within(t, 60);
        }
    }
    let s = seen.lock().unwrap();
    if !s.violations.is_empty() {
        // The broker's side: fetches it refused as out of range, groups.
        let broker: Vec<String> = b
            .drain(Duration::from_millis(200))
            .lines()
            .filter(|l| l.contains("OFFSET_OUT_OF_RANGE") || l.contains("group"))
            .map(String::from)
            .collect();
        panic!("{:#?}\nbroker:\n{}", s.violations, broker.join("\n"));
    }
    // Offsets per partition are 0..n with none missing.
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in s.consumed.keys() {
        per.entry(p).or_default().push(o);
    }
    for (p, mut offs) in per {
        offs.sort_unstable();
        assert!(
            offs.iter().enumerate().all(|(i, &o)| o == i as i64),
            "partition {p} has gaps"
        );
    }
}

fn committed(b: &Broker, group: &str, topic: &str) -> Vec<i64> {
    let c = consumer(b, group, OffsetLog::default());
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(20)).unwrap();
    (0..4)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            Offset::Invalid => -1,
            other => panic!("partition {p}: {other:?}"),
        })
        .collect()
}

// Committed offsets (with metadata) survive a clean restart and a kill -9
// once the commit was answered, and the group is listed and described.
#[test]
fn committed_offsets_survive_restart_and_kill() {
    let data = tempdir();
    let port = free_port();
    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    create_topic(&b, "kept", 4);
    produce(&b, "kept", 400);
    let commit = |b: &Broker, group: &str, base: i64| {
        let c = consumer(b, group, OffsetLog::default());
        let mut tpl = TopicPartitionList::new();
        for p in 0..4 {
            tpl.add_partition_offset("kept", p, Offset::Offset(base + p as i64))
                .unwrap();
        }
        c.commit(&tpl, CommitMode::Sync).unwrap();
    };
    commit(&b, "g-clean", 10);
    commit(&b, "g-kill", 20);
    let mut w = Wire::connect(port);
    let listed: ListGroupsResponse = w.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let mut names: Vec<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["g-clean", "g-kill"]);
    let described: DescribeGroupsResponse = w.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("g-kill"))]),
    );
    assert_eq!(described.groups[0].group_state.as_str(), "Empty");
    drop(w);
    b.stop();

    let mut b = Broker::start_on(data.path(), SHARDS, port, &[]);
    assert_eq!(committed(&b, "g-clean", "kept"), [10, 11, 12, 13]);
    commit(&b, "g-kill", 30);
    b.kill();

    let b = Broker::start_on(data.path(), SHARDS, port, &[]);
    assert_eq!(committed(&b, "g-kill", "kept"), [30, 31, 32, 33]);
    assert_eq!(committed(&b, "g-clean", "kept"), [10, 11, 12, 13]);
    // A group that never committed has nothing.
    let mut w = Wire::connect(port);
    let r: OffsetFetchResponse = w.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("never")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("kept"))
                    .with_partition_indexes(vec![0]),
            ])),
    );
    assert_eq!(r.topics[0].partitions[0].committed_offset, -1);

    // OffsetDelete removes one partition's commit; DeleteGroups removes a
    // group and all its commits; an unknown group is not found.
    let r: OffsetDeleteResponse = w.call(
        ApiKey::OffsetDelete,
        0,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g-clean")))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name("kept"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]),
    );
    assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(committed(&b, "g-clean", "kept")[1..], [11, 12, 13]);
    let r: DeleteGroupsResponse = w.call(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default().with_groups_names(vec![
            GroupId(StrBytes::from_static_str("g-kill")),
            GroupId(StrBytes::from_static_str("never")),
        ]),
    );
    let codes: Vec<i16> = r.results.iter().map(|g| g.error_code).collect();
    assert_eq!(
        codes,
        [0, kafka_protocol::ResponseError::GroupIdNotFound.code()]
    );
    let listed: ListGroupsResponse = w.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let names: Vec<String> = listed
        .groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect();
    assert_eq!(names, ["g-clean"]);
}

/// Counts the rebalances a consumer goes through.
#[derive(Clone, Default)]
struct Rebalances(Arc<std::sync::atomic::AtomicUsize>);

impl rdkafka::ClientContext for Rebalances {}
impl rdkafka::consumer::ConsumerContext for Rebalances {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        _: &rdkafka::consumer::Rebalance<'_>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn static_consumer(b: &Broker, instance: &str, ctx: Rebalances) -> BaseConsumer<Rebalances> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "static")
        .set("group.instance.id", instance)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "300")
        .set("partition.assignment.strategy", "range")
        .create_with_context(ctx)
        .unwrap()
}

fn assigned<C: rdkafka::consumer::ConsumerContext>(c: &BaseConsumer<C>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls both consumers until `done` holds of their assignments.
fn poll_until<A: rdkafka::consumer::ConsumerContext, B: rdkafka::consumer::ConsumerContext>(
    a: &BaseConsumer<A>,
    b: &BaseConsumer<B>,
    what: &str,
    done: impl Fn(&BTreeSet<i32>, &BTreeSet<i32>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = a.poll(Duration::from_millis(50));
        let _ = b.poll(Duration::from_millis(50));
        if done(&assigned(a), &assigned(b)) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
    }
}

// A static member (group.instance.id) that restarts within its session
// timeout gets its partitions back without a rebalance: the other member
// goes through no rebalance at all, and keeps its partitions throughout.
#[test]
fn static_member_restarts_without_a_rebalance() {
    let data = tempdir();
    let b = Broker::start(data.path(), SHARDS, &[]);
    create_topic(&b, "stat", 4);
    let ra = Rebalances::default();
    let a = static_consumer(&b, "a", ra.clone());
    a.subscribe(&["stat"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&a).len() != 4 {
        let _ = a.poll(Duration::from_millis(50));
        assert!(Instant::now() < deadline, "a alone gets every partition");
    }
    let c1 = static_consumer(&b, "b", Rebalances::default());
    c1.subscribe(&["stat"]).unwrap();
    poll_until(&a, &c1, "a and b split the partitions", |x, y| {
        x.len() == 2 && y.len() == 2 && x.is_disjoint(y)
    });
    let before = ra.0.load(Ordering::SeqCst);
    let (a_parts, b_parts) = (assigned(&a), assigned(&c1));
    // b stops without leaving (static members do not send LeaveGroup) and
    // comes back with the same instance id.
    drop(c1);
    let c2 = static_consumer(&b, "b", Rebalances::default());
    c2.subscribe(&["stat"]).unwrap();
    poll_until(&a, &c2, "b has its partitions back", |_, y| *y == b_parts);
    for _ in 0..20 {
        let _ = a.poll(Duration::from_millis(50));
        assert_eq!(assigned(&a), a_parts, "a keeps its partitions");
    }
    assert_eq!(ra.0.load(Ordering::SeqCst), before, "a saw no rebalance");
}

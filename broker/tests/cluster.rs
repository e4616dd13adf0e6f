//! Three `sluice serve` processes on loopback form a cluster: they elect a
//! controller over the metadata log, register, and a Kafka client pointed
//! at any one sees all three; a controller killed with SIGKILL is replaced
//! and rejoins as a follower from its journal, the partitions it led
//! having moved to live in-sync replicas; a node of another cluster
//! is refused; a damaged journal stops its node's start with a clear
//! error. Waits are bounded; nothing here asserts a duration.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::{free_port, run_sluice, tempdir, Broker, BIN};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

#[test]
fn three_nodes_elect_a_controller_and_replace_a_dead_one() {
    let dir = tempdir();
    let (mut nodes, repl, spec) = start_three(dir.path());
    // Every node registered and reachable, one controller, as any node
    // reports it.
    let all = |s: &Value| reachable(s) == vec![1, 2, 3] && s["controller"].is_i64();
    let first = wait_status(nodes[1].port, "three nodes and a controller", all);
    let controller = first["controller"].as_i64().unwrap() as i32;
    let committed = first["metadata_committed"].as_i64().unwrap();
    assert!(committed >= 4, "registrations committed: {first}");
    let cluster_id = first["cluster_id"].as_str().unwrap().to_string();
    for n in &nodes {
        let s = wait_status(n.port, "the same view from every node", all);
        assert_eq!(s["cluster_id"], cluster_id.as_str());
    }

    // A Kafka client pointed at one node is told of all three.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{}", nodes[2].port))
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut seen: Vec<(i32, i32)> = md.brokers().iter().map(|b| (b.id(), b.port())).collect();
    seen.sort();
    let want: Vec<(i32, i32)> = nodes.iter().map(|n| (n.id, n.port as i32)).collect();
    assert_eq!(seen, want);

    topics_on_three_nodes(&nodes);

    // Every follower in sync first: a partition whose ISR holds only the
    // dead node waits for it (no unclean election) and would not move.
    for t in ["orders", "strict", "solo"] {
        wait_isr(&format!("127.0.0.1:{}", nodes[0].port), t, |isr| {
            isr.len() == 3
        });
    }

    // kill -9 the controller: the other two elect one of themselves and
    // report the dead node unreachable; the committed index goes on.
    let ci = nodes.iter().position(|n| n.id == controller).unwrap();
    nodes[ci].broker.take().unwrap().kill();
    let other = nodes[(ci + 1) % 3].port;
    let after = wait_status(other, "a new controller", |s| {
        s["controller"].is_i64()
            && s["controller"].as_i64() != Some(controller as i64)
            && !reachable(s).contains(&(controller as i64))
            && reachable(s).len() == 2
    });
    assert!(after["metadata_committed"].as_i64().unwrap() >= committed);
    assert!(after["metadata_term"].as_i64() > first["metadata_term"].as_i64());

    // Failover: the new controller gives every partition the dead node
    // led to a live in-sync replica, under a new leader epoch, and drops
    // the dead node from every ISR. acks=all goes on where
    // min.insync.replicas (2) still holds, and is refused where it asks
    // for all three.
    let dead = controller;
    let live = format!("127.0.0.1:{other}");
    let moved = |ps: &[(i32, Vec<i32>)]| {
        !ps.is_empty()
            && ps
                .iter()
                .all(|(leader, isr)| *leader != dead && *leader >= 0 && !isr.contains(&dead))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let strict = loop {
        let (s, o, so) = (
            partitions(&live, "strict"),
            partitions(&live, "orders"),
            partitions(&live, "solo"),
        );
        if moved(&s) && moved(&o) && moved(&so) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the dead node kept leaders or ISR places: {s:?} {o:?} {so:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let controller_now = after["controller"].as_i64().unwrap() as i32;
    let new_controller = nodes.iter_mut().find(|n| n.id == controller_now).unwrap();
    let b = new_controller.broker.as_mut().unwrap();
    assert!(b.wait_for("failover: proposing"), "{:#?}", b.seen);
    for p in 0..partitions(&live, "orders").len() {
        assert_eq!(acks_all(&live, "orders", p as i32, 3), vec![None; 3]);
    }
    for p in 0..strict.len() {
        assert_eq!(
            acks_all(&live, "strict", p as i32, 1),
            vec![Some(RDKafkaErrorCode::NotEnoughReplicas)]
        );
    }
    // Every message acknowledged with acks=all before the kill is served
    // by the new leaders.
    wait_solo(&live, &[1, 9]);
    // The partitions the dead node led are at a later leader epoch; where
    // epoch 0 ends is answered from the new leader's epoch history (the
    // nine messages of partition 1 were all written in epoch 0), and a
    // request naming a stale epoch is fenced.
    let epochs = leader_epochs(&live, "solo");
    let p1 = epochs[1];
    let ends = offset_for_leader_epoch(&live, "solo", 1, p1, 0);
    assert_eq!(ends, (0, 0, 9), "solo-1 at {p1:?}");
    if p1.1 > 0 {
        let fenced = offset_for_leader_epoch(&live, "solo", 1, (p1.0, p1.1 - 1), 0);
        assert_eq!(fenced.0, 74, "FENCED_LEADER_EPOCH expected: {fenced:?}");
    }
    assert!(
        epochs
            .iter()
            .chain(leader_epochs(&live, "orders").iter())
            .any(|&(_, e)| e > 0),
        "no partition changed leader: {epochs:?}"
    );

    // It comes back from its journal and rejoins as a follower, caught up.
    nodes[ci].broker = Some(start(&nodes[ci], &spec));
    let back = wait_status(nodes[ci].port, "the old controller rejoined", |s| {
        all(s)
            && s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["metadata_lag"] == 0)
    });
    assert!(back["metadata_committed"].as_i64().unwrap() > committed);
    let b = nodes[ci].broker.as_mut().unwrap();
    assert!(
        b.wait_for("caught up with the metadata log"),
        "{:#?}",
        b.seen
    );
    // It fetches what it missed and its leaders take it back into their
    // ISRs.
    wait_isr(&live, "orders", |isr| isr.len() == 3);
    wait_isr(&live, "strict", |isr| isr.len() == 3);

    // Its partitions came back with their data: every message
    // acknowledged with acks=all before the kill is still there, asked of
    // each leader through the restarted node.
    wait_solo(&format!("127.0.0.1:{}", nodes[ci].port), &[1, 9]);

    // Hostile bytes at a node-to-node port: a frame with a bad checksum,
    // then garbage, each on its own connection; the node closes them and
    // the cluster goes on.
    for bytes in [
        {
            let mut f = b"SLCF".to_vec();
            f.extend_from_slice(&[1, 0, 1, 0]);
            f.extend_from_slice(&[0; 16]);
            f
        },
        b"GET / HTTP/1.1\r\n\r\n".repeat(20),
    ] {
        use std::io::{Read, Write};
        let mut t = std::net::TcpStream::connect(("127.0.0.1", repl[0].1)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = t.write_all(&bytes);
        let mut buf = [0u8; 64];
        // Closed by the node: end of stream (or a reset), no answer.
        assert!(matches!(t.read(&mut buf), Ok(0) | Err(_)));
    }
    wait_status(nodes[0].port, "the cluster after hostile bytes", all);

    // A node given another cluster's list is refused by the others: its
    // links say so, and it never joins their status.
    let stranger = Node {
        id: 9,
        port: free_port(),
        data: dir.path().join("stranger"),
        broker: None,
    };
    let mut other_spec = repl.clone();
    other_spec.push((9, free_port()));
    let mut s = start(&stranger, &cluster_spec(&other_spec));
    assert!(s.wait_for("refused: node 9 is of cluster"), "{:#?}", s.seen);
    let st = status(nodes[0].port).unwrap();
    assert!(st["nodes"].as_array().unwrap().iter().all(|n| n["id"] != 9));
    s.kill();

    // A damaged journal: the node does not start, and says why.
    let victim = &mut nodes[0];
    victim.broker.take().unwrap().kill();
    let journal = victim.data.join("cluster").join("metalog.journal");
    let mut bytes = std::fs::read(&journal).unwrap();
    assert!(bytes.len() > 64);
    bytes[20] ^= 0x40;
    std::fs::write(&journal, &bytes).unwrap();
    let id = victim.id.to_string();
    let out = Broker::command(
        &victim.data,
        1,
        victim.port,
        &["--node-id", &id, "--cluster", &spec],
        &[],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metadata journal") && err.contains("damaged at byte"),
        "{err}"
    );
}

/// Topics on a cluster, through librdkafka: created on one node with
/// three replicas per partition (leaders spread, one per node), visible
/// from every node with leader, epoch, replicas and ISR; an acks=1
/// producer given one node reaches every leader and a consumer reads it
/// all back; acks=all is refused with NOT_ENOUGH_REPLICAS while the
/// followers are not in sync (replication is the next step), and works
/// on a topic whose min.insync.replicas is 1.
fn topics_on_three_nodes(nodes: &[Node]) {
    let boot = |i: usize| format!("127.0.0.1:{}", nodes[i].port);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", boot(0))
        .create()
        .unwrap();
    // The committed-offsets topic is the cluster's own: listed with a
    // replica on every node (created once the nodes registered; waited
    // for first, so the leaders below spread over what it leads),
    // never created, deleted or written by clients.
    let internal = "__sluice_offsets";
    let ps = wait_isr(&boot(0), internal, |isr| isr.len() == 3);
    assert_eq!(ps.len(), 12, "{ps:?}");
    let topics = [
        NewTopic::new("orders", 3, TopicReplication::Fixed(3)),
        NewTopic::new("solo", 2, TopicReplication::Fixed(3)).set("min.insync.replicas", "1"),
        NewTopic::new("too-wide", 1, TopicReplication::Fixed(4)),
        NewTopic::new("strict", 3, TopicReplication::Fixed(3)).set("min.insync.replicas", "3"),
    ];
    let r =
        futures_lite::future::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap();
    assert!(r[0].is_ok() && r[1].is_ok() && r[3].is_ok(), "{r:?}");
    assert!(
        matches!(&r[2], Err((_, RDKafkaErrorCode::InvalidReplicationFactor))),
        "{r:?}"
    );
    let r = futures_lite::future::block_on(admin.create_topics(
        &[NewTopic::new(internal, 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    assert!(
        matches!(&r[0], Err((_, RDKafkaErrorCode::InvalidTopic))),
        "{r:?}"
    );
    let r = futures_lite::future::block_on(admin.delete_topics(&[internal], &AdminOptions::new()))
        .unwrap();
    assert!(
        matches!(&r[0], Err((_, RDKafkaErrorCode::InvalidTopic))),
        "{r:?}"
    );
    let (code, _, err) = run_sluice(&["produce", internal, "--bootstrap", &boot(0)], Some("x\n"));
    assert_ne!(code, 0, "a client's write to the offsets topic: {err}");
    // Every node answers with the same leaders, all three leading one.
    let mut leaders_seen = Vec::new();
    for i in 0..3 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", boot(i))
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let leaders = loop {
            let md = c
                .fetch_metadata(Some("orders"), Duration::from_secs(10))
                .unwrap();
            let t = &md.topics()[0];
            if t.error().is_none() && t.partitions().len() == 3 {
                for p in t.partitions() {
                    assert_eq!(p.replicas().len(), 3, "{:?}", p.replicas());
                    assert!(p.isr().contains(&p.leader()), "{:?}", p.isr());
                    assert!(p.isr().iter().all(|n| p.replicas().contains(n)));
                }
                break t
                    .partitions()
                    .iter()
                    .map(|p| p.leader())
                    .collect::<Vec<_>>();
            }
            assert!(Instant::now() < deadline, "orders not on node {i}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut sorted = leaders.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3], "one leader per node");
        leaders_seen.push(leaders);
    }
    assert!(leaders_seen.windows(2).all(|w| w[0] == w[1]));

    // acks=1 through one bootstrap node: librdkafka sends each partition
    // to its leader.
    let producer = |acks: &str| -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", boot(1))
            .set("acks", acks)
            .set("retries", "0")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "20000")
            .create()
            .unwrap()
    };
    let p = producer("1");
    for i in 0..30 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        p.send(
            BaseRecord::to("orders")
                .partition(i % 3)
                .key(&key)
                .payload(&value),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(p.in_flight_count(), 0);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot(2))
        .set("group.id", "cluster-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["orders"]).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 30 && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    got.sort();
    let mut want: Vec<String> = (0..30).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(got, want);

    // The followers fetch what their leaders hold and stay in the ISR.
    wait_isr(&boot(0), "orders", |isr| isr.len() == 3);

    // `sluice topic describe` on any node: each partition's leader,
    // replicas and ISR, and the offsets asked of each leader.
    let out = sluice_ok(&[
        "topic",
        "describe",
        "orders",
        "--json",
        "--bootstrap",
        &boot(0),
    ]);
    let d: Value = serde_json::from_str(&out).unwrap();
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["leader"], leaders_seen[0][i], "{d}");
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3, "{d}");
        assert_eq!(p["isr"].as_array().unwrap().len(), 3, "{d}");
        assert_eq!(p["messages"], 10, "{d}");
    }

    // acks=all is answered once every in-sync replica has the batch on
    // disk.
    for p in 0..3 {
        assert_eq!(acks_all(&boot(1), "orders", p, 5), vec![None; 5]);
    }
    assert_eq!(acks_all_error(&boot(1), "solo"), None);
    // `sluice produce` and `sluice consume` through one node reach every
    // partition's leader: 45 messages so far, 9 more.
    let lines: String = (0..9).map(|i| format!("cli-{i}\n")).collect();
    sluice_ok_with(
        &["produce", "orders", "--bootstrap", &boot(2)],
        Some(&lines),
    );
    let b0 = boot(0);
    let out = sluice_ok(&[
        "consume",
        "orders",
        "--from",
        "beginning",
        "--format",
        "%s\n",
        "--bootstrap",
        &b0,
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 54, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("cli-")).count(), 9);
    // The load generator through one node: a new topic with three
    // replicas, acks=all producers and a consumer, each partition at its
    // leader, nothing lost and no error.
    let report =
        std::env::temp_dir().join(format!("sluice-cluster-lg-{}.json", std::process::id()));
    sluice_ok(&[
        "loadgen",
        "--bootstrap",
        &b0,
        "--partitions",
        "3",
        "--messages",
        "3000",
        "--message-bytes",
        "200",
        "--consumers",
        "1",
        "--json",
        report.to_str().unwrap(),
    ]);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    assert_eq!(r["produce"]["messages"], 3000, "{r}");
    assert_eq!(r["consume"]["messages"], 3000, "{r}");
    assert_eq!(r["produce"]["errors"], serde_json::json!({}), "{r}");
    // Producer ids from different nodes never collide: each node hands
    // out a block the metadata log allocated to it.
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut c = sluice_net::client::Client::connect(&boot(i), Duration::from_secs(10)).unwrap();
        for _ in 0..2 {
            use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse};
            let (_, r): (i16, InitProducerIdResponse) = c
                .call(ApiKey::InitProducerId, (0, 4), |_| {
                    InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(1000)
                })
                .unwrap();
            assert_eq!(r.error_code, 0, "{r:?}");
            ids.push(r.producer_id.0);
        }
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    // Durable on its leader: survives the kill below.
    let r = acks_all(&boot(2), "solo", 1, 9);
    assert_eq!(r, vec![None; 9]);
}

/// Waits (at most 60 s) until `sluice topic describe solo` through
/// `addr` counts `want` messages per partition.
fn wait_solo(addr: &str, want: &[i64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, out, err) = run_sluice(
            &["topic", "describe", "solo", "--json", "--bootstrap", addr],
            None,
        );
        let counts: Option<Vec<i64>> = serde_json::from_str::<Value>(&out).ok().and_then(|d| {
            d["partitions"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["messages"].as_i64()).collect())
        });
        if counts.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "solo: {counts:?} {err}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each partition's (leader, leader epoch), from a Metadata v12 request.
fn leader_epochs(addr: &str, topic: &str) -> Vec<(i32, i32)> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
    let mut c = sluice_net::client::Client::connect(addr, Duration::from_secs(10)).unwrap();
    let (_, r): (i16, MetadataResponse) = c
        .call(ApiKey::Metadata, (12, 12), |_| {
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(topic.to_string().into())))]))
        })
        .unwrap();
    let mut ps: Vec<(i32, i32, i32)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0, p.leader_epoch))
        .collect();
    ps.sort();
    ps.into_iter().map(|(_, l, e)| (l, e)).collect()
}

/// OffsetForLeaderEpoch v2 for one partition, sent to its leader as
/// `leader` = (node, current epoch) names it: (error, epoch, end offset).
fn offset_for_leader_epoch(
    any: &str,
    topic: &str,
    partition: i32,
    leader: (i32, i32),
    epoch: i32,
) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", any)
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let b = md.brokers().iter().find(|b| b.id() == leader.0).unwrap();
    let addr = format!("{}:{}", b.host(), b.port());
    let mut c = sluice_net::client::Client::connect(&addr, Duration::from_secs(10)).unwrap();
    let (_, r): (i16, OffsetForLeaderEpochResponse) = c
        .call(ApiKey::OffsetForLeaderEpoch, (2, 2), |_| {
            OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default(
            )
            .with_topic(TopicName(topic.to_string().into()))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(leader.1)
                .with_leader_epoch(epoch)])])
        })
        .unwrap();
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// Runs `sluice ARGS`, which must succeed; its output.
fn sluice_ok(args: &[&str]) -> String {
    sluice_ok_with(args, None)
}

fn sluice_ok_with(args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = run_sluice(args, stdin);
    assert_eq!(code, 0, "sluice {args:?}: {err}");
    out
}

/// Keeps the outcome of each delivery.
#[derive(Default, Clone)]
struct Outcomes(std::sync::Arc<std::sync::Mutex<Vec<Option<RDKafkaErrorCode>>>>);

impl rdkafka::ClientContext for Outcomes {}
impl rdkafka::producer::ProducerContext for Outcomes {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let code = match r {
            Ok(_) => None,
            Err((KafkaError::MessageProduction(code), _)) => Some(*code),
            Err((e, _)) => panic!("{e}"),
        };
        self.0.lock().unwrap().push(code);
    }
}

/// The error of one acks=all produce to partition 0 of `topic`, if any.
fn acks_all_error(bootstrap: &str, topic: &str) -> Option<RDKafkaErrorCode> {
    let got = acks_all(bootstrap, topic, 0, 1);
    assert_eq!(got.len(), 1);
    got[0]
}

/// Produces `n` messages with acks=all to one partition of `topic`; the
/// outcome of each.
fn acks_all(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    n: usize,
) -> Vec<Option<RDKafkaErrorCode>> {
    let outcomes = Outcomes::default();
    let p: BaseProducer<Outcomes> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("retries", "0")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "20000")
        .create_with_context(outcomes.clone())
        .unwrap();
    for _ in 0..n {
        p.send(
            BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload("x"),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let got = outcomes.0.lock().unwrap().clone();
    got
}

/// `--cluster` that does not name this node, or names one twice, stops
/// the start with the flag's name.
#[test]
fn a_bad_cluster_flag_is_refused() {
    let dir = tempdir();
    for (spec, why) in [
        ("1@127.0.0.1:1,2@127.0.0.1:2", "not among them"),
        ("0@127.0.0.1:1,0@127.0.0.1:2", "named twice"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--node-id", "0", "--cluster", spec, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--cluster") && err.contains(why), "{err}");
    }
}

//! Time to a new leader after `kill -9` of a partition leader, on three
//! local `sluice serve` nodes with default cluster settings.
//!
//!     cargo build --release -p sluice-broker
//!     cargo run --release -p sluice-bench --example failover
//!
//! Creates a topic of 6 partitions with 3 replicas (leaders spread over
//! the nodes) and waits until every follower is in sync. Then, KILLS times
//! (default 20), takes the nodes in turn: kills the one whose turn it is
//! with SIGKILL, and polls Metadata (v12) on another node every 5 ms until
//! every partition the dead node led names a live leader; that time is
//! the figure. The node is restarted and the next kill waits until every
//! ISR is whole again. A kill of the controller (marked) adds an election
//! of the metadata log before the failover.
//!
//! Prints each kill and the median and worst; each node's log is kept
//! beside its data directory (target/bench/failover-data); writes
//! `target/bench/failover.json`. SLUICE_BIN names the binary (default
//! target/release/sluice), SLUICE_FAILOVER_KILLS the count.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};
use sluice_net::client::Client;

const TOPIC: &str = "failover";
const PARTITIONS: i32 = 6;

struct Node {
    id: i32,
    port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// Each node's log goes to `<data>.log` (appended across restarts).
fn spawn(bin: &Path, n: &Node, cluster: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.data.with_extension("log"))
        .expect("node log file");
    Command::new(bin)
        .args([
            "serve",
            "--node-id",
            &n.id.to_string(),
            "--cluster",
            cluster,
        ])
        .args(["--listen", &format!("127.0.0.1:{}", n.port)])
        .args(["--data-dir", n.data.to_str().unwrap()])
        .args(["--cores", "1", "--shard-memory-bytes", "1073741824"])
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("sluice starts")
}

/// Each partition's (leader, ISR length), `None` when the node does not
/// answer.
fn leaders(port: u16) -> Option<Vec<(i32, usize)>> {
    let mut c = Client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).ok()?;
    let (_, r): (i16, MetadataResponse) = c
        .call(ApiKey::Metadata, (12, 12), |_| {
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(TOPIC.to_string().into())))]))
        })
        .ok()?;
    let t = r.topics.first()?;
    if t.error_code != 0 {
        return None;
    }
    let mut ps: Vec<(i32, i32, usize)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0, p.isr_nodes.len()))
        .collect();
    ps.sort();
    Some(ps.into_iter().map(|(_, l, i)| (l, i)).collect())
}

/// The controller's id, as `port` knows it.
fn controller(port: u16) -> Option<i32> {
    let mut c = Client::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).ok()?;
    let (_, r): (i16, DescribeClusterResponse) = c
        .call(ApiKey::DescribeCluster, (0, 1), |_| {
            DescribeClusterRequest::default()
        })
        .ok()?;
    Some(r.controller_id.0)
}

fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let bin = PathBuf::from(
        std::env::var("SLUICE_BIN").unwrap_or_else(|_| "target/release/sluice".into()),
    );
    let kills: usize = std::env::var("SLUICE_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let root = PathBuf::from("target/bench/failover-data");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("data directory");
    let repl: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, repl[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            id: i + 1,
            port: free_port(),
            data: root.join(format!("n{}", i + 1)),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        n.child = Some(spawn(&bin, n, &cluster));
    }
    let boot = format!("127.0.0.1:{}", nodes[0].port);
    wait("the topic created", Duration::from_secs(60), || {
        let Ok(mut c) = Client::connect(&boot, Duration::from_secs(2)) else {
            return false;
        };
        let r: Result<(i16, CreateTopicsResponse), _> =
            c.call(ApiKey::CreateTopics, (2, 7), |_| {
                CreateTopicsRequest::default()
                    .with_timeout_ms(10_000)
                    .with_topics(vec![CreatableTopic::default()
                        .with_name(TopicName(TOPIC.to_string().into()))
                        .with_num_partitions(PARTITIONS)
                        .with_replication_factor(3)])
            });
        matches!(r, Ok((_, r)) if r.topics.first().is_some_and(|t| t.error_code == 0 || t.error_code == 36))
    });
    let whole = |port: u16| {
        leaders(port).is_some_and(|ps| {
            ps.len() == PARTITIONS as usize && ps.iter().all(|&(l, isr)| l > 0 && isr == 3)
        })
    };
    let mut times = Vec::new();
    let mut controller_kills = 0;
    for k in 0..kills {
        let victim = k % 3;
        let watcher = nodes[(victim + 1) % 3].port;
        wait("every ISR whole", Duration::from_secs(120), || {
            whole(watcher)
        });
        let led: Vec<usize> = leaders(watcher)
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, &(l, _))| l == nodes[victim].id)
            .map(|(i, _)| i)
            .collect();
        let dead = nodes[victim].id;
        let was_controller = controller(watcher) == Some(dead);
        let mut child = nodes[victim].child.take().unwrap();
        let _ = child.kill();
        let t0 = Instant::now();
        let _ = child.wait();
        let mut elapsed = None;
        while t0.elapsed() < Duration::from_secs(30) {
            if let Some(ps) = leaders(watcher) {
                if led.iter().all(|&i| ps[i].0 != dead && ps[i].0 > 0) {
                    elapsed = Some(t0.elapsed());
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let ms = elapsed.map(|d| d.as_secs_f64() * 1000.0);
        println!(
            "kill {:2}: node {dead}{} (led {} partitions): {}",
            k + 1,
            if was_controller {
                ", the controller"
            } else {
                ""
            },
            led.len(),
            ms.map_or("no new leader within 30 s".into(), |m| format!("{m:.0} ms"))
        );
        if !led.is_empty() {
            times.push(ms.unwrap_or(f64::INFINITY));
            controller_kills += usize::from(was_controller);
        }
        nodes[victim].child = Some(spawn(&bin, &nodes[victim], &cluster));
    }
    for n in &mut nodes {
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let worst = sorted.last().copied().unwrap_or(f64::NAN);
    println!(
        "time to a new leader over {} kills: median {median:.0} ms, worst {worst:.0} ms",
        sorted.len()
    );
    let _ = std::fs::create_dir_all("target/bench");
    let json = serde_json::json!({
        "kills": sorted.len(),
        "median_ms": median,
        "worst_ms": worst,
        "times_ms": times,
        "controller_kills": controller_kills,
    });
    let _ = std::fs::write("target/bench/failover.json", json.to_string());
}

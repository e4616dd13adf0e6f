//! sluice side by side with a peer broker (Apache Iggy), each driven by its
//! own load generator, on the same machine in the same run, alternating
//! A B A B so that the machine's drift falls on both.
//!
//!     cargo build --release -p sluice-broker
//!     cargo run --release -p sluice-bench --example peer
//!
//! It needs `iggy-server` and `iggy-bench` on PATH, built from the peer's
//! public repository (nothing of the peer is in this repository), and
//! `IGGY_CONFIG_PATH` pointing at that repository's server configuration
//! file when the server does not find it on its own. Without them it says
//! so and exits 0.
//!
//! Both brokers start with their default settings on a fresh data
//! directory for every run. Workloads (2 partitions or streams, 2
//! producers, 1000-byte messages): W1 ~1 MB batches, durable (sluice
//! acks=all; the peer fsyncs each write: its tool's `--enforce-fsync` or,
//! in versions without that flag, the server's
//! `IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC=true`); W2 the same
//! with ~100 KB batches; W5 ~1 MB batches, not waiting for the disk
//! (sluice acks=1; the peer without fsync). sluice's loadgen measures 10 s
//! after a 2 s warm-up. The peer's tool sends a byte count rather than
//! running for a time: it sends what sluice wrote in the run just before
//! (its rate times 12 s), after the same warm-up, so both brokers take the
//! same volume. (Without fsync the peer writes to the page cache, which
//! takes a few gigabytes at memory speed before the kernel holds writers
//! to the disk's pace: on this kind of machine 650 MB/s for 3 GB, 300-440
//! MB/s for 8 GB. A fixed, small volume would measure the page cache.)
//!
//! When `fio` is on PATH each round also measures the disk's limit for
//! the workload's shape, so each broker's figure can be read against what
//! the disk did in the same minutes: two new files appended to at once
//! with 1 MiB O_DIRECT writes, 4 in flight each (sluice's partition
//! logs), with an fdatasync every 4 writes for the durable workloads
//! (acks=all's group commit at this rate) and every 64 for W5 (sluice's
//! default flush policy, 64 MiB).
//!
//! SLUICE_PEER_ROUNDS (default 3) pairs per workload; SLUICE_PEER_DIR
//! (default target/peer) holds the data directories. Prints a Markdown
//! table (medians, every round, the ratio of medians) and writes
//! `target/bench/peer.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_bench::{free_port, median, on_path, profile_dir};

struct Workload {
    name: &'static str,
    /// The disk limit's writes per fdatasync (see the module's notes).
    writes_per_sync: u32,
    batch_bytes: usize,
    durable: bool,
    goal: f64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "W1 durable bulk (~1 MB batches)",
        writes_per_sync: 4,
        batch_bytes: 1_000_000,
        durable: true,
        goal: 1.5,
    },
    Workload {
        name: "W2 durable small batches (~100 KB)",
        writes_per_sync: 4,
        batch_bytes: 100_000,
        durable: true,
        goal: 1.2,
    },
    Workload {
        name: "W5 bulk, not waiting for the disk (acks=1)",
        writes_per_sync: 64,
        batch_bytes: 1_000_000,
        durable: false,
        goal: 1.5,
    },
];

/// Waits until `port` on loopback takes connections (or `limit` passes).
fn wait_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn stop(mut child: Child) {
    // SAFETY: signals the child this process started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One sluice run: a fresh broker on default flags, loadgen beside it.
fn sluice_run(bin: &Path, data: &Path, w: &Workload, report: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(data);
    let port = free_port();
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("sluice serve runs");
    assert!(
        wait_port(port, Duration::from_secs(120)),
        "sluice did not start"
    );
    let batch = w.batch_bytes.to_string();
    let status = Command::new(bin)
        .args(["loadgen", "--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--partitions", "2", "--producers", "2", "--consumers", "0"])
        .args(["--message-bytes", "1000", "--batch-bytes", &batch])
        .args(["--acks", if w.durable { "all" } else { "1" }])
        .args(["--linger-ms", "5", "--duration", "10s", "--warmup", "2s"])
        .arg("--json")
        .arg(report)
        .stdout(Stdio::null())
        .status()
        .expect("sluice loadgen runs");
    stop(child);
    // Each run writes gigabytes: none is kept for the next.
    let _ = std::fs::remove_dir_all(data);
    assert!(status.success(), "sluice loadgen failed");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    v["produce"]["mb_per_sec"].as_f64().unwrap()
}

/// The disk's limit for `w`'s shape, MB/s (see the module's notes): fio,
/// 10 s, two jobs each appending to a new file.
fn disk_limit(dir: &Path, w: &Workload) -> Option<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).ok()?;
    let out = Command::new("fio")
        .args(["--output-format=json", "--ioengine=io_uring", "--direct=1"])
        .args(["--rw=write", "--bs=1M", "--iodepth=4", "--numjobs=2"])
        .args(["--size=8G", "--runtime=10", "--fallocate=none"])
        .arg(format!("--fdatasync={}", w.writes_per_sync))
        .args(["--group_reporting", "--name=limit"])
        .arg(format!("--directory={}", dir.display()))
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(dir);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v["jobs"][0]["write"]["bw_bytes"].as_f64()? / 1e6)
}

/// The figure the peer's tool prints: "Producers Results: Total
/// throughput: X MB/s".
fn peer_throughput(out: &str) -> Option<f64> {
    out.lines()
        .filter(|l| l.contains("Producers Results") || l.contains("Total throughput"))
        .find_map(|l| {
            let rest = &l[l.find("Total throughput:")? + "Total throughput:".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// Whether this version of the peer's tool takes `--enforce-fsync`.
fn bench_has_fsync_flag() -> bool {
    Command::new("iggy-bench")
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--enforce-fsync"))
        .unwrap_or(false)
}

/// One peer run: a fresh server on its defaults, its tool beside it.
fn peer_run(data: &Path, w: &Workload, total_mb: u64) -> f64 {
    let _ = std::fs::remove_dir_all(data);
    std::fs::create_dir_all(data).unwrap();
    let port = free_port();
    let mut server = Command::new("iggy-server");
    if w.durable {
        // Newer versions of the peer take fsync-per-write as a server
        // setting; older ones as the tool's `--enforce-fsync` (below).
        server.env("IGGY_SYSTEM_PARTITION_ENFORCE_FSYNC", "true");
    }
    let child = server
        .args(["--fresh", "--with-default-root-credentials"])
        .env("IGGY_SYSTEM_PATH", data.join("data"))
        .env("IGGY_TCP_ADDRESS", format!("127.0.0.1:{port}"))
        .env("IGGY_HTTP_ENABLED", "false")
        .env("IGGY_QUIC_ENABLED", "false")
        .env("IGGY_WEBSOCKET_ENABLED", "false")
        .current_dir(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iggy-server runs");
    assert!(
        wait_port(port, Duration::from_secs(60)),
        "iggy-server did not start (IGGY_CONFIG_PATH?)"
    );
    let per_batch = (w.batch_bytes / 1000).to_string();
    let mut cmd = Command::new("iggy-bench");
    let total = format!("{total_mb}MB");
    cmd.args(["-m", "1000", "-P", &per_batch, "-T", &total, "-w", "2s"]);
    if w.durable && bench_has_fsync_flag() {
        cmd.arg("--enforce-fsync");
    }
    cmd.args(["pinned-producer", "--streams", "2", "--producers", "2"])
        .args(["tcp", "--server-address", &format!("127.0.0.1:{port}")])
        .current_dir(data);
    let out = cmd.output().expect("iggy-bench runs");
    stop(child);
    let _ = std::fs::remove_dir_all(data);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iggy-bench failed:\n{text}");
    peer_throughput(&text).unwrap_or_else(|| panic!("no throughput in:\n{text}"))
}

fn main() {
    if !on_path("iggy-server") || !on_path("iggy-bench") {
        println!(
            "peer: iggy-server and iggy-bench are not on PATH; build them from the peer's \
             repository to run the side-by-side comparison"
        );
        return;
    }
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let rounds: usize = env("SLUICE_PEER_ROUNDS", "3").parse().expect("a count");
    let target = profile_dir();
    let bin = sluice_bench::broker_bin();
    let dir = std::env::var("SLUICE_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target.join("../peer"));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("loadgen.json");
    let fio = on_path("fio");
    let mut table = String::from(
        "| workload | sluice MB/s (median; rounds) | peer MB/s (median; rounds) | ratio of medians | goal | disk limit MB/s, same rounds (fio) | sluice / limit |\n|---|---|---|---|---|---|---|\n",
    );
    let mut results = Vec::new();
    for w in &WORKLOADS {
        let (mut a, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("peer: {} round {}: sluice", w.name, round + 1);
            a.push(sluice_run(&bin, &dir.join("sluice"), w, &report));
            eprintln!("peer: {} round {}: peer", w.name, round + 1);
            let volume_mb = (a[round] * 12.0) as u64;
            b.push(peer_run(&dir.join("peer"), w, volume_mb));
            if fio {
                eprintln!("peer: {} round {}: disk limit", w.name, round + 1);
                d.extend(disk_limit(&dir.join("fio"), w));
            }
            eprintln!(
                "peer: {} round {}: {:.0} / {:.0} MB/s",
                w.name,
                round + 1,
                a[round],
                b[round]
            );
        }
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (limit, against) = if d.is_empty() {
            ("not measured (no fio)".to_string(), String::new())
        } else {
            let md = median(d.clone());
            (format!("{md:.0} ({})", list(&d)), format!("{:.2}", ma / md))
        };
        table.push_str(&format!(
            "| {} | {ma:.0} ({}) | {mb:.0} ({}) | **{:.2}x** | {:.1}x | {limit} | {against} |\n",
            w.name,
            list(&a),
            list(&b),
            ma / mb,
            w.goal
        ));
        results.push(json!({
            "workload": w.name,
            "sluice_mb_per_sec": a,
            "peer_mb_per_sec": b,
            "disk_limit_mb_per_sec": d,
            "ratio_of_medians": ma / mb,
            "goal": w.goal,
        }));
    }
    println!("peer: {rounds} alternating pairs per workload\n\n{table}");
    let out = target.join("../bench");
    let _ = std::fs::create_dir_all(&out);
    std::fs::write(
        out.join("peer.json"),
        serde_json::to_string_pretty(
            &json!({ "rounds": rounds, "results": results, "table": table }),
        )
        .unwrap(),
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the peer's summary line is read, and other lines are not.
    #[test]
    fn reads_the_peers_summary() {
        let out = "Producer #1 → sent 100 messages, average throughput: 12.00 MB/s\n\
                   Producers Results: Total throughput: 481.27 MB/s, 481270 messages/s";
        assert_eq!(peer_throughput(out), Some(481.27));
        assert_eq!(peer_throughput("no figures here"), None);
    }
}

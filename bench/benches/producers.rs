//! loadgen's producer against a producer built on the rdkafka crate
//! (librdkafka), same broker, same run, same batch size and acks: one
//! producer each, 1000-byte messages, pinned to CPU 1 (the broker on CPU
//! 0). Throughput is messages acknowledged per second; CPU is user+system
//! seconds of the producing process per million messages. Rounds
//! alternate which goes first.
//!
//! `cargo build --release -p sluice-broker && cargo bench -p sluice-bench
//! --bench producers`. SLUICE_BENCH_REPEATS (default 5),
//! SLUICE_BENCH_MESSAGES (default 2 000 000), SLUICE_BENCH_BATCH (bytes,
//! default 1 MiB). Writes `target/bench/producers.json`. Under `cargo
//! test` it runs once with few messages and checks that both delivered
//! every message (timing is never asserted).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rdkafka::producer::BaseProducer;
use sluice_bench::{broker_bin, free_port, median, pin_this_thread, serve};

const MESSAGE_BYTES: usize = 1000;

fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// (messages per second, CPU seconds) of `sluice loadgen` as a child
/// pinned to CPU 1.
fn loadgen(bin: &Path, port: u16, topic: &str, n: u64, batch: usize, out: &Path) -> (f64, f64) {
    let before = cpu_seconds(libc::RUSAGE_CHILDREN);
    let status = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bin)
        .args(["loadgen", "--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--topic", topic, "--partitions", "1", "--producers", "1"])
        .args(["--consumers", "0", "--acks", "all", "--max-in-flight", "5"])
        .args([
            "--linger-ms",
            "5",
            "--message-bytes",
            &MESSAGE_BYTES.to_string(),
        ])
        .args([
            "--batch-bytes",
            &batch.to_string(),
            "--messages",
            &n.to_string(),
        ])
        .arg("--json")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset and sluice run");
    assert!(status.success(), "loadgen failed");
    let cpu = cpu_seconds(libc::RUSAGE_CHILDREN) - before;
    let r = std::fs::read_to_string(out).unwrap();
    let field = |k: &str| -> f64 {
        let at = r.find(&format!("\"{k}\"")).unwrap();
        let rest = &r[at + k.len() + 3..];
        let end = rest.find([',', '\n']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    assert_eq!(field("messages") as u64, n, "every message acknowledged");
    (field("msgs_per_sec"), cpu)
}

/// (messages per second, CPU seconds) of an rdkafka producer in this
/// process, its threads pinned to CPU 1.
fn rdkafka(port: u16, topic: &str, n: u64, batch: usize) -> (f64, f64) {
    let (tx, rx) = std::sync::mpsc::channel();
    let topic = topic.to_string();
    std::thread::spawn(move || {
        pin_this_thread(1);
        let p: BaseProducer = common::producer_config(&format!("127.0.0.1:{port}"), batch)
            .create()
            .unwrap();
        let value = vec![7u8; MESSAGE_BYTES];
        let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
        let t = Instant::now();
        common::send_all(&p, &topic, &value, n);
        let secs = t.elapsed().as_secs_f64();
        tx.send((n as f64 / secs, cpu_seconds(libc::RUSAGE_SELF) - cpu0))
            .unwrap();
    })
    .join()
    .unwrap();
    rx.recv().unwrap()
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let repeats = env("SLUICE_BENCH_REPEATS", if quick { 1 } else { 5 }) as usize;
    let n = env(
        "SLUICE_BENCH_MESSAGES",
        if quick { 20_000 } else { 2_000_000 },
    );
    let batch = env("SLUICE_BENCH_BATCH", 1 << 20) as usize;
    let dir = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-producers"));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = broker_bin();
    let port = free_port();
    let _served = serve(&bin, &dir.join("broker"), port);
    let report = dir.join("loadgen.json");
    let (mut ratio, mut cpu_ratio, mut ours, mut theirs) = (vec![], vec![], vec![], vec![]);
    for round in 0..repeats {
        let topic_a = format!("producers-{round}-loadgen");
        let topic_b = format!("producers-{round}-rdkafka");
        let (a, b) = if round % 2 == 0 {
            let a = loadgen(&bin, port, &topic_a, n, batch, &report);
            (a, rdkafka(port, &topic_b, n, batch))
        } else {
            let b = rdkafka(port, &topic_b, n, batch);
            (loadgen(&bin, port, &topic_a, n, batch, &report), b)
        };
        ours.push(a.0);
        theirs.push(b.0);
        ratio.push(a.0 / b.0);
        // CPU per message, loadgen over rdkafka: below 1 is less CPU.
        cpu_ratio.push((a.1 / n as f64) / (b.1 / n as f64));
        println!(
            "  round {round}: loadgen {:.0} msg/s ({:.2} CPU s), rdkafka {:.0} msg/s ({:.2} CPU s)",
            a.0, a.1, b.0, b.1
        );
    }
    let (ratio, cpu_ratio) = (median(ratio), median(cpu_ratio));
    println!(
        "producers benchmark: median of {repeats}, {n} messages of {MESSAGE_BYTES} bytes, batch {batch} bytes, acks=all"
    );
    println!(
        "  loadgen {:.0} msg/s, rdkafka {:.0} msg/s: throughput ratio {ratio:.2} (goal >= 1), CPU per message ratio {cpu_ratio:.2} (goal <= 1)",
        median(ours),
        median(theirs)
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join(if quick { "producers-smoke.json" } else { "producers.json" }),
        format!(
            "{{\"repeats\":{repeats},\"messages\":{n},\"batch_bytes\":{batch},\"throughput_ratio\":{ratio:.3},\"cpu_per_message_ratio\":{cpu_ratio:.3}}}\n"
        ),
    );
}

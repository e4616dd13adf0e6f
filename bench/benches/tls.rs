//! Throughput over TLS against plaintext, same broker, same run: one
//! broker (one shard, CPU 0) with a PLAINTEXT and an SSL listener, and a
//! librdkafka producer (acks=all, 1000-byte messages, 1 MiB batches)
//! then consumer pinned to CPU 1, through one listener and then the
//! other, alternating which goes first. The figure is each direction's
//! messages per second over TLS divided by plaintext's (1.0: TLS costs
//! nothing). Beside it, the broker's CPU time per GB moved each way
//! over each listener (user and system time of its process over the
//! timed part), and that of TLS over plaintext's: on this two-core
//! machine the client has one core, and over TLS librdkafka's sending
//! thread fills it before the broker's core is full, so the throughput
//! ratio measures the client as much as the broker; the CPU per GB is
//! the broker's own cost.
//!
//! `cargo build --release -p sluice-broker && cargo bench -p sluice-bench
//! --bench tls`. SLUICE_BENCH_REPEATS (default 5), SLUICE_BENCH_MESSAGES
//! (default 1 000 000). Writes `target/bench/tls.json`. Under `cargo
//! test` it runs once with few messages and checks that every message
//! went both ways over both listeners (timing is never asserted).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use sluice_bench::{
    broker_bin, free_port, median, pin_this_thread, process_cpu_secs, serve_listening,
};

const MESSAGE_BYTES: usize = 1000;

/// A CA and a server certificate for 127.0.0.1, as PEM files: (ca,
/// cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "sluice bench CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    // A subject of its own: one equal to the CA's reads as self-signed.
    let mut params = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "sluice bench broker");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

fn config(port: u16, tls: Option<&Path>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", format!("127.0.0.1:{port}"));
    if let Some(ca) = tls {
        c.set("security.protocol", "ssl")
            .set("ssl.ca.location", ca.to_str().unwrap());
    }
    c
}

/// One direction of one round: messages per second, and the broker's
/// CPU seconds per GB of messages.
#[derive(Clone, Copy, Debug)]
struct Leg {
    rate: f64,
    cpu_per_gb: f64,
}

/// (produce, consume) of `n` messages through one listener, the client
/// on CPU 1, the broker being process `broker`.
fn round(port: u16, tls: Option<&Path>, topic: &str, n: u64, broker: u32) -> (Leg, Leg) {
    let gb = (n as usize * MESSAGE_BYTES) as f64 / 1e9;
    let leg = move |t: Instant, cpu: f64| Leg {
        rate: n as f64 / t.elapsed().as_secs_f64(),
        cpu_per_gb: (process_cpu_secs(broker) - cpu) / gb,
    };
    let (ca, topic) = (tls.map(Path::to_path_buf), topic.to_string());
    std::thread::spawn(move || {
        pin_this_thread(1);
        let mut pc = common::producer_config(&format!("127.0.0.1:{port}"), 1 << 20);
        if let Some(ca) = &ca {
            pc.set("security.protocol", "ssl")
                .set("ssl.ca.location", ca.to_str().unwrap());
        }
        let p: BaseProducer = pc.create().unwrap();
        let value = vec![7u8; MESSAGE_BYTES];
        let (t, cpu) = (Instant::now(), process_cpu_secs(broker));
        common::send_all(&p, &topic, &value, n);
        let produced = leg(t, cpu);

        let c: BaseConsumer = config(port, ca.as_deref())
            .set("group.id", format!("tls-bench-{topic}"))
            .set("enable.auto.commit", "false")
            .set("fetch.max.bytes", (50 << 20).to_string())
            .set("max.partition.fetch.bytes", (16 << 20).to_string())
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let (t, cpu) = (Instant::now(), process_cpu_secs(broker));
        let mut got = 0u64;
        while got < n {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "consumed {got} of {n}"
            );
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                m.unwrap();
                got += 1;
            }
        }
        (produced, leg(t, cpu))
    })
    .join()
    .unwrap()
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
        if quick { 5_000 } else { 1_000_000 },
    );
    let dir = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = certificates(&dir);
    let (plain, ssl) = (free_port(), free_port());
    let listen = format!("PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}");
    let served = serve_listening(
        &broker_bin(),
        &dir.join("broker"),
        &listen,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            // Clients of an SSL listener without client certificates are
            // User:ANONYMOUS; here it is exempt from the ACLs (this
            // measures TLS alone).
            "--super-users",
            "User:ANONYMOUS",
        ],
    );
    let broker = served.pid();
    let (mut produce, mut consume, mut produce_cpu, mut consume_cpu) =
        (vec![], vec![], vec![], vec![]);
    for r in 0..repeats {
        let plain_round = |t: &str| round(plain, None, t, n, broker);
        let tls_round = |t: &str| round(ssl, Some(&ca), t, n, broker);
        let (a, b) = if r % 2 == 0 {
            let a = plain_round(&format!("tls-{r}-plain"));
            (a, tls_round(&format!("tls-{r}-tls")))
        } else {
            let b = tls_round(&format!("tls-{r}-tls"));
            (plain_round(&format!("tls-{r}-plain")), b)
        };
        println!(
            "  round {r}: produce plaintext {:.0} msg/s ({:.2} broker CPU s/GB), TLS {:.0} msg/s ({:.2}); consume plaintext {:.0} msg/s ({:.2}), TLS {:.0} msg/s ({:.2})",
            a.0.rate, a.0.cpu_per_gb, b.0.rate, b.0.cpu_per_gb, a.1.rate, a.1.cpu_per_gb, b.1.rate, b.1.cpu_per_gb
        );
        produce.push(b.0.rate / a.0.rate);
        consume.push(b.1.rate / a.1.rate);
        produce_cpu.push(b.0.cpu_per_gb / a.0.cpu_per_gb);
        consume_cpu.push(b.1.cpu_per_gb / a.1.cpu_per_gb);
    }
    let (p, c) = (median(produce.clone()), median(consume.clone()));
    let (pc, cc) = (median(produce_cpu.clone()), median(consume_cpu.clone()));
    println!(
        "tls benchmark: median of {repeats}, {n} messages of {MESSAGE_BYTES} bytes, acks=all: TLS/plaintext produce {p:.2} {produce:.2?}, consume {c:.2} {consume:.2?}; broker CPU per GB, TLS/plaintext: produce {pc:.2} {produce_cpu:.2?}, consume {cc:.2} {consume_cpu:.2?}"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bench");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(
        out.join(if quick { "tls-smoke.json" } else { "tls.json" }),
        format!(
            "{{\"repeats\":{repeats},\"messages\":{n},\"produce_ratio\":{p:.3},\"consume_ratio\":{c:.3},\"produce_cpu_ratio\":{pc:.3},\"consume_cpu_ratio\":{cc:.3}}}\n"
        ),
    );
}

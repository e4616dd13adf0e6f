//! The report: one line per second while running, a summary at the end,
//! and the same figures as JSON (`--json`) and the per-second series as
//! CSV (`--csv`).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::args::LoadgenArgs;
use crate::hist::Percentiles;
use crate::stats::Stats;

#[derive(Debug, serde::Serialize)]
pub struct Host {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub sluice_version: String,
}

impl Host {
    pub fn probe() -> Host {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Host {
            cpu_model,
            // Online CPUs of the host (not just those this process may
            // use).
            // SAFETY: sysconf reads a system value.
            cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
            kernel,
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Side {
    /// Seconds this side was measured over.
    pub seconds: f64,
    pub messages: u64,
    pub bytes: u64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, serde::Serialize)]
pub struct Second {
    pub second: u64,
    pub warmup: bool,
    pub produced: u64,
    pub produce_mb_per_sec: f64,
    pub consumed: u64,
    pub consume_mb_per_sec: f64,
    pub produce_p50_us: u64,
    pub produce_p99_us: u64,
    pub end_to_end_p50_us: u64,
    pub end_to_end_p99_us: u64,
    pub errors: u64,
}

impl Second {
    pub fn of(second: u64, warmup: bool, s: &Stats) -> Second {
        Second {
            second,
            warmup,
            produced: s.produced,
            produce_mb_per_sec: s.produced_bytes as f64 / 1e6,
            consumed: s.consumed,
            consume_mb_per_sec: s.consumed_bytes as f64 / 1e6,
            produce_p50_us: s.produce_latency.quantile(0.5),
            produce_p99_us: s.produce_latency.quantile(0.99),
            end_to_end_p50_us: s.end_to_end_latency.quantile(0.5),
            end_to_end_p99_us: s.end_to_end_latency.quantile(0.99),
            errors: s.error_count(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{:>4}s{} produce {:>9} msg/s {:>8.1} MB/s p50 {:>7} p99 {:>7} us | consume {:>9} msg/s {:>8.1} MB/s e2e p50 {:>7} p99 {:>7} us | errors {}",
            self.second + 1,
            if self.warmup { " (warm-up)" } else { "" },
            self.produced,
            self.produce_mb_per_sec,
            self.produce_p50_us,
            self.produce_p99_us,
            self.consumed,
            self.consume_mb_per_sec,
            self.end_to_end_p50_us,
            self.end_to_end_p99_us,
            self.errors
        )
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub params: LoadgenArgs,
    pub topic: String,
    pub host: Host,
    pub produce: Side,
    pub consume: Side,
    pub produce_latency_us: Percentiles,
    pub end_to_end_latency_us: Percentiles,
    /// How late the load generator itself took each message up after its
    /// intended send time (fixed rate only; part of both latencies).
    pub send_lag_us: Percentiles,
    /// (percentile, µs) from 0 to 100, for plotting.
    pub produce_spectrum: Vec<(f64, u64)>,
    pub end_to_end_spectrum: Vec<(f64, u64)>,
    pub series: Vec<Second>,
}

impl Report {
    pub fn new(
        params: LoadgenArgs,
        topic: String,
        total: &Stats,
        produce_secs: f64,
        consume_secs: f64,
        series: Vec<Second>,
    ) -> Report {
        let (psecs, csecs) = (produce_secs.max(1e-9), consume_secs.max(1e-9));
        let (mut perr, mut cerr) = (BTreeMap::new(), BTreeMap::new());
        for (k, v) in &total.errors {
            if let Some(k) = k.strip_prefix("consume: ") {
                cerr.insert(k.to_string(), *v);
            } else {
                perr.insert(k.clone(), *v);
            }
        }
        Report {
            params,
            topic,
            host: Host::probe(),
            produce: Side {
                seconds: produce_secs,
                messages: total.produced,
                bytes: total.produced_bytes,
                msgs_per_sec: total.produced as f64 / psecs,
                mb_per_sec: total.produced_bytes as f64 / 1e6 / psecs,
                errors: perr,
            },
            consume: Side {
                seconds: consume_secs,
                messages: total.consumed,
                bytes: total.consumed_bytes,
                msgs_per_sec: total.consumed as f64 / csecs,
                mb_per_sec: total.consumed_bytes as f64 / 1e6 / csecs,
                errors: cerr,
            },
            produce_latency_us: total.produce_latency.percentiles(),
            end_to_end_latency_us: total.end_to_end_latency.percentiles(),
            send_lag_us: total.send_lag.percentiles(),
            produce_spectrum: total.produce_latency.spectrum(),
            end_to_end_spectrum: total.end_to_end_latency.spectrum(),
            series,
        }
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "topic {}", self.topic);
        for (name, side) in [("produced", &self.produce), ("consumed", &self.consume)] {
            let _ = writeln!(
                s,
                "{name}: {} messages, {} bytes, {:.0} msg/s, {:.1} MB/s in {:.1} s",
                side.messages, side.bytes, side.msgs_per_sec, side.mb_per_sec, side.seconds
            );
        }
        let mut latencies = vec![
            ("produce latency", &self.produce_latency_us),
            ("end-to-end latency", &self.end_to_end_latency_us),
        ];
        if self.params.rate.is_some() {
            latencies.push(("sender lag", &self.send_lag_us));
        }
        for (name, p) in latencies {
            let _ = writeln!(
                s,
                "{name} (us): p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
                p.p50, p.p90, p.p99, p.p999, p.p9999, p.max
            );
        }
        let errors: Vec<String> = self
            .produce
            .errors
            .iter()
            .map(|(k, v)| format!("produce {k}: {v}"))
            .chain(
                self.consume
                    .errors
                    .iter()
                    .map(|(k, v)| format!("consume {k}: {v}")),
            )
            .collect();
        let _ = writeln!(
            s,
            "errors: {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            }
        );
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from(
            "second,warmup,produced,produce_mb_per_sec,consumed,consume_mb_per_sec,produce_p50_us,produce_p99_us,end_to_end_p50_us,end_to_end_p99_us,errors\n",
        );
        for r in &self.series {
            let _ = writeln!(
                s,
                "{},{},{},{:.3},{},{:.3},{},{},{},{},{}",
                r.second + 1,
                r.warmup,
                r.produced,
                r.produce_mb_per_sec,
                r.consumed,
                r.consume_mb_per_sec,
                r.produce_p50_us,
                r.produce_p99_us,
                r.end_to_end_p50_us,
                r.end_to_end_p99_us,
                r.errors
            );
        }
        s
    }
}

//! What a worker counts: messages and bytes produced, acknowledged and
//! consumed, errors by kind, and the two latency histograms. Workers keep
//! one `Stats` for the current second and one for the measured run; the
//! coordinator merges them.

use std::collections::BTreeMap;

use crate::hist::Latency;

#[derive(Clone, Default)]
pub struct Stats {
    /// Messages acknowledged by the broker (sent, with acks=0).
    pub produced: u64,
    /// Bytes of their keys and values.
    pub produced_bytes: u64,
    pub consumed: u64,
    pub consumed_bytes: u64,
    /// Errors by kind (a Kafka error name, or what failed).
    pub errors: BTreeMap<String, u64>,
    /// Intended send time to acknowledgement, µs.
    pub produce_latency: Latency,
    /// Intended send time to a consumer holding the message, µs.
    pub end_to_end_latency: Latency,
    /// Intended send time to the moment the sender took the message up,
    /// µs: the load generator's own lateness, part of both latencies
    /// above (at a fixed rate; without one it is 0).
    pub send_lag: Latency,
    /// When the worker finished (µs since the epoch; 0 while running).
    pub finished_us: u64,
}

impl Stats {
    pub fn merge(&mut self, o: &Stats) {
        self.produced += o.produced;
        self.produced_bytes += o.produced_bytes;
        self.consumed += o.consumed;
        self.consumed_bytes += o.consumed_bytes;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.produce_latency.merge(&o.produce_latency);
        self.end_to_end_latency.merge(&o.end_to_end_latency);
        self.send_lag.merge(&o.send_lag);
        self.finished_us = self.finished_us.max(o.finished_us);
    }

    pub fn error(&mut self, kind: &str, n: u64) {
        *self.errors.entry(kind.to_string()).or_default() += n;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A Kafka error code's name.
pub fn error_name(code: i16) -> String {
    if code == sluice_net::producer::CONNECTION_FAILED {
        return "connection".to_string();
    }
    match kafka_protocol::ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None => format!("error {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_errors_and_histograms() {
        let mut a = Stats {
            produced: 3,
            produced_bytes: 30,
            ..Stats::default()
        };
        a.error("NotLeaderOrFollower", 1);
        a.produce_latency.record(10);
        let mut b = Stats {
            produced: 2,
            consumed: 5,
            ..Stats::default()
        };
        b.error("NotLeaderOrFollower", 2);
        b.error("connection", 1);
        b.produce_latency.record(20);
        b.send_lag.record(7);
        a.merge(&b);
        assert_eq!((a.produced, a.consumed, a.produced_bytes), (5, 5, 30));
        assert_eq!(a.errors["NotLeaderOrFollower"], 3);
        assert_eq!(a.error_count(), 4);
        assert_eq!(a.produce_latency.count(), 2);
        assert_eq!(a.send_lag.count(), 1);
        assert_eq!(error_name(6), "NotLeaderOrFollower");
        assert_eq!(
            error_name(sluice_net::producer::CONNECTION_FAILED),
            "connection"
        );
    }
}

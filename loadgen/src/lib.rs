//! `sluice loadgen`: drives a Kafka-compatible broker with producers and
//! consumers on pinned glommio executors and measures throughput, produce
//! latency and end-to-end latency with merged HDR histograms, counted
//! from each message's intended send time (no coordinated omission).

pub mod args;
pub mod hist;
pub mod html;
pub mod payload;
pub mod rate;
pub mod report;
pub mod run;
pub mod stats;

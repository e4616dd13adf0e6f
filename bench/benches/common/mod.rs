//! What the benchmarks that drive a librdkafka producer share.

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The rdkafka producer's settings of the benchmarks: acks=all, `batch`
/// bytes per batch, 5 ms linger, no compression, a queue deep enough
/// never to refuse a message for long.
pub fn producer_config(bootstrap: &str, batch: usize) -> rdkafka::config::ClientConfig {
    let mut c = rdkafka::config::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("batch.size", batch.to_string())
        .set("linger.ms", "5")
        .set("max.in.flight.requests.per.connection", "5")
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.max.bytes", (batch + 65536).to_string());
    c
}

/// Serves every delivery report waiting, without waiting for more.
pub fn drain_reports(p: &BaseProducer) {
    loop {
        let before = p.in_flight_count();
        p.poll(Duration::ZERO);
        if p.in_flight_count() == before {
            return;
        }
    }
}

/// Sends `n` copies of `value` to partition 0 of `topic` and waits until
/// every one is acknowledged.
pub fn send_all(p: &BaseProducer, topic: &str, value: &[u8], n: u64) {
    let mut sent = 0u64;
    while sent < n {
        match p.send(
            BaseRecord::<(), [u8]>::to(topic)
                .payload(value)
                .partition(0),
        ) {
            Ok(()) => sent += 1,
            Err(_) => {
                // The queue is full: take the delivery reports there are
                // and sleep, rather than `poll(1 ms)`, which spins (the
                // crate rounds a deadline under a millisecond down to a
                // poll that does not wait), taking the client's core from
                // librdkafka's own threads.
                drain_reports(p);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if sent.is_multiple_of(1024) {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(p.in_flight_count(), 0, "every message acknowledged");
}

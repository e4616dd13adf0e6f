//! The send schedule. At a fixed rate every message has an intended send
//! time, `start + i / rate`, fixed before the run and never moved by how
//! the broker behaves; latency is counted from it. A broker that stalls
//! makes every message due during the stall late, and each of them shows
//! it (no coordinated omission). Without a rate, a message's intended time
//! is the moment it is handed to the producer.

use std::time::Duration;

/// Messages per second, or none for as fast as possible.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_us: u64,
    /// Nanoseconds between intended send times (0: no rate).
    interval_ns: f64,
}

/// What a sender does about message `i` at time `now_us`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Send it now; latency counts from `intended_us`.
    Send { intended_us: u64 },
    /// Too early: wait this long first.
    Wait(Duration),
}

impl Schedule {
    /// `rate` messages per second shared by `senders`, starting at
    /// `start_us`; `None` for as fast as possible.
    pub fn new(start_us: u64, rate: Option<f64>, senders: usize) -> Schedule {
        let interval_ns = match rate {
            Some(r) if r > 0.0 => 1e9 * senders.max(1) as f64 / r,
            _ => 0.0,
        };
        Schedule {
            start_us,
            interval_ns,
        }
    }

    pub fn is_paced(&self) -> bool {
        self.interval_ns > 0.0
    }

    /// The intended send time of this sender's message `i`.
    pub fn intended_us(&self, i: u64) -> u64 {
        self.start_us + (i as f64 * self.interval_ns / 1000.0) as u64
    }

    pub fn next(&self, i: u64, now_us: u64) -> Next {
        if !self.is_paced() {
            return Next::Send {
                intended_us: now_us,
            };
        }
        let due = self.intended_us(i);
        if due > now_us {
            Next::Wait(Duration::from_micros(due - now_us))
        } else {
            Next::Send { intended_us: due }
        }
    }
}

/// How long before a message is due a waiting sender wakes. A sleeping
/// executor is woken by a timer, and on a busy or virtual machine that
/// wake-up comes hundreds of microseconds late; every microsecond late
/// would be counted as the broker's latency (it counts from the intended
/// time). A sender wakes this much early and waits out the rest while its
/// executor polls (a fixed-rate worker polls this long before it sleeps).
pub const SPIN_AHEAD: Duration = Duration::from_micros(500);

/// How a sender waits `d` before its next message is due: `Some(t)` to
/// sleep for `t` first (and wait the rest while polling), `None` when the
/// whole wait is short enough to poll through.
pub fn sleep_before_due(d: Duration) -> Option<Duration> {
    d.checked_sub(SPIN_AHEAD).filter(|t| !t.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::Latency;

    #[test]
    fn paced_schedule_spaces_messages_and_catches_up() {
        let s = Schedule::new(1_000_000, Some(1000.0), 1);
        assert_eq!(s.intended_us(0), 1_000_000);
        assert_eq!(s.intended_us(10), 1_010_000);
        assert_eq!(
            s.next(10, 1_005_000),
            Next::Wait(Duration::from_micros(5_000))
        );
        // Late: send at once, counted from when it was due.
        assert_eq!(
            s.next(10, 1_500_000),
            Next::Send {
                intended_us: 1_010_000
            }
        );
        // Two senders share the rate: each sends every 2 ms.
        let s = Schedule::new(0, Some(1000.0), 2);
        assert_eq!(s.intended_us(3), 6_000);
        let free = Schedule::new(0, None, 1);
        assert_eq!(free.next(5, 42), Next::Send { intended_us: 42 });
    }

    /// A closed-loop sender at 1000 msg/s against a server that answers in
    /// 100 µs but stalls once for a second. Measured from the actual send,
    /// the stall is one slow message; measured from the schedule, every
    /// message due during the stall is late, and p99 shows it.
    #[test]
    fn coordinated_omission_is_exposed() {
        let s = Schedule::new(0, Some(1000.0), 1);
        let (stall_at, stall_us, service_us) = (5_000_000u64, 1_000_000u64, 100u64);
        let (mut corrected, mut naive) = (Latency::default(), Latency::default());
        let mut now = 0u64;
        let mut stalled = false;
        for i in 0..10_000u64 {
            let intended = match s.next(i, now) {
                Next::Wait(d) => {
                    now += d.as_micros() as u64;
                    s.intended_us(i)
                }
                Next::Send { intended_us } => intended_us,
            };
            let sent = now;
            let mut done = sent + service_us;
            if !stalled && sent >= stall_at {
                stalled = true;
                done += stall_us;
            }
            now = done;
            corrected.record(done - intended);
            naive.record(done - sent);
        }
        assert!(stalled);
        assert!(
            naive.quantile(0.99) <= 101,
            "naive p99 {}",
            naive.quantile(0.99)
        );
        assert!(
            corrected.quantile(0.99) >= 800_000,
            "corrected p99 {}",
            corrected.quantile(0.99)
        );
        // About a thousand messages were due during the stall, late by
        // 1 s down to 0: the slowest 5% of all waited at least half of it.
        assert!(
            corrected.quantile(0.95) >= 400_000,
            "{}",
            corrected.quantile(0.95)
        );
        assert!(naive.quantile(0.95) <= 101);
        assert_eq!(naive.percentiles().max, corrected.percentiles().max);
    }

    // Proves a wait shorter than the spin-ahead polls at once and a longer
    // one sleeps only until the spin-ahead before the due time, so the
    // sender is awake (polling) when the message falls due.
    #[test]
    fn waits_end_awake() {
        assert_eq!(sleep_before_due(Duration::ZERO), None);
        assert_eq!(sleep_before_due(SPIN_AHEAD / 2), None);
        assert_eq!(sleep_before_due(SPIN_AHEAD), None);
        assert_eq!(
            sleep_before_due(SPIN_AHEAD + Duration::from_micros(1)),
            Some(Duration::from_micros(1))
        );
        assert_eq!(
            sleep_before_due(Duration::from_millis(10)),
            Some(Duration::from_millis(10) - SPIN_AHEAD)
        );
    }
}

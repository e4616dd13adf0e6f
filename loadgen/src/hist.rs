//! Latency histograms: one per worker and kind, merged for the report
//! (percentiles are never averaged). Values are microseconds.

use hdrhistogram::Histogram;

/// The largest latency recorded as itself; longer ones are recorded as
/// this (and still counted).
pub const LATENCY_US_MAX: u64 = 600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Clone)]
pub struct Latency {
    h: Histogram<u64>,
    /// Values above `LATENCY_US_MAX`, recorded as it.
    pub clipped: u64,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            h: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid bounds"),
            clipped: 0,
        }
    }
}

/// The percentiles a report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl Latency {
    pub fn record(&mut self, us: u64) {
        let v = if us > LATENCY_US_MAX {
            self.clipped += 1;
            LATENCY_US_MAX
        } else {
            us.max(1)
        };
        self.h.record(v).expect("within bounds");
    }

    /// Records `count` equal values at once.
    pub fn record_n(&mut self, us: u64, count: u64) {
        if count == 0 {
            return;
        }
        let v = if us > LATENCY_US_MAX {
            self.clipped += count;
            LATENCY_US_MAX
        } else {
            us.max(1)
        };
        self.h.record_n(v, count).expect("within bounds");
    }

    pub fn merge(&mut self, other: &Latency) {
        self.h.add(&other.h).expect("same bounds");
        self.clipped += other.clipped;
    }

    pub fn count(&self) -> u64 {
        self.h.len()
    }

    pub fn reset(&mut self) {
        self.h.reset();
        self.clipped = 0;
    }

    /// The value at `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            return 0;
        }
        self.h.value_at_quantile(q)
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            p9999: self.quantile(0.9999),
            max: if self.h.is_empty() { 0 } else { self.h.max() },
        }
    }

    /// (percentile, value) pairs for a percentile spectrum: 0 to 99.9999
    /// in steps that halve the distance to 100 each time.
    pub fn spectrum(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        if self.h.is_empty() {
            return out;
        }
        let mut p = 0.0f64;
        while p < 99.9999 {
            out.push((p, self.h.value_at_percentile(p)));
            let remaining = 100.0 - p;
            p += (remaining / 10.0).clamp(0.0001, 10.0);
        }
        out.push((100.0, self.h.max()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles of a known distribution, within the histogram's
    /// precision (3 significant digits).
    #[test]
    fn percentiles_of_known_values() {
        let mut h = Latency::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p = h.percentiles();
        let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(near(p.p50, 5_000), "{p:?}");
        assert!(near(p.p90, 9_000), "{p:?}");
        assert!(near(p.p99, 9_900), "{p:?}");
        assert!(near(p.p999, 9_990), "{p:?}");
        assert!(near(p.max, 10_000), "{p:?}");
        assert_eq!(h.count(), 10_000);
    }

    /// Merging two workers' histograms gives the percentiles of all their
    /// values together, which averaging their percentiles would not.
    #[test]
    fn merge_is_not_an_average() {
        let (mut fast, mut slow) = (Latency::default(), Latency::default());
        fast.record_n(100, 9_000);
        slow.record_n(10_000, 1_000);
        let averaged_p90 = (fast.quantile(0.9) + slow.quantile(0.9)) / 2;
        let mut all = fast.clone();
        all.merge(&slow);
        assert_eq!(all.count(), 10_000);
        // 90% of all values are 100 µs: the merged p90 is 100, the p95 10 ms.
        assert!(all.quantile(0.9) <= 101, "{}", all.quantile(0.9));
        assert!(all.quantile(0.95) >= 9_990, "{}", all.quantile(0.95));
        assert!(averaged_p90 > 5_000, "averaging would say {averaged_p90}");
    }

    #[test]
    fn values_beyond_the_range_are_clipped_and_counted() {
        let mut h = Latency::default();
        h.record(LATENCY_US_MAX * 2);
        h.record(0);
        assert_eq!(h.clipped, 1);
        assert_eq!(h.count(), 2);
        assert!(h.percentiles().max >= LATENCY_US_MAX);
        let s = h.spectrum();
        assert_eq!(s.last().unwrap().0, 100.0);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}

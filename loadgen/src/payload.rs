//! Message contents: values of the configured sizes and kind, each
//! starting with its intended send time (8 bytes, microseconds since the
//! Unix epoch, big-endian) so a consumer can measure end-to-end latency,
//! and keys by the configured pattern.

/// A small, fast generator (xorshift64*): message sizes, keys and random
/// bytes need speed and spread, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Random,
    Zeros,
    /// Compresses to about 1/ratio of its size: that share random, the
    /// rest zeros.
    Compressible(f64),
}

impl std::str::FromStr for Payload {
    type Err = String;
    fn from_str(s: &str) -> Result<Payload, String> {
        match s {
            "random" => Ok(Payload::Random),
            "zeros" => Ok(Payload::Zeros),
            _ => match s.strip_prefix("compressible:").map(str::parse::<f64>) {
                Some(Ok(r)) if r >= 1.0 => Ok(Payload::Compressible(r)),
                _ => Err(format!(
                    "{s:?}: expected random, zeros or compressible:RATIO (RATIO >= 1)"
                )),
            },
        }
    }
}

/// Builds message values: a pool of bytes of the payload kind, sliced at
/// moving offsets, behind the 8-byte stamp.
pub struct Values {
    pool: Vec<u8>,
    at: usize,
    sizes: (usize, usize),
    rng: Rng,
    buf: Vec<u8>,
}

const POOL_BYTES: usize = 4 << 20;

impl Values {
    pub fn new(kind: &Payload, sizes: (usize, usize), seed: u64) -> Values {
        let mut rng = Rng::new(seed);
        let pool = match kind {
            Payload::Zeros => vec![0u8; POOL_BYTES + sizes.1],
            Payload::Random => (0..POOL_BYTES + sizes.1)
                .map(|_| rng.next_u64() as u8)
                .collect(),
            Payload::Compressible(ratio) => {
                // Runs of 64 bytes: 1/ratio of them random, the rest zeros.
                let mut v = vec![0u8; POOL_BYTES + sizes.1];
                for chunk in v.chunks_mut(64) {
                    if rng.unit() < 1.0 / ratio {
                        for b in chunk {
                            *b = rng.next_u64() as u8;
                        }
                    }
                }
                v
            }
        };
        Values {
            pool,
            at: 0,
            sizes,
            rng,
            buf: Vec::with_capacity(sizes.1),
        }
    }

    /// The next value as its two parts, the stamp and the payload after
    /// it (for a producer that copies them straight into its batch).
    pub fn next_parts(&mut self, stamp_us: u64) -> ([u8; 8], &[u8]) {
        let n = if self.sizes.0 == self.sizes.1 {
            self.sizes.0
        } else {
            self.rng.range(self.sizes.0 as u64, self.sizes.1 as u64) as usize
        };
        let rest = n - 8;
        if self.at + rest > self.pool.len() {
            self.at = 0;
        }
        let at = self.at;
        self.at = (self.at + 4099) % POOL_BYTES;
        (stamp_us.to_be_bytes(), &self.pool[at..at + rest])
    }

    /// The next value, stamped with `stamp_us`.
    pub fn next(&mut self, stamp_us: u64) -> &[u8] {
        let n = if self.sizes.0 == self.sizes.1 {
            self.sizes.0
        } else {
            self.rng.range(self.sizes.0 as u64, self.sizes.1 as u64) as usize
        };
        self.buf.clear();
        self.buf.extend_from_slice(&stamp_us.to_be_bytes());
        let rest = n - 8;
        if self.at + rest > self.pool.len() {
            self.at = 0;
        }
        self.buf
            .extend_from_slice(&self.pool[self.at..self.at + rest]);
        self.at = (self.at + 4099) % POOL_BYTES;
        &self.buf
    }

    pub fn average_bytes(&self) -> f64 {
        (self.sizes.0 + self.sizes.1) as f64 / 2.0
    }
}

/// The send stamp at the front of a value.
pub fn stamp_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Keys {
    None,
    RoundRobin,
    Random,
    Zipf(f64),
}

impl std::str::FromStr for Keys {
    type Err = String;
    fn from_str(s: &str) -> Result<Keys, String> {
        match s {
            "none" => Ok(Keys::None),
            "round-robin" => Ok(Keys::RoundRobin),
            "random" => Ok(Keys::Random),
            _ => match s.strip_prefix("zipf:").map(str::parse::<f64>) {
                Some(Ok(e)) if e > 0.0 => Ok(Keys::Zipf(e)),
                _ => Err(format!(
                    "{s:?}: expected none, round-robin, random or zipf:S (S > 0)"
                )),
            },
        }
    }
}

/// Picks key numbers in 0..count by the pattern.
pub struct KeyGen {
    kind: Keys,
    count: u64,
    i: u64,
    rng: Rng,
    /// Cumulative Zipf weights, for a binary search.
    cdf: Vec<f64>,
    buf: String,
}

/// The most distinct keys a Zipf pattern takes (its table is this long).
pub const ZIPF_KEYS_MAX: u64 = 1 << 20;

impl KeyGen {
    pub fn new(kind: Keys, count: u64, seed: u64) -> Result<KeyGen, String> {
        if count == 0 {
            return Err("--key-count must be at least 1".into());
        }
        let cdf = match kind {
            Keys::Zipf(s) => {
                if count > ZIPF_KEYS_MAX {
                    return Err(format!("--key-count above {ZIPF_KEYS_MAX} with zipf"));
                }
                let mut acc = 0.0;
                let mut v: Vec<f64> = (1..=count)
                    .map(|k| {
                        acc += 1.0 / (k as f64).powf(s);
                        acc
                    })
                    .collect();
                for w in &mut v {
                    *w /= acc;
                }
                v
            }
            _ => Vec::new(),
        };
        Ok(KeyGen {
            kind,
            count,
            i: 0,
            rng: Rng::new(seed),
            cdf,
            buf: String::new(),
        })
    }

    pub fn next_index(&mut self) -> Option<u64> {
        let k = match self.kind {
            Keys::None => return None,
            Keys::RoundRobin => self.i % self.count,
            Keys::Random => self.rng.next_u64() % self.count,
            Keys::Zipf(_) => {
                let u = self.rng.unit();
                self.cdf.partition_point(|c| *c < u) as u64
            }
        };
        self.i += 1;
        Some(k.min(self.count - 1))
    }

    /// The next key's bytes (`key-N`), or none.
    pub fn next_key(&mut self) -> Option<&[u8]> {
        let k = self.next_index()?;
        use std::fmt::Write;
        self.buf.clear();
        let _ = write!(self.buf, "key-{k}");
        Some(self.buf.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_sizes_and_the_stamp() {
        let mut v = Values::new(&Payload::Random, (100, 200), 7);
        for i in 0..1000 {
            let b = v.next(i);
            assert!((100..=200).contains(&b.len()));
            assert_eq!(stamp_of(b), Some(i));
        }
        let mut p = Values::new(&Payload::Random, (100, 200), 7);
        for i in 0..100 {
            let (stamp, rest) = p.next_parts(i);
            assert_eq!(u64::from_be_bytes(stamp), i);
            assert!((92..=192).contains(&rest.len()));
        }
        let mut z = Values::new(&Payload::Zeros, (64, 64), 7);
        assert!(z.next(1)[8..].iter().all(|b| *b == 0));
    }

    #[test]
    fn compressible_payload_is_mostly_zeros_at_the_ratio() {
        let mut v = Values::new(&Payload::Compressible(4.0), (64_000, 64_000), 3);
        let b = v.next(0).to_vec();
        let zero_runs = b[8..]
            .chunks(64)
            .filter(|c| c.iter().all(|x| *x == 0))
            .count() as f64;
        let share = zero_runs / (b.len() / 64) as f64;
        assert!((0.65..0.85).contains(&share), "{share}");
    }

    #[test]
    fn key_patterns() {
        let mut rr = KeyGen::new(Keys::RoundRobin, 3, 1).unwrap();
        let got: Vec<u64> = (0..6).map(|_| rr.next_index().unwrap()).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.next_key().unwrap(), b"key-0");
        let mut none = KeyGen::new(Keys::None, 3, 1).unwrap();
        assert!(none.next_key().is_none());
        // Zipf with s = 1.2 over 1000 keys: key 0 is the most frequent by
        // far, and every pick is in range.
        let mut z = KeyGen::new(Keys::Zipf(1.2), 1000, 9).unwrap();
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.next_index().unwrap() as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        assert!(counts[0] > 20_000, "{}", counts[0]);
        let mut r = KeyGen::new(Keys::Random, 10, 5).unwrap();
        assert!((0..1000).all(|_| r.next_index().unwrap() < 10));
        assert!("zipf:0".parse::<Keys>().is_err());
        assert!("compressible:0.5".parse::<Payload>().is_err());
        assert!(KeyGen::new(Keys::Random, 0, 1).is_err());
    }
}

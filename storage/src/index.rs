//! Sparse indexes of one segment.
//!
//! `<base>.index` maps a batch's offset (relative to the segment base) to its
//! byte position: 8-byte entries (u32 relative offset, u32 position, big
//! endian). `<base>.timeindex` holds 12-byte entries (i64 timestamp, u32
//! relative offset): an entry (T, r) says every batch that starts before
//! relative offset r has a max timestamp <= T. Entries of both are added
//! together, every `index.interval.bytes` of log, and a time entry only when
//! T grew; a sealed segment ends its time index with (segment max timestamp,
//! relative next offset).
//!
//! The indexes are hints, never trusted: entries are checked for order when
//! loaded, the batch an entry points at is checked when used, and a missing
//! or damaged index only makes reads scan further.

pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Default, Clone)]
pub(crate) struct OffsetIndex {
    pub entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Decodes entries until the first one that does not strictly follow its
    /// predecessor or points past `segment_bytes` (zero padding, damage, or a
    /// stale tail all stop the decoding there).
    pub fn decode(b: &[u8], segment_bytes: u64) -> OffsetIndex {
        let mut entries: Vec<(u32, u32)> = Vec::new();
        for e in b.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes(e[0..4].try_into().unwrap());
            let pos = u32::from_be_bytes(e[4..8].try_into().unwrap());
            let ordered = entries.last().is_none_or(|&(r, p)| rel > r && pos > p);
            if !ordered || u64::from(pos) >= segment_bytes || rel > i32::MAX as u32 {
                break;
            }
            entries.push((rel, pos));
        }
        OffsetIndex { entries }
    }

    pub fn encode_from(&self, first_entry: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() - first_entry) * OFFSET_ENTRY_BYTES);
        for &(rel, pos) in &self.entries[first_entry..] {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    pub fn push(&mut self, rel: u32, pos: u32) {
        if let Some(&(r, p)) = self.entries.last() {
            assert!(rel > r && pos > p, "index entries must increase");
        }
        self.entries.push((rel, pos));
    }

    /// The last entry at or below `rel`, or the segment start.
    pub fn lookup(&self, rel: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            (0, 0)
        } else {
            self.entries[i - 1]
        }
    }

    /// Like `lookup`, but `back` entries earlier (the segment start when
    /// there are not that many).
    pub fn lookup_back(&self, rel: u32, back: usize) -> (u32, u32) {
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i > back {
            self.entries[i - 1 - back]
        } else {
            (0, 0)
        }
    }

    /// Index of the entry for exactly `rel`, if any.
    pub fn position_of(&self, rel: u32) -> Option<usize> {
        self.entries.binary_search_by_key(&rel, |&(r, _)| r).ok()
    }

    /// Drops entries for batches at or beyond `rel`.
    pub fn truncate_from_rel(&mut self, rel: u32) {
        let i = self.entries.partition_point(|&(r, _)| r < rel);
        self.entries.truncate(i);
    }
}

#[derive(Debug, Default, Clone)]
pub(crate) struct TimeIndex {
    pub entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Decodes entries while timestamps and offsets strictly increase.
    pub fn decode(b: &[u8]) -> TimeIndex {
        let mut entries: Vec<(i64, u32)> = Vec::new();
        for e in b.chunks_exact(TIME_ENTRY_BYTES) {
            let ts = i64::from_be_bytes(e[0..8].try_into().unwrap());
            let rel = u32::from_be_bytes(e[8..12].try_into().unwrap());
            // Timestamps never go back; a segment's seal entry may repeat
            // the last one (its last batches within one millisecond).
            let ordered = entries.last().is_none_or(|&(t, r)| ts >= t && rel > r);
            if !ordered || rel == 0 || rel > i32::MAX as u32 {
                break;
            }
            entries.push((ts, rel));
        }
        TimeIndex { entries }
    }

    pub fn encode_from(&self, first_entry: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.entries.len() - first_entry) * TIME_ENTRY_BYTES);
        for &(ts, rel) in &self.entries[first_entry..] {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Adds (ts, rel) when it moves both forward; returns whether it did.
    pub fn maybe_push(&mut self, ts: i64, rel: u32) -> bool {
        if rel == 0 {
            return false;
        }
        if let Some(&(t, r)) = self.entries.last() {
            if ts <= t || rel <= r {
                return false;
            }
        }
        self.entries.push((ts, rel));
        true
    }

    /// Relative offset from which a scan for the first batch with max
    /// timestamp >= `ts` may start: every batch before it is older.
    pub fn scan_start(&self, ts: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    pub fn truncate_from_rel(&mut self, rel: u32) {
        let i = self.entries.partition_point(|&(_, r)| r < rel);
        self.entries.truncate(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves decoding stops at zero padding and at out-of-order damage.
    #[test]
    fn offset_index_decode_stops_at_padding_and_damage() {
        let mut idx = OffsetIndex::default();
        idx.push(0, 0);
        idx.push(10, 4096);
        idx.push(20, 8192);
        let mut b = idx.encode_from(0);
        b.resize(4096, 0);
        assert_eq!(OffsetIndex::decode(&b, 1 << 20).entries, idx.entries);
        assert_eq!(OffsetIndex::decode(&b, 8192).entries.len(), 2);
        b[13] ^= 0xff; // second entry's position: no longer increasing
        assert!(OffsetIndex::decode(&b, 1 << 20).entries.len() < 3);
        assert_eq!(idx.lookup(15), (10, 4096));
        assert_eq!(idx.lookup(0), (0, 0));
        assert_eq!(idx.lookup(99), (20, 8192));
    }

    // Proves the time index returns a scan start before any batch >= ts.
    #[test]
    fn time_index_scan_start() {
        let mut t = TimeIndex::default();
        assert!(t.maybe_push(100, 5));
        assert!(!t.maybe_push(100, 9));
        assert!(t.maybe_push(200, 10));
        assert_eq!(t.scan_start(50), 0);
        assert_eq!(t.scan_start(150), 5);
        assert_eq!(t.scan_start(201), 10);
        let enc = t.encode_from(0);
        assert_eq!(TimeIndex::decode(&enc).entries, t.entries);
        assert_eq!(TimeIndex::encode_from(&t, 1), enc[12..].to_vec());
    }
}

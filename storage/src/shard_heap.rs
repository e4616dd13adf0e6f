//! Each shard's memory, set up before it serves.
//!
//! A fresh broker used to take every receive buffer and every cached batch
//! from memory the process had never touched: the C allocator asks the
//! kernel for fresh pages, and the kernel faults each one in and zeroes it
//! on its first write. Until the cache reached its budget (gigabytes) that
//! was about a third of a shard's time, so a broker ran at half speed for
//! its first minutes (see BENCHMARKS.md, "A fresh broker on default
//! flags").
//!
//! [`ShardHeap`] gives each shard a part of one reserved region, advised for
//! transparent huge pages and faulted in by the shard's own thread at start
//! ([`adopt`]: NUMA-local pages, zeroed once, before the first client).
//! Allocations of `HEAP_BLOCK_BYTES_MIN` to `HEAP_BLOCK_BYTES_MAX` bytes made
//! on a shard's thread (receive buffers, which become cached batches, and
//! the copies of small batches) come from its part, in size classes four to
//! a doubling (at most a quarter of a block unused), each class carved from
//! superblocks of the largest class. A superblock whose blocks are all free
//! goes back to its part for any class, so a change of workload reuses the
//! same memory. Nothing is ever returned to the kernel: a part's resident
//! size is set once, at start.
//!
//! A block freed on another thread (a batch forwarded between shards) goes
//! back to the part that made it, under that part's lock; the shard's own
//! frees are uncontended. Other threads and other sizes go to the wrapped
//! allocator. A shard whose part is used up borrows from another shard's
//! part, and only when every part is full goes to the wrapped allocator
//! (counted: `overflow`, `borrowed`).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sluice_tuning::limits::{HEAP_BLOCK_BYTES_MAX, HEAP_BLOCK_BYTES_MIN, HEAP_PARTS_MAX};

/// Superblocks are blocks of the largest class, aligned to their size.
const SUPERBLOCK: usize = HEAP_BLOCK_BYTES_MAX;
const HUGE_PAGE: usize = 2 * 1024 * 1024;
const MIN_SHIFT: u32 = HEAP_BLOCK_BYTES_MIN.trailing_zeros();
const MAX_SHIFT: u32 = HEAP_BLOCK_BYTES_MAX.trailing_zeros();
/// Four classes a doubling above the smallest.
const CLASSES: usize = 4 * (MAX_SHIFT - MIN_SHIFT) as usize + 1;
/// The largest alignment served (blocks are multiples of a quarter of the
/// smallest class, inside superblocks aligned to their size).
const ALIGN_MAX: usize = 16;
const NIL: u32 = u32::MAX;

const _: () = assert!(HEAP_BLOCK_BYTES_MIN.is_power_of_two() && HEAP_BLOCK_BYTES_MIN >= 4096);
const _: () = assert!(HEAP_BLOCK_BYTES_MAX.is_power_of_two());
const _: () = assert!(SUPERBLOCK >= HUGE_PAGE && SUPERBLOCK.is_multiple_of(HUGE_PAGE));

/// The size class of an allocation of `size` bytes, if the heap serves it.
pub fn class_of(size: usize) -> Option<usize> {
    if !(HEAP_BLOCK_BYTES_MIN..=HEAP_BLOCK_BYTES_MAX).contains(&size) {
        return None;
    }
    if size == HEAP_BLOCK_BYTES_MIN {
        return Some(0);
    }
    let s = size - 1;
    let b = usize::BITS - 1 - s.leading_zeros(); // floor(log2(s)) >= MIN_SHIFT
    let step = 1usize << (b - 2);
    let k = (s - (1usize << b)) / step + 1; // 1..=4
    Some(4 * (b - MIN_SHIFT) as usize + k)
}

/// The bytes of a block of `class`.
pub fn class_bytes(class: usize) -> usize {
    if class == 0 {
        return HEAP_BLOCK_BYTES_MIN;
    }
    let d = (class - 1) / 4;
    let k = (class - 1) % 4 + 1;
    let base = HEAP_BLOCK_BYTES_MIN << d;
    base + k * (base / 4)
}

fn served(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN_MAX {
        return None;
    }
    class_of(layout.size())
}

/// One superblock's bookkeeping, read and written under its part's lock.
#[derive(Clone, Copy)]
struct Superblock {
    class: u8,
    listed: bool,
    used: u32,
    /// Blocks never handed out start at this index.
    bump: u32,
    /// Blocks the superblock holds.
    cap: u32,
    /// Head of the freed blocks (0 = none); each holds the next's address.
    free: usize,
    next: u32,
    prev: u32,
}

struct PartState {
    /// Superblocks never used start here.
    fresh: u32,
    /// Whole free superblocks, linked through `next`.
    spare: u32,
    /// Per class, the superblocks with a block to give, linked both ways.
    partial: [u32; CLASSES],
    in_use: usize,
    peak: usize,
}

struct Part {
    state: Mutex<PartState>,
    served: AtomicU64,
    overflow: AtomicU64,
    borrowed: AtomicU64,
}

static PARTS: [Part; HEAP_PARTS_MAX] = [const {
    Part {
        state: Mutex::new(PartState {
            fresh: 0,
            spare: NIL,
            partial: [NIL; CLASSES],
            in_use: 0,
            peak: 0,
        }),
        served: AtomicU64::new(0),
        overflow: AtomicU64::new(0),
        borrowed: AtomicU64::new(0),
    }
}; HEAP_PARTS_MAX];

/// The region's base (0 until [`reserve`]), each part's bytes, the number
/// of parts, and the bookkeeping table (one entry per superblock).
static BASE: AtomicUsize = AtomicUsize::new(0);
static PART_BYTES: AtomicUsize = AtomicUsize::new(0);
static PART_COUNT: AtomicUsize = AtomicUsize::new(0);
static TABLE: AtomicUsize = AtomicUsize::new(0);
static RESERVING: Mutex<()> = Mutex::new(());

thread_local! {
    /// The part this thread allocates from (`NIL`: none).
    static HOME: Cell<u32> = const { Cell::new(NIL) };
}

fn home() -> Option<usize> {
    let h = HOME.try_with(|h| h.get()).unwrap_or(NIL);
    (h != NIL).then_some(h as usize)
}

/// Reserves `parts` parts of `part_bytes` each (rounded up to whole
/// superblocks), address space only: nothing is resident until a shard
/// [`adopt`]s its part. Once per process.
pub fn reserve(part_bytes: usize, parts: usize) -> Result<(), String> {
    let _g = RESERVING.lock().unwrap_or_else(|e| e.into_inner());
    if BASE.load(Ordering::Acquire) != 0 {
        return Err("the shard heap is already reserved".into());
    }
    if parts == 0 || parts > HEAP_PARTS_MAX {
        return Err(format!("{parts} heap parts: at most {HEAP_PARTS_MAX}"));
    }
    let part_bytes = part_bytes.max(SUPERBLOCK).next_multiple_of(SUPERBLOCK);
    let sbs = part_bytes / SUPERBLOCK;
    if sbs >= NIL as usize {
        return Err(format!("a heap part of {part_bytes} bytes is too large"));
    }
    let total = part_bytes
        .checked_mul(parts)
        .ok_or("the shard heap is larger than the address space")?;
    let table_len = (sbs * parts * std::mem::size_of::<Superblock>()).next_multiple_of(4096);
    let failed = |e: std::io::Error| format!("reserving the shard heap: {e}");
    let table = crate::region::map_anonymous(table_len).map_err(failed)?;
    let base = match crate::region::map_aligned_huge(total, SUPERBLOCK) {
        Ok(b) => b,
        Err(e) => {
            // SAFETY: the table mapping made above, unused.
            unsafe { libc::munmap(table as *mut libc::c_void, table_len) };
            return Err(failed(e));
        }
    };
    TABLE.store(table, Ordering::Release);
    PART_BYTES.store(part_bytes, Ordering::Release);
    PART_COUNT.store(parts, Ordering::Release);
    BASE.store(base, Ordering::Release);
    Ok(())
}

/// The bytes of each part (0 before [`reserve`]).
pub fn part_bytes() -> usize {
    PART_BYTES.load(Ordering::Acquire)
}

/// Makes `part` this thread's heap and faults all of it in now, from this
/// thread, so its pages are local to the thread's memory node and no
/// allocation later meets a fresh page. Returns the bytes made resident.
/// Blocks for as long as the kernel takes to zero them: call it before
/// serving.
pub fn adopt(part: usize) -> Result<usize, String> {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return Err("the shard heap is not reserved".into());
    }
    if part >= PART_COUNT.load(Ordering::Acquire) {
        return Err(format!("heap part {part} was not reserved"));
    }
    let bytes = part_bytes();
    let start = base + part * bytes;
    // SAFETY: advice on a range of the region's mapping; population keeps
    // whatever the range holds.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_POPULATE_WRITE) };
    if rc != 0 {
        // Before Linux 5.14: one write a page does the same.
        for p in (start..start + bytes).step_by(4096) {
            // SAFETY: inside the mapping; no block of this part is in use
            // before its shard adopts it, and a read-write of one byte
            // keeps its contents.
            unsafe {
                let b = std::ptr::read_volatile(p as *const u8);
                std::ptr::write_volatile(p as *mut u8, b);
            }
        }
    }
    HOME.with(|h| h.set(part as u32));
    Ok(bytes)
}

/// Stops this thread allocating from its part (frees still go back to it).
pub fn leave() {
    HOME.with(|h| h.set(NIL));
}

/// What one part holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// The part's bytes, all resident.
    pub bytes: usize,
    /// Bytes of blocks in use (whole blocks).
    pub in_use: usize,
    /// The most `in_use` has been.
    pub peak: usize,
    /// Allocations served from the part.
    pub served: u64,
    /// Allocations the part could not serve (full): another part served
    /// them, or the wrapped allocator when every part was full.
    pub overflow: u64,
    /// Allocations of other shards this part served.
    pub borrowed: u64,
}

/// The counters of `part`.
pub fn stats(part: usize) -> HeapStats {
    let Some(p) = PARTS.get(part) else {
        return HeapStats::default();
    };
    let st = lock(p);
    HeapStats {
        bytes: part_bytes(),
        in_use: st.in_use,
        peak: st.peak,
        served: p.served.load(Ordering::Relaxed),
        overflow: p.overflow.load(Ordering::Relaxed),
        borrowed: p.borrowed.load(Ordering::Relaxed),
    }
}

fn lock(p: &Part) -> std::sync::MutexGuard<'_, PartState> {
    p.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The part and superblock (global index) of a block in the region.
fn locate(ptr: *mut u8) -> Option<(usize, usize)> {
    let base = BASE.load(Ordering::Acquire);
    let p = ptr as usize;
    if base == 0 || p < base {
        return None;
    }
    let bytes = PART_BYTES.load(Ordering::Acquire);
    let off = p - base;
    if off >= bytes * PART_COUNT.load(Ordering::Acquire) {
        return None;
    }
    Some((off / bytes, off / SUPERBLOCK))
}

/// The bookkeeping of superblock `sb` (global index).
///
/// # Safety
/// The caller holds the lock of the part `sb` belongs to, and drops the
/// reference before releasing it.
#[allow(clippy::mut_from_ref)]
unsafe fn meta(sb: usize) -> &'static mut Superblock {
    let table = TABLE.load(Ordering::Acquire) as *mut Superblock;
    // SAFETY: the table has an entry for every superblock of the region;
    // the part's lock makes this the only reference.
    unsafe { &mut *table.add(sb) }
}

fn sb_addr(sb: usize) -> usize {
    BASE.load(Ordering::Acquire) + sb * SUPERBLOCK
}

/// Links `sb` at the head of its class's list.
///
/// # Safety
/// As for [`meta`], for `sb` and the list's head.
unsafe fn list(st: &mut PartState, class: usize, sb: usize) {
    let head = st.partial[class];
    // SAFETY: under the part's lock.
    unsafe {
        let m = meta(sb);
        m.listed = true;
        m.prev = NIL;
        m.next = head;
        if head != NIL {
            meta(head as usize).prev = sb as u32;
        }
    }
    st.partial[class] = sb as u32;
}

/// Unlinks `sb` from its class's list.
///
/// # Safety
/// As for [`meta`].
unsafe fn unlist(st: &mut PartState, class: usize, sb: usize) {
    // SAFETY: under the part's lock.
    unsafe {
        let (prev, next) = {
            let m = meta(sb);
            m.listed = false;
            (m.prev, m.next)
        };
        if prev != NIL {
            meta(prev as usize).next = next;
        } else {
            st.partial[class] = next;
        }
        if next != NIL {
            meta(next as usize).prev = prev;
        }
    }
}

/// A block of `class` from `part`, or `None` when the part is full.
fn take(part: usize, class: usize) -> Option<*mut u8> {
    let p = &PARTS[part];
    let mut st = lock(p);
    let first_sb = part * (part_bytes() / SUPERBLOCK);
    let size = class_bytes(class);
    let sb = if st.partial[class] != NIL {
        st.partial[class] as usize
    } else {
        let sb = if st.spare != NIL {
            let sb = st.spare as usize;
            // SAFETY: under the part's lock.
            st.spare = unsafe { meta(sb).next };
            sb
        } else if (st.fresh as usize) < part_bytes() / SUPERBLOCK {
            let sb = first_sb + st.fresh as usize;
            st.fresh += 1;
            sb
        } else {
            drop(st);
            p.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        // SAFETY: under the part's lock; `sb` is on no list.
        unsafe {
            *meta(sb) = Superblock {
                class: class as u8,
                listed: false,
                used: 0,
                bump: 0,
                cap: (SUPERBLOCK / size) as u32,
                free: 0,
                next: NIL,
                prev: NIL,
            };
            list(&mut st, class, sb);
        }
        sb
    };
    // SAFETY: under the part's lock; a block on the free list is unused and
    // holds the next one's address.
    let block = unsafe {
        let m = meta(sb);
        let block = if m.free != 0 {
            let b = m.free;
            m.free = (b as *const usize).read();
            b
        } else {
            let b = sb_addr(sb) + m.bump as usize * size;
            m.bump += 1;
            b
        };
        m.used += 1;
        if m.free == 0 && m.bump == m.cap {
            unlist(&mut st, class, sb);
        }
        block
    };
    st.in_use += size;
    st.peak = st.peak.max(st.in_use);
    drop(st);
    p.served.fetch_add(1, Ordering::Relaxed);
    Some(block as *mut u8)
}

/// Gives a block back to the part that made it.
///
/// # Safety
/// `ptr` is a block of the region, handed out by [`take`] and no longer
/// used.
unsafe fn give(part: usize, sb: usize, ptr: *mut u8) {
    let mut st = lock(&PARTS[part]);
    // SAFETY: under the part's lock; the block is ours to link.
    unsafe {
        let (class, used, listed) = {
            let m = meta(sb);
            (ptr as *mut usize).write(m.free);
            m.free = ptr as usize;
            m.used -= 1;
            (m.class as usize, m.used, m.listed)
        };
        st.in_use -= class_bytes(class);
        if used == 0 {
            if listed {
                unlist(&mut st, class, sb);
            }
            meta(sb).next = st.spare;
            st.spare = sb as u32;
        } else if !listed {
            list(&mut st, class, sb);
        }
    }
}

/// A block from `part`, or when it is full from the next part with room:
/// a shard whose connections carry other shards' batches (forwarded, and
/// cached by their owners) holds more than its share, and the others
/// less. Counted as `borrowed` on the part that lends.
fn take_or_borrow(part: usize, class: usize) -> Option<*mut u8> {
    if let Some(p) = take(part, class) {
        return Some(p);
    }
    let parts = PART_COUNT.load(Ordering::Acquire);
    (1..parts).find_map(|i| {
        let other = (part + i) % parts;
        let p = take(other, class)?;
        PARTS[other].borrowed.fetch_add(1, Ordering::Relaxed);
        Some(p)
    })
}

fn class_at(part: usize, sb: usize) -> usize {
    let _st = lock(&PARTS[part]);
    // SAFETY: under the part's lock.
    unsafe { meta(sb).class as usize }
}

/// An allocator (`A`) whose blocks of the heap's sizes come from the
/// calling shard's part of the heap.
pub struct ShardHeap<A>(pub A);

// SAFETY: a block is served by a part only for a layout it fits (size and
// alignment), and given back to the part whose address range holds it;
// every other block is `A`'s, made and freed by it. A part's blocks are
// never handed out twice: each is on one free list, never handed out
// (beyond its superblock's bump), or in use.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ShardHeap<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let (Some(part), Some(class)) = (home(), served(layout)) {
            if let Some(p) = take_or_borrow(part, class) {
                return p;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let (Some(part), Some(class)) = (home(), served(layout)) {
            if let Some(p) = take_or_borrow(part, class) {
                // SAFETY: the block holds at least `layout.size()` bytes.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                return p;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if served(layout).is_some() {
            if let Some((part, sb)) = locate(ptr) {
                // SAFETY: the caller gives back a block it no longer uses.
                unsafe { give(part, sb, ptr) };
                return;
            }
        }
        // SAFETY: not the heap's, so `A` made it.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same alignment, a size the caller vouches for.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let ours = served(layout).and_then(|_| locate(ptr));
        if let Some((part, sb)) = ours {
            if served(new_layout) == Some(class_at(part, sb)) {
                return ptr; // Still fits its block.
            }
        } else if served(new_layout).is_none() || home().is_none() {
            // SAFETY: `A` made it and may resize it.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded contract.
        unsafe { crate::region::move_block(self, ptr, layout, new_layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::sync::Once;

    const MIB: usize = 1024 * 1024;
    /// Parts the tests here reserve, each this many superblocks.
    const TEST_PARTS: usize = 8;
    const TEST_SBS: usize = 8;

    fn reserved() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| reserve(TEST_SBS * SUPERBLOCK, TEST_PARTS).unwrap());
    }

    fn l(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    // Proves every size in the heap's range maps to the smallest class that
    // holds it, with at most a quarter of a block unused, and the classes
    // run in order from the smallest block to the largest.
    #[test]
    fn classes_cover_the_range_tightly() {
        assert_eq!(class_bytes(0), HEAP_BLOCK_BYTES_MIN);
        assert_eq!(class_bytes(CLASSES - 1), HEAP_BLOCK_BYTES_MAX);
        for c in 1..CLASSES {
            assert!(class_bytes(c) > class_bytes(c - 1));
        }
        let sizes = (HEAP_BLOCK_BYTES_MIN..=HEAP_BLOCK_BYTES_MAX)
            .step_by(977)
            .chain((0..CLASSES).flat_map(|c| [class_bytes(c), class_bytes(c) + 1]));
        for size in sizes {
            let Some(c) = class_of(size) else {
                assert!(size > HEAP_BLOCK_BYTES_MAX, "{size}");
                continue;
            };
            assert!(class_bytes(c) >= size, "{size} in class {c}");
            assert!(
                c == 0 || class_bytes(c - 1) < size,
                "{size}: a smaller class fits"
            );
            assert!(class_bytes(c) - size <= class_bytes(c) / 4, "{size}");
        }
        assert_eq!(class_of(HEAP_BLOCK_BYTES_MIN - 1), None);
        assert_eq!(class_of(HEAP_BLOCK_BYTES_MAX + 1), None);
    }

    // Proves a thread with no part, and sizes outside the classes, go to the
    // wrapped allocator; an adopted thread's blocks come from its part,
    // which is resident in full once adopted.
    #[test]
    fn an_adopted_thread_allocates_from_its_resident_part() {
        reserved();
        let a = ShardHeap(System);
        std::thread::spawn(move || unsafe {
            let outside = a.alloc(l(64 * 1024));
            assert!(locate(outside).is_none(), "no part adopted yet");
            a.dealloc(outside, l(64 * 1024));
            assert_eq!(adopt(0).unwrap(), TEST_SBS * SUPERBLOCK);
            let base = BASE.load(Ordering::Acquire);
            let mut resident = vec![0u8; TEST_SBS * SUPERBLOCK / 4096];
            let rc = libc::mincore(
                base as *mut libc::c_void,
                TEST_SBS * SUPERBLOCK,
                resident.as_mut_ptr(),
            );
            assert_eq!(rc, 0);
            assert!(resident.iter().all(|r| r & 1 == 1), "every page resident");
            let inside = a.alloc(l(64 * 1024));
            assert_eq!(locate(inside).map(|(p, _)| p), Some(0));
            let small = a.alloc(l(100));
            assert!(locate(small).is_none(), "below the smallest class");
            let big = a.alloc(l(HEAP_BLOCK_BYTES_MAX + 1));
            assert!(locate(big).is_none(), "above the largest class");
            let aligned = a.alloc(Layout::from_size_align(64 * 1024, 4096).unwrap());
            assert!(
                locate(aligned).is_none(),
                "page-aligned: the DMA allocator's"
            );
            a.dealloc(inside, l(64 * 1024));
            a.dealloc(small, l(100));
            a.dealloc(big, l(HEAP_BLOCK_BYTES_MAX + 1));
            a.dealloc(aligned, Layout::from_size_align(64 * 1024, 4096).unwrap());
            leave();
        })
        .join()
        .unwrap();
    }

    // Proves blocks are never handed out twice, freed blocks are reused, a
    // superblock emptied of one class serves another, and a full part
    // borrows from the next part (counted) instead of failing.
    #[test]
    fn blocks_are_reused_across_classes_and_a_full_part_borrows() {
        reserved();
        let a = ShardHeap(System);
        // Part 6 (the next one, 7, lends; no other test uses either).
        std::thread::spawn(move || unsafe {
            adopt(6).unwrap();
            let size = MIB; // 4 a superblock
            let mut blocks: Vec<*mut u8> = Vec::new();
            for i in 0..4 * TEST_SBS {
                let p = a.alloc(l(size));
                assert_eq!(locate(p).map(|(p, _)| p), Some(6), "block {i}");
                p.write_bytes(i as u8, size);
                blocks.push(p);
            }
            let mut sorted: Vec<usize> = blocks.iter().map(|&p| p as usize).collect();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), blocks.len(), "a block handed out twice");
            for (i, &p) in blocks.iter().enumerate() {
                let s = std::slice::from_raw_parts(p, size);
                assert!(s.iter().all(|&b| b == i as u8), "block {i} overwritten");
            }
            let st = stats(6);
            assert_eq!(st.in_use, TEST_SBS * SUPERBLOCK);
            let over = a.alloc(l(size));
            assert_eq!(
                locate(over).map(|(p, _)| p),
                Some(7),
                "full: the next part lends"
            );
            assert_eq!(stats(6).overflow, st.overflow + 1);
            assert_eq!(stats(7).borrowed, 1);
            a.dealloc(over, l(size));
            assert_eq!(
                stats(7).in_use,
                0,
                "a borrowed block goes back to its lender"
            );
            // Free everything: every superblock goes back to the part.
            for &p in &blocks {
                a.dealloc(p, l(size));
            }
            assert_eq!(stats(6).in_use, 0);
            // Another class takes the same memory.
            let small = 100 * 1024;
            let n = (SUPERBLOCK / class_bytes(class_of(small).unwrap())) * TEST_SBS;
            let again: Vec<*mut u8> = (0..n).map(|_| a.alloc(l(small))).collect();
            assert!(again.iter().all(|&p| locate(p).map(|(p, _)| p) == Some(6)));
            let first = again[0];
            a.dealloc(first, l(small));
            assert_eq!(a.alloc(l(small)), first, "a freed block is reused");
            for &p in &again {
                a.dealloc(p, l(small));
            }
            assert_eq!(stats(6).in_use, 0);
            assert!(stats(6).peak >= TEST_SBS * SUPERBLOCK / 2);
            leave();
        })
        .join()
        .unwrap();
    }

    // Proves blocks freed on other threads go back to the part that made
    // them, while that part's shard keeps allocating, and nothing is
    // shared or lost.
    #[test]
    fn blocks_freed_on_other_threads_return_to_their_part() {
        reserved();
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, u8)>(64);
        let freer = std::thread::spawn(move || {
            let a = ShardHeap(System);
            for (p, tag) in rx {
                let s = unsafe { std::slice::from_raw_parts(p as *const u8, 8192) };
                assert!(s.iter().all(|&b| b == tag), "block shared");
                unsafe { a.dealloc(p as *mut u8, l(8192)) };
            }
        });
        std::thread::spawn(move || unsafe {
            let a = ShardHeap(System);
            adopt(2).unwrap();
            for i in 0..20_000u32 {
                let p = a.alloc(l(8192));
                assert_eq!(locate(p).map(|(p, _)| p), Some(2));
                p.write_bytes(i as u8, 8192);
                if i % 2 == 0 {
                    tx.send((p as usize, i as u8)).unwrap();
                } else {
                    a.dealloc(p, l(8192));
                }
            }
            drop(tx);
            leave();
        })
        .join()
        .unwrap();
        freer.join().unwrap();
        assert_eq!(stats(2).in_use, 0);
        assert_eq!(stats(2).overflow, 0);
    }

    // Proves zeroed blocks read as zero after reuse, and resizing keeps the
    // bytes whether the block stays, moves to another class, or leaves
    // the heap.
    #[test]
    fn zeroed_and_resized_blocks_hold_the_right_bytes() {
        reserved();
        std::thread::spawn(|| unsafe {
            let a = ShardHeap(System);
            adopt(3).unwrap();
            let p = a.alloc(l(40_000));
            p.write_bytes(0xFF, 40_000);
            a.dealloc(p, l(40_000));
            let z = a.alloc_zeroed(l(40_000));
            assert_eq!(z, p, "the same block again");
            assert!(std::slice::from_raw_parts(z, 40_000)
                .iter()
                .all(|&b| b == 0));
            for i in 0..40_000 {
                *z.add(i) = (i % 251) as u8;
            }
            let same = a.realloc(z, l(40_000), 40_500);
            assert_eq!(same, z, "still fits its class");
            let g = a.realloc(same, l(40_500), 300_000);
            assert!(locate(g).is_some() && g != z);
            let h = a.realloc(g, l(300_000), HEAP_BLOCK_BYTES_MAX * 2);
            assert!(locate(h).is_none());
            let s = std::slice::from_raw_parts(h, 40_000);
            assert!(s.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            a.dealloc(h, l(HEAP_BLOCK_BYTES_MAX * 2));
            assert_eq!(stats(3).in_use, 0);
            leave();
        })
        .join()
        .unwrap();
    }
}

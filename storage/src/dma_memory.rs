//! Huge-page memory for direct-I/O buffers.
//!
//! A device sees a DMA buffer as a list of physical segments, one per run
//! of physically contiguous pages. Buffers from the ordinary heap are 4 KiB
//! pages scattered in physical memory, so a 256 KiB read is 64 segments.
//! Some devices bound the segments in flight rather than the requests: a
//! virtio disk without indirect descriptors holds at most one queue's worth
//! of segments (254 here), so it runs about four such reads at a time
//! however many are submitted, and the rest wait in the block layer. A
//! buffer inside one 2 MiB huge page is a single segment.
//!
//! [`DmaAwareAlloc`] serves page-aligned allocations of
//! `DMA_BLOCK_BYTES_MIN` to `DMA_BLOCK_BYTES_MAX` (glommio's DMA buffers
//! and its registered I/O memory, which is where every segment read and
//! write lands) from one reserved region advised for transparent huge
//! pages, in power-of-two size classes with free lists. Everything else,
//! and everything once the region is used up, goes to the system
//! allocator. Freed blocks are kept for reuse and never returned to the
//! kernel: the region's resident size is its high-water mark, at most
//! `DMA_REGION_BYTES`.
//!
//! Where transparent huge pages are off (`never`), the region is ordinary
//! memory and only the reuse remains.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sluice_tuning::limits::{DMA_BLOCK_BYTES_MAX, DMA_BLOCK_BYTES_MIN, DMA_REGION_BYTES};

/// The smallest alignment that marks a buffer as meant for direct I/O.
const PAGE: usize = 4096;
/// Huge page size the region is aligned to.
const HUGE_PAGE: usize = 2 * 1024 * 1024;
/// The region is carved into superblocks of the largest class; each is
/// split into blocks of one class when that class runs out.
const SUPERBLOCK: usize = DMA_BLOCK_BYTES_MAX;
const SUPERBLOCKS: usize = DMA_REGION_BYTES / SUPERBLOCK;
const CLASS_MIN_SHIFT: u32 = DMA_BLOCK_BYTES_MIN.trailing_zeros();
const CLASSES: usize = (DMA_BLOCK_BYTES_MAX.trailing_zeros() - CLASS_MIN_SHIFT + 1) as usize;

const _: () = assert!(DMA_BLOCK_BYTES_MIN.is_power_of_two() && DMA_BLOCK_BYTES_MIN >= PAGE);
const _: () = assert!(DMA_BLOCK_BYTES_MAX.is_power_of_two());
const _: () = assert!(DMA_REGION_BYTES.is_multiple_of(SUPERBLOCK) && SUPERBLOCK >= HUGE_PAGE);

/// Region state: `UNMAPPED`, `MAPPING` (one thread is mapping it),
/// `UNAVAILABLE` (the mapping failed), or the region's base address.
static REGION: AtomicUsize = AtomicUsize::new(UNMAPPED);
const UNMAPPED: usize = 0;
const MAPPING: usize = 1;
const UNAVAILABLE: usize = 2;
/// Superblocks handed out so far.
static NEXT_SUPERBLOCK: AtomicUsize = AtomicUsize::new(0);
/// Head of each class's free list (0 = empty); a free block holds the
/// address of the next one in its first word.
static FREE: [Mutex<usize>; CLASSES] = [const { Mutex::new(0) }; CLASSES];

/// The system allocator, with direct-I/O buffers in huge pages.
pub struct DmaAwareAlloc;

/// Faults in the first `bytes` of the region (the blocks handed out first)
/// without changing their contents (`MADV_POPULATE_WRITE`), so the huge
/// pages a process's shards start with are allocated, and compacted for
/// if need be, before they run rather than on a shard's first I/O.
/// Returns the bytes populated: 0 when the region is unavailable or the
/// kernel lacks the advice (before Linux 5.14).
pub fn populate(bytes: usize) -> usize {
    let Some(base) = region() else { return 0 };
    // The region is a whole number of huge pages (superblocks are).
    let len = bytes.min(DMA_REGION_BYTES).next_multiple_of(HUGE_PAGE);
    // SAFETY: advice on a range inside the region's mapping; population
    // keeps whatever blocks in it hold.
    let rc = unsafe { libc::madvise(base as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        len
    } else {
        0
    }
}

/// The size class of a layout the region serves, if it serves it.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size();
    if layout.align() < PAGE || !(DMA_BLOCK_BYTES_MIN..=DMA_BLOCK_BYTES_MAX).contains(&size) {
        return None;
    }
    let block = size.next_power_of_two();
    // Blocks of a class are aligned to their size (superblocks are aligned
    // to the largest class), which covers any alignment up to it.
    if layout.align() > block {
        return None;
    }
    Some((block.trailing_zeros() - CLASS_MIN_SHIFT) as usize)
}

fn block_bytes(class: usize) -> usize {
    DMA_BLOCK_BYTES_MIN << class
}

/// The region's base, mapping it on first use; `None` when unavailable.
fn region() -> Option<usize> {
    loop {
        match REGION.load(Ordering::Acquire) {
            UNMAPPED => {}
            // Another thread is mapping it: one mmap, microseconds.
            MAPPING => {
                std::hint::spin_loop();
                continue;
            }
            UNAVAILABLE => return None,
            base => return Some(base),
        }
        if REGION
            .compare_exchange(UNMAPPED, MAPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            break;
        }
    }
    let Ok(base) = crate::region::map_aligned_huge(DMA_REGION_BYTES, SUPERBLOCK) else {
        // The system allocator serves everything from now on.
        REGION.store(UNAVAILABLE, Ordering::Release);
        return None;
    };
    REGION.store(base, Ordering::Release);
    Some(base)
}

fn in_region(ptr: *mut u8) -> bool {
    let base = REGION.load(Ordering::Acquire);
    let p = ptr as usize;
    base > UNAVAILABLE && p >= base && p < base + DMA_REGION_BYTES
}

fn lock(class: usize) -> std::sync::MutexGuard<'static, usize> {
    FREE[class].lock().unwrap_or_else(|e| e.into_inner())
}

/// Pushes a block of `class` onto its free list.
///
/// # Safety
/// `p` is a block of that class inside the region that nothing uses.
unsafe fn push(class: usize, p: usize) {
    let mut head = lock(class);
    // SAFETY: the block is ours and at least a word long and aligned.
    unsafe { (p as *mut usize).write(*head) };
    *head = p;
}

fn pop(class: usize) -> Option<usize> {
    let mut head = lock(class);
    let p = *head;
    if p == 0 {
        return None;
    }
    // SAFETY: `p` is a free block whose first word links the next one.
    *head = unsafe { (p as *const usize).read() };
    Some(p)
}

/// A block of `class` from its free list or a fresh superblock.
fn take(class: usize) -> Option<*mut u8> {
    if let Some(p) = pop(class) {
        return Some(p as *mut u8);
    }
    let base = region()?;
    let i = NEXT_SUPERBLOCK.fetch_add(1, Ordering::Relaxed);
    if i >= SUPERBLOCKS {
        return None;
    }
    let sb = base + i * SUPERBLOCK;
    let size = block_bytes(class);
    for b in (sb + size..sb + SUPERBLOCK).step_by(size) {
        // SAFETY: fresh blocks of this class inside the region.
        unsafe { push(class, b) };
    }
    Some(sb as *mut u8)
}

// SAFETY: a block is served by the region only for a layout of a class it
// fits (size and alignment), and freed back to that class (the layout at
// free time is the layout at allocation); every other block is the system
// allocator's, made and freed by it. Region blocks are never handed out
// twice: each is on one free list or in use.
unsafe impl GlobalAlloc for DmaAwareAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = class_of(layout).and_then(take) {
            return p;
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = class_of(layout).and_then(take) {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_region(ptr) {
            let class = class_of(layout).expect("a region block freed with a layout it never had");
            // SAFETY: the caller gives back a block it no longer uses.
            unsafe { push(class, ptr as usize) };
            return;
        }
        // SAFETY: not the region's, so the system allocator made it.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same alignment, a size the caller vouches for.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !in_region(ptr) && class_of(new_layout).is_none() {
            // SAFETY: the system allocator made it and may resize it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded contract.
        unsafe { crate::region::move_block(self, ptr, layout, new_layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn direct_io_buffers_come_from_the_region_and_others_do_not() {
        let a = DmaAwareAlloc;
        unsafe {
            let dma = a.alloc(layout(256 * 1024, 4096));
            assert!(
                in_region(dma),
                "a page-aligned 256 KiB buffer is a DMA buffer"
            );
            assert_eq!(dma as usize % (256 * 1024), 0);
            let heap = a.alloc(layout(256 * 1024, 8));
            assert!(
                !heap.is_null() && !in_region(heap),
                "unaligned: system allocator"
            );
            let small = a.alloc(layout(8192, 4096));
            assert!(
                !small.is_null() && !in_region(small),
                "below the smallest class"
            );
            let huge = a.alloc(layout(DMA_BLOCK_BYTES_MAX * 2, 4096));
            assert!(
                !huge.is_null() && !in_region(huge),
                "above the largest class"
            );
            for (p, l) in [
                (dma, layout(256 * 1024, 4096)),
                (heap, layout(256 * 1024, 8)),
                (small, layout(8192, 4096)),
                (huge, layout(DMA_BLOCK_BYTES_MAX * 2, 4096)),
            ] {
                a.dealloc(p, l);
            }
        }
        assert!(
            REGION.load(Ordering::Acquire) > UNAVAILABLE,
            "the region is mapped"
        );
    }

    #[test]
    fn populating_makes_the_first_blocks_resident() {
        const MIB: usize = 1024 * 1024;
        let n = populate(64 * MIB);
        if n == 0 {
            return; // A kernel before 5.14: nothing to check.
        }
        assert_eq!(n, 64 * MIB);
        // The other tests here carve at most about 32 MiB; the last 16 MiB
        // populated are untouched by anything but `populate`.
        let base = REGION.load(Ordering::Acquire) + 48 * MIB;
        let mut resident = vec![0u8; 16 * MIB / PAGE];
        // SAFETY: the range is mapped; the vector has one byte per page.
        let rc =
            unsafe { libc::mincore(base as *mut libc::c_void, 16 * MIB, resident.as_mut_ptr()) };
        assert_eq!(rc, 0);
        assert!(resident.iter().all(|r| r & 1 == 1), "every page resident");
    }

    #[test]
    fn blocks_are_reused_and_never_shared() {
        let a = DmaAwareAlloc;
        // A class no other test uses, so its free list is this test's.
        let l = layout(3 * 1024 * 1024, 4096); // 4 MiB class
        unsafe {
            let p = a.alloc(l);
            assert!(in_region(p));
            p.write_bytes(0xAB, l.size());
            let q = a.alloc(l);
            assert!(
                in_region(q) && q != p,
                "a block in use is not handed out again"
            );
            a.dealloc(p, l);
            let r = a.alloc(l);
            assert_eq!(r, p, "a freed block is reused");
            a.dealloc(q, l);
            a.dealloc(r, l);
        }
    }

    #[test]
    fn zeroed_and_resized_blocks_hold_the_right_bytes() {
        let a = DmaAwareAlloc;
        let l = layout(128 * 1024, 4096);
        unsafe {
            let p = a.alloc(l);
            p.write_bytes(0xFF, l.size());
            a.dealloc(p, l);
            // The same class again: the reused block must read as zero.
            let z = a.alloc_zeroed(l);
            assert!(std::slice::from_raw_parts(z, l.size())
                .iter()
                .all(|&b| b == 0));
            for i in 0..l.size() {
                *z.add(i) = (i % 251) as u8;
            }
            // Grown into a larger class, then out of the region entirely.
            let g = a.realloc(z, l, 512 * 1024);
            assert!(in_region(g));
            let s = std::slice::from_raw_parts(g, l.size());
            assert!(s.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            let h = a.realloc(g, layout(512 * 1024, 4096), 2 * DMA_BLOCK_BYTES_MAX);
            assert!(!in_region(h));
            let s = std::slice::from_raw_parts(h, l.size());
            assert!(s.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            a.dealloc(h, layout(2 * DMA_BLOCK_BYTES_MAX, 4096));
        }
    }

    #[test]
    fn threads_allocating_and_freeing_at_once_never_share_a_block() {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let a = DmaAwareAlloc;
                    let l = layout(64 * 1024, 4096);
                    for round in 0..200u32 {
                        let blocks: Vec<_> = (0..8)
                            .map(|_| unsafe {
                                let p = a.alloc(l);
                                p.write_bytes(t, l.size());
                                p as usize
                            })
                            .collect();
                        std::thread::yield_now();
                        for &p in &blocks {
                            let s = unsafe { std::slice::from_raw_parts(p as *const u8, l.size()) };
                            assert!(s.iter().all(|&b| b == t), "round {round}: block shared");
                            unsafe { a.dealloc(p as *mut u8, l) };
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

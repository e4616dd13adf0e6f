//! What the allocators with regions of their own (`dma_memory`,
//! `shard_heap`) share: anonymous mappings, a region aligned to its blocks
//! and advised for transparent huge pages, and resizing by moving a block.

use std::alloc::{GlobalAlloc, Layout};

/// A fresh anonymous private mapping of `len` bytes, address space only
/// (`MAP_NORESERVE`): nothing is resident until touched.
pub(crate) fn map_anonymous(len: usize) -> std::io::Result<usize> {
    // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p as usize)
    }
}

/// A mapping of `len` bytes starting on a multiple of `align` (a power of
/// two), advised for transparent huge pages (advice only: without them it
/// is ordinary pages). Returns its base.
pub(crate) fn map_aligned_huge(len: usize, align: usize) -> std::io::Result<usize> {
    let mapped = len + align;
    let start = map_anonymous(mapped)?;
    let base = start.next_multiple_of(align);
    // SAFETY: both ranges lie inside the mapping just made and are unused:
    // the slack before the aligned base and after the region's end.
    unsafe {
        if base > start {
            libc::munmap(start as *mut libc::c_void, base - start);
        }
        let end = base + len;
        if start + mapped > end {
            libc::munmap(end as *mut libc::c_void, start + mapped - end);
        }
        libc::madvise(base as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    Ok(base)
}

/// Resizes by moving: a new block of `new_layout` from `a`, the smaller of
/// the two sizes copied, the old block freed through `a` (which frees it
/// through whichever allocator made it).
///
/// # Safety
/// As for `GlobalAlloc::realloc`, with `new_layout` the old alignment and
/// the new size.
pub(crate) unsafe fn move_block<A: GlobalAlloc>(
    a: &A,
    ptr: *mut u8,
    layout: Layout,
    new_layout: Layout,
) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe {
        let p = a.alloc(new_layout);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_layout.size()));
            a.dealloc(ptr, layout);
        }
        p
    }
}

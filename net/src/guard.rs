//! A guard for decoding untrusted frames.
//!
//! The `kafka-protocol` codecs pre-allocate arrays with the element count
//! read from the wire. A frame of a few bytes can claim billions of
//! elements; the allocation that follows is refused by the kernel and the
//! process aborts (allocation failure is not a panic). While a thread runs
//! [`decoding_untrusted`], every allocation of `RESERVE_BYTES_MIN` or more
//! is instead served by an anonymous `MAP_NORESERVE` mapping: address space
//! is reserved, no memory is committed until touched, and a bogus count
//! costs nothing before the decoder fails on the missing bytes.
//!
//! [`GuardedAlloc`] must be the binary's global allocator for the guard to
//! act; everywhere else it is the allocator it wraps (the system allocator
//! by default) plus one thread-local read per allocation. Reserved regions are recorded, so a free always
//! goes back to the allocator that made the block.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;

/// Allocations at least this large are reserved lazily while decoding
/// untrusted input. Smaller ones are bounded anyway.
pub const RESERVE_BYTES_MIN: usize = 64 * 1024 * 1024;

/// Reserved regions live at the same time, at most (one per nested array
/// being decoded; far more than any real message nests).
const RESERVED_MAX: usize = 64;

thread_local! {
    static UNTRUSTED: Cell<bool> = const { Cell::new(false) };
}

static RESERVED: Mutex<[(usize, usize); RESERVED_MAX]> = Mutex::new([(0, 0); RESERVED_MAX]);

/// An allocator (`A`, the system allocator unless given), with lazy
/// reservation of large blocks while the current thread decodes untrusted
/// input.
pub struct GuardedAlloc<A = System>(pub A);

fn untrusted() -> bool {
    // `try_with` because allocation can happen while thread locals are torn
    // down.
    UNTRUSTED.try_with(|u| u.get()).unwrap_or(false)
}

/// True while this thread decodes untrusted input (inside
/// [`decoding_untrusted`]), where a codec panic is caught and answered as
/// a malformed request rather than being a bug.
pub fn is_decoding_untrusted() -> bool {
    untrusted()
}

/// Runs `f` with the guard on for this thread.
pub fn decoding_untrusted<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNTRUSTED.with(|u| u.set(self.0));
        }
    }
    let _reset = Reset(UNTRUSTED.with(|u| u.replace(true)));
    f()
}

unsafe fn reserve(layout: Layout) -> *mut u8 {
    if layout.align() > 4096 {
        return std::ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping; no memory is touched here.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let mut table = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    match table.iter_mut().find(|e| e.0 == 0) {
        Some(slot) => {
            *slot = (p as usize, layout.size());
            p.cast()
        }
        None => {
            // SAFETY: the mapping was just made and nothing refers to it.
            unsafe { libc::munmap(p, layout.size()) };
            std::ptr::null_mut()
        }
    }
}

/// Releases `ptr` if it is a reserved region; false when it is not one.
fn release(ptr: *mut u8) -> bool {
    let mut table = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    match table.iter_mut().find(|e| e.0 == ptr as usize) {
        Some(slot) => {
            // SAFETY: the region was mapped by `reserve` with this length.
            unsafe { libc::munmap(ptr.cast(), slot.1) };
            *slot = (0, 0);
            true
        }
        None => false,
    }
}

/// A reserved block for a large allocation made while the thread decodes
/// untrusted input; `None` to use the system allocator.
fn reserve_if_untrusted(layout: Layout) -> Option<*mut u8> {
    if layout.size() < RESERVE_BYTES_MIN || !untrusted() {
        return None;
    }
    // SAFETY: `reserve` only maps fresh anonymous memory.
    let p = unsafe { reserve(layout) };
    (!p.is_null()).then_some(p)
}

fn is_reserved(ptr: *mut u8) -> bool {
    let table = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    table.iter().any(|e| e.0 == ptr as usize)
}

// SAFETY: every block is served either by `A` or by `reserve`, and freed
// by the same one (large frees consult the table of reserved regions);
// `realloc` moves between the two by copying.
unsafe impl<A: GlobalAlloc> GlobalAlloc for GuardedAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match reserve_if_untrusted(layout) {
            Some(p) => p,
            // SAFETY: forwarded contract.
            None => unsafe { self.0.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Anonymous mappings read as zero, so a reserved block qualifies.
        match reserve_if_untrusted(layout) {
            Some(p) => p,
            // SAFETY: forwarded contract.
            None => unsafe { self.0.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= RESERVE_BYTES_MIN && release(ptr) {
            return;
        }
        // SAFETY: not reserved, so `A` made it.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_reserved = layout.size() >= RESERVE_BYTES_MIN && is_reserved(ptr);
        let new_reserved = new_size >= RESERVE_BYTES_MIN && untrusted();
        if !old_reserved && !new_reserved {
            // SAFETY: `A` made it and may resize it.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the layout is valid: same alignment, a size the caller
        // vouches for.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded contract; then copy the smaller of the two and
        // free the old block through the allocator that made it.
        unsafe {
            let p = self.alloc(new_layout);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

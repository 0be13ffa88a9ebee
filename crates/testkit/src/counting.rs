//! A global allocator that counts each thread's allocations, for tests that prove a path allocates nothing. A test
//! binary installs it with `#[global_allocator] static A: ttdrv_testkit::counting::Counting =
//! ttdrv_testkit::counting::Counting;` and measures with [`allocations`]. Only the calling thread is counted: other
//! threads (the emulated device's engines) are not the path under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the allocations (`alloc`, `alloc_zeroed`, `realloc`) of the thread that makes them.
pub struct Counting;

thread_local! {
    // `const` and without a destructor, so the allocator can use it at any time, thread exit included.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only a thread-local Cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
}

/// Runs `f` and returns how many allocations the calling thread made during it (zero unless [`Counting`] is the
/// binary's global allocator), with `f`'s result.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCS.with(Cell::get);
    let r = f();
    (ALLOCS.with(Cell::get) - before, r)
}

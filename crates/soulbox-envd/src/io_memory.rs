//! The agent's allocator: the system's, except that tokio's I/O registrations get addresses that are never used
//! for anything else.
//!
//! Why: gVisor's restore (Debian 12's runsc) reports, on the agent's epoll instance, interests that were deleted
//! (`EPOLL_CTL_DEL`) before the checkpoint, each with its old user data. tokio's user data is the address of the
//! registration's `ScheduledIo`, which tokio frees once the interest is deleted; its first `epoll_wait` after the
//! restore then wakes through a freed pointer. Where the allocator had reused that memory the agent faulted at once
//! (route strings read as a waiter list); where another registration had it, that one took the stale `EPOLLHUP`
//! as a permanent "closed" and spun on `EAGAIN`. So a registration's block is never handed out again: its bytes
//! stay a dropped `ScheduledIo` (no waiters, no wakers, its lock free: a wake through it does nothing), or, once
//! every block of its page is freed, the page is given back (`MADV_DONTNEED`) and reads as zeros, which is an empty
//! `ScheduledIo` too. The cost is address space, 256 bytes per registration ever made, from a reservation that
//! holds 64 million of them; memory is only what live registrations (and pages with one) hold.
//!
//! A registration is recognised by its allocation's layout, `Arc<ScheduledIo>`'s: 256 bytes, 128-byte aligned
//! (tokio pads it to a cache line pair); nothing else of the agent's allocates that layout, and `tests` check
//! that a registration does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// `Arc<ScheduledIo>`'s layout on x86_64 and aarch64 (tokio 1.x): the counts padded to 128 bytes, then the
/// 128-byte aligned `ScheduledIo`.
const BLOCK: usize = 256;
const BLOCK_ALIGN: usize = 128;
const PAGE: usize = 4096;
const BLOCKS_PER_PAGE: u8 = (PAGE / BLOCK) as u8;
/// Address space reserved (not committed) for registration blocks; past it, registrations come from the system.
const ARENA: usize = 16 << 30;

const UNMAPPED: usize = 0;
const MAPPING: usize = 1;
const FAILED: usize = 2;

pub struct RegistrationArena {
    /// The reservation's base address, or one of `UNMAPPED`, `MAPPING`, `FAILED`.
    base: AtomicUsize,
    /// One freed-block count per page of the reservation (a second reservation).
    freed: AtomicUsize,
    next: AtomicUsize,
}

impl RegistrationArena {
    pub const fn new() -> Self {
        RegistrationArena { base: AtomicUsize::new(UNMAPPED), freed: AtomicUsize::new(0), next: AtomicUsize::new(0) }
    }

    fn is_registration(layout: &Layout) -> bool {
        layout.size() == BLOCK && layout.align() == BLOCK_ALIGN
    }

    /// The reservation, made on first use; `None` if it could not be made.
    fn base(&self) -> Option<usize> {
        loop {
            match self.base.load(Ordering::Acquire) {
                FAILED => return None,
                MAPPING => std::hint::spin_loop(),
                UNMAPPED => {
                    if self.base.compare_exchange(UNMAPPED, MAPPING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        let (arena, freed) = (reserve(ARENA), reserve(ARENA / PAGE));
                        let Some((arena, freed)) = arena.zip(freed) else {
                            self.base.store(FAILED, Ordering::Release);
                            return None;
                        };
                        self.freed.store(freed, Ordering::Relaxed);
                        self.base.store(arena, Ordering::Release);
                        return Some(arena);
                    }
                }
                base => return Some(base),
            }
        }
    }

    /// Blocks handed out from the reservation so far.
    #[cfg(test)]
    pub fn handed_out(&self) -> usize {
        self.next.load(Ordering::Relaxed) / BLOCK
    }
}

impl Default for RegistrationArena {
    fn default() -> Self {
        Self::new()
    }
}

/// `len` bytes of private anonymous address space, committed only where touched.
fn reserve(len: usize) -> Option<usize> {
    // SAFETY: a fresh mapping at an address the kernel picks.
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
    (p != libc::MAP_FAILED).then_some(p as usize)
}

unsafe impl GlobalAlloc for RegistrationArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::is_registration(&layout)
            && let Some(base) = self.base()
        {
            let offset = self.next.fetch_add(BLOCK, Ordering::Relaxed);
            if offset + BLOCK <= ARENA {
                return (base + offset) as *mut u8;
            }
        }
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let base = self.base.load(Ordering::Acquire);
        let addr = ptr as usize;
        if Self::is_registration(&layout) && base > FAILED && (base..base + ARENA).contains(&addr) {
            let page = (addr - base) / PAGE;
            // SAFETY: the count table has one byte per page of the reservation; `page` is inside it.
            let count = unsafe { &*((self.freed.load(Ordering::Relaxed) + page) as *const AtomicU8) };
            if count.fetch_add(1, Ordering::AcqRel) + 1 == BLOCKS_PER_PAGE {
                // Every block of the page is freed, and none is handed out again: the page goes back, and reads
                // as zeros should a stale wake touch it.
                // SAFETY: a page of our reservation that nothing uses.
                unsafe { libc::madvise((base + page * PAGE) as *mut libc::c_void, PAGE, libc::MADV_DONTNEED) };
            }
            return;
        }
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::is_registration(&layout) || (new_size == BLOCK && layout.align() == BLOCK_ALIGN) {
            // Through alloc and dealloc, so that registration blocks stay in the reservation's rules.
            // SAFETY: the caller's contract for `realloc`.
            unsafe {
                let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                return new;
            }
        }
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use tokio::io::unix::AsyncFd;

    /// Each tokio registration (`AsyncFd`, as the agent's pipes; `TcpStream` uses the same driver) takes a block
    /// of the reservation, a new one each time: if tokio changes the layout, this fails rather than the
    /// protection silently lapsing.
    #[test]
    fn every_tokio_registration_gets_a_block_never_used_before() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let before = crate::ALLOCATOR.handed_out();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..40 {
                let (r, _w) = std::io::pipe().unwrap();
                // SAFETY: an `OwnedFd` stays open and unchanged for as long as it is owned.
                let fd = unsafe { AsyncFd::register(OwnedFd::from(r)) }.unwrap();
                drop(fd);
                // The driver frees deregistered blocks on its next turn.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                seen.insert(crate::ALLOCATOR.handed_out());
            }
            assert!(crate::ALLOCATOR.handed_out() >= before + 40, "registrations did not come from the reservation");
            assert_eq!(seen.len(), 40, "a block was handed out twice");
        });
    }
}

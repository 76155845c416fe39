//! Memory-mapped files that shrink while they are read.
//!
//! Touching a mapped page past the end of a file that was truncated after it was mapped
//! raises SIGBUS, which kills the process without a word. Checking the length before each
//! mapped read narrows that window but cannot close it (the file can shrink during the
//! read), so every map registers its address range with a message naming its file, and the
//! binary installs a handler ([`exit_on_fault`]) that writes that message and exits 3, like
//! any other input error.
//!
//! The handler runs in signal context: it only reads atomics and pre-formatted bytes, and
//! calls `write(2)` and `_exit(2)`. Ranges are kept in a fixed table of lock-free slots;
//! when it is full (more maps open at once than slots) a map is still usable, and a fault in
//! it gets a message that cannot name the file.

use std::ffi::c_void;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use super::error::{CheckpointError, Problem};

/// Maps whose faults name their file; a process holds one per open checkpoint file.
const SLOTS: usize = 4096;

struct Slot {
    /// Start address of the mapped range; 0 when the slot is free or being filled.
    start: AtomicUsize,
    /// End address (exclusive).
    end: AtomicUsize,
    /// The message, leaked while registered; null when the slot is free.
    message: AtomicPtr<u8>,
    /// Its length.
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the array, never shared
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    message: AtomicPtr::new(std::ptr::null_mut()),
    len: AtomicUsize::new(0),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
/// Set once a map found no free slot.
static OVERFLOWED: AtomicBool = AtomicBool::new(false);
/// What the handler writes for a map that found no slot.
static UNNAMED: OnceLock<Box<[u8]>> = OnceLock::new();
/// Runs before the message is written (the terminal UI restores the terminal); an
/// `extern "C" fn()` stored as an address, 0 for none.
static CLEANUP: AtomicUsize = AtomicUsize::new(0);
/// The handler this one replaced, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// How messages start, set by [`exit_on_fault`].
static PREFIX: OnceLock<String> = OnceLock::new();

/// A mapped range registered for the fault handler, unregistered when dropped (before the
/// map itself is, as it is declared first in its owner).
#[derive(Debug)]
pub(crate) struct Registration {
    slot: Option<usize>,
}

impl Registration {
    /// Registers `len` bytes at `start`, mapped from `path`.
    pub(crate) fn new(start: *const u8, len: usize, path: &std::path::Path) -> Registration {
        let Some(prefix) = PREFIX.get() else {
            // No handler installed (a library user): nothing would read the message.
            return Registration { slot: None };
        };
        let error = CheckpointError::new(path, Problem::ChangedWhileMapped);
        let message: Box<[u8]> = format!("{prefix}{error}\n").into_bytes().into_boxed_slice();
        let len_message = message.len();
        let raw = Box::into_raw(message).cast::<u8>();
        for (i, slot) in TABLE.iter().enumerate() {
            if slot
                .message
                .compare_exchange(
                    std::ptr::null_mut(),
                    raw,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                slot.len.store(len_message, Ordering::Relaxed);
                slot.end.store(start as usize + len, Ordering::Relaxed);
                // Published last: the handler matches a slot only once its start is set.
                slot.start.store(start as usize, Ordering::Release);
                return Registration { slot: Some(i) };
            }
        }
        // SAFETY: `raw` came from `Box::into_raw` above and was not stored anywhere.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(raw, len_message)) });
        OVERFLOWED.store(true, Ordering::Release);
        Registration { slot: None }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(i) = self.slot else { return };
        let slot = &TABLE[i];
        slot.start.store(0, Ordering::Release);
        slot.end.store(0, Ordering::Relaxed);
        let len = slot.len.load(Ordering::Relaxed);
        let raw = slot.message.swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: the slot held the pointer `new` leaked with this length. No handler can
        // be reading it: a fault in this range needs a live borrow of the map, and the map
        // is being dropped.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(raw, len)) });
    }
}

/// Makes a SIGBUS in a mapped checkpoint file print `prefix`, the file and
/// [`Problem::ChangedWhileMapped`] as one line on stderr and exit 3, the input-error code.
/// A SIGBUS anywhere else goes to the handler that was there before. Call it once, before
/// opening files: maps made earlier get no message.
pub fn exit_on_fault(prefix: &str) {
    if PREFIX.set(prefix.to_owned()).is_err() {
        return;
    }
    let unnamed = format!(
        "{prefix}a memory-mapped input file: {}\n",
        Problem::ChangedWhileMapped
    );
    let _ = UNNAMED.set(unnamed.into_bytes().into_boxed_slice());
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value, filled in below;
    // `on_fault` only does async-signal-safe work.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
            let _ = PREVIOUS.set(previous);
        }
    }
}

/// Registers `cleanup` to run in the handler before the message is written, or removes it
/// with `None`. It must be async-signal-safe.
pub fn on_fault_cleanup(cleanup: Option<extern "C" fn()>) {
    CLEANUP.store(cleanup.map_or(0, |f| f as usize), Ordering::Release);
}

/// The message registered for the map holding `addr`, if any.
fn message_at(addr: usize) -> Option<(*const u8, usize)> {
    TABLE.iter().find_map(|slot| {
        let start = slot.start.load(Ordering::Acquire);
        (start != 0 && start <= addr && addr < slot.end.load(Ordering::Relaxed)).then(|| {
            (
                slot.message.load(Ordering::Acquire).cast_const(),
                slot.len.load(Ordering::Relaxed),
            )
        })
    })
}

extern "C" fn on_fault(_signal: libc::c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let message = message_at(addr).or_else(|| {
        OVERFLOWED
            .load(Ordering::Acquire)
            .then(|| UNNAMED.get().map(|m| (m.as_ptr(), m.len())))
            .flatten()
    });
    let Some((ptr, len)) = message else {
        // Not ours: put the previous handler back and return, so that the faulting access
        // runs again and gets what it would have got without us.
        // SAFETY: sigaction is async-signal-safe; PREVIOUS holds what the kernel gave us.
        unsafe {
            match PREVIOUS.get() {
                Some(previous) => libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()),
                None => libc::signal(libc::SIGBUS, libc::SIG_DFL) as libc::c_int,
            };
        }
        return;
    };
    let cleanup = CLEANUP.load(Ordering::Acquire);
    if cleanup != 0 {
        // SAFETY: stored from an `extern "C" fn()` by `on_fault_cleanup`.
        let cleanup: extern "C" fn() = unsafe { std::mem::transmute(cleanup) };
        cleanup();
    }
    // SAFETY: write and _exit are async-signal-safe; the message stays allocated while
    // its map is registered, and the map is in use by the faulting thread.
    unsafe {
        libc::write(libc::STDERR_FILENO, ptr.cast(), len);
        libc::_exit(3);
    }
}

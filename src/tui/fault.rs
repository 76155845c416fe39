//! Restoring the terminal from the SIGBUS handler (a checkpoint shrank under its memory map,
//! see `checkpoint::fault`): the process exits from signal context, where neither the
//! terminal guard's `Drop` nor crossterm (which takes locks) can run.

use std::sync::OnceLock;

use crate::checkpoint::fault;

/// The terminal's settings before raw mode, and the descriptor they belong to.
static COOKED: OnceLock<(libc::c_int, libc::termios)> = OnceLock::new();

/// Mouse capture off, main screen back, cursor shown: what the terminal guard undoes.
const RESET: &[u8] = b"\x1b[?1006l\x1b[?1015l\x1b[?1003l\x1b[?1002l\x1b[?1000l\x1b[?1049l\x1b[?25h";

/// Saves the terminal settings (call before raw mode) and has the fault handler restore
/// them before it prints its message.
pub(super) fn arm() {
    // The descriptor crossterm sets raw mode on: stdin when it is a terminal, else the
    // controlling terminal, kept open for the handler (opening in it is allowed too, but
    // one descriptor for the process's life is simpler).
    // SAFETY: plain libc calls on valid arguments; `termios` is plain data.
    let saved = unsafe {
        let fd = if libc::isatty(libc::STDIN_FILENO) == 1 {
            libc::STDIN_FILENO
        } else {
            libc::open(c"/dev/tty".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC)
        };
        let mut termios: libc::termios = std::mem::zeroed();
        (fd >= 0 && libc::tcgetattr(fd, &mut termios) == 0).then_some((fd, termios))
    };
    if let Some(saved) = saved {
        let _ = COOKED.set(saved);
    }
    fault::on_fault_cleanup(Some(restore));
}

/// Stops restoring from the handler: the terminal guard has done it.
pub(super) fn disarm() {
    fault::on_fault_cleanup(None);
}

extern "C" fn restore() {
    // SAFETY: write and tcsetattr are async-signal-safe; COOKED is only read.
    unsafe {
        libc::write(libc::STDOUT_FILENO, RESET.as_ptr().cast(), RESET.len());
        if let Some((fd, termios)) = COOKED.get() {
            libc::tcsetattr(*fd, libc::TCSANOW, termios);
        }
    }
}

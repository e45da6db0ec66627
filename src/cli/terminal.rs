//! Puts the terminal back as it was: the line editor switches it to raw mode, and the
//! process may exit while the editor still waits for a key.

use std::io::IsTerminal;
use std::sync::OnceLock;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{self, SetArg, Termios};
use parking_lot::Mutex;

static SAVED: OnceLock<Mutex<Termios>> = OnceLock::new();

/// Remembers the terminal's settings, if stdin is a terminal.
pub(crate) fn save() {
    if !std::io::stdin().is_terminal() {
        return;
    }
    if let Ok(settings) = termios::tcgetattr(std::io::stdin()) {
        let _ = SAVED.set(Mutex::new(settings));
    }
}

/// Whether [`save`] found a terminal.
pub(crate) fn is_saved() -> bool {
    SAVED.get().is_some()
}

/// Restores the settings [`save`] remembered, and leaves the cursor at the start of a clean
/// line: the line it was on — the line editor's prompt, redrawn after the last line printed,
/// that nobody will answer now — is erased.
pub(crate) fn restore() {
    if let Some(saved) = SAVED.get() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved.lock());
        // Through the queue: a terminal stopped with Ctrl-S must not hold up the exit.
        // Erase the line, go up one; the newline the printer adds comes back down to it.
        let stderr = tcpool::server::Printer::stderr();
        stderr.print("\r\x1b[2K\x1b[A");
        let _ = stderr.flush_timeout(std::time::Duration::from_millis(100));
    }
}

/// Blocks SIGTSTP (Ctrl-Z) in the calling thread and so in every thread it starts later; call
/// it first, then [`take_stop_signal`] in the thread that runs the line editor.
///
/// The line editor reads Ctrl-Z as a key: it leaves raw mode, stops the process group with
/// SIGTSTP and, once resumed, enters raw mode again. If another thread takes that signal,
/// the editor goes on before the process stops, re-enters raw mode too early, and after `fg`
/// the terminal is left in cooked mode, echoing every typed line twice. With the signal
/// blocked everywhere else, the editor's own thread takes it and stops before going on.
pub(crate) fn hold_stop_signal() {
    let _ = SigSet::from(Signal::SIGTSTP).thread_block();
}

/// Unblocks SIGTSTP in the calling thread: the one that runs the line editor.
pub(crate) fn take_stop_signal() {
    let _ = SigSet::from(Signal::SIGTSTP).thread_unblock();
}

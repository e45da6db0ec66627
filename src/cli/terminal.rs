//! Puts the terminal back as it was: the line editor switches it to raw mode, and the
//! process may exit while the editor still waits for a key.

use std::io::IsTerminal;
use std::sync::OnceLock;

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

/// Restores the settings [`save`] remembered, and moves to a fresh line.
pub(crate) fn restore() {
    if let Some(saved) = SAVED.get() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved.lock());
        // Through the queue: a terminal stopped with Ctrl-S must not hold up the exit.
        let stderr = tcpool::server::Printer::stderr();
        stderr.print("");
        let _ = stderr.flush_timeout(std::time::Duration::from_millis(100));
    }
}

//! The console's replies to manual mode's UDP pseudo-sessions (`@uN text`): one datagram to
//! the source, or an error line saying why none left.

use crate::server::operator::output::Printer;
use crate::server::udp::manual::{Desk, ReplyError};

/// Sends `text` to pseudo-session `id`, or prints why it did not go; after `quit` the source
/// is forgotten.
pub(super) fn reply(desk: Option<&Desk>, printer: &Printer, id: u64, text: &str) {
    let Some(desk) = desk else {
        printer.print(&format!(
            "no udp#{id}: this server has no UDP pseudo-sessions (serve --mode manual --udp)"
        ));
        return;
    };
    match desk.reply(id, text) {
        // `@uN quit`, as `@ID quit` ends a session: the source is told and forgotten.
        Ok(()) if text == "quit" => {
            desk.forget(id);
        }
        Ok(()) => {}
        Err(ReplyError::Gone) => printer.print(&format!(
            "no udp#{id}: not a recent UDP source (never heard from, or forgotten since); \
             /list shows them"
        )),
        Err(ReplyError::Send(e)) => printer.print(&format!("udp#{id}: reply not sent: {e}")),
    }
}

/// `@all text`: sends `text` to every pseudo-session too (one that fails says so).
pub(super) fn reply_all(desk: Option<&Desk>, printer: &Printer, text: &str) {
    let Some(desk) = desk else {
        return;
    };
    for id in desk.ids() {
        if let Err(ReplyError::Send(e)) = desk.reply(id, text) {
            printer.print(&format!("udp#{id}: reply not sent: {e}"));
        }
    }
}

//! Manual mode: the seed's behaviour, the operator answering on the console.

use super::handler::{Context, Handler};
use crate::server::operator::output::Printer;
use crate::server::protocol::{Message, char_boundary_at_or_before, escape};

/// Most bytes of one client message that manual mode shows on the console.
pub const MAX_SHOWN: usize = 1024;

/// Manual: the operator reads every message and answers on the console; a message longer
/// than [`MAX_SHOWN`] bytes is shown cut, with the number of bytes left out.
#[derive(Debug, Clone)]
pub struct Manual {
    printer: Printer,
}

impl Manual {
    /// A manual handler showing client messages through `printer`.
    pub fn new(printer: Printer) -> Self {
        Manual { printer }
    }
}

/// What the console shows of a message `text` from `who` (`client#3`, `udp#2`): the text
/// escaped; a long one cut, never inside a character, saying how much was left out; a short
/// one whole, an incomplete character at its end as `\xNN` escapes.
pub fn shown_line(who: &str, text: &[u8]) -> String {
    let shown = if text.len() > MAX_SHOWN {
        char_boundary_at_or_before(text, MAX_SHOWN)
    } else {
        text.len()
    };
    if shown < text.len() {
        format!(
            "{who}>> {} [... {} more bytes not shown]",
            escape(&text[..shown]),
            text.len() - shown
        )
    } else {
        format!("{who}>> {}", escape(text))
    }
}

impl Handler for Manual {
    fn on_open(&self, ctx: &mut Context<'_>) {
        let peer = ctx.session().peer();
        self.printer
            .print(&format!("* client#{} connected from {peer}", ctx.id()));
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        ctx.registry().set_last_speaker(ctx.id());
        let line = shown_line(&format!("client#{}", ctx.id()), message.text);
        self.printer.print(&line);
    }

    fn on_close(&self, ctx: &mut Context<'_>) {
        if !ctx.shutting_down() {
            self.printer.print(&format!("* client#{} left", ctx.id()));
        }
    }
}

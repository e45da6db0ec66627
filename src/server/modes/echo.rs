//! Echo mode: the load-test target.

use super::handler::{Context, Handler};
use crate::server::protocol::Message;

/// Echo: every read's bytes go back unchanged, in one write, at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    fn holds_partial_lines(&self) -> bool {
        false
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        if message.complete {
            ctx.send(message.raw);
        } else {
            ctx.send_partial(message.raw);
        }
    }
}

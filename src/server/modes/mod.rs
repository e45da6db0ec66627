//! What the server replies: the [`Handler`] trait and the three built-in [`Mode`]s.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `handler` | [`Handler`], the trait a mode implements, and the [`Context`] of one message |
//! | `echo` | [`Echo`]: every read's bytes back, at once |
//! | `manual` | [`Manual`]: the operator reads and answers on the console |
//! | [`chat`] | [`chat::Chat`]: the relay, nicknames, notices |
//!
//! The cluster link that lets a chat room span several nodes is
//! [`cluster`](crate::server::cluster).

pub mod chat;
mod echo;
mod handler;
mod manual;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use echo::Echo;
pub use handler::{Context, Handler};
pub use manual::{MAX_SHOWN, Manual, shown_line};

use crate::server::operator::output::Printer;
use chat::Chat;

/// The built-in reply logic, chosen with `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The exact bytes received, at once. The load-test target.
    #[default]
    Echo,
    /// Each message goes to every other session as `<#ID> text`, with join and leave notices.
    Chat,
    /// The seed's behaviour: the operator reads `client#ID>> text` and types the replies.
    Manual,
}

impl Mode {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Chat => "chat",
            Mode::Manual => "manual",
        }
    }

    /// The handler for this mode; manual mode shows client messages through `printer`.
    pub fn handler(self, printer: Printer) -> Arc<dyn Handler> {
        match self {
            Mode::Echo => Arc::new(Echo),
            Mode::Chat => Arc::new(Chat::default()),
            Mode::Manual => Arc::new(Manual::new(printer)),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "echo" => Ok(Mode::Echo),
            "chat" => Ok(Mode::Chat),
            "manual" => Ok(Mode::Manual),
            other => Err(format!(
                "unknown mode {other:?}: expected echo, chat or manual"
            )),
        }
    }
}

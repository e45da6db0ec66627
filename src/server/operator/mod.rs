//! What a person or a program uses to watch and steer the server: the console and its
//! commands, operator output, the admin endpoint, the audit trail of changes, metrics, the
//! summary, the watcher of the TLS files.

pub mod admin;
pub mod audit;
pub mod command;
pub mod console;
mod lines;
pub mod metrics;
pub mod output;
pub(crate) mod summary;
mod udp_replies;
pub(crate) mod watch;

//! tcpool: a multi-client TCP server, client and load generator.
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`pool`] | a fixed set of worker threads fed through one bounded hand-off queue; knows no TCP |
//! | [`server`] | the server: config, acceptor, workers, session registry, modes, console, faults, metrics, shutdown (its own table maps the files) |
//! | [`client`] | the clients: `talk` (interactive, seed-compatible) and `bench` (load generator), and the `HOST:PORT` they take |
//! | `time` | deadlines that saturate instead of overflowing |
//! | [`tls`] | TLS on rustls for the server and the clients: the non-blocking link, configurations, made certificates |
//! | [`units`] | the one grammar of durations (`250ms`, `5m`) and sizes (`64KiB`) that every flag takes |
//!
//! The quickest way in is [`serve`]: bind with [`server::bind`], hand it a [`Config`] and a
//! [`Shutdown`], and it serves until the shutdown is triggered. [`Server`] adds a custom
//! [`Handler`], the session [`Registry`](server::Registry) and the operator console.

pub mod client;
pub mod pool;
pub mod server;
mod time;
pub mod tls;
pub mod units;

pub use server::{Config, Handler, Mode, Overflow, Server, Shutdown, Summary, serve};

/// The port tcpool serves and connects to by default: the seed programs' port.
pub const DEFAULT_PORT: u16 = 8900;

//! The multi-client server: [`serve`] and [`Server`], its [`Config`] and [`Summary`].
//!
//! ```text
//!  listeners ──► acceptor ──► hand-off queue (--backlog) ──► worker 1..N (a mio poller each)
//!  (arrival)       │ registers, limits, allow/deny             │ owns its sessions: reads,
//!                  ▼                                           │ replies (modes), writes,
//!              registry (session) ◄────────────────────────────┘ closes; faults; timers
//!                  ▲
//!   console, admin, metrics, summary (operator) ── through outboxes and wakers, never a socket
//! ```
//!
//! Threads: one acceptor per listener (blocking on its own poller), `--workers` workers, one
//! closer for connections that never became sessions, the console on stdin, the control plane
//! (`tcpool-control`, where the admin endpoint's connections are tasks), the operator output
//! writer, and with TLS certificate files the watcher of those files (`tcpool-tls-watch`).
//! Queues: the bounded hand-off (the backlog), each session's bounded outbox, each worker's
//! mailbox of sessions with news.
//!
//! | room | what it is |
//! | --- | --- |
//! | [`arrival`] | how a connection gets in: listeners, inherited sockets, acceptor, allow/deny, PROXY header, hand-over, notify, descriptors |
//! | [`session`] | a session as others see it: the shared handle, its outbox, the registry |
//! | `worker` | the event loop and what only it touches: reading, writing, closing, timers, balance, scheduling |
//! | [`modes`] | what the server replies: the [`Handler`] trait, echo, manual, chat |
//! | [`operator`] | watching and steering: console and commands, output, admin endpoint, metrics, summary |
//! | [`faults`] | faults on purpose: specs, the live set, the per-session draw, pacing |
//! | [`protocol`] | pure framing: messages, line endings, `quit`; safe display of peer text |
//! | `config` | [`Config`] and [`Overflow`]: the limits, their defaults, [`Config::validate`] |
//! | [`control`] | the control plane: one thread with a current-thread tokio runtime, where the admin endpoint runs |
//! | [`shutdown`] | the idempotent shutdown trigger |
//! | `shared` | what the acceptors and every worker read for the whole run |
//! | `run` | [`Server`] and [`serve`]: starting the threads |
//! | `running` | [`Running`]: a started server, waiting for its threads to end |
//!
//! [`Server::run`] returns once a shutdown was triggered and every session was closed (or the
//! shutdown deadline passed), with a [`Summary`] of what was served.

pub mod arrival;
pub mod cluster;
mod config;
pub mod control;
pub mod faults;
pub mod modes;
pub mod operator;
pub mod protocol;
mod run;
mod running;
pub mod session;
mod shared;
pub mod shutdown;
pub mod udp;
mod worker;

pub use arrival::acceptor::Acceptors;
pub use arrival::access::{Access, Cidr};
pub use arrival::descriptors::fit_max_conns;
pub use arrival::listen::{BindOptions, LISTEN_BACKLOG, bind, bind_all, bind_all_with};
pub use arrival::proxy::ProxyProtocol;
pub use config::{
    Balancing, Config, DEFAULT_MAX_CONNS, DEFAULT_OUTBOX_GRACE, DEFAULT_TLS_WATCH,
    IDLE_TIMEOUT_RESOLUTION, MAX_WORKERS, Overflow, WorkerSched, min_outbox_limit,
};
pub use faults::{FaultSpec, Faults};
pub use modes::{Context, Handler, Mode};
pub use operator::audit::Audit;
pub use operator::console::Console;
pub use operator::metrics::{Exposition, Metrics};
pub use operator::output::Printer;
pub use operator::summary::Summary;
pub use protocol::{LineEnding, Message};
pub use run::{Server, serve};
pub use running::Running;
pub use session::outbox::MESSAGE_OVERHEAD;
pub use session::registry::{Fanout, Kick, Registry, Stats};
pub use session::{SessionHandle, SessionId, Traffic};
pub use shutdown::Shutdown;

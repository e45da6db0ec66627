//! How a connection gets in: the listeners, the acceptor, who may connect, the PROXY header,
//! the hand-over to a new process, the service manager's notifications, the descriptor limit.

pub mod acceptor;
pub mod access;
pub(crate) mod descriptors;
pub mod handover;
pub mod listen;
pub mod notify;
pub mod proxy;
pub mod rate;

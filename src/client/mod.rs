//! The clients: [`talk`], the seed's client made comfortable, and [`bench`](mod@bench), a load generator
//! for echo servers and any request/response protocol.

pub mod addr;
pub mod bench;
pub mod fleet;
pub mod send_proxy;
pub mod talk;

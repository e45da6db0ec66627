//! The clients: [`talk`], the seed's client made comfortable, and [`bench`](mod@bench), a load generator
//! for any echo-style server.

pub mod addr;
pub mod bench;
pub mod talk;

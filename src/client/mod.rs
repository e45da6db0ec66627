//! The clients: [`talk`], the seed's client made comfortable.

pub mod talk;

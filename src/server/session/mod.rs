//! A session as everything outside its worker sees it: the shared handle, its outbox, the
//! registry of every session.

mod handle;
pub(crate) mod outbox;
pub mod registry;

pub use handle::*;

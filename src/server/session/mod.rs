//! A session as everything outside its worker sees it.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `terms` | [`SessionId`], [`CloseReason`], [`SendError`], [`Counters`] and [`Traffic`] |
//! | `handle` | [`SessionHandle`]: the shared part of a session (identity, counters, nickname, outbox) |
//! | `outbox` | what is queued for a session, its cost, and chat's back-pressure |
//! | [`registry`] | the shared map of sessions and the server-wide counts |

mod handle;
pub(crate) mod outbox;
pub mod registry;
mod terms;

pub use handle::{SessionHandle, Speech};
pub(crate) use terms::DRAIN;
pub use terms::{CloseReason, Counters, SendError, SessionId, Traffic};

//! The file descriptor limit: raising it, fitting `max_conns` to it, and what it leaves the
//! closer for rejected connections.

use crate::server::config::DEFAULT_MAX_CONNS;

/// Descriptors kept free for everything that is not a session: stdio, the listener, each
/// worker's poller and waker, log files, the shutdown wake-up connection.
const RESERVED_FDS: usize = 32;

/// Descriptors the closer may hold for rejected connections: what the limit leaves beyond
/// `max_conns` sessions and half the reserve (the other half stays for everything else).
pub(crate) fn spare_fds(max_conns: usize, workers: usize) -> usize {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    limit.saturating_sub(max_conns + RESERVED_FDS / 2 + 2 * workers)
}

/// Raises the soft descriptor limit toward the hard one, then fits `max_conns` to it: the
/// default is lowered with a warning, an explicit value is kept with a warning.
pub fn fit_max_conns(max_conns: Option<usize>, workers: usize) -> usize {
    let wanted = max_conns.unwrap_or(DEFAULT_MAX_CONNS);
    let reserved = RESERVED_FDS + 2 * workers;
    let limit = match rlimit::increase_nofile_limit((wanted + reserved) as u64) {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            log::warn!("cannot read the file descriptor limit: error={e}");
            return wanted;
        }
    };
    let fits = limit.saturating_sub(reserved);
    if wanted <= fits {
        return wanted;
    }
    match max_conns {
        Some(explicit) => {
            log::warn!(
                "max-conns {explicit} kept, but the file descriptor limit ({limit}) covers about {fits} sessions"
            );
            explicit
        }
        None => {
            let lowered = fits.max(1);
            log::warn!(
                "max-conns lowered from {wanted} to {lowered} to fit the file descriptor limit ({limit})"
            );
            lowered
        }
    }
}

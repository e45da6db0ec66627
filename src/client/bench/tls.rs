//! How bench speaks TLS: the settings a run is given ([`BenchTls`], [`Resume`]) and the two
//! client configurations its handshakes choose from ([`TlsConfigs`]).

use std::sync::Arc;

/// Which of bench's handshakes resume a session (`--tls-resume`). A connection's first
/// handshake is full whatever this says: there is no session to resume yet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Resume {
    /// Never: every handshake is full.
    Off,
    /// Whenever a ticket from an earlier handshake is at hand (the default).
    #[default]
    Tickets,
    /// This share (0 to 1) of the handshakes offers a ticket; the rest are full.
    Mix(f64),
}

impl std::fmt::Display for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resume::Off => f.write_str("off"),
            Resume::Tickets => f.write_str("tickets"),
            Resume::Mix(share) => write!(f, "mix={share}"),
        }
    }
}

impl std::str::FromStr for Resume {
    type Err = String;

    /// `off`, `tickets` or `mix=P` with P a share from 0 to 1 (or a percentage, `mix=30%`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Resume::Off),
            "tickets" => Ok(Resume::Tickets),
            _ => {
                let bad = || format!("`{s}`: expected off, tickets or mix=P (P from 0 to 1)");
                let share = s.strip_prefix("mix=").ok_or_else(bad)?;
                let share = match share.strip_suffix('%') {
                    Some(percent) => percent.parse::<f64>().map_err(|_| bad())? / 100.0,
                    None => share.parse::<f64>().map_err(|_| bad())?,
                };
                if !(0.0..=1.0).contains(&share) {
                    return Err(bad());
                }
                Ok(Resume::Mix(share))
            }
        }
    }
}

/// How bench's connections speak TLS.
#[derive(Debug, Clone)]
pub struct BenchTls {
    /// The client configuration: roots or none, versions, provider.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name asked for and verified.
    pub name: rustls::pki_types::ServerName<'static>,
    /// Which handshakes resume.
    pub resume: Resume,
}

impl PartialEq for BenchTls {
    /// The same configuration object and name.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.config, &other.config)
            && self.name == other.name
            && self.resume == other.resume
    }
}

/// The client configurations of a TLS run: for a connection's first handshake, which offers
/// no ticket but keeps those it is given (in a
/// [`TicketStore`](crate::tls::resume::TicketStore) as large as the run); for a reconnect,
/// which offers one from it; and one that makes every handshake full and asks for no ticket.
pub(super) struct TlsConfigs {
    /// A connection's first handshake: offers no ticket, keeps what it is given.
    first: Arc<rustls::ClientConfig>,
    /// A reconnect's: offers a ticket from the store when there is one.
    resuming: Arc<rustls::ClientConfig>,
    full: Arc<rustls::ClientConfig>,
    pub(super) name: rustls::pki_types::ServerName<'static>,
    resume: Resume,
}

impl TlsConfigs {
    /// Tickets for up to this many handshakes per connection are kept.
    const TICKETS_PER_CONNECTION: usize = 2;

    pub(super) fn new(tls: &BenchTls, connections: usize) -> Self {
        let store =
            crate::tls::resume::TicketStore::new(connections * Self::TICKETS_PER_CONNECTION);
        let mut first = (*tls.config).clone();
        first.resumption = rustls::client::Resumption::store(Arc::new(
            crate::tls::resume::Keeping(Arc::clone(&store)),
        ));
        let mut resuming = (*tls.config).clone();
        resuming.resumption = rustls::client::Resumption::store(store);
        let mut full = (*tls.config).clone();
        full.resumption = rustls::client::Resumption::disabled();
        TlsConfigs {
            first: Arc::new(first),
            resuming: Arc::new(resuming),
            full: Arc::new(full),
            name: tls.name.clone(),
            resume: tls.resume,
        }
    }

    /// The configuration for a connection's handshake (its `first`, or a reconnect's), and
    /// whether it takes tickets; `draw` gives a number below a million when asked.
    pub(super) fn pick(
        &self,
        first: bool,
        draw: impl FnOnce() -> u64,
    ) -> (&Arc<rustls::ClientConfig>, bool) {
        let resumes = match self.resume {
            Resume::Off => false,
            Resume::Tickets => true,
            Resume::Mix(share) => (draw() as f64) < share * 1e6,
        };
        let config = match (resumes, first) {
            (false, _) => &self.full,
            (true, true) => &self.first,
            (true, false) => &self.resuming,
        };
        (config, resumes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_reads_off_tickets_and_a_share() {
        assert_eq!("off".parse::<Resume>(), Ok(Resume::Off));
        assert_eq!("tickets".parse::<Resume>(), Ok(Resume::Tickets));
        assert_eq!("mix=0.25".parse::<Resume>(), Ok(Resume::Mix(0.25)));
        assert_eq!("mix=30%".parse::<Resume>(), Ok(Resume::Mix(0.3)));
        for bad in ["", "mix=", "mix=1.01", "mix=-0.1", "mix=NaN", "on"] {
            assert!(bad.parse::<Resume>().is_err(), "{bad}");
        }
        assert_eq!(Resume::Mix(0.25).to_string(), "mix=0.25");
    }
}

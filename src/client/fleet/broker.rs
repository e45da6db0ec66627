//! The fleet's connection to its NATS broker: `--nats URL`, with `--nats-creds FILE` (a user
//! JWT and nkey seed) and `--nats-tls-ca FILE` (TLS, the broker's certificate checked
//! against that CA) when the broker asks for them.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ConnectOptions;

use super::wire::Token;

/// A credentials file holds a JWT and a seed: a few KiB.
const MAX_CREDS: u64 = 64 * 1024;

/// The longest wait between reconnects.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Where the broker is, and how the fleet proves itself.
#[derive(Debug, Clone, Default)]
pub struct Broker {
    /// `nats://HOST:PORT` (or `tls://`).
    pub url: String,
    /// `--nats-creds`.
    pub creds: Option<PathBuf>,
    /// `--nats-tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--fleet-token-file`: every message signed with it.
    pub token: Option<Token>,
}

impl Broker {
    /// Checks the broker's files, so that a missing one is an error at start.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        self.options().map(drop)
    }

    /// Whether the fleet's messages are guarded at all: by a token or by the broker's
    /// credentials.
    pub fn guarded(&self) -> bool {
        self.token.is_some() || self.creds.is_some()
    }

    fn options(&self) -> Result<ConnectOptions, String> {
        let mut connect = ConnectOptions::new();
        if let Some(path) = &self.creds {
            let flag = format!("--nats-creds {}", path.display());
            let len = std::fs::metadata(path)
                .map_err(|e| format!("{flag}: {e}"))?
                .len();
            if len > MAX_CREDS {
                return Err(format!(
                    "{flag}: {len} bytes, more than a credentials file holds"
                ));
            }
            let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}: {e}"))?;
            connect = connect
                .credentials(&text)
                .map_err(|e| format!("{flag}: not a NATS credentials file: {e}"))?;
        }
        if let Some(ca) = &self.tls_ca {
            let tls = crate::tls::ClientTls {
                ca: Some(ca.clone()),
                ..crate::tls::ClientTls::default()
            };
            let config = crate::tls::client_config(&tls)
                .map_err(|e| format!("--nats-tls-ca {}: {e:#}", ca.display()))?;
            connect = connect
                .tls_client_config((*config).clone())
                .require_tls(true);
        }
        Ok(connect)
    }

    /// Connects as `name`. An agent (`keep_trying`) waits for a broker that is not up yet
    /// and reconnects for ever, with jittered back-off; a coordinator fails at once.
    ///
    /// # Errors
    ///
    /// A file that cannot be used, or a broker that cannot be reached.
    pub async fn connect(
        &self,
        name: &str,
        keep_trying: bool,
    ) -> Result<async_nats::Client, String> {
        let mut connect = self
            .options()?
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                let base = Duration::from_millis(100)
                    .saturating_mul(1 << attempts.min(5))
                    .min(MAX_RECONNECT_DELAY);
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                base + Duration::from_millis(u64::from(nanos) % (base.as_millis() as u64 / 4 + 1))
            });
        if keep_trying {
            connect = connect.retry_on_initial_connect();
        }
        connect
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("cannot reach the NATS broker at {}: {e}", self.url))
    }
}

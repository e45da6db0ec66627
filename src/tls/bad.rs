//! [`BadCerts`]: the server configurations of the `tls-cert` faults, each the served
//! configuration with one thing changed: the certificate, expired, for the wrong name, or
//! self-signed. Made once at start, so a faulted connection costs no more than another.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::make::{self, Bad, Signer};

/// A configuration for each kind of bad certificate.
#[derive(Debug)]
pub struct BadCerts {
    expired: Arc<ServerConfig>,
    wrong_name: Arc<ServerConfig>,
    self_signed: Arc<ServerConfig>,
}

impl BadCerts {
    /// `good` with its certificate swapped for each bad one, signed by `signer` (`--tls
    /// auto`'s CA, so a client that trusts it sees exactly what is wrong) or by a CA nobody
    /// trusts.
    pub fn new(good: &ServerConfig, signer: Option<&Signer>) -> anyhow::Result<Self> {
        let swapped = |kind: Bad| -> anyhow::Result<Arc<ServerConfig>> {
            let (cert, key) = make::bad(kind, signer)?;
            let certified = CertifiedKey::from_der(vec![cert], key, &super::provider())
                .context("a bad certificate's key")?;
            let mut config = good.clone();
            config.cert_resolver = Arc::new(SingleCertAndKey::from(certified));
            Ok(Arc::new(config))
        };
        Ok(BadCerts {
            expired: swapped(Bad::Expired)?,
            wrong_name: swapped(Bad::WrongName)?,
            self_signed: swapped(Bad::SelfSigned)?,
        })
    }

    /// The configuration serving a `kind` certificate.
    pub fn config(&self, kind: Bad) -> &Arc<ServerConfig> {
        match kind {
            Bad::Expired => &self.expired,
            Bad::WrongName => &self.wrong_name,
            Bad::SelfSigned => &self.self_signed,
        }
    }
}

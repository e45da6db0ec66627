//! TLS for every side of tcpool, on rustls with one crypto provider (aws-lc-rs).
//!
//! - [`Link`]: a non-blocking socket that speaks plaintext or TLS, for the server's workers
//!   and the load generator's event loops alike.
//! - [`server_config`]: the server's side, from certificate and key files or made at start
//!   ([`ServerCerts::Auto`]), with stateless session tickets.
//! - [`live`]: the server's certificate of the moment, which a reload replaces.
//! - [`tickets`]: session ticket keys from a file, shared by every process given it.
//! - [`client_config`]: the clients' side, verifying against a CA file or the system's roots
//!   unless told not to.
//! - [`bad`]: the configurations that serve `tls-cert` faults' bad certificates.
//! - [`make`]: certificates made here: the auto CA, and `tcpool tls gen`'s set for tests.
//! - [`peer`]: what a client shows of the server it reached.
//! - [`pump`]: a TLS client connection behind a plain socket, for code written for one.
//! - [`resume`]: the load generator's store of session tickets, as large as its run.

pub mod bad;
mod files;
pub mod link;
pub mod live;
pub mod make;
pub mod peer;
pub mod pump;
pub mod resume;
pub mod tickets;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use link::Link;
pub use live::{Certificates, ReloadError, Reloaded};
pub use tickets::{Opened, TicketKeys};

/// The crypto provider every config here uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCerts {
    /// A certificate chain and its key, PEM files (the key PKCS#8, RSA or EC).
    Files {
        /// The chain: the server's certificate first, then what signed it.
        chain: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
    /// Several certificate chains and their keys: each handshake gets the one for the name
    /// its client asked for (SNI), or the first.
    Several(Vec<(PathBuf, PathBuf)>),
    /// Made at start: an ECDSA P-256 certificate for localhost, 127.0.0.1, ::1 and the host
    /// name, signed by a CA made with it, whose certificate is written to `ca_out`.
    Auto {
        /// Where the CA's certificate goes.
        ca_out: PathBuf,
    },
}

/// A TLS version tcpool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "1.2" => Ok(Version::Tls12),
            "1.3" => Ok(Version::Tls13),
            other => Err(format!("{other:?} is not a TLS version: 1.2 or 1.3")),
        }
    }
}

/// A key exchange group tcpool offers (`--tls-groups`), by its IANA name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The post-quantum hybrid rustls prefers: X25519 with ML-KEM-768.
    X25519MlKem768,
    /// P-256 with ML-KEM-768.
    Secp256r1MlKem768,
    /// ML-KEM-768 alone.
    MlKem768,
    /// X25519.
    X25519,
    /// P-256.
    Secp256r1,
    /// P-384.
    Secp384r1,
}

impl Group {
    /// Every group, with its name as `--tls-groups` takes it.
    const ALL: [(Group, &'static str); 6] = [
        (Group::X25519MlKem768, "X25519MLKEM768"),
        (Group::Secp256r1MlKem768, "SecP256r1MLKEM768"),
        (Group::MlKem768, "MLKEM768"),
        (Group::X25519, "x25519"),
        (Group::Secp256r1, "secp256r1"),
        (Group::Secp384r1, "secp384r1"),
    ];

    fn kx(self) -> &'static dyn rustls::crypto::SupportedKxGroup {
        use rustls::crypto::aws_lc_rs::kx_group;
        match self {
            Group::X25519MlKem768 => kx_group::X25519MLKEM768,
            Group::Secp256r1MlKem768 => kx_group::SECP256R1MLKEM768,
            Group::MlKem768 => kx_group::MLKEM768,
            Group::X25519 => kx_group::X25519,
            Group::Secp256r1 => kx_group::SECP256R1,
            Group::Secp384r1 => kx_group::SECP384R1,
        }
    }
}

impl std::str::FromStr for Group {
    type Err = String;

    /// An IANA name, in any case; `P-256` and `P-384` too.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let alias = match text.to_ascii_lowercase().as_str() {
            "p-256" | "prime256v1" => Some(Group::Secp256r1),
            "p-384" => Some(Group::Secp384r1),
            _ => None,
        };
        alias
            .or_else(|| {
                Group::ALL
                    .iter()
                    .find(|(_, name)| name.eq_ignore_ascii_case(text))
                    .map(|&(g, _)| g)
            })
            .ok_or_else(|| {
                let names: Vec<&str> = Group::ALL.iter().map(|&(_, n)| n).collect();
                format!("{text:?} is not a key exchange group: {}", names.join(", "))
            })
    }
}

/// The crypto provider, offering only `groups` (in that order of preference) when any are
/// named.
fn provider_offering(groups: &[Group]) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !groups.is_empty() {
        let mut chosen: Vec<Group> = Vec::new();
        for &g in groups {
            if !chosen.contains(&g) {
                chosen.push(g);
            }
        }
        provider.kx_groups = chosen.into_iter().map(Group::kx).collect();
    }
    Arc::new(provider)
}

fn versions(chosen: &[Version]) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut all = chosen.to_vec();
    if all.is_empty() {
        all = vec![Version::Tls12, Version::Tls13];
    }
    all.sort();
    all.dedup();
    all.iter()
        .map(|v| match v {
            Version::Tls12 => &rustls::version::TLS12,
            Version::Tls13 => &rustls::version::TLS13,
        })
        .collect()
}

/// What a TLS server or client may agree on beside its certificates: the versions (both
/// when empty) and the ALPN protocols, in order of preference (none when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// TLS versions allowed; empty: 1.2 and 1.3.
    pub versions: Vec<Version>,
    /// ALPN protocol names; a server with some refuses a client that offers none of them.
    pub alpn: Vec<String>,
    /// Key exchange groups, in order of preference; empty: the provider's (X25519MLKEM768,
    /// secp384r1, x25519, secp256r1).
    pub groups: Vec<Group>,
}

/// Mutual TLS: the server asks clients for a certificate signed by `ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The CA certificates (PEM) a client's certificate must chain to.
    pub ca: PathBuf,
    /// Whether a client without a certificate is turned away (`required`) or served without
    /// an identity (`optional`).
    pub required: bool,
}

/// A server's TLS configuration, and what `--tls auto` made for it.
#[derive(Debug)]
pub struct ServerTls {
    /// For [`crate::Server::tls`].
    pub config: Arc<ServerConfig>,
    /// The leaf certificate served, for the log.
    pub served: CertificateDer<'static>,
    /// With [`ServerCerts::Auto`]: the CA's certificate file, written.
    pub ca_file: Option<PathBuf>,
    /// With [`ServerCerts::Auto`]: its CA, which signs `tls-cert` faults' certificates.
    pub ca_signer: Option<Arc<make::Signer>>,
    /// The certificate of the moment, which a reload replaces (with [`ServerCerts::Files`]),
    /// for [`crate::Server::tls_certificates`].
    pub certificates: Certificates,
    /// With a ticket key file: its keys, and whether the file was made now.
    pub ticket_keys: Option<(Arc<TicketKeys>, Opened)>,
}

/// How many TLS sessions the server remembers for resumption by session id: those of TLS 1.2
/// clients that take no tickets (the others resume by ticket, which the server does not
/// store). rustls keeps 256 unless told. A session held costs some 400 bytes (measured: a
/// full cache of 4096 held 1.4 MB more than one of 256), more with mutual TLS, where it keeps
/// the client's certificate chain too.
pub const SESSION_CACHE: usize = 4096;

/// What a server's TLS configuration holds beside its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Mutual TLS: ask clients for a certificate.
    pub clients: Option<ClientAuth>,
    /// The versions and ALPN protocols agreed to.
    pub offer: Offer,
    /// Session tickets encrypted with the keys of this file ([`tickets`]), made if it does
    /// not exist, instead of keys made at start: processes given the same file resume each
    /// other's sessions.
    pub ticket_key_file: Option<PathBuf>,
}

/// Builds the server's TLS configuration: TLS 1.2 and 1.3, the provider's groups and suites,
/// and resumption by stateless tickets (as well as rustls's own cache of stateful sessions).
pub fn server_config(certs: &ServerCerts) -> anyhow::Result<ServerTls> {
    server_config_with(certs, None, &Offer::default())
}

/// [`server_config`], asking clients for certificates when `clients` says so, and agreeing
/// only on what `offer` allows.
pub fn server_config_with(
    certs: &ServerCerts,
    clients: Option<&ClientAuth>,
    offer: &Offer,
) -> anyhow::Result<ServerTls> {
    server_config_opts(
        certs,
        &ServerOptions {
            clients: clients.cloned(),
            offer: offer.clone(),
            ticket_key_file: None,
        },
    )
}

/// [`server_config`] with every option.
pub fn server_config_opts(
    certs: &ServerCerts,
    options: &ServerOptions,
) -> anyhow::Result<ServerTls> {
    let provider = provider_offering(&options.offer.groups);
    let mut ca_signer = None;
    let pairs = match certs {
        ServerCerts::Files { chain, key } => vec![(chain.clone(), key.clone())],
        ServerCerts::Several(pairs) if pairs.is_empty() => bail!("no certificate given"),
        ServerCerts::Several(pairs) => pairs.clone(),
        ServerCerts::Auto { .. } => Vec::new(),
    };
    let (keys, identity, ca_file) = match certs {
        ServerCerts::Files { .. } | ServerCerts::Several(_) => {
            let mut keys = Vec::new();
            let mut first = None;
            for (chain, key) in &pairs {
                let (certified, identity) = live::certified_key(chain, key, &provider)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                first.get_or_insert(identity);
                keys.push(certified);
            }
            (keys, first.expect("at least one certificate"), None)
        }
        ServerCerts::Auto { ca_out } => {
            let made = make::auto()?;
            std::fs::write(ca_out, &made.ca_pem).with_context(|| {
                format!("cannot write the CA's certificate to {}", ca_out.display())
            })?;
            ca_signer = Some(Arc::new(made.signer));
            let signer = provider
                .key_provider
                .load_private_key(made.key)
                .context("the key made at start")?;
            let certified = CertifiedKey::new(vec![made.leaf], signer);
            let identity =
                peer::Identity::of(&certified.cert[0]).context("the certificate made at start")?;
            (vec![certified], identity, Some(ca_out.clone()))
        }
    };
    let served = keys[0].cert[0].clone();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(&options.offer.versions))
        .context("TLS versions")?;
    let builder = match &options.clients {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = RootCertStore::empty();
            for cert in read_chain(&auth.ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a CA certificate", auth.ca.display()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().context("the client CA")?)
        }
    };
    let resolver = Arc::new(live::Resolver::new(live::Served::new(keys)));
    let mut config = builder.with_cert_resolver(Arc::clone(&resolver) as _);
    let ticket_keys = match &options.ticket_key_file {
        Some(path) => {
            let (keys, opened) = TicketKeys::open(path)?;
            let keys = Arc::new(keys);
            config.ticketer = Arc::clone(&keys) as _;
            Some((keys, opened))
        }
        None => {
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().context("TLS ticketer")?;
            None
        }
    };
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    config.alpn_protocols = options
        .offer
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    let tickets = ticket_keys.as_ref().map(|(keys, _)| Arc::clone(keys));
    let certificates = Certificates::new(resolver, provider, pairs, tickets, identity);
    Ok(ServerTls {
        config: Arc::new(config),
        served,
        ca_file,
        ca_signer,
        certificates,
        ticket_keys,
    })
}

/// How a client checks the server it reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates (PEM) to verify against; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// Verify nothing: any certificate, any name.
    pub insecure: bool,
    /// The name to ask for (SNI) and to verify; the host connected to when `None`.
    pub servername: Option<String>,
    /// A certificate chain and its key (PEM) to show a server that asks (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The versions and ALPN protocols offered.
    pub offer: Offer,
}

/// Builds a client's TLS configuration from `tls`.
pub fn client_config(tls: &ClientTls) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider_offering(&tls.offer.groups))
        .with_protocol_versions(&versions(&tls.offer.versions))
        .context("TLS versions")?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(peer::AcceptAnything(provider())))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(path) => {
                for cert in read_chain(path)? {
                    roots
                        .add(cert)
                        .with_context(|| format!("{}: not a CA certificate", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    bail!("no system CA certificates found: give --tls-ca FILE, or --tls-insecure");
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(read_chain(chain)?, read_key(key)?)
            .context("the client certificate and its key do not go together")?,
    };
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    config.alpn_protocols = tls
        .offer
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

/// The name a client asks for and verifies: `servername`, or else `host` (a name or an IP
/// address).
pub fn server_name(tls: &ClientTls, host: &str) -> anyhow::Result<ServerName<'static>> {
    let name = tls.servername.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned()).with_context(|| format!("not a server name: {name:?}"))
}

/// The file named by `SSLKEYLOGFILE`, where rustls writes every session's secrets (for
/// Wireshark) when it is set: tell the user.
pub fn key_log_file() -> Option<String> {
    std::env::var("SSLKEYLOGFILE")
        .ok()
        .filter(|p| !p.is_empty())
}

/// The certificates of a PEM file, in order; an error if it holds none (or the file is no
/// regular file, or larger than [`live::MAX_PEM_FILE`]).
pub fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    live::chain_of(path).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

/// The private key of a PEM file: PKCS#8, RSA (PKCS#1) or EC (SEC1).
pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    live::key_of(path).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))
}

/// Why a TLS handshake or record failed, in the words of one log field: the rustls error
/// inside an I/O error, if there is one.
pub fn error_text(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

//! The server's certificate of the moment, which a reload replaces while the server runs.
//!
//! The server has one [`rustls::ServerConfig`] for its whole life; its certificate resolver
//! hands each new handshake the [`CertifiedKey`] in use, read from behind a lock once per
//! handshake (a pointer copied), and [`Certificates::reload`] reads the files, checks them
//! and swaps that pointer. A handshake that has begun keeps the key it was given; the next
//! one gets the new key. What else the configuration holds stays as it was: the versions,
//! ALPN, the client CA, the session cache and the ticket keys, so a session resumed before a
//! reload resumes after it.
//!
//! Nothing here runs on a worker: the reload is the admin endpoint's, the console's or the
//! watcher's, and a worker only copies the pointer.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::peer::Identity;
use super::tickets::TicketKeys;

/// The largest certificate or key file read: a chain of a few certificates is a few KiB.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Hands every handshake the certified key in use: with several certificates, the one for
/// the name the client asked for (SNI), or the first.
#[derive(Debug)]
pub(crate) struct Resolver {
    current: RwLock<Arc<Served>>,
}

/// The certificates in use, each with the DNS names it is for; the first is for a client
/// that names no server, or a name none of them is for.
#[derive(Debug)]
pub(crate) struct Served(Vec<(Vec<String>, Arc<CertifiedKey>)>);

impl Served {
    /// The certificates `keys`, in order; their names are read from them.
    pub(crate) fn new(keys: Vec<CertifiedKey>) -> Served {
        Served(
            keys.into_iter()
                .map(|key| (super::peer::dns_names(&key.cert[0]), Arc::new(key)))
                .collect(),
        )
    }

    /// The key for `name`: a certificate for it exactly, then one whose wildcard covers it
    /// (`*.example.com` covers `a.example.com`), then the first.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = name.map(str::to_ascii_lowercase) {
            let exact = self.0.iter().find(|(names, _)| names.contains(&name));
            let parent = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            let wild = || {
                let parent = parent.as_ref()?;
                self.0.iter().find(|(names, _)| names.contains(parent))
            };
            if let Some((_, key)) = exact.or_else(wild) {
                return Arc::clone(key);
            }
        }
        Arc::clone(&self.0[0].1)
    }
}

impl Resolver {
    pub(crate) fn new(served: Served) -> Resolver {
        Resolver {
            current: RwLock::new(Arc::new(served)),
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = Arc::clone(&self.current.read());
        Some(served.pick(hello.server_name()))
    }
}

/// The files a reload reads again.
#[derive(Debug, Clone)]
struct Files {
    chain: PathBuf,
    key: PathBuf,
}

/// The state of the files, as `stat` sees them: a change in any tells the watcher to reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<FileStamp>>);

/// One file's device, inode, modification time (seconds, nanoseconds) and size; `None` in a
/// [`Stamp`] when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// There are no files to read again: the certificate was made at start (`--tls auto`).
    NoFiles,
    /// A file was refused; the certificate in use stays.
    Refused {
        /// The file at fault.
        file: PathBuf,
        /// Why, in a few words.
        why: String,
    },
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoFiles => f.write_str(
                "no certificate files to reload: the certificate was made at start (--tls \
                 auto); serve --tls-cert FILE --tls-key FILE to reload one",
            ),
            ReloadError::Refused { file, why } => write!(f, "{}: {why}", file.display()),
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a reload put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The certificate served from now on.
    pub identity: Identity,
    /// Whether it is another certificate than before (a reload may read the same files).
    pub changed: bool,
    /// With a ticket key file: how many keys it holds now.
    pub ticket_keys: Option<usize>,
}

/// The server's certificate of the moment: what [`Certificates::reload`] replaces and the
/// metrics read. A cheap-clone handle.
#[derive(Debug, Clone)]
pub struct Certificates {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
    /// Each certificate's files, in order; none for one made at start.
    files: Vec<Files>,
    tickets: Option<Arc<TicketKeys>>,
    identity: RwLock<Identity>,
    /// Reloads that put a certificate in place, and those refused.
    ok: AtomicU64,
    failed: AtomicU64,
    /// Held through a reload, so that two do not interleave; holds the files' stamp as the
    /// last reload (or the start) found it.
    reloading: Mutex<Option<Stamp>>,
}

impl Certificates {
    /// The certificates `resolver` hands out (the first of which is `identity`), read from
    /// `files`, a chain and a key for each (none: made at start), with the ticket keys of
    /// `tickets`. The files' stamp is taken now, just after they were read: the watcher
    /// reloads them once they change from it.
    pub(crate) fn new(
        resolver: Arc<Resolver>,
        provider: Arc<CryptoProvider>,
        files: Vec<(PathBuf, PathBuf)>,
        tickets: Option<Arc<TicketKeys>>,
        identity: Identity,
    ) -> Certificates {
        let certificates = Certificates {
            inner: Arc::new(Inner {
                resolver,
                provider,
                files: files
                    .into_iter()
                    .map(|(chain, key)| Files { chain, key })
                    .collect(),
                tickets,
                identity: RwLock::new(identity),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                reloading: Mutex::new(None),
            }),
        };
        *certificates.inner.reloading.lock() = Some(certificates.stamp());
        certificates
    }

    /// Whether there are files to reload (`--tls-cert`, `--tls-key`).
    pub fn reloadable(&self) -> bool {
        !self.inner.files.is_empty()
    }

    /// The certificate served now.
    pub fn identity(&self) -> Identity {
        self.inner.identity.read().clone()
    }

    /// Reloads that put a certificate in place, and reloads refused.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.inner.ok.load(Ordering::Relaxed),
            self.inner.failed.load(Ordering::Relaxed),
        )
    }

    /// Every file a reload reads: the chain, the key, and the ticket key file if there is one.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        for f in &self.inner.files {
            files.push(f.chain.as_path());
            files.push(f.key.as_path());
        }
        if let Some(t) = &self.inner.tickets {
            files.push(t.path());
        }
        files
    }

    /// What `stat` says of the files now.
    pub fn stamp(&self) -> Stamp {
        stamp_of(&self.files())
    }

    /// Whether the watcher should reload now: the files differ from what the last reload
    /// read, and they did the same at the last look (`pending`), so that a certificate and
    /// its key written one after the other are read together. A refused reload is not tried
    /// again until the files change again.
    pub fn due(&self, pending: &mut Option<Stamp>) -> bool {
        if !self.reloadable() {
            return false;
        }
        let now = self.stamp();
        if self.inner.reloading.lock().as_ref() == Some(&now) {
            *pending = None;
            return false;
        }
        if pending.as_ref() == Some(&now) {
            *pending = None;
            return true;
        }
        *pending = Some(now);
        false
    }

    /// Reads the files again and, if they are good, serves their certificate to every new
    /// handshake from now on (and uses the ticket key file's keys). On any error nothing
    /// changes.
    ///
    /// # Errors
    ///
    /// [`ReloadError::NoFiles`] when the certificate was made at start; otherwise the file
    /// at fault and why: it cannot be read, holds no certificate or key, the key does not go
    /// with the certificate, the certificate has expired, the ticket key file is refused.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let files = &self.inner.files;
        if files.is_empty() {
            return Err(ReloadError::NoFiles);
        }
        let mut last = self.inner.reloading.lock();
        // Taken before the files are read: a change written meanwhile is seen next time.
        *last = Some(self.stamp());
        let result = self.load(files);
        let counter = match result {
            Ok(_) => &self.inner.ok,
            Err(_) => &self.inner.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn load(&self, files: &[Files]) -> Result<Reloaded, ReloadError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut keys = Vec::with_capacity(files.len());
        let mut first = None;
        for f in files {
            let (key, identity) = certified_key(&f.chain, &f.key, &self.inner.provider)?;
            if identity.expired_at(now) {
                return Err(ReloadError::Refused {
                    file: f.chain.clone(),
                    why: format!("the certificate expired on {}", identity.expires),
                });
            }
            first.get_or_insert(identity);
            keys.push(key);
        }
        let identity = first.expect("at least one certificate");
        // The ticket keys too, before anything is swapped: all or nothing.
        let ticket_keys = match &self.inner.tickets {
            Some(tickets) => Some(tickets.reread().map_err(|why| ReloadError::Refused {
                file: tickets.path().to_owned(),
                why,
            })?),
            None => None,
        };
        *self.inner.resolver.current.write() = Arc::new(Served::new(keys));
        let mut served = self.inner.identity.write();
        let changed = served.sha256 != identity.sha256;
        *served = identity.clone();
        Ok(Reloaded {
            identity,
            changed,
            ticket_keys,
        })
    }
}

/// What `stat` says of each of `files` (following links): device, inode, modification time,
/// size.
fn stamp_of(files: &[&Path]) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    Stamp(
        files
            .iter()
            .map(|f| {
                std::fs::metadata(f).ok().map(|m| FileStamp {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    size: m.size(),
                })
            })
            .collect(),
    )
}

/// A PEM file's bytes, at most [`MAX_PEM_FILE`] of them, from a regular file.
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let file = super::files::open_unblocked(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "larger than {} KiB, which no certificate or key is",
            MAX_PEM_FILE / 1024
        ));
    }
    Ok(bytes)
}

/// The certificates of a PEM file, in order: at least one.
pub(crate) fn chain_of(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in it (a PEM file with BEGIN CERTIFICATE)".into());
    }
    Ok(chain)
}

/// The private key of a PEM file: PKCS#8, RSA (PKCS#1) or EC (SEC1).
pub(crate) fn key_of(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no private key in it (a PEM file with BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or \
             BEGIN EC PRIVATE KEY)"
                .to_owned()
        }
        e => format!("not a PEM key file: {e}"),
    })
}

/// The chain of `chain` and the key of `key` as one certified key, checked: the leaf is
/// X.509, the key is one the provider can sign with, and it is the leaf's (their public keys
/// are the same).
pub(crate) fn certified_key(
    chain: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(CertifiedKey, Identity), ReloadError> {
    let refused = |file: &Path| {
        let file = file.to_owned();
        move |why: String| ReloadError::Refused { file, why }
    };
    let certs = chain_of(chain).map_err(refused(chain))?;
    let identity = Identity::of(&certs[0])
        .ok_or_else(|| "the first certificate is not X.509".to_owned())
        .map_err(refused(chain))?;
    let der = key_of(key).map_err(refused(key))?;
    let signer = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("not a private key rustls can sign with: {e}"))
        .map_err(refused(key))?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "not the key of the certificate in {} (their public keys differ)",
                chain.display()
            ),
            e => format!("cannot be checked against the certificate: {e}"),
        })
        .map_err(refused(key))?;
    Ok((certified, identity))
}

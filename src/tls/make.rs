//! Certificates made by tcpool itself (rcgen, ECDSA P-256): the CA and the certificate that
//! `serve --tls auto` makes at start, and the set `tcpool tls gen DIR` writes for people's
//! own tests.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A CA that can sign more certificates: `--tls auto`'s, kept to sign the bad certificates
/// of `tls-cert` faults so that a client sees exactly what is wrong with them.
pub struct Signer(CertifiedIssuer<'static, KeyPair>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

/// What a bad certificate is wrong about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// It expired a year ago.
    Expired,
    /// It is for `wrong.invalid` only.
    WrongName,
    /// It signed itself.
    SelfSigned,
}

impl Bad {
    /// Its name in `tls-cert,cert=NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Bad::Expired => "expired",
            Bad::WrongName => "wrong-name",
            Bad::SelfSigned => "self-signed",
        }
    }
}

/// A bad certificate for [`local_names`] (or, [`Bad::WrongName`], for `wrong.invalid`),
/// with its key. Signed by `signer`, or by a CA made for the purpose (which no client
/// trusts) when there is none; [`Bad::SelfSigned`] is always self-signed.
pub fn bad(
    kind: Bad,
    signer: Option<&Signer>,
) -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let now = OffsetDateTime::now_utc();
    let pkcs8 = |key: &KeyPair| PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    if kind == Bad::SelfSigned {
        let mut params = CertificateParams::new(local_names()).context("the names")?;
        params.distinguished_name = named("tcpool self-signed");
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate().context("a key")?;
        let cert = params
            .self_signed(&key)
            .context("a self-signed certificate")?;
        return Ok((cert.der().clone(), pkcs8(&key)));
    }
    let made;
    let ca = match signer {
        Some(signer) => &signer.0,
        None => {
            made = ca("tcpool fault CA", now)?;
            &made
        }
    };
    let (cert, key) = match kind {
        // Valid for a year from two years ago.
        Bad::Expired => leaf(
            ca,
            "tcpool expired",
            local_names(),
            now - Duration::days(730),
            Use::Server,
        )?,
        _ => leaf(
            ca,
            "tcpool wrong name",
            vec!["wrong.invalid".to_owned()],
            now,
            Use::Server,
        )?,
    };
    Ok((cert.der().clone(), pkcs8(&key)))
}

/// What `--tls auto` made: the CA's certificate (PEM, to write for clients), and the served
/// certificate with its key.
#[derive(Debug)]
pub struct Auto {
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate, signed by the CA.
    pub leaf: CertificateDer<'static>,
    /// The server certificate's key.
    pub key: PrivateKeyDer<'static>,
    /// The CA, to sign more.
    pub signer: Signer,
}

/// The names a made server certificate is for: localhost, 127.0.0.1, ::1 and this host's
/// name when it has one that differs.
pub fn local_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = nix::unistd::gethostname()
        && let Ok(host) = host.into_string()
        && !host.is_empty()
        && !names.contains(&host)
    {
        names.push(host);
    }
    names
}

/// A CA and a server certificate for [`local_names`] signed by it, valid from an hour ago
/// for a year.
pub fn auto() -> anyhow::Result<Auto> {
    let now = OffsetDateTime::now_utc();
    let ca = ca("tcpool auto CA", now)?;
    let (leaf, key) = leaf(&ca, "tcpool auto", local_names(), now, Use::Server)?;
    Ok(Auto {
        ca_pem: ca.pem(),
        leaf: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        signer: Signer(ca),
    })
}

/// What a made certificate is for.
#[derive(Debug, Clone, Copy)]
enum Use {
    Server,
    Client,
}

fn ca(name: &str, now: OffsetDateTime) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::default();
    params.distinguished_name = named(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    let key = KeyPair::generate().context("a key for the CA")?;
    CertifiedIssuer::self_signed(params, key).context("the CA's certificate")
}

fn leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    name: &str,
    names: Vec<String>,
    not_before: OffsetDateTime,
    usage: Use,
) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::new(names).context("the certificate's names")?;
    params.distinguished_name = named(name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match usage {
        Use::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Use::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before - Duration::hours(1);
    params.not_after = not_before + Duration::days(365);
    let key = KeyPair::generate().context("a key")?;
    let cert = params.signed_by(&key, ca).context("a certificate")?;
    Ok((cert, key))
}

fn named(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// The name in `tcpool tls gen`'s client certificate unless told otherwise.
pub const CLIENT_NAME: &str = "tcpool client";

/// Writes a CA and certificates signed by it into `dir` (made if missing), each with its
/// key: `ca.pem`, `server.pem` (for [`local_names`]), `client.pem` (for mutual TLS, named
/// [`CLIENT_NAME`]), `expired.pem` (a server certificate that expired a year ago) and
/// `wrong-name.pem` (one for `wrong.invalid` only). Returns the files written.
pub fn set(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    set_with(dir, &[CLIENT_NAME])
}

/// [`set`], with a client certificate for each of `clients`: the first is `client.pem`, the
/// others `client-NAME.pem` (NAME with anything but letters, digits, `-` and `_` as `_`).
pub fn set_with(dir: &Path, clients: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let now = OffsetDateTime::now_utc();
    let ca = ca("tcpool test CA", now)?;
    // Valid for a year from two years ago: it expired a year ago.
    let two_years_ago = now - Duration::days(730);
    let made = [
        (
            "server",
            leaf(&ca, "tcpool server", local_names(), now, Use::Server)?,
        ),
        (
            "expired",
            leaf(
                &ca,
                "tcpool expired",
                local_names(),
                two_years_ago,
                Use::Server,
            )?,
        ),
        (
            "wrong-name",
            leaf(
                &ca,
                "tcpool wrong name",
                vec!["wrong.invalid".into()],
                now,
                Use::Server,
            )?,
        ),
    ];
    let mut written = Vec::new();
    let mut write = |name: String, text: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    write("ca.pem".into(), ca.pem())?;
    write("ca-key.pem".into(), ca.key().serialize_pem())?;
    let clients = clients.iter().enumerate().map(|(i, &client)| {
        let file = if i == 0 {
            "client".to_owned()
        } else {
            let safe: String = client
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("client-{safe}")
        };
        // A client certificate names its holder in its subject; its DNS name is unused.
        leaf(&ca, client, Vec::new(), now, Use::Client).map(|made| (file, made))
    });
    let mut clients = clients.collect::<anyhow::Result<Vec<_>>>()?;
    let mut all = Vec::new();
    for (name, made) in made {
        all.push((name.to_owned(), made));
        if name == "server" {
            all.append(&mut clients);
        }
    }
    for (name, (cert, key)) in all {
        write(format!("{name}.pem"), cert.pem())?;
        write(format!("{name}-key.pem"), key.serialize_pem())?;
    }
    Ok(written)
}

//! What a client shows of the TLS server it reached, and the verifier of `--tls-insecure`.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CommonState, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use sha2::{Digest as _, Sha256};
use x509_parser::extensions::GeneralName;

/// The SHA-256 fingerprint of a certificate, as `openssl x509 -fingerprint -sha256` prints
/// it: upper-case hex pairs joined by colons.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let mut text = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            text.push(':');
        }
        let _ = write!(text, "{byte:02X}");
    }
    text
}

/// The common name (CN) of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = x509.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// The DNS names a certificate is for (its subject alternative names), lower-case.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    alt_names(&x509)
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// A certificate's subject alternative names.
fn alt_names<'a>(x509: &'a x509_parser::certificate::X509Certificate<'_>) -> &'a [GeneralName<'a>] {
    x509.subject_alternative_name()
        .ok()
        .flatten()
        .map_or(&[], |san| san.value.general_names.as_slice())
}

/// A certificate in one line: its subject, the names it is for, when it expires, and its
/// fingerprint.
pub fn describe_cert(cert: &CertificateDer<'_>) -> String {
    let fingerprint = fingerprint(cert);
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, x509)) => {
            let names: Vec<String> = alt_names(&x509)
                .iter()
                .map(|name| match name {
                    GeneralName::DNSName(d) => (*d).to_owned(),
                    GeneralName::IPAddress(ip) => ip_text(ip),
                    other => other.to_string(),
                })
                .collect();
            format!(
                "subject={} names={} expires={} sha256={fingerprint}",
                x509.subject(),
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(",")
                },
                x509.validity().not_after,
            )
        }
        Err(_) => format!("subject=? (not X.509) sha256={fingerprint}"),
    }
}

/// What an operator needs to tell one certificate from another: its subject, serial,
/// expiry and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject, as `CN=tcpool server`.
    pub subject: String,
    /// The serial number as `openssl x509 -serial` prints it: upper-case hex, two digits a
    /// byte.
    pub serial: String,
    /// When it expires, in UNIX seconds.
    pub not_after: i64,
    /// When it expires, as text (`Dec  6 13:42:51 2027 +00:00`).
    pub expires: String,
    /// Its SHA-256 fingerprint ([`fingerprint`]).
    pub sha256: String,
}

impl Identity {
    /// The identity of `cert`; `None` if it is not X.509.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Identity> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        // The DER integer's sign byte is no part of the number, as OpenSSL shows it.
        let raw = x509.raw_serial();
        let digits = match raw.iter().position(|&b| b != 0) {
            Some(first) => &raw[first..],
            None => &raw[raw.len().saturating_sub(1)..],
        };
        let mut serial = String::with_capacity(digits.len() * 2);
        for byte in digits {
            let _ = write!(serial, "{byte:02X}");
        }
        Some(Identity {
            subject: x509.subject().to_string(),
            serial,
            not_after: x509.validity().not_after.timestamp(),
            expires: x509.validity().not_after.to_string(),
            sha256: fingerprint(cert),
        })
    }

    /// Whether it expired before `now` (UNIX seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after < now
    }
}

impl fmt::Display for Identity {
    /// `subject=... serial=... expires=... sha256=...`, for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject={} serial={} expires={} sha256={}",
            self.subject, self.serial, self.expires, self.sha256
        )
    }
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string(),
        _ => format!("{bytes:02x?}"),
    }
}

/// What was agreed, in one line: version, suite, key exchange group, ALPN, and whether the
/// session was resumed.
pub fn describe_session(state: &CommonState) -> String {
    let (version, suite) = version_and_suite(state);
    let (group, alpn) = group_and_alpn(state);
    let resumed = state.handshake_kind() == Some(HandshakeKind::Resumed);
    format!("version={version} suite={suite} group={group} alpn={alpn} resumed={resumed}")
}

/// The version and the suite agreed, as rustls names them (`TLSv1_3`,
/// `TLS13_AES_256_GCM_SHA384`); `?` before the handshake has agreed on them.
pub fn version_and_suite(state: &CommonState) -> (String, String) {
    let version = state
        .protocol_version()
        .map_or("?".to_owned(), |v| format!("{v:?}"));
    let suite = state
        .negotiated_cipher_suite()
        .map_or("?".to_owned(), |s| format!("{:?}", s.suite()));
    (version, suite)
}

/// The key exchange group and the application protocol agreed (`X25519MLKEM768`, `h2`); `-`
/// for none.
pub fn group_and_alpn(state: &CommonState) -> (String, String) {
    let group = state
        .negotiated_key_exchange_group()
        .map_or("-".to_owned(), |g| format!("{:?}", g.name()));
    let alpn = state
        .alpn_protocol()
        .map_or("-".to_owned(), |p| String::from_utf8_lossy(p).into_owned());
    (group, alpn)
}

/// `--tls-insecure`: takes any certificate for any name, but still checks that the server
/// holds its key (the handshake's signatures), so that the session is encrypted to someone.
#[derive(Debug)]
pub struct AcceptAnything(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with `serial`, expiring at `not_after` (UNIX seconds).
    fn made(serial: &[u8], not_after: i64) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn an_identity_shows_the_serial_as_openssl_does_and_when_it_expires() {
        // A serial with its high bit set is encoded with a leading zero byte, which is no
        // part of the number.
        let cert = made(&[0x8f, 0x01, 0x00], 1_900_000_000);
        let identity = Identity::of(&cert).unwrap();
        assert_eq!(identity.serial, "8F0100");
        assert_eq!(identity.not_after, 1_900_000_000);
        assert_eq!(identity.sha256, fingerprint(&cert));
        assert!(!identity.expired_at(1_800_000_000));
        assert!(identity.expired_at(1_900_000_001));
        let line = identity.to_string();
        assert!(
            line.starts_with("subject=") && line.contains(" serial=8F0100 "),
            "{line}"
        );
        assert!(
            line.contains(" expires=") && line.ends_with(&identity.sha256),
            "{line}"
        );
        assert_eq!(
            Identity::of(&made(&[0x01], 1_900_000_000)).unwrap().serial,
            "01"
        );
        assert_eq!(Identity::of(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}

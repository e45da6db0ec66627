//! What a client shows of the TLS server it reached, and the verifier of `--tls-insecure`.

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CommonState, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use sha2::{Digest as _, Sha256};

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

/// A certificate in one line: its subject, the names it is for, when it expires, and its
/// fingerprint.
pub fn describe_cert(cert: &CertificateDer<'_>) -> String {
    let fingerprint = fingerprint(cert);
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, x509)) => {
            let names: Vec<String> = x509
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .map(|name| match name {
                            x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                            x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
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

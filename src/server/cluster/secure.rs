//! How the link proves who it is to the broker and checks who the broker is:
//! `--cluster-creds FILE` (a NATS credentials file: the user's JWT and nkey seed) and
//! `--cluster-tls-ca FILE` (TLS to the broker, its certificate checked against that CA).
//!
//! Both files are read and checked once before the server serves ([`check`]), so that a
//! missing or broken file is a clear error at start, not a link that retries for ever; the
//! link reads them again when it connects ([`apply`]).

use std::io;
use std::path::Path;

use async_nats::ConnectOptions;

use super::ClusterOptions;
use crate::tls::{ClientTls, client_config};

/// A credentials file is a JWT and a seed: a few KiB at most.
const MAX_CREDS: u64 = 64 * 1024;

fn read_creds(path: &Path) -> io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_CREDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes: a credentials file is at most {MAX_CREDS}"),
        ));
    }
    std::fs::read_to_string(path)
}

/// `connect` with the credentials and the TLS `options` ask for.
///
/// # Errors
///
/// A file that cannot be read, or does not hold credentials or CA certificates.
pub(super) fn apply(
    options: &ClusterOptions,
    mut connect: ConnectOptions,
) -> Result<ConnectOptions, String> {
    if let Some(path) = &options.creds {
        let creds = read_creds(path).map_err(|e| format!("{}: {e}", path.display()))?;
        connect = connect
            .credentials(&creds)
            .map_err(|e| format!("{}: not a NATS credentials file: {e}", path.display()))?;
    }
    if let Some(ca) = &options.tls_ca {
        let tls = ClientTls {
            ca: Some(ca.clone()),
            ..ClientTls::default()
        };
        let config = client_config(&tls).map_err(|e| format!("{e:#}"))?;
        connect = connect
            .tls_client_config((*config).clone())
            .require_tls(true);
    }
    Ok(connect)
}

/// Why the broker at `url` may not be reached, in the words of the link's warning: whether
/// it takes a TCP connection at all. The NATS client reports a refused connection and a
/// failed TLS handshake alike; an operator needs to know which.
pub(super) async fn probe(url: &str) -> String {
    let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
        return "unreachable".into();
    };
    let connect = tokio::net::TcpStream::connect((addr.host(), addr.port()));
    match tokio::time::timeout(std::time::Duration::from_secs(1), connect).await {
        Ok(Ok(_)) => "takes TCP connections, but the NATS handshake fails: a broker certificate \
                      the link does not trust (--cluster-tls-ca), or TLS asked on one side only"
            .into(),
        Ok(Err(e)) => format!("unreachable ({e})"),
        Err(_) => "unreachable (no answer within 1 s)".into(),
    }
}

/// Reads and checks the files `options` name, before serving.
///
/// # Errors
///
/// What is wrong with a file, naming its flag.
pub fn check(options: &ClusterOptions) -> Result<(), String> {
    if let Some(path) = &options.creds {
        let creds =
            read_creds(path).map_err(|e| format!("--cluster-creds {}: {e}", path.display()))?;
        ConnectOptions::new().credentials(&creds).map_err(|e| {
            format!(
                "--cluster-creds {}: not a NATS credentials file (a user JWT and its nkey seed): {e}",
                path.display()
            )
        })?;
    }
    if let Some(ca) = &options.tls_ca {
        let tls = ClientTls {
            ca: Some(ca.clone()),
            ..ClientTls::default()
        };
        client_config(&tls).map_err(|e| format!("--cluster-tls-ca: {e:#}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ClusterOptions {
        ClusterOptions::new("nats://127.0.0.1:4222")
    }

    #[test]
    fn no_files_nothing_to_check() {
        assert_eq!(check(&options()), Ok(()));
    }

    #[test]
    fn a_missing_or_foreign_file_is_named_with_its_flag() {
        let dir = std::env::temp_dir().join(format!("tcpool-secure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk");
        std::fs::write(&junk, "not a credentials file\n").unwrap();
        let mut bad = options();
        bad.creds = Some(dir.join("absent.creds"));
        assert!(check(&bad).unwrap_err().starts_with("--cluster-creds "));
        bad.creds = Some(junk.clone());
        let e = check(&bad).unwrap_err();
        assert!(e.contains("not a NATS credentials file"), "{e}");
        let mut bad = options();
        bad.tls_ca = Some(junk);
        assert!(check(&bad).unwrap_err().starts_with("--cluster-tls-ca: "));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

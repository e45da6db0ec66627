//! The TLS flags `talk` and `bench` share, and `tcpool tls gen`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use tcpool::tls::ClientTls;

/// A client's TLS flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct TlsClientArgs {
    /// Speak TLS, verifying the server's certificate against --tls-ca or the system's roots
    /// [default: off, plaintext].
    #[arg(long)]
    pub(crate) tls: bool,
    /// CA certificates (PEM) to verify the server with, such as the file `serve --tls auto`
    /// names in its log [default: the system's roots].
    #[arg(long, value_name = "FILE", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Do not verify the server's certificate (any issuer, any name, expired): for a test
    /// server only [default: off, verified].
    #[arg(long, requires = "tls", conflicts_with = "tls_ca")]
    tls_insecure: bool,
    /// The name to ask the server for (SNI) and to verify its certificate against [default:
    /// the host connected to].
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_servername: Option<String>,
    /// A certificate chain (PEM) to show a server that asks for one (mutual TLS); with
    /// --tls-key [default: none].
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM) [default: none].
    #[arg(long, value_name = "FILE", requires_all = ["tls", "tls_cert"])]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    offer: TlsOfferArgs,
}

/// The versions, ALPN protocols and key exchange groups a server or a client offers.
#[derive(Debug, Clone, Args)]
pub(crate) struct TlsOfferArgs {
    /// TLS versions to allow, `1.2`, `1.3` or both, comma-separated [default: 1.2,1.3].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    tls_versions: Vec<tcpool::tls::Version>,
    /// ALPN protocols to offer, in order of preference, comma-separated, such as
    /// `h2,http/1.1`; a server with some turns away a client that offers none of them
    /// [default: none].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    tls_alpn: Vec<String>,
    /// Key exchange groups to allow, in order of preference, comma-separated:
    /// X25519MLKEM768, SecP256r1MLKEM768, MLKEM768, x25519, secp256r1 (P-256), secp384r1
    /// (P-384) [default: X25519MLKEM768,secp384r1,x25519,secp256r1].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    tls_groups: Vec<tcpool::tls::Group>,
}

impl TlsOfferArgs {
    /// Whether any was given.
    pub(crate) fn given(&self) -> bool {
        !(self.tls_versions.is_empty() && self.tls_alpn.is_empty() && self.tls_groups.is_empty())
    }

    pub(crate) fn offer(&self) -> tcpool::tls::Offer {
        tcpool::tls::Offer {
            versions: self.tls_versions.clone(),
            alpn: self.tls_alpn.clone(),
            groups: self.tls_groups.clone(),
        }
    }
}

impl TlsClientArgs {
    /// The client's TLS settings, if it speaks TLS. `--tls-versions` or `--tls-alpn`
    /// without `--tls` is a usage error (exit 2), as the other TLS flags are.
    pub(crate) fn settings(&self, command: &str) -> Option<ClientTls> {
        if !self.tls && self.offer.given() {
            super::bad_value(
                command,
                "--tls-versions, --tls-alpn and --tls-groups need --tls",
            );
        }
        self.tls.then(|| ClientTls {
            ca: self.tls_ca.clone(),
            insecure: self.tls_insecure,
            servername: self.tls_servername.clone(),
            identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            offer: self.offer.offer(),
        })
    }
}

/// What a failed handshake means for the user, with the flags that change it.
pub(crate) fn handshake_failed(e: &std::io::Error) -> String {
    let why = tcpool::tls::error_text(e);
    if why.contains("certificate") || why.contains("Certificate") {
        format!(
            "TLS handshake failed: {why} (verify with --tls-ca FILE, name the server with \
             --tls-servername NAME, or skip the check with --tls-insecure)"
        )
    } else {
        format!("TLS handshake failed: {why}")
    }
}

const EXAMPLES: &str = r"
  # A CA and certificates for tests, in ./certs
  tcpool tls gen certs
  # A server with them, TLS on 8901 beside plaintext on 8900
  tcpool serve --tls-cert certs/server.pem --tls-key certs/server-key.pem --tls-port 8901
  # A client that checks the server's certificate against that CA
  tcpool talk --tls --tls-ca certs/ca.pem localhost:8901";

/// `tcpool tls` subcommands.
#[derive(Debug, Args)]
#[command(after_help = super::examples(EXAMPLES))]
pub(crate) struct TlsArgs {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Write a CA and certificates signed by it into DIR, each with its key: ca.pem,
    /// server.pem (localhost, 127.0.0.1, ::1, this host), client.pem (for mutual TLS),
    /// expired.pem and wrong-name.pem (for testing how clients fail).
    #[command(after_help = super::examples(EXAMPLES))]
    Gen {
        /// The directory to write into (made if missing; files in it are replaced).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The name in the client certificate, client.pem: with `serve --tls-client-ca`, the
        /// name `/list` shows and chat members know its holder by (repeatable: the others go
        /// to client-NAME.pem) [default: tcpool client].
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
}

/// Runs a `tcpool tls` subcommand.
pub(crate) fn run(args: TlsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TlsCommand::Gen { dir, clients } => {
            let mut names: Vec<&str> = clients.iter().map(String::as_str).collect();
            if names.is_empty() {
                names.push(tcpool::tls::make::CLIENT_NAME);
            }
            for path in tcpool::tls::make::set_with(&dir, &names)? {
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

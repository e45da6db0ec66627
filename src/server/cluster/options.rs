//! What a node is told on its command line: the broker, the cluster's name and its own, and
//! how those names and the URL are checked before anything starts.

use super::MAX_NAME;

/// What `--cluster`, `--cluster-name` and `--node` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The broker, `nats://HOST:PORT`.
    pub url: String,
    /// The cluster's name: nodes with the same one share a room.
    pub name: String,
    /// This node's name, as other nodes show it (`<#7@NODE>`).
    pub node: String,
    /// A NATS credentials file (the user's JWT and nkey seed) to connect with.
    pub creds: Option<std::path::PathBuf>,
    /// TLS to the broker, its certificate checked against the CA certificates in this file.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Lines kept to bring back what an outage loses (`--cluster-history`); 0: none.
    pub history: usize,
}

impl ClusterOptions {
    /// The options for `url`, with the cluster named `tcpool` and the node named after the
    /// host and the process ([`default_node`]).
    pub fn new(url: impl Into<String>) -> Self {
        ClusterOptions {
            url: url.into(),
            name: "tcpool".into(),
            node: default_node(),
            creds: None,
            tls_ca: None,
            history: 0,
        }
    }

    /// The subject the nodes of this cluster publish on.
    pub fn subject(&self) -> String {
        format!("tcpool.{}.chat", self.name)
    }

    /// The subject where a node named `node` answers whether it is live (see [`PROBE`]).
    pub fn names_subject(&self) -> String {
        format!("tcpool.{}.names.{}", self.name, self.node)
    }

    /// The subject where the nodes ask each other about a nickname (see [`NICK_WAIT`]).
    pub fn nick_subject(&self) -> String {
        format!("tcpool.{}.nick", self.name)
    }

    /// The subject the nodes of this cluster publish their heartbeats on.
    pub fn presence_subject(&self) -> String {
        format!("tcpool.{}.presence", self.name)
    }
}

/// `HOST-PID`, the host name cut to what a node name may hold.
pub fn default_node() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| if name_char(c) { c } else { '-' })
        .take(MAX_NAME - 12)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{}", std::process::id())
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Checks a node or cluster name: 1 to [`MAX_NAME`] ASCII letters, digits, `-`, `_` or `.`
/// (a cluster name goes into a NATS subject, where `.` separates tokens: it takes no dot).
///
/// # Errors
///
/// What is wrong with it.
///
/// ```
/// use tcpool::server::cluster::check_name;
///
/// assert!(check_name("node-1.eu", true).is_ok());
/// assert!(check_name("a b", true).is_err());
/// assert!(check_name("prod.eu", false).is_err());
/// ```
pub fn check_name(name: &str, dots: bool) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name is 1 to {MAX_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|&c| !name_char(c) || (!dots && c == '.')) {
        let allowed = if dots { "-, _ and ." } else { "- and _" };
        return Err(format!(
            "{c:?} is not allowed: use ASCII letters, digits, {allowed}"
        ));
    }
    Ok(())
}

/// Checks a broker URL: `nats://HOST[:PORT]`.
///
/// # Errors
///
/// What is wrong with it.
///
/// ```
/// use tcpool::server::cluster::check_url;
///
/// assert!(check_url("nats://127.0.0.1:4222").is_ok());
/// assert!(check_url("nats://broker").is_ok());
/// assert!(check_url("http://127.0.0.1:4222").is_err());
/// assert!(check_url("nats://a b").is_err());
/// ```
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("nats://") else {
        return Err("expected nats://HOST:PORT".into());
    };
    let host = rest.rsplit_once(':').map_or(rest, |(host, _)| host);
    if host.is_empty()
        || rest.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err("expected nats://HOST:PORT".into());
    }
    url.parse::<async_nats::ServerAddr>()
        .map(drop)
        .map_err(|e| e.to_string())
}

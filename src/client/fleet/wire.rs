//! What the coordinator and its agents say to each other over NATS, and how it is signed.
//!
//! Every message is one JSON envelope, `{"body": "...", "mac": "..."}`: the body is the
//! message's own JSON and the mac, with a fleet token, is its HMAC-SHA256 under the token,
//! base64. A message that is too long, is not an envelope, lacks a right mac when a token is
//! set, or does not parse is refused by [`open`] with the reason, and the caller logs it and
//! goes on: nothing a peer sends ends an agent or a coordinator.

use std::fmt;
use std::path::Path;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Every subject of a fleet starts with this.
pub const PREFIX: &str = "tcpool.fleet";

/// The subject on which the coordinator looks for agents.
pub fn discover_subject() -> String {
    format!("{PREFIX}.discover")
}

/// The subject one agent takes requests on (clock samples, work).
pub fn agent_subject(agent: &str) -> String {
    format!("{PREFIX}.agent.{agent}")
}

/// The subject the agents of run `run` report on.
pub fn events_subject(run: &str) -> String {
    format!("{PREFIX}.run.{run}")
}

/// The subject on which the coordinator stops run `run`.
pub fn stop_subject(run: &str) -> String {
    format!("{PREFIX}.run.{run}.stop")
}

/// The longest message [`open`] reads.
pub const MAX_MESSAGE: usize = 8 << 20;

/// The fewest bytes a token file holds.
pub const MIN_TOKEN: usize = 16;

/// A fleet's shared token: the key that signs every message.
#[derive(Clone)]
pub struct Token(hmac::Key);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `bytes` (surrounding white space dropped).
    ///
    /// # Errors
    ///
    /// Fewer than [`MIN_TOKEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        let text = bytes.trim_ascii();
        if text.len() < MIN_TOKEN {
            return Err(format!(
                "{} bytes: a fleet token is at least {MIN_TOKEN} (such as `head -c 32 /dev/urandom | base64`)",
                text.len()
            ));
        }
        Ok(Token(hmac::Key::new(hmac::HMAC_SHA256, text)))
    }

    /// The token in the file at `path` (at most 4 KiB).
    ///
    /// # Errors
    ///
    /// A file that cannot be read, or holds too short a token, named.
    pub fn read(path: &Path) -> Result<Self, String> {
        let len = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if len > 4096 {
            return Err(format!(
                "{}: {len} bytes, a token file is at most 4096",
                path.display()
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Token::new(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// One agent's share of the work: what a run of its own is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// Its connections.
    pub connections: usize,
    /// `-n`: its messages.
    pub messages: Option<u64>,
    /// `--rate`: its messages per second.
    pub rate: Option<f64>,
    /// Its first connection's index in the whole fleet (`{conn}`).
    pub conn_offset: usize,
}

/// Work for one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// The run's id: the agent takes each at most once.
    pub run: String,
    /// The agent it is for.
    pub agent: String,
    /// When the coordinator sent it, in the agent's clock (UNIX seconds).
    pub issued: f64,
    /// The `tcpool bench` flags, the target first, as the coordinator was given them.
    pub args: Vec<String>,
    /// This agent's part.
    pub share: Share,
    /// When to start, in the agent's clock (UNIX seconds).
    pub start_at: f64,
}

/// What a streaming agent says every second: alive, its counts so far, and the latencies
/// recorded since its last tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// The agent.
    pub agent: String,
    /// The run.
    pub run: String,
    /// 0, 1, 2, ...: a repeated or older tick is dropped.
    pub seq: u64,
    /// Still connecting or waiting for the start.
    pub connecting: bool,
    /// Replies per second lately, warm-up included.
    pub msgs_per_sec: f64,
    /// Measured messages so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
    /// Connections open.
    pub open: usize,
    /// New latencies by second of the window: the second and the histogram (V2 deflate,
    /// base64, as in a report).
    pub seconds: Vec<(u64, String)>,
}

/// A fleet message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Coordinator to every agent: who is there?
    Discover,
    /// An agent's answer to [`Message::Discover`].
    Hello {
        /// Its name.
        agent: String,
        /// Running a run already.
        busy: bool,
    },
    /// A clock sample: the coordinator's time when it sent this.
    Ping {
        /// Coordinator time (UNIX seconds).
        t0: f64,
    },
    /// The agent's answer to a [`Message::Ping`]: its own time when it answered.
    Pong {
        /// The ping's time, back.
        t0: f64,
        /// Agent time (UNIX seconds).
        at: f64,
    },
    /// Work for an agent.
    Work(Work),
    /// The agent took the work.
    Accepted {
        /// The agent.
        agent: String,
    },
    /// The agent refused the work, and why.
    Refused {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// A running agent's second.
    Tick(Tick),
    /// A piece of an agent's final report (JSON), split to fit the broker's payload limit.
    ReportPart {
        /// The agent.
        agent: String,
        /// The run.
        run: String,
        /// This piece, from 0.
        index: u32,
        /// The pieces in all.
        count: u32,
        /// Its bytes, base64.
        data: String,
    },
    /// The agent's run failed to start or run: no report follows.
    Failed {
        /// The agent.
        agent: String,
        /// The run.
        run: String,
        /// Why.
        reason: String,
    },
    /// Coordinator to the agents: stop the run now and report.
    Stop {
        /// The run.
        run: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// `message` as an envelope, signed with `token` if there is one.
pub fn seal(token: Option<&Token>, message: &Message) -> Vec<u8> {
    let body = serde_json::to_string(message).expect("a fleet message is JSON");
    let mac = token.map(|t| STANDARD.encode(hmac::sign(&t.0, body.as_bytes())));
    serde_json::to_vec(&Envelope { body, mac }).expect("an envelope is JSON")
}

/// The message in `payload`, its mac checked against `token` if there is one.
///
/// # Errors
///
/// Why it is refused: too long, not an envelope, no mac or a wrong one, or not a message.
pub fn open(token: Option<&Token>, payload: &[u8]) -> Result<Message, String> {
    if payload.len() > MAX_MESSAGE {
        return Err(format!("{} bytes, more than {MAX_MESSAGE}", payload.len()));
    }
    let envelope: Envelope =
        serde_json::from_slice(payload).map_err(|e| format!("not a fleet message: {e}"))?;
    if let Some(token) = token {
        let Some(mac) = &envelope.mac else {
            return Err("not signed".into());
        };
        let mac = STANDARD
            .decode(mac)
            .map_err(|_| "a signature that is not base64".to_owned())?;
        hmac::verify(&token.0, envelope.body.as_bytes(), &mac)
            .map_err(|_| "a wrong signature (another fleet's token, or changed on the way)")?;
    }
    serde_json::from_str(&envelope.body).map_err(|e| format!("not a fleet message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::new(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_signed_message_opens_with_its_token_only() {
        let message = Message::Stop { run: "r1".into() };
        let sealed = seal(Some(&token("0123456789abcdef")), &message);
        assert_eq!(
            open(Some(&token("0123456789abcdef")), &sealed),
            Ok(message.clone())
        );
        let wrong = open(Some(&token("0123456789abcdeX")), &sealed).unwrap_err();
        assert!(wrong.contains("wrong signature"), "{wrong}");
        let unsigned = open(Some(&token("0123456789abcdef")), &seal(None, &message));
        assert_eq!(unsigned, Err("not signed".into()));
        // Without a token (NATS credentials guard the subjects), any well-formed message.
        assert_eq!(open(None, &sealed), Ok(message));
    }

    #[test]
    fn a_changed_body_fails_its_mac() {
        let t = token("0123456789abcdef");
        let sealed = seal(Some(&t), &Message::Stop { run: "r1".into() });
        let text = String::from_utf8(sealed).unwrap().replace("r1", "r2");
        assert!(open(Some(&t), text.as_bytes()).is_err());
    }

    #[test]
    fn hostile_payloads_are_refused_not_panicked_on() {
        let t = token("0123456789abcdef");
        for payload in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"{\"body\": 5}",
            b"{\"body\": \"{}\", \"mac\": \"***\"}",
            b"[1,2,3]",
        ] {
            assert!(open(Some(&t), payload).is_err(), "{payload:?}");
            assert!(open(None, payload).is_err(), "{payload:?}");
        }
        let huge = vec![b' '; MAX_MESSAGE + 1];
        assert!(open(None, &huge).unwrap_err().contains("more than"));
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(Token::new(b"  short \n").is_err());
        assert!(Token::new(b"0123456789abcdef\n").is_ok());
    }
}

//! `--log-format json`: one JSON object per log line, for a log shipper that should need no
//! regex.
//!
//! The library logs in one style (STYLE.md): a subject, then `key=value` details, as in
//! `session 7 closed: peer=127.0.0.1:51234 reason=quit`. The JSON form carries the same
//! facts as fields: `ts`, `level`, `target`, `msg` (the subject), then each `key=value` (a
//! value of digits, or of digits with a decimal point, becomes a number; durations are
//! milliseconds in keys that end in `_ms`) and `session` when the subject names one:
//!
//! ```text
//! {"ts":"2026-12-01T21:02:55.123Z","level":"debug","target":"tcpool::server::worker","msg":"session 7 closed","session":7,"peer":"127.0.0.1:51234","reason":"quit","duration_ms":1203.511}
//! ```
//!
//! It is an env_logger format: the lines go wherever the text form would (the
//! non-blocking operator-output queue).

use std::io::{self, Write};

use serde_json::Value;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// env_logger's text lines: `[TIME LEVEL target] message`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Writes `record` as one JSON line.
pub(crate) fn write_json(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> io::Result<()> {
    let text = record.args().to_string();
    let ts = buf.timestamp_millis().to_string();
    let line = json_line(&ts, record.level(), record.target(), &text);
    writeln!(buf, "{line}")
}

/// The JSON object for one log message.
fn json_line(ts: &str, level: log::Level, target: &str, text: &str) -> String {
    let (msg, fields) = split_fields(text);
    let mut out = String::with_capacity(text.len() + 96);
    let mut put = |key: &str, value: &Value| {
        out.push(if out.is_empty() { '{' } else { ',' });
        out.push_str(&Value::from(key).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    };
    put("ts", &Value::from(ts));
    put("level", &Value::from(level.as_str().to_ascii_lowercase()));
    put("target", &Value::from(target));
    put("msg", &Value::from(msg.as_str()));
    let mut seen = vec!["ts", "level", "target", "msg"];
    if let Some(id) = session_of(&msg) {
        put("session", &Value::from(id));
        seen.push("session");
    }
    for (key, value) in &fields {
        if seen.contains(&key.as_str()) {
            continue;
        }
        put(key, &typed(value));
        seen.push(key);
    }
    out.push('}');
    out
}

/// `7` for a subject such as `session 7 closed`.
fn session_of(msg: &str) -> Option<u64> {
    let rest = msg.strip_prefix("session ")?;
    rest.split([' ', ':']).next()?.parse().ok()
}

/// A value of digits is a number, and so is one of digits with a decimal point (a duration
/// in a `_ms` field); anything else stays text.
fn typed(value: &str) -> Value {
    if let Ok(n) = value.parse::<u64>()
        && !value.starts_with('+')
    {
        return Value::from(n);
    }
    let decimal = value.split_once('.').is_some_and(|(whole, part)| {
        [whole, part]
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
    });
    match value.parse::<f64>() {
        Ok(x) if decimal => Value::from(x),
        _ => Value::from(value),
    }
}

/// Whether `token` starts a `key=value` detail: a lowercase word, then `=`.
fn key_of(token: &str) -> Option<(&str, &str)> {
    let (key, value) = token.split_once('=')?;
    let mut chars = key.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let word = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    (starts && word).then_some((key, value))
}

/// Splits a message into its subject and its `key=value` details. A value runs to the next
/// detail, so `error=Connection reset by peer (os error 104)` stays whole; details inside
/// one pair of parentheses, as in `listening on ADDR (mode=echo workers=2)`, are details too.
fn split_fields(text: &str) -> (String, Vec<(String, String)>) {
    let mut msg = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut parenthesised = false;
    let mut tokens = text.split(' ');
    while let Some(token) = tokens.next() {
        let bare = token.strip_prefix('(');
        let candidate = bare.unwrap_or(token);
        if let Some((key, value)) = key_of(candidate) {
            if key == "data" && bare.is_none() {
                // A peer's bytes, always the last field: taken whole, so nothing in them
                // (a `key=value`, a repeated key) becomes a field of its own.
                let mut data = value.to_owned();
                for rest in tokens.by_ref() {
                    data.push(' ');
                    data.push_str(rest);
                }
                fields.push((key.to_owned(), data));
                return (finish(&msg), fields);
            }
            if fields.is_empty() && bare.is_some() {
                parenthesised = true;
            }
            fields.push((key.to_owned(), value.to_owned()));
        } else if let Some((_, value)) = fields.last_mut() {
            value.push(' ');
            value.push_str(token);
        } else {
            msg.push(token);
        }
    }
    if parenthesised
        && let Some((_, value)) = fields.last_mut()
        && let Some(v) = value.strip_suffix(')')
    {
        *value = v.to_owned();
    }
    (finish(&msg), fields)
}

/// The message: its words before the first field, without a trailing colon.
fn finish(msg: &[&str]) -> String {
    let msg = msg.join(" ");
    msg.trim_end().trim_end_matches(':').trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> serde_json::Map<String, Value> {
        let line = json_line("2026-12-01T21:02:55.123Z", log::Level::Warn, "t", text);
        match serde_json::from_str(&line) {
            Ok(Value::Object(map)) => map,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn peer_data_stays_one_whole_field() {
        let m = parsed(r#"session 3 read: bytes=40 data=he said "hi" \ key=value a=1 b"#);
        assert_eq!(m["data"], r#"he said "hi" \ key=value a=1 b"#);
        assert!(!m.contains_key("key") && !m.contains_key("a"), "{m:?}");
        let m = parsed("session 3 read: bytes=28 data=x session=999 level=error msg=pwned");
        assert_eq!(m["data"], "x session=999 level=error msg=pwned");
        assert_eq!(m["session"], 3);
        assert_eq!(m["level"], "warn");
        assert_eq!(m["msg"], "session 3 read");
    }

    #[test]
    fn details_become_fields_and_the_subject_the_message() {
        let m = parsed(
            "session 7 closed: peer=127.0.0.1:51234 reason=quit duration_ms=1203.511 bytes_in=12",
        );
        assert_eq!(m["msg"], "session 7 closed");
        assert_eq!(m["session"], 7);
        assert_eq!(m["peer"], "127.0.0.1:51234");
        assert_eq!(m["reason"], "quit");
        assert_eq!(m["bytes_in"], 12);
        assert_eq!(m["duration_ms"], 1203.511);
        assert_eq!(m["level"], "warn");
        assert_eq!(m["target"], "t");
        assert_eq!(m["ts"], "2026-12-01T21:02:55.123Z");
    }

    #[test]
    fn values_with_spaces_and_parenthesised_details() {
        let m = parsed("accept failed: error=Too many open files (os error 24) backoff_ms=5");
        assert_eq!(m["error"], "Too many open files (os error 24)");
        assert_eq!(m["backoff_ms"], 5);
        // Only plain decimals are numbers: versions, addresses and `1.` stay text.
        for text in ["1.2.3", "1.", ".5", "127.0.0.1", "1e3", "-1.5", "NaN"] {
            let m = parsed(&format!("x: value={text}"));
            assert_eq!(m["value"], text, "{text}");
        }
        let m = parsed("listening on 127.0.0.1:8900 (mode=echo workers=2 max-conns=10000)");
        assert_eq!(m["msg"], "listening on 127.0.0.1:8900");
        assert_eq!(m["mode"], "echo");
        assert_eq!(m["max-conns"], 10000);
    }

    #[test]
    fn plain_messages_and_hostile_text_stay_valid_json() {
        let m = parsed("console off: end of input (the server keeps running)");
        assert_eq!(
            m["msg"],
            "console off: end of input (the server keeps running)"
        );
        let m = parsed("session 3 read: bytes=4 data=\"\\x1b[31m\" msg=x ts=y");
        assert_eq!(
            m["data"], "\"\\x1b[31m\" msg=x ts=y",
            "peer data is taken whole"
        );
        assert_eq!(
            m["ts"], "2026-12-01T21:02:55.123Z",
            "a detail never hides a field"
        );
        let m = parsed("");
        assert_eq!(m["msg"], "");
    }
}

//! The admin endpoint's bearer token (`--admin-token-file`), compared in constant time.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// The secret every admin request but `/healthz` (and `/metrics` when public) must carry as
/// `Authorization: Bearer TOKEN`. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The longest token taken.
const MAX_TOKEN: usize = 4096;

impl Token {
    /// A token from `text`, without the whitespace around it (a file's last newline).
    ///
    /// # Errors
    ///
    /// `InvalidData` when nothing is left, when it is longer than 4096 bytes, or when it holds
    /// anything but visible ASCII (it must fit in a header, unchanged).
    pub fn new(text: &str) -> io::Result<Token> {
        let text = text.trim();
        let invalid = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidData, why.to_owned()));
        if text.is_empty() {
            return invalid("the token is empty");
        }
        if text.len() > MAX_TOKEN {
            return invalid("the token is longer than 4096 bytes");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("the token must be visible ASCII characters, without spaces");
        }
        Ok(Token(Arc::from(text.as_bytes())))
    }

    /// Reads a token from the file at `path` (its whole content, trimmed).
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not UTF-8, or its content is not a token
    /// ([`Token::new`]).
    pub fn from_file(path: &Path) -> io::Result<Token> {
        let text = std::fs::read_to_string(path)?;
        Token::new(&text)
    }

    /// Whether `given` is the token. The time taken depends on the token's length only, not
    /// on how much of `given` matches.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mut diff = u8::from(given.len() != self.0.len());
        for (i, &b) in self.0.iter().enumerate() {
            diff |= b ^ given.get(i).copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }

    /// Whether an `Authorization` header value carries the token (`Bearer TOKEN`; the scheme
    /// in any case).
    pub(super) fn authorizes(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else {
            return false;
        };
        let scheme = b"bearer ";
        let Some(given) = value
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| value[scheme.len()..].trim_ascii())
        else {
            return false;
        };
        self.matches(given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_checked_and_compared_whole() {
        let token = Token::new("s3cret-Token\n").unwrap();
        assert!(token.matches(b"s3cret-Token"));
        assert!(!token.matches(b"s3cret-Toke"));
        assert!(!token.matches(b"s3cret-Token2"));
        assert!(!token.matches(b""));
        assert!(token.authorizes(Some(b"Bearer s3cret-Token")));
        assert!(token.authorizes(Some(b"bearer  s3cret-Token ")));
        assert!(!token.authorizes(Some(b"Basic s3cret-Token")));
        assert!(!token.authorizes(Some(b"Bearer")));
        assert!(!token.authorizes(None));
        assert_eq!(format!("{token:?}"), "Token(..)");
        for bad in ["", " \n", "two words", "caf\u{e9}", "tab\there"] {
            assert!(Token::new(bad).is_err(), "{bad:?}");
        }
        assert!(Token::new(&"x".repeat(4097)).is_err());
    }
}

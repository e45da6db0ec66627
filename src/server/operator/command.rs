//! What a typed console line means: [`parse`] turns it into a [`Command`], knowing nothing
//! of the server; the [`Console`](crate::server::operator::console::Console) carries commands out.

use crate::server::faults::{FaultId, FaultSpec};
use crate::server::session::SessionId;

/// Whom a manual-mode reply goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The session that spoke last.
    Last,
    /// One session.
    Session(SessionId),
    /// One UDP pseudo-session (`@u3`, `@udp#3`): a recent datagram source, manual mode.
    Udp(u64),
    /// Every session.
    All,
}

/// One typed console line, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `quit`: shut the whole server down gracefully.
    Quit,
    /// `/list`: one line per session.
    List,
    /// `/stats`: server-wide counts.
    Stats,
    /// `/kick ID`: end one session with `quit`.
    Kick(SessionId),
    /// `/help`.
    Help,
    /// `/fault SPEC`: add a fault for the sessions that connect from now on.
    FaultAdd(FaultSpec),
    /// `/fault`: the faults, with their ids and how many sessions (or datagrams) each touched.
    FaultList,
    /// `/fault clear [ID]`: end one fault, or all of them.
    FaultClear(Option<FaultId>),
    /// `/tls reload`: read the TLS certificate and key files again.
    TlsReload,
    /// `/cluster`: the cluster link's state, this node's name, the counts.
    Cluster,
    /// `/who`: the chat room's members, on this node and on the other nodes of the cluster.
    Who,
    /// A reply (manual mode): a plain line, `@ID text` or `@all text`.
    Reply {
        /// Whom it is for.
        to: Target,
        /// What to send, without line ending.
        text: String,
    },
    /// A blank line: nothing to do.
    Empty,
    /// Not understood; the hint to show.
    Invalid(String),
}

/// Understands one console line. Pure: the same line always gives the same command.
///
/// ```
/// use tcpool::server::operator::console::{parse, Command, Target};
/// use tcpool::server::SessionId;
///
/// assert_eq!(parse("quit"), Command::Quit);
/// assert_eq!(parse("/kick 7"), Command::Kick(SessionId(7)));
/// assert_eq!(
///     parse("@7 hello there"),
///     Command::Reply { to: Target::Session(SessionId(7)), text: "hello there".into() }
/// );
/// assert!(matches!(parse("/frobnicate"), Command::Invalid(_)));
/// ```
pub fn parse(line: &str) -> Command {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Command::Empty;
    }
    if line == "quit" {
        return Command::Quit;
    }
    if let Some(rest) = line.strip_prefix('/') {
        if matches!(rest.trim_end(), "quit" | "exit") {
            return Command::Quit;
        }
        if let Some(args) = rest.strip_prefix("fault")
            && (args.is_empty() || args.starts_with(char::is_whitespace))
        {
            return parse_fault(args.trim());
        }
        let mut words = rest.split_whitespace();
        let name = words.next().unwrap_or("");
        let arg = words.next();
        let extra = words.next().is_some();
        return match (name, arg, extra) {
            ("list", None, false) => Command::List,
            ("stats", None, false) => Command::Stats,
            ("cluster", None, false) => Command::Cluster,
            ("who", None, false) => Command::Who,
            ("help", None, false) => Command::Help,
            ("kick", Some(id), false) => match id.parse() {
                Ok(id) => Command::Kick(id),
                Err(_) => Command::Invalid(format!("not a session id: {id:?}; usage: /kick ID")),
            },
            ("kick", _, _) => Command::Invalid("usage: /kick ID".into()),
            ("tls", Some("reload"), false) => Command::TlsReload,
            ("tls", _, _) => Command::Invalid("usage: /tls reload".into()),
            ("list" | "stats" | "help" | "cluster" | "who", _, _) => {
                Command::Invalid(format!("/{name} takes no argument"))
            }
            _ => Command::Invalid(format!("unknown command /{name}; type /help for the list")),
        };
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (who, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if text.is_empty() {
            return Command::Invalid("usage: @ID text, @all text or @ID quit".into());
        }
        let to = if who == "all" {
            Target::All
        } else if let Some(id) = crate::server::udp::manual::parse_id(who) {
            Target::Udp(id)
        } else {
            match who.parse() {
                Ok(id) => Target::Session(id),
                Err(_) => {
                    return Command::Invalid(format!(
                        "not a session id: {who:?}; usage: @ID text, @uN text or @all text"
                    ));
                }
            }
        };
        return Command::Reply {
            to,
            text: text.to_owned(),
        };
    }
    Command::Reply {
        to: Target::Last,
        text: line.to_owned(),
    }
}

/// `/fault`'s arguments: none (list), `clear [ID]`, or a spec.
fn parse_fault(args: &str) -> Command {
    if args.is_empty() {
        return Command::FaultList;
    }
    let mut words = args.split_whitespace();
    if words.next() == Some("clear") {
        return match (words.next(), words.next()) {
            (None, _) => Command::FaultClear(None),
            (Some(id), None) => match id.parse() {
                Ok(id) => Command::FaultClear(Some(id)),
                Err(_) => {
                    Command::Invalid(format!("not a fault id: {id:?}; usage: /fault clear [ID]"))
                }
            },
            _ => Command::Invalid("usage: /fault clear [ID]".into()),
        };
    }
    match args.parse() {
        Ok(spec) => Command::FaultAdd(spec),
        Err(e) => Command::Invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_commands() {
        use crate::server::faults::FaultKind;
        assert_eq!(parse("/fault"), Command::FaultList);
        assert_eq!(parse("/fault clear"), Command::FaultClear(None));
        assert_eq!(
            parse("/fault clear 3"),
            Command::FaultClear(Some(FaultId(3)))
        );
        assert_eq!(
            parse("/fault clear #3"),
            Command::FaultClear(Some(FaultId(3)))
        );
        assert!(matches!(parse("/fault clear x"), Command::Invalid(_)));
        assert!(matches!(parse("/fault clear 1 2"), Command::Invalid(_)));
        assert_eq!(
            parse("/fault truncate, bytes=3"),
            Command::FaultAdd(FaultSpec {
                kind: FaultKind::Truncate { bytes: 3 },
                p: 1.0
            })
        );
        match parse("/fault latency,delay=soon") {
            Command::Invalid(e) => assert!(e.contains("delay"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("/faulty"), Command::Invalid(_)));
    }

    #[test]
    fn plain_lines_are_replies_to_the_last_speaker() {
        assert_eq!(
            parse("你好，世界\n"),
            Command::Reply {
                to: Target::Last,
                text: "你好，世界".into()
            }
        );
    }

    #[test]
    fn quit_is_exact() {
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/exit\n"), Command::Quit);
        assert_eq!(parse("quit\r\n"), Command::Quit);
        assert!(matches!(parse(" quit"), Command::Reply { .. }));
        assert!(matches!(parse("QUIT"), Command::Reply { .. }));
    }

    #[test]
    fn at_commands() {
        assert_eq!(
            parse("@all hi all"),
            Command::Reply {
                to: Target::All,
                text: "hi all".into()
            }
        );
        assert_eq!(
            parse("@#3 quit"),
            Command::Reply {
                to: Target::Session(SessionId(3)),
                text: "quit".into()
            }
        );
        assert_eq!(
            parse("@u3 hi"),
            Command::Reply {
                to: Target::Udp(3),
                text: "hi".into()
            }
        );
        assert_eq!(
            parse("@udp#3 hi"),
            Command::Reply {
                to: Target::Udp(3),
                text: "hi".into()
            }
        );
        assert!(matches!(parse("@u0 hi"), Command::Invalid(_)));
        assert!(matches!(parse("@3"), Command::Invalid(_)));
        assert!(matches!(parse("@x hi"), Command::Invalid(_)));
    }

    #[test]
    fn slash_commands() {
        assert_eq!(parse("/list"), Command::List);
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/stats "), Command::Stats);
        assert_eq!(parse("/help"), Command::Help);
        assert!(matches!(parse("/kick"), Command::Invalid(_)));
        assert!(matches!(parse("/kick x"), Command::Invalid(_)));
        assert!(matches!(parse("/kick 1 2"), Command::Invalid(_)));
        assert!(matches!(parse("/list all"), Command::Invalid(_)));
        assert!(matches!(parse("/"), Command::Invalid(_)));
        assert_eq!(parse("/tls reload"), Command::TlsReload);
        assert_eq!(parse("/tls  reload \r\n"), Command::TlsReload);
        for bad in ["/tls", "/tls reload now", "/tls restart"] {
            assert_eq!(
                parse(bad),
                Command::Invalid("usage: /tls reload".into()),
                "{bad}"
            );
        }
        assert_eq!(parse("  "), Command::Empty);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(line in any::<String>()) {
                let _ = parse(&line);
            }

            #[test]
            fn kick_takes_any_id(id in any::<u64>()) {
                prop_assert_eq!(parse(&format!("/kick {id}")), Command::Kick(SessionId(id)));
            }

            #[test]
            fn at_replies_keep_their_text(id in any::<u64>(), text in "[^\r\n]*[^ \r\n]") {
                let command = parse(&format!("@{id} {text}"));
                let expected = Command::Reply { to: Target::Session(SessionId(id)), text };
                prop_assert_eq!(command, expected);
            }

            #[test]
            fn plain_lines_are_never_commands(text in "[^/@\r\n][^\r\n]*") {
                prop_assume!(text != "quit" && !text.trim().is_empty());
                prop_assert_eq!(parse(&text), Command::Reply { to: Target::Last, text });
            }
        }
    }
}

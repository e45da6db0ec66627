//! Chat mode: every message goes to every other session as `<NAME> text`, with notices when
//! someone joins, leaves or changes nickname, and a few `/` commands answered to the sender
//! alone.
//!
//! Relayed lines go through the recipients' outboxes with back-pressure
//! ([`Context::relay_line`]): a sender whose recipients fall behind is paused, not allowed
//! to overflow them. Relayed text is escaped with the one escaper the console and the logs use
//! ([`escape`]): control characters, terminal escape sequences and bidirectional overrides
//! are made visible, so nobody can fake a line, clear a screen or retitle a window; printable
//! text (CJK, emoji) goes through unchanged.
//!
//! Nicknames are unique in the room: two names are the same when their case-folded
//! compatibility forms (NFKC) have the same confusable *skeleton* (Unicode TR39), so `ANN`,
//! `ａｎｎ` and `аnn` with a Cyrillic `а` are all `ann`. Characters outside TR39's identifier
//! profile (invisible ones, bidi controls, symbols) and names mixing scripts are refused.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;
use unicode_normalization::UnicodeNormalization;
use unicode_security::{GeneralSecurityProfile, MixedScript};

use super::handler::{Context, Handler};
use crate::server::protocol::{LineEnding, Message, escape};
use crate::server::session::registry::Registry;
use crate::server::session::{SessionHandle, SessionId};

/// The longest nickname `/nick` accepts, in characters.
pub const MAX_NICK: usize = 32;

/// Names a newcomer is told about at most; `/who` tells all, up to [`WHO_MAX`].
const JOIN_NAMES: usize = 20;

/// Names `/who` lists at most.
pub const WHO_MAX: usize = 500;

/// The most bytes of escaped text one relayed line carries; the rest is cut with a note.
pub const MAX_RELAYED: usize = 64 * 1024;

/// Punctuation a nickname may use besides letters and digits.
const NICK_PUNCTUATION: &str = "-_.'";

const COMMANDS: &str = "* commands: /nick NAME (choose a name), /who (who is here), /help; \
                        start a line with // to send one that begins with /";

/// What happened to a local session, for a room beyond this process (the other nodes of a
/// cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It sent a chat line (`text`).
    Line,
    /// It chose a nickname (`nick`; `old` is the one it had, if any).
    Nick,
    /// It joined the room.
    Join,
    /// It left.
    Left,
}

/// One event of a local session, as a worker hands it beyond the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// The session.
    pub id: SessionId,
    /// Its nickname now, if it chose one.
    pub nick: Option<String>,
    /// For [`Kind::Nick`], the nickname it had before.
    pub old: Option<String>,
    /// For [`Kind::Line`], the line as relayed locally (escaped, cut).
    pub text: String,
}

/// Where a room's events go beyond this process: the cluster link
/// ([`crate::server::cluster::Link`]). Called on a worker: it must never block.
pub trait Beyond: Send + Sync + std::fmt::Debug {
    /// Hands `event` on, or drops and counts it.
    fn publish(&self, event: Event);

    /// The room's members on the other nodes, for `/who`: at most `most` names.
    fn elsewhere(&self, most: usize) -> Elsewhere {
        let _ = most;
        Elsewhere::default()
    }

    /// Asks the other nodes whether `nick` is free for session `id`; never blocks. The answer
    /// comes back later, through [`Chat::settle`]. False when it cannot ask (the broker is
    /// down): the room then grants the name on its own word.
    fn ask(&self, id: SessionId, nick: &str) -> bool {
        let _ = (id, nick);
        false
    }
}

/// The room's members on the other nodes, as last heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elsewhere {
    /// Each other node with members, and how many, by name.
    pub nodes: Vec<(String, usize)>,
    /// Their names as `/who` shows them, `ann@NODE` or `#ID@NODE`, up to the number asked.
    pub names: Vec<String>,
}

/// The chat relay. One per server; it knows which nicknames are taken.
#[derive(Debug, Default)]
pub struct Chat {
    /// Each taken nickname's keys ([`nick_keys`]) and who holds it.
    nicks: Mutex<HashMap<String, SessionId>>,
    /// The keys of the nicknames asked of the other nodes, and who asked.
    asking: Mutex<HashMap<String, SessionId>>,
    /// The cluster link, when the room spans several nodes: every local line, nickname
    /// change, join and leave is handed to it too.
    cluster: Option<Arc<dyn Beyond>>,
}

/// Why `/nick NAME` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NickError {
    /// Empty or longer than [`MAX_NICK`] characters.
    Length,
    /// A character that is not a letter, digit or `-_.'`, or an invisible or control one.
    Character(char),
    /// Letters from more than one script (a look-alike of another name).
    MixedScripts,
    /// Starts like a session number (`#`) or one of the server's own lines (`*`, `<`, `@`,
    /// `/`).
    Reserved,
    /// Someone here has this name or one that looks the same.
    Taken,
    /// The other nodes are still being asked about this session's last `/nick`.
    Asking,
}

impl std::fmt::Display for NickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NickError::Length => write!(f, "a nickname is 1 to {MAX_NICK} characters"),
            NickError::Character(c) => write!(
                f,
                "{} is not allowed: use letters, digits and {NICK_PUNCTUATION}",
                escape_char(*c)
            ),
            NickError::MixedScripts => f.write_str("a nickname uses letters of one script"),
            NickError::Reserved => f.write_str("a nickname does not start with # * < @ or /"),
            NickError::Taken => f.write_str("that name (or one that looks the same) is taken"),
            NickError::Asking => f.write_str("the other nodes are still asked about your last one"),
        }
    }
}

fn escape_char(c: char) -> String {
    let shown = escape(c.to_string().as_bytes());
    if shown.chars().count() == 1 && !c.is_whitespace() {
        format!("{shown:?}")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Checks a nickname and returns it in the form it is shown: its NFKC normalisation.
///
/// # Errors
///
/// The first rule it breaks (taken names are checked by the room, not here).
///
/// ```
/// use tcpool::server::modes::chat::{check_nick, NickError};
///
/// assert_eq!(check_nick("ann").as_deref(), Ok("ann"));
/// assert_eq!(check_nick("李小龍").as_deref(), Ok("李小龍"));
/// assert_eq!(check_nick("ａｎｎ").as_deref(), Ok("ann"));
/// assert_eq!(check_nick("\u{430}nn"), Err(NickError::MixedScripts)); // Cyrillic а
/// assert_eq!(check_nick("ann\u{200b}"), Err(NickError::Character('\u{200b}')));
/// assert_eq!(check_nick("#7"), Err(NickError::Reserved));
/// ```
pub fn check_nick(name: &str) -> Result<String, NickError> {
    let name: String = name.nfkc().collect();
    let len = name.chars().count();
    if len == 0 || len > MAX_NICK {
        return Err(NickError::Length);
    }
    if name.starts_with(['#', '*', '<', '@', '/']) {
        return Err(NickError::Reserved);
    }
    if let Some(c) = name.chars().find(|&c| {
        !(NICK_PUNCTUATION.contains(c) || (c.identifier_allowed() && !c.is_ascii_punctuation()))
    }) {
        return Err(NickError::Character(c));
    }
    if !name.is_single_script() {
        return Err(NickError::MixedScripts);
    }
    Ok(name)
}

/// What makes two nicknames the same: they share a key. A name has two, the TR39 skeleton
/// taken after case folding and before it, since neither order alone catches both `I`/`i` (a
/// case) and `I`/`l` (a look-alike). Folding is full folding, so `ß` is `ss`. TR39 maps
/// single characters, so the one pair of letters it misses, `vv` for `w`, is joined
/// afterwards (`rn` for `m` it has).
pub fn nick_keys(name: &str) -> Vec<String> {
    fn fold(text: &str) -> String {
        text.chars()
            .flat_map(char::to_lowercase)
            .flat_map(|c| match c {
                'ß' => ['s', 's'].into_iter().take(2),
                c => [c, c].into_iter().take(1),
            })
            .collect()
    }
    fn skeleton(text: &str) -> String {
        unicode_security::skeleton(text).collect()
    }
    fn joined(text: String) -> String {
        if text.contains("vv") {
            text.replace("vv", "w")
        } else {
            text
        }
    }
    let name: String = name.nfkc().collect();
    let folded_first = joined(fold(&skeleton(&fold(&name))));
    let skeleton_first = joined(fold(&skeleton(&fold(&skeleton(&name)))));
    if folded_first == skeleton_first {
        vec![folded_first]
    } else {
        vec![folded_first, skeleton_first]
    }
}

/// Whether one of `keys` is held in `map` by another session than `me`.
fn held_by_other(keys: &[String], map: &HashMap<String, SessionId>, me: SessionId) -> bool {
    keys.iter()
        .any(|key| map.get(key).is_some_and(|&holder| holder != me))
}

impl Chat {
    /// A room that also spans the other nodes of `link`'s cluster.
    pub fn clustered(link: Arc<dyn Beyond>) -> Self {
        Chat {
            nicks: Mutex::default(),
            asking: Mutex::default(),
            cluster: Some(link),
        }
    }

    /// Hands an event of the session being handled to the cluster link, if there is one
    /// (never blocks: see [`Beyond::publish`]).
    fn tell_cluster(&self, ctx: &Context<'_>, kind: Kind, old: Option<String>, text: String) {
        if let Some(link) = &self.cluster {
            link.publish(Event {
                kind,
                id: ctx.id(),
                nick: ctx.session().nick(),
                old,
                text,
            });
        }
    }

    /// Takes `name` for session `me`, giving up its old one.
    fn claim(&self, me: SessionId, name: &str) -> Result<(), NickError> {
        let keys = nick_keys(name);
        let mut nicks = self.nicks.lock();
        if held_by_other(&keys, &nicks, me) || held_by_other(&keys, &self.asking.lock(), me) {
            return Err(NickError::Taken);
        }
        nicks.retain(|_, holder| *holder != me);
        for key in keys {
            nicks.insert(key, me);
        }
        Ok(())
    }

    fn release(&self, me: SessionId) {
        self.nicks.lock().retain(|_, holder| *holder != me);
        self.asking.lock().retain(|_, holder| *holder != me);
    }

    /// Holds `name`'s keys for `me` while the other nodes are asked (one question at a time).
    fn reserve(&self, me: SessionId, name: &str) -> Result<(), NickError> {
        if self.asking.lock().values().any(|&holder| holder == me) {
            return Err(NickError::Asking);
        }
        let keys = nick_keys(name);
        let nicks = self.nicks.lock();
        let mut asking = self.asking.lock();
        if held_by_other(&keys, &nicks, me) || held_by_other(&keys, &asking, me) {
            return Err(NickError::Taken);
        }
        for key in keys {
            asking.insert(key, me);
        }
        Ok(())
    }

    /// The local session that holds `name` (or one that looks the same), if any.
    pub fn holder(&self, name: &str) -> Option<SessionId> {
        let nicks = self.nicks.lock();
        nick_keys(name)
            .iter()
            .find_map(|key| nicks.get(key).copied())
    }

    /// The other nodes' answer about session `id`'s `/nick name` (see [`Beyond::ask`]):
    /// granted, the session takes it as a local claim would; refused, it is told why, as for
    /// a name taken here. Runs off the workers: what it says goes through the outboxes.
    pub fn settle(&self, registry: &Registry, id: SessionId, name: &str, granted: bool) {
        self.asking.lock().retain(|_, holder| *holder != id);
        let Some(session) = registry.get(id) else {
            return;
        };
        let mut pressed = Vec::new();
        let mut tell = |line: &str, to: &dyn Fn(&SessionHandle) -> bool| {
            registry.relay_line(line.as_bytes(), to, &mut pressed);
        };
        if !granted || self.claim(id, name).is_err() {
            tell(&format!("* nick refused: {}", NickError::Taken), &|h| {
                h.id() == id
            });
            return;
        }
        let old = session.display_name();
        let old_nick = session.nick();
        session.set_nick(Some(name.to_owned()));
        tell(&format!("* you are now {name}"), &|h| h.id() == id);
        if old != name {
            tell(&format!("* {old} is now {name}"), &|h| h.id() != id);
            self.publish_nick(id, Some(name.to_owned()), old_nick);
        }
    }

    /// Session `id` lost `name` to a claim made on another node at the same moment (settled
    /// the same way on every node): it is `#ID` again, and told why.
    pub fn evict(&self, registry: &Registry, id: SessionId, name: &str) {
        self.nicks.lock().retain(|_, holder| *holder != id);
        let Some(session) = registry.get(id) else {
            return;
        };
        session.set_nick(None);
        let mut pressed = Vec::new();
        let notice =
            format!("* {name} was taken on another node at the same moment: you are #{id} again");
        registry.relay_line(notice.as_bytes(), |h| h.id() == id, &mut pressed);
        let line = format!("* {name} is now #{id}");
        registry.relay_line(line.as_bytes(), |h| h.id() != id, &mut pressed);
        self.publish_nick(id, None, Some(name.to_owned()));
    }

    fn publish_nick(&self, id: SessionId, nick: Option<String>, old: Option<String>) {
        if let Some(link) = &self.cluster {
            link.publish(Event {
                kind: Kind::Nick,
                id,
                nick,
                old,
                text: String::new(),
            });
        }
    }

    /// A member whose client certificate names it (mutual TLS) takes that name, from anyone
    /// who held it as a nickname: that one is `#ID` again, and told why.
    fn take_identity(&self, ctx: &mut Context<'_>, name: &str) {
        let me = ctx.id();
        let keys = nick_keys(name);
        let evicted: Vec<SessionId> = {
            let mut nicks = self.nicks.lock();
            let evicted: Vec<SessionId> = keys
                .iter()
                .filter_map(|key| nicks.get(key).copied())
                .filter(|&holder| holder != me)
                .collect();
            nicks.retain(|_, holder| !evicted.contains(holder) && *holder != me);
            for key in keys {
                nicks.insert(key, me);
            }
            evicted
        };
        ctx.session().set_nick(Some(name.to_owned()));
        for id in evicted {
            if let Some(holder) = ctx.registry().get(id) {
                holder.set_nick(None);
                ctx.relay_line(
                    &format!("* {name} is the name of a certificate holder: you are #{id} again"),
                    |h| h.id() == id,
                );
            }
        }
    }

    fn nick(&self, ctx: &mut Context<'_>, arg: &str) {
        if let Some(name) = ctx.session().identity() {
            let name = name.to_owned();
            ctx.send_line(&format!("* your name is your certificate's: {name}"));
            return;
        }
        let arg = arg.trim();
        if arg.is_empty() {
            let now = ctx.session().display_name();
            ctx.send_line(&format!("* you are {now}; usage: /nick NAME"));
            return;
        }
        // In a cluster, the other nodes are asked first: the answer comes through settle.
        if let Some(link) = &self.cluster
            && let Ok(name) = check_nick(arg)
        {
            match self.reserve(ctx.id(), &name) {
                Ok(()) if link.ask(ctx.id(), &name) => return,
                Ok(()) => self.asking.lock().retain(|_, holder| *holder != ctx.id()),
                Err(why) => {
                    ctx.send_line(&format!("* nick refused: {why}"));
                    return;
                }
            }
        }
        let checked = check_nick(arg).and_then(|name| {
            self.claim(ctx.id(), &name)?;
            Ok(name)
        });
        match checked {
            Ok(name) => {
                let old = ctx.session().display_name();
                let old_nick = ctx.session().nick();
                ctx.session().set_nick(Some(name.clone()));
                ctx.send_line(&format!("* you are now {name}"));
                if old != name {
                    ctx.relay_line(&format!("* {old} is now {name}"), |_| true);
                    self.tell_cluster(ctx, Kind::Nick, old_nick, String::new());
                }
            }
            Err(why) => ctx.send_line(&format!("* nick refused: {why}")),
        }
    }

    /// `/who`: the room here, and on the other nodes when there are any:
    /// `* 3 here (2 on this node, 1 on b): #1 (you), ann, #1@b`.
    fn who(&self, ctx: &Context<'_>) -> String {
        let elsewhere = self
            .cluster
            .as_ref()
            .map(|link| link.elsewhere(WHO_MAX))
            .unwrap_or_default();
        let remote: usize = elsewhere.nodes.iter().map(|(_, n)| n).sum();
        if remote == 0 {
            return Chat::roll_call(ctx, WHO_MAX, false);
        }
        let me = ctx.id();
        let handles = ctx.registry().handles();
        let present: Vec<_> = handles.iter().filter(|h| !h.is_closing()).collect();
        let mut names: Vec<String> = present
            .iter()
            .take(WHO_MAX)
            .map(|h| match h.id() == me {
                true => format!("{} (you)", h.display_name()),
                false => h.display_name(),
            })
            .collect();
        let room = WHO_MAX - names.len();
        names.extend(elsewhere.names.into_iter().take(room));
        let total = present.len() + remote;
        let mut line = format!("* {total} here ({} on this node", present.len());
        for (node, n) in elsewhere.nodes.iter().filter(|(_, n)| *n > 0) {
            let _ = write!(line, ", {n} on {node}");
        }
        let _ = write!(line, "): {}", names.join(", "));
        if total > names.len() {
            let _ = write!(line, " and {} more", total - names.len());
        }
        line
    }

    /// `* N here: a, b, c` with at most `most` names, then how many were left out.
    fn roll_call(ctx: &Context<'_>, most: usize, others_only: bool) -> String {
        let me = ctx.id();
        let handles = ctx.registry().handles();
        let present: Vec<_> = handles
            .iter()
            .filter(|h| !(h.is_closing() || (others_only && h.id() == me)))
            .collect();
        if present.is_empty() {
            return "* nobody else is here".into();
        }
        let mut line = format!("* {} here:", present.len());
        for (i, h) in present.iter().take(most).enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let you = if h.id() == me { " (you)" } else { "" };
            let _ = write!(line, "{sep}{}{you}", h.display_name());
        }
        if present.len() > most {
            let _ = write!(line, " and {} more", present.len() - most);
        }
        line
    }
}

impl Handler for Chat {
    fn silent_ending(&self) -> LineEnding {
        LineEnding::Lf
    }

    fn on_open(&self, ctx: &mut Context<'_>) {
        // Ids follow arrival: only those who were here first hear of a newcomer, even when a
        // later client registered before this one was adopted.
        let me = ctx.id();
        if let Some(name) = ctx.session().identity().map(str::to_owned) {
            self.take_identity(ctx, &name);
        }
        let name = ctx.session().display_name();
        ctx.relay_line(&format!("* {name} joined"), |h| h.id() < me);
        self.tell_cluster(ctx, Kind::Join, None, String::new());
        let mut here = Chat::roll_call(ctx, JOIN_NAMES, true);
        if here.contains(" more") {
            here.push_str(" (/who lists them)");
        }
        ctx.send_line(&format!("* you are {name};{}", &here[1..]));
    }

    fn on_message(&self, ctx: &mut Context<'_>, message: Message<'_>) {
        let text = String::from_utf8_lossy(message.text);
        if text.trim().is_empty() {
            return;
        }
        let body = match text.strip_prefix('/') {
            Some(rest) if rest.starts_with('/') => rest,
            Some(rest) => {
                let (command, arg) = rest.split_once(' ').unwrap_or((rest, ""));
                match command {
                    "nick" => self.nick(ctx, arg),
                    "who" => {
                        let here = self.who(ctx);
                        ctx.send_line(&here);
                    }
                    "help" => ctx.send_line(COMMANDS),
                    other => ctx.send_line(&format!(
                        "* unknown command /{}: not sent. {}",
                        escape(other.as_bytes()),
                        &COMMANDS[2..]
                    )),
                }
                return;
            }
            None => &text,
        };
        // The peer's bytes of the body: the message less the `/` of a `//` escape.
        let raw = &message.text[message.text.len().saturating_sub(body.len())..];
        let shown = match std::str::from_utf8(raw) {
            Ok(_) => relayed(raw, MAX_RELAYED),
            Err(_) => relayed(body.as_bytes(), MAX_RELAYED),
        };
        let line = format!("<{}> {shown}", ctx.session().display_name());
        ctx.relay_line(&line, |_| true);
        self.tell_cluster(ctx, Kind::Line, None, shown);
    }

    fn on_close(&self, ctx: &mut Context<'_>) {
        self.release(ctx.id());
        if !ctx.shutting_down() {
            let notice = format!("* {} left", ctx.session().display_name());
            ctx.relay_line(&notice, |_| true);
            self.tell_cluster(ctx, Kind::Left, None, String::new());
        }
    }
}

/// `body` escaped for relaying, cut after at most `max` bytes of escaped text, never inside
/// an escape; the note counts the body's bytes that were left out.
pub(crate) fn relayed(body: &[u8], max: usize) -> String {
    let whole = escape(body);
    if whole.len() <= max {
        return whole;
    }
    let mut shown = String::with_capacity(max + 40);
    let text = String::from_utf8_lossy(body);
    let mut taken = body.len();
    for (at, c) in text.char_indices() {
        let one = escape(c.encode_utf8(&mut [0; 4]).as_bytes());
        if shown.len() + one.len() > max {
            taken = at;
            break;
        }
        shown.push_str(&one);
    }
    let _ = write!(shown, "... ({} more bytes not shown)", body.len() - taken);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_note_counts_the_peer_bytes_left_out() {
        // Each \x01 shows as four characters: 16384 of them fill 64 KiB.
        let body = vec![1u8; 60_000];
        let shown = relayed(&body, MAX_RELAYED);
        let kept = shown.strip_suffix("... (43616 more bytes not shown)");
        assert_eq!(
            kept,
            Some(r"\x01".repeat(16_384).as_str()),
            "{}",
            &shown[65_000..]
        );
        let short = relayed("é\x01".as_bytes(), MAX_RELAYED);
        assert_eq!(short, r"é\x01");
        let cut = relayed("éé".as_bytes(), 3);
        assert_eq!(cut, "é... (2 more bytes not shown)");
    }

    #[test]
    fn look_alikes_share_a_key() {
        let same = |a: &str, b: &str| {
            let theirs = nick_keys(b);
            nick_keys(a).iter().any(|k| theirs.contains(k))
        };
        assert!(same("Ann", "ann"));
        assert!(same("ＡＮＮ", "ann"));
        assert!(same("\u{430}nn", "ann"));
        assert!(same("paypa1", "paypal"));
        assert!(!same("ann", "anna"));
        // A capital i looks like a small L, and is a small i's capital.
        assert!(same("I", "l"));
        assert!(same("I", "i"));
        assert!(same("straße", "strasse"));
        assert!(same("STRASSE", "straße"));
        // Two letters that look like one.
        assert!(same("vvim", "wim"));
        assert!(same("VVim", "wim"));
        assert!(same("rnary", "mary"));
        assert!(!same("vim", "wim"));
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        for bad in [
            "ann\u{200b}",
            "ann\u{202e}",
            "a\u{1b}b",
            "a b",
            "ann\u{fe0f}",
            "a\u{7f}",
        ] {
            assert!(
                matches!(check_nick(bad), Err(NickError::Character(_))),
                "{bad:?}: {:?}",
                check_nick(bad)
            );
        }
    }

    #[test]
    fn ordinary_names_pass() {
        for good in [
            "ann", "Bob_2", "jean-luc", "o'neil", "d.j", "张伟", "Ørjan", "ÉLODIE",
        ] {
            assert!(check_nick(good).is_ok(), "{good:?}: {:?}", check_nick(good));
        }
    }

    #[test]
    fn reserved_shapes_are_refused() {
        for bad in ["#1", "*", "*ann", "<ann>", "@all", "/nick"] {
            assert_eq!(check_nick(bad), Err(NickError::Reserved), "{bad:?}");
        }
        assert_eq!(check_nick(""), Err(NickError::Length));
        assert_eq!(
            check_nick(&"a".repeat(MAX_NICK + 1)),
            Err(NickError::Length)
        );
    }

    #[test]
    fn a_name_is_held_once() {
        let chat = Chat::default();
        assert_eq!(chat.claim(SessionId(1), "ann"), Ok(()));
        assert_eq!(chat.claim(SessionId(2), "ANN"), Err(NickError::Taken));
        assert_eq!(chat.claim(SessionId(1), "Ann"), Ok(()));
        assert_eq!(chat.claim(SessionId(1), "bob"), Ok(()));
        assert_eq!(chat.claim(SessionId(2), "ann"), Ok(()));
        chat.release(SessionId(2));
        assert_eq!(chat.claim(SessionId(3), "ann"), Ok(()));
    }
}

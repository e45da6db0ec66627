//! Session tickets whose keys come from a file (`--tls-ticket-key-file`), so that every
//! process started with the same file — `--reuse-port` siblings, the new process after a
//! hand-over — resumes the sessions of the others.
//!
//! The file holds one key a line, 64 hex digits (32 random bytes, `openssl rand -hex 32`);
//! blank lines and lines starting with `#` are skipped. The first key encrypts the tickets
//! issued from now on; every key decrypts. To rotate, put a new key first and drop the last
//! one once no ticket it encrypted is wanted any more ([`LIFETIME`] after it stopped being
//! first). A file that does not exist is made, with one new key, mode 0600.
//!
//! A ticket is `key id (4 bytes) | issued (8 bytes, UNIX seconds, big-endian) | nonce (12
//! bytes) | AES-256-GCM ciphertext and tag (16 bytes)`; the id and the time are
//! authenticated as associated data. The key id is the first 4 bytes of SHA-256 over a label
//! and the key: it names the key without saying anything of it. A ticket that is too short,
//! names no key of the file, is older than [`LIFETIME`], comes from the future (by more than
//! [`CLOCK_SKEW`]) or does not authenticate is refused: the client does a full handshake.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use parking_lot::RwLock;
use rustls::server::ProducesTickets;
use sha2::{Digest as _, Sha256};

/// How long a ticket is good for: the hint sent to clients, and the age past which one is
/// refused (as rustls's own ticketer: 12 hours).
pub const LIFETIME: u32 = 12 * 60 * 60;

/// How far in the future a ticket's time may be (another host's clock) and still be taken.
pub const CLOCK_SKEW: u64 = 5 * 60;

/// The most keys a file may hold.
pub const MAX_KEYS: usize = 16;

/// The largest ticket key file read.
const MAX_FILE: u64 = 64 * 1024;

const KEY_LEN: usize = 32;
const ID_LEN: usize = 4;
const TIME_LEN: usize = 8;
const HEADER: usize = ID_LEN + TIME_LEN;
const TAG_LEN: usize = 16;

/// One key of the file: its id and the AEAD key.
struct Key {
    id: [u8; ID_LEN],
    aead: LessSafeKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself.
        write!(f, "Key({:02x?})", self.id)
    }
}

/// What a [`TicketKeys::open`] found: the file was there, or it made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The file was read.
    Read,
    /// The file did not exist: it was made with one new key, mode 0600.
    Created,
}

/// The keys of a ticket key file, as rustls's ticketer: [`TicketKeys::reread`] takes the
/// file's keys again (a rotation) for the tickets issued and taken from then on.
#[derive(Debug)]
pub struct TicketKeys {
    path: PathBuf,
    keys: RwLock<Arc<[Key]>>,
    random: SystemRandom,
    /// Why the file's mode is not 0600, if it is not (group bits): for a warning.
    loose: Option<String>,
}

impl TicketKeys {
    /// The keys of `path`, made with one new key (mode 0600) if the file does not exist.
    ///
    /// # Errors
    ///
    /// When the file cannot be made or read, is not a regular file, others may read or write
    /// it, or holds no key, a line that is not a key, or more than [`MAX_KEYS`] keys: each
    /// said in one line that names the file.
    pub fn open(path: &Path) -> anyhow::Result<(TicketKeys, Opened)> {
        let opened = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            _ => Opened::Read,
        };
        let (keys, loose) =
            read(path).map_err(|why| anyhow::anyhow!("{}: {why}", path.display()))?;
        Ok((
            TicketKeys {
                path: path.to_owned(),
                keys: RwLock::new(keys),
                random: SystemRandom::new(),
                loose,
            },
            opened,
        ))
    }

    /// The file the keys come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many keys are in use (a file without one is refused).
    pub fn count(&self) -> usize {
        self.keys.read().len()
    }

    /// When the file's group may read or write it: what to warn about.
    pub fn loose_mode(&self) -> Option<&str> {
        self.loose.as_deref()
    }

    /// Reads the file again and uses its keys from now on; on any error the keys in use
    /// stay. Returns how many keys it holds.
    ///
    /// # Errors
    ///
    /// Why the file was refused, in a few words (the caller names the file).
    pub fn reread(&self) -> Result<usize, String> {
        let (keys, _) = read(&self.path)?;
        let n = keys.len();
        *self.keys.write() = keys;
        Ok(n)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = Arc::clone(&self.keys.read());
        let key = keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(HEADER + NONCE_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.id);
        ticket.extend_from_slice(&Self::now().to_be_bytes());
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&ticket[..HEADER]),
                &mut sealed,
            )
            .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < HEADER + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (header, rest) = ticket.split_at(HEADER);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let issued = u64::from_be_bytes(header[ID_LEN..].try_into().ok()?);
        let now = Self::now();
        if issued > now.saturating_add(CLOCK_SKEW)
            || now.saturating_sub(issued) > u64::from(LIFETIME)
        {
            return None;
        }
        let keys = Arc::clone(&self.keys.read());
        for key in keys.iter().filter(|k| k.id[..] == header[..ID_LEN]) {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buf = sealed.to_vec();
            if let Ok(plain) = key.aead.open_in_place(nonce, Aad::from(header), &mut buf) {
                let n = plain.len();
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }
}

/// The id of a key: the first bytes of SHA-256 over a label and the key.
fn key_id(key: &[u8; KEY_LEN]) -> [u8; ID_LEN] {
    let digest = Sha256::new()
        .chain_update(b"tcpool ticket key id\0")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&digest[..ID_LEN]);
    id
}

/// The text of a new file: a comment saying what it is, and one new key.
fn new_file_text() -> anyhow::Result<String> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no random bytes for a ticket key"))?;
    Ok(format!(
        "# tcpool TLS session ticket keys: one a line, 64 hex digits (openssl rand -hex 32).\n\
         # The first encrypts new tickets; every one decrypts. Keep this file private.\n\
         {}\n",
        hex(&key)
    ))
}

/// Makes `path` with one new key, mode 0600, whole or not at all: written to a file of its
/// own beside it, then linked to its name. A process that made it meanwhile wins, and its
/// file is the one read ([`Opened::Read`]).
fn create(path: &Path) -> anyhow::Result<Opened> {
    use anyhow::Context as _;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| anyhow::anyhow!("no random bytes for a ticket key"))?;
    let mut temp_name = name.to_owned();
    temp_name.push(format!(".new-{}", hex(&suffix)));
    let temp = dir.map_or_else(|| PathBuf::from(&temp_name), |d| d.join(&temp_name));
    let text = new_file_text()?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e)
            .with_context(|| format!("cannot make the ticket key file {}", path.display()));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(Opened::Created),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Opened::Read),
        Err(e) => {
            Err(e).with_context(|| format!("cannot make the ticket key file {}", path.display()))
        }
    }
}

/// The keys of `path`, and a note when its group may read or write it.
fn read(path: &Path) -> Result<(Arc<[Key]>, Option<String>), String> {
    let file = super::files::open_unblocked(path).map_err(|e| format!("cannot read it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(format!(
            "mode {mode:04o} lets every user of this machine read or write the keys of every \
             session's ticket: chmod 600 it"
        ));
    }
    let loose = (mode & 0o070 != 0).then(|| {
        format!(
            "mode {mode:04o}: its group may read the keys of every session's ticket (chmod 600)"
        )
    });
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{} bytes, more than a ticket key file holds",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "not text".to_owned())?;
    Ok((parse(text)?, loose))
}

/// The keys of a file's text, first to last.
fn parse(text: &str) -> Result<Arc<[Key]>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        // Never the line itself in a message: it may be a key.
        let raw = unhex(line).ok_or_else(|| {
            format!(
                "line {n} is not a key: a key is 64 hex digits (32 random bytes, openssl rand \
                 -hex 32), not {} characters{}",
                line.chars().count(),
                if line.chars().all(|c| c.is_ascii_hexdigit()) {
                    ""
                } else {
                    " with some that are not hex digits"
                }
            )
        })?;
        if raw.iter().all(|&b| b == raw[0]) {
            return Err(format!(
                "line {n} is one byte repeated, which is no secret: make a key with openssl \
                 rand -hex 32"
            ));
        }
        if keys.len() == MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| format!("line {n}: not an AES-256 key"))?;
        keys.push(Key {
            id: key_id(&raw),
            aead: LessSafeKey::new(unbound),
        });
    }
    if keys.is_empty() {
        return Err(
            "no key in it: one a line, 64 hex digits (openssl rand -hex 32); remove the file \
             and one is made"
                .into(),
        );
    }
    Ok(keys.into())
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// 64 hex digits as 32 bytes.
fn unhex(text: &str) -> Option<[u8; KEY_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != KEY_LEN * 2 {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    fn keys(text: &str) -> TicketKeys {
        TicketKeys {
            path: PathBuf::from("test"),
            keys: RwLock::new(parse(text).unwrap()),
            random: SystemRandom::new(),
            loose: None,
        }
    }

    #[test]
    fn the_first_key_encrypts_and_every_key_decrypts() {
        let old = keys(A);
        let rotated = keys(&format!("# comment\n\n{B}\n  {A}  \n"));
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(ticket.len(), HEADER + NONCE_LEN + 13 + TAG_LEN);
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state");
        // The new first key encrypts: the old file alone cannot read it.
        let newer = rotated.encrypt(b"later").unwrap();
        assert_eq!(rotated.decrypt(&newer).unwrap(), b"later");
        assert_eq!(old.decrypt(&newer), None);
        // Two tickets of the same state differ (a new nonce each).
        assert_ne!(old.encrypt(b"x").unwrap(), old.encrypt(b"x").unwrap());
    }

    #[test]
    fn a_ticket_damaged_anywhere_old_or_from_the_future_is_refused() {
        let k = keys(A);
        let ticket = k.encrypt(b"session state").unwrap();
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.decrypt(&bad), None, "byte {i} flipped");
        }
        for n in 0..ticket.len() {
            assert_eq!(k.decrypt(&ticket[..n]), None, "cut to {n}");
        }
        let mut longer = ticket.clone();
        longer.push(0);
        assert_eq!(k.decrypt(&longer), None);
        assert_eq!(k.decrypt(&[]), None);
        // Re-sealed with another time: the time is checked before the tag.
        let now = TicketKeys::now();
        for issued in [
            now - u64::from(LIFETIME) - 1,
            now + CLOCK_SKEW + 60,
            0,
            u64::MAX,
        ] {
            let mut old = ticket.clone();
            old[ID_LEN..HEADER].copy_from_slice(&issued.to_be_bytes());
            assert_eq!(k.decrypt(&old), None, "issued {issued}");
        }
    }

    #[test]
    fn processes_that_start_at_once_make_one_file_between_them() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("tcpool-tickets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tickets.key");
        let opened: Vec<(TicketKeys, Opened)> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| s.spawn(|| TicketKeys::open(&path)))
                .collect();
            starts
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect()
        });
        let made = opened.iter().filter(|(_, o)| *o == Opened::Created).count();
        assert_eq!(made, 1, "one of them made it");
        // Whoever made it, they all read the one file: a ticket of one opens with another.
        let ticket = opened[0].0.encrypt(b"state").unwrap();
        for (keys, _) in &opened {
            assert_eq!(keys.decrypt(&ticket).unwrap(), b"state");
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hostile_files_are_refused_with_the_line_and_never_the_key() {
        for (text, says) in [
            ("", "no key"),
            ("# only a comment\n\n", "no key"),
            ("abc\n", "line 1 is not a key"),
            (&A[..62], "not 62 characters"),
            (&format!("{A}\n{}zz", &B[..62]), "line 2 is not a key"),
            (&"00".repeat(32), "one byte repeated"),
            (&format!("{A}00"), "not 66 characters"),
            (
                &"é".repeat(64),
                "not 64 characters with some that are not hex digits",
            ),
        ] {
            let err = parse(text)
                .err()
                .unwrap_or_else(|| panic!("{text:?} taken"));
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains(&A[..20]), "{err}");
        }
        let many: String = (0..=MAX_KEYS)
            .map(|i| format!("{:064x}\n", i + 1))
            .collect();
        assert!(parse(&many).err().unwrap().contains("more than 16 keys"));
    }
}

//! The hand-over (`SIGHUP`): a fresh copy of this program takes over the listening sockets.
//!
//! As nginx's binary upgrade and HAProxy's seamless reload: [`start_successor`] starts the
//! program on disk (the binary that may just have been replaced) with the same arguments and
//! passes it the listening sockets the way systemd's socket activation does — descriptors 3,
//! 4, ... with `LISTEN_FDS` and `LISTEN_FDNAMES` (the admin listener named
//! [`ADMIN_FDNAME`]), which [`inherited`](crate::server::arrival::listen::inherited) takes. `LISTEN_PID` is
//! left out: the new process's id is not known before it is started, and `listenfd` accepts
//! the descriptors without it (the new process clears `LISTEN_FDS` at once, so no process it
//! starts takes them).
//!
//! The new process gets a private `NOTIFY_SOCKET`: a Unix datagram socket in a directory
//! only this user may enter, made for this hand-over. Its `READY=1` there says it serves; the
//! old process waits for it at most the timeout, and gives up early when the new one exits.
//! [`SERVICE_SOCKET_VAR`] passes on the service manager's own socket for what the new
//! process says later (see [`notify`](crate::server::arrival::notify)).
//!
//! The new process keeps this one's stdout and stderr; its stdin is empty, so its console
//! is off. Whoever starts the hand-over stops this process once the new one is ready
//! ([`Shutdown::hand_over`](crate::server::Shutdown::hand_over)); until then both serve.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use parking_lot::Mutex;

use crate::server::arrival::listen::{ADMIN_FDNAME, TLS_FDNAME, UDP_FDNAME};
use crate::server::arrival::notify::{NOTIFY_SOCKET_VAR, SERVICE_SOCKET_VAR};

/// How long the old process waits for the new one's `READY=1` unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the old process, once it stopped accepting, goes on serving before its
/// sessions are told `quit`: a client it accepted just before has sent its first request
/// by then, and gets the answer before the goodbye.
pub const SETTLE: Duration = Duration::from_millis(100);

/// The name `LISTEN_FDNAMES` gives every data listener.
pub const LISTEN_FDNAME: &str = "listen";

/// The first descriptor passed, as in systemd's socket activation.
const FIRST_FD: i32 = 3;

/// How often the wait looks whether the new process has exited.
const POLL: Duration = Duration::from_millis(20);

/// The listening sockets a hand-over passes on: second handles, taken at start-up. A
/// cheap-clone handle: [`release`](Sockets::release) lets them go for every clone.
#[derive(Debug, Clone)]
pub struct Sockets {
    held: Arc<Mutex<Option<Held>>>,
}

#[derive(Debug)]
struct Held {
    listeners: Vec<TcpListener>,
    tls: Vec<TcpListener>,
    /// The UDP echo's sockets (`--udp`), once the server has them.
    udp: Vec<std::net::UdpSocket>,
    admin: Option<TcpListener>,
}

impl Sockets {
    /// Second handles on `listeners`, the `tls` ones beside them and `admin` (the same
    /// sockets, shared with the server).
    ///
    /// # Errors
    ///
    /// When a descriptor cannot be duplicated.
    pub fn new(
        listeners: &[TcpListener],
        tls: &[TcpListener],
        admin: Option<&TcpListener>,
    ) -> io::Result<Sockets> {
        let clone = |all: &[TcpListener]| {
            all.iter()
                .map(TcpListener::try_clone)
                .collect::<io::Result<Vec<_>>>()
        };
        let held = Held {
            listeners: clone(listeners)?,
            tls: clone(tls)?,
            udp: Vec::new(),
            admin: admin.map(TcpListener::try_clone).transpose()?,
        };
        Ok(Sockets {
            held: Arc::new(Mutex::new(Some(held))),
        })
    }

    /// Keeps second handles on the UDP echo's sockets too (`--udp`), which the server binds
    /// or inherits when it starts: a new process serves the same sockets, so that no
    /// datagram is refused while the two change places.
    pub fn hold_udp(&self, sockets: Vec<std::net::UdpSocket>) {
        if let Some(held) = self.held.lock().as_mut() {
            held.udp = sockets;
        }
    }

    /// Closes the second handles: at a shutdown that is not a hand-over, so that the
    /// listening sockets close with the acceptors and a client connecting meanwhile is
    /// refused by the kernel, not accepted into a queue nobody takes and reset at exit.
    pub fn release(&self) {
        drop(self.held.lock().take());
    }

    /// The descriptors in the order they are passed, with their `LISTEN_FDNAMES` names.
    fn passed(&self) -> io::Result<(Vec<OwnedFd>, String)> {
        let held = self.held.lock();
        let Some(held) = held.as_ref() else {
            return Err(io::Error::other(
                "the listening sockets were let go: the server is shutting down",
            ));
        };
        let mut fds = Vec::new();
        let mut names = String::new();
        let fd = |l: &TcpListener| l.try_clone().map(OwnedFd::from);
        let named = held
            .listeners
            .iter()
            .map(|l| (fd(l), LISTEN_FDNAME))
            .chain(held.tls.iter().map(|l| (fd(l), TLS_FDNAME)))
            .chain(
                held.udp
                    .iter()
                    .map(|u| (u.try_clone().map(OwnedFd::from), UDP_FDNAME)),
            )
            .chain(held.admin.iter().map(|l| (fd(l), ADMIN_FDNAME)));
        for (cloned, name) in named {
            fds.push(cloned?);
            if !names.is_empty() {
                names.push(':');
            }
            let _ = write!(names, "{name}");
        }
        Ok((fds, names))
    }
}

/// The new process, ready and serving.
#[derive(Debug)]
pub struct Successor {
    /// Its process id.
    pub pid: u32,
    /// Dropped, it is neither waited for nor stopped: it outlives this process.
    child: Child,
}

impl Successor {
    /// Asks the new process to shut down gracefully (SIGTERM) and waits until it has.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts the program on disk with this process's arguments and `sockets`, and waits at
/// most `timeout` for its `READY=1`. `service_socket` is the service manager's notification
/// socket, passed on for the new process's later notifications.
///
/// # Errors
///
/// Why the new process cannot take over: it cannot be started, exits, or is not ready in
/// time. It is then stopped and waited for; this process is as it was.
pub fn start_successor(
    sockets: &Sockets,
    service_socket: Option<&Path>,
    timeout: Duration,
) -> io::Result<Successor> {
    let program = program()?;
    let dir = PrivateDir::create()?;
    let notify_path = dir.path.join("notify");
    let notify = UnixDatagram::bind(&notify_path)
        .map_err(|e| context(e, &format!("cannot bind {}", notify_path.display())))?;
    notify.set_read_timeout(Some(POLL))?;

    let (fds, names) = sockets.passed()?;
    let mappings = fds
        .into_iter()
        .zip(FIRST_FD..)
        .map(|(parent_fd, child_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect::<Vec<_>>();
    let count = mappings.len();
    let mut command = Command::new(&program);
    command
        .args(std::env::args_os().skip(1))
        .stdin(Stdio::null())
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS_FIRST_FD")
        .env(NOTIFY_SOCKET_VAR, &notify_path)
        .env(
            SERVICE_SOCKET_VAR,
            service_socket.map_or_else(OsString::new, |p| p.as_os_str().to_owned()),
        );
    command
        .fd_mappings(mappings)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut child = command
        .spawn()
        .map_err(|e| context(e, &format!("cannot start {}", program.display())))?;
    // The parent's copies of the passed descriptors go with the command.
    drop(command);
    match wait_ready(&notify, &mut child, timeout) {
        Ok(()) => Ok(Successor {
            pid: child.id(),
            child,
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// The program to start: the binary on disk at this one's path. When that file was replaced
/// (the upgrade), Linux names this process's own, now unlinked, file `PATH (deleted)`; the
/// new file is at `PATH`.
fn program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| context(e, "cannot find this program"))?;
    if exe.exists() {
        return Ok(exe);
    }
    let shown = exe.to_string_lossy();
    match shown.strip_suffix(" (deleted)") {
        Some(path) => Ok(PathBuf::from(path)),
        None => Ok(exe),
    }
}

/// Waits for `READY=1` on `notify`, at most `timeout`, and gives up when `child` exits.
fn wait_ready(notify: &UnixDatagram, child: &mut Child, timeout: Duration) -> io::Result<()> {
    let deadline = crate::time::later(Instant::now(), timeout);
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|l| l == "READY=1") {
                    return Ok(());
                }
                log::debug!("hand-over: the new process says {:?}", text.trim_end());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(context(e, "cannot read the new process's notification")),
        }
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "the new process (pid {}) exited before it was ready: {status}",
                child.id()
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the new process (pid {}) was not ready within {timeout:?}",
                    child.id()
                ),
            ));
        }
    }
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A directory of this hand-over's own, mode 0700, removed (with its socket) when dropped.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create() -> io::Result<PrivateDir> {
        let base = std::env::var_os("RUNTIME_DIRECTORY")
            .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let names = std::iter::repeat_with(|| {
            format!(
                "tcpool-handover-{}-{:016x}",
                std::process::id(),
                unpredictable()
            )
        });
        PrivateDir::create_in(&base, names)
    }

    /// The first of `names` free in `base`. In a directory others may write to (the
    /// temporary directory), a name taken already is skipped, not an error: nobody can
    /// keep a hand-over from starting by taking the names it would use.
    fn create_in(base: &Path, names: impl Iterator<Item = String>) -> io::Result<PrivateDir> {
        const ATTEMPTS: usize = 16;
        let mut taken = None;
        for name in names.take(ATTEMPTS) {
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => taken = Some(path),
                Err(e) => return Err(context(e, &format!("cannot create {}", path.display()))),
            }
        }
        let shown = taken.map_or_else(|| base.display().to_string(), |p| p.display().to_string());
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "cannot create a directory for the hand-over: {shown} and {ATTEMPTS} other names are taken"
            ),
        ))
    }
}

/// 64 bits nobody else can guess: the standard library's random hash keys (taken from the
/// operating system), mixed with a count and the time.
fn unpredictable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(COUNT.fetch_add(1, Ordering::Relaxed));
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish()
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_is_passed_last_and_named() {
        let a = crate::server::arrival::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = crate::server::arrival::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let admin = crate::server::arrival::listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let sockets = Sockets::new(&[a, b], &[], Some(&admin)).unwrap();
        let (fds, names) = sockets.passed().unwrap();
        assert_eq!(fds.len(), 3);
        assert_eq!(names, "listen:listen:admin");
        let udp = crate::server::udp::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        sockets.hold_udp(udp);
        let (fds, names) = sockets.passed().unwrap();
        assert_eq!(fds.len(), 5);
        assert_eq!(names, "listen:listen:udp:udp:admin");
        let without = Sockets::new(&[], &[], None).unwrap();
        assert_eq!(without.passed().unwrap().1, "");
    }

    #[test]
    fn a_taken_name_for_the_private_directory_is_skipped() {
        let base =
            std::env::temp_dir().join(format!("tcpool-handover-test-{}", std::process::id()));
        std::fs::create_dir_all(base.join("squatted")).unwrap();
        let names = ["squatted", "free"].map(String::from).into_iter();
        let dir = PrivateDir::create_in(&base, names).unwrap();
        assert_eq!(dir.path, base.join("free"));
        let all_taken = std::iter::repeat_with(|| "squatted".to_string());
        assert!(PrivateDir::create_in(&base, all_taken).is_err());
        drop(dir);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn the_private_directory_is_this_users_alone_and_goes_away() {
        use std::os::unix::fs::PermissionsExt;
        let dir = PrivateDir::create().unwrap();
        let path = dir.path.clone();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        assert!(!path.exists());
    }
}

//! Telling a service manager how the server is doing: the `sd_notify` datagram protocol.
//!
//! systemd (`Type=notify`) or `systemd-socket-activate` names a Unix datagram socket in
//! `NOTIFY_SOCKET`; the server sends `READY=1` there once it serves and `STOPPING=1` when a
//! stop begins. A path starting with `@` is in the abstract namespace, as systemd allows.
//!
//! A process started by a hand-over (`SIGHUP`) gets a private `NOTIFY_SOCKET` of the old
//! process's, which hears its `READY=1`, and [`SERVICE_SOCKET_VAR`] naming the service
//! manager's socket (empty when there is none): every notification after `READY=1` goes
//! there, so that `STOPPING=1` and a later hand-over's `MAINPID=` reach the service manager.
//! Without that variable both kinds go to `NOTIFY_SOCKET`. Without either, nothing is sent.
//!
//! The environment is read once, at start-up ([`Notify::from_env`]); it is never changed.

use std::ffi::OsString;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// The variable naming the socket that hears `READY=1`.
pub const NOTIFY_SOCKET_VAR: &str = "NOTIFY_SOCKET";

/// Set by a hand-over: the service manager's socket for every notification after
/// `READY=1` (empty: no service manager).
pub const SERVICE_SOCKET_VAR: &str = "TCPOOL_SERVICE_NOTIFY_SOCKET";

/// Where this process's notifications go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    ready: Option<PathBuf>,
    service: Option<PathBuf>,
}

impl Notify {
    /// Reads [`NOTIFY_SOCKET_VAR`] and [`SERVICE_SOCKET_VAR`].
    pub fn from_env() -> Notify {
        Notify::from_vars(
            std::env::var_os(NOTIFY_SOCKET_VAR),
            std::env::var_os(SERVICE_SOCKET_VAR),
        )
    }

    fn from_vars(notify: Option<OsString>, service: Option<OsString>) -> Notify {
        let path = |v: OsString| Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        let ready = notify.and_then(path);
        let service = match service {
            Some(v) => path(v),
            None => ready.clone(),
        };
        Notify { ready, service }
    }

    /// The service manager's socket, if the server runs under one.
    pub fn service_socket(&self) -> Option<&Path> {
        self.service.as_deref()
    }

    /// `READY=1`: the server serves.
    ///
    /// # Errors
    ///
    /// When the datagram cannot be sent.
    pub fn ready(&self) -> io::Result<()> {
        send(self.ready.as_deref(), "READY=1\n")
    }

    /// `STOPPING=1`: a stop began.
    ///
    /// # Errors
    ///
    /// When the datagram cannot be sent.
    pub fn stopping(&self) -> io::Result<()> {
        send(self.service.as_deref(), "STOPPING=1\n")
    }

    /// `MAINPID=pid`: the service is process `pid` from now on.
    ///
    /// # Errors
    ///
    /// When the datagram cannot be sent.
    pub fn main_pid(&self, pid: u32) -> io::Result<()> {
        send(self.service.as_deref(), &format!("MAINPID={pid}\n"))
    }
}

fn send(to: Option<&Path>, message: &str) -> io::Result<()> {
    let Some(path) = to else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let sent = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &addr)?
        }
        None => socket.send_to(message.as_bytes(), path)?,
    };
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "notification cut short",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(notify: Option<&str>, service: Option<&str>) -> Notify {
        Notify::from_vars(notify.map(OsString::from), service.map(OsString::from))
    }

    #[test]
    fn without_the_hand_over_variable_everything_goes_to_notify_socket() {
        let n = vars(Some("/run/systemd/notify"), None);
        assert_eq!(n.ready.as_deref(), Some(Path::new("/run/systemd/notify")));
        assert_eq!(n.service_socket(), Some(Path::new("/run/systemd/notify")));
        assert_eq!(vars(None, None), Notify::default());
    }

    #[test]
    fn after_a_hand_over_ready_goes_to_the_old_process_and_the_rest_to_the_service() {
        let n = vars(Some("/tmp/x/notify"), Some("/run/systemd/notify"));
        assert_eq!(n.ready.as_deref(), Some(Path::new("/tmp/x/notify")));
        assert_eq!(n.service_socket(), Some(Path::new("/run/systemd/notify")));
        let n = vars(Some("/tmp/x/notify"), Some(""));
        assert_eq!(n.service_socket(), None);
    }

    #[test]
    fn notifications_arrive_as_datagrams() {
        let dir = std::env::temp_dir().join(format!("tcpool-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = vars(path.to_str(), None);
        n.ready().unwrap();
        n.main_pid(42).unwrap();
        let mut buf = [0u8; 64];
        let got = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\n");
        let got = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"MAINPID=42\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

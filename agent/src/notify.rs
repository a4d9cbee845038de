//! The systemd notify protocol (`sd_notify(3)`): datagrams such as
//! `READY=1` sent to the socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without `NOTIFY_SOCKET` (not
//! started by systemd with `Type=notify`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// The notifier systemd asked for, if any. A malformed `NOTIFY_SOCKET`
    /// is reported and ignored: the agent still runs.
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else { return Notifier { socket: None } };
        let name = name.to_string_lossy().into_owned();
        match Self::connect(&name) {
            Ok(socket) => Notifier { socket: Some(socket) },
            Err(e) => {
                tracing::warn!(notify_socket = %name, error = %e, "cannot use NOTIFY_SOCKET; systemd will not hear from the agent");
                Notifier { socket: None }
            }
        }
    }

    fn connect(name: &str) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(name)?
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Sends one state line (or several, newline-separated).
    pub fn notify(&self, state: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!(error = %e, state, "systemd notification failed");
            }
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the
    /// watchdog is on and meant for this process.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

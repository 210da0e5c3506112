//! A local `nats-server` with JetStream for `blindcall demo --cluster`: started on a free
//! loopback port with a temporary store directory, ready once it accepts connections, killed by
//! its PID when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary's name (Debian package `nats-server`).
pub const NATS_SERVER: &str = "nats-server";
/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried before giving up (another process may take a port between probe and bind).
const PORT_ATTEMPTS: usize = 5;

/// Why no local NATS server runs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// `nats-server` is neither on `PATH` nor in `/usr/sbin`.
    #[error("`{NATS_SERVER}` is not installed (apt-get install nats-server), or give --nats URL")]
    NotInstalled,
    /// The temporary store directory could not be made.
    #[error("cannot make a store directory for nats-server: {0}")]
    Dir(std::io::Error),
    /// The server did not start.
    #[error("nats-server did not start: {0}")]
    Start(String),
}

/// A running `nats-server -js` on 127.0.0.1.
#[derive(Debug)]
pub struct LocalNats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// The `nats-server` to run: `PATH`, else `/usr/sbin` (where Debian puts it).
fn binary() -> Option<PathBuf> {
    [
        PathBuf::from(NATS_SERVER),
        Path::new("/usr/sbin").join(NATS_SERVER),
    ]
    .into_iter()
    .find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn free_port() -> Result<u16, NatsError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| NatsError::Start(format!("no free port: {e}")))
}

impl LocalNats {
    /// Starts a server, or says why it cannot.
    pub fn start() -> Result<Self, NatsError> {
        let bin = binary().ok_or(NatsError::NotInstalled)?;
        let mut last = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            let dir = std::env::temp_dir().join(format!(
                "blindcall-demo-nats-{}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).map_err(NatsError::Dir)?;
            let port = free_port()?;
            match Self::spawn(&bin, port, &dir) {
                Ok(child) => return Ok(Self { child, port, dir }),
                Err(why) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    last = why;
                }
            }
        }
        Err(NatsError::Start(last))
    }

    fn spawn(bin: &Path, port: u16, dir: &Path) -> Result<Child, String> {
        let mut child = Command::new(bin)
            .args(["-js", "-sd"])
            .arg(dir.join("js"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} (port {port} taken?)"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "accepted no connection on port {port} within {READY_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

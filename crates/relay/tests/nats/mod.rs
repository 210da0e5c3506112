//! A real `nats-server` with JetStream for tests and benches: started on a free loopback port
//! with a temporary store directory, ready once it accepts connections, killed by its PID when
//! dropped.
//!
//! When `nats-server` is not installed, [`NatsServer::start_or_skip`] returns `None` after
//! printing why, unless `BLINDCALL_REQUIRE_NATS` is set (CI), where it panics.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary (Debian package `nats-server`), found on `PATH`, else in `/usr/sbin` (where
/// Debian puts it, not on every user's `PATH`), unless `BLINDCALL_NATS_SERVER` names one.
pub const NATS_SERVER: &str = "nats-server";
/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried before giving up (another process may take a port between probe and bind).
const PORT_ATTEMPTS: usize = 5;

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Arguments after the single-node ones (cluster name and routes).
    extra: Vec<String>,
}

/// The `nats-server` to run, if one runs.
fn binary() -> Option<PathBuf> {
    let candidates = match std::env::var_os("BLINDCALL_NATS_SERVER") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from(NATS_SERVER),
            Path::new("/usr/sbin").join(NATS_SERVER),
        ],
    };
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn installed() -> bool {
    binary().is_some()
}

/// `n` distinct loopback ports that were free a moment ago (bound to port 0 together, then
/// released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn skip(test: &str) -> bool {
    if installed() {
        return false;
    }
    assert!(
        std::env::var_os("BLINDCALL_REQUIRE_NATS").is_none(),
        "{test}: BLINDCALL_REQUIRE_NATS is set but `{NATS_SERVER}` is not installed \
         (apt-get install nats-server)"
    );
    eprintln!(
        "SKIPPED {test}: `{NATS_SERVER}` is not installed (apt-get install nats-server; \
         set BLINDCALL_REQUIRE_NATS=1 to make this a failure)"
    );
    true
}

impl NatsServer {
    /// Start a server, or `None` (with a message) when `nats-server` is not installed and
    /// `BLINDCALL_REQUIRE_NATS` is not set.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        if skip(test) {
            return None;
        }
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut server = Self::new(free_ports(1)[0], Vec::new());
            match server.spawn_and_wait() {
                Ok(()) => return Some(server),
                Err(why) => last = why,
            }
        }
        panic!("{test}: nats-server did not start after {PORT_ATTEMPTS} ports: {last}");
    }

    fn new(port: u16, extra: Vec<String>) -> Self {
        Self {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temporary store directory"),
            extra,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Spawn on `self.port` and poll until it accepts TCP connections; on a failure (it exited,
    /// typically because the port was taken, or it never became ready) the process is killed
    /// and the reason returned.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(binary().ok_or_else(|| format!("{NATS_SERVER} not found"))?)
            .args(["-js", "-sd"])
            .arg(self.dir.path().join("js"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {NATS_SERVER}: {e}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "nats-server on port {} exited with {status}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "nats-server on port {} accepted no connection within {READY_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server (SIGKILL by PID) and reap it; its store directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the server (SIGSTOP by PID): its connections stay open, it answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused server run again (SIGCONT by PID).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid}: {status}");
    }

    /// Start the server again on the same port and store directory (after [`NatsServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.spawn_and_wait() {
            panic!("nats-server did not restart: {why}");
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of `nats-server` processes on loopback (one store directory each),
/// routed to each other; every node is killed by its PID on drop.
pub struct NatsCluster {
    /// The nodes, in start order.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `n` routed nodes (named `n0`, `n1`, ... in cluster `blindcall-test`), or `None`
    /// as [`NatsServer::start_or_skip`]. JetStream is usable once its meta leader is elected,
    /// a moment after every node accepts connections: callers retry their first bucket
    /// operation.
    pub fn start_or_skip(test: &str, n: usize) -> Option<Self> {
        if skip(test) {
            return None;
        }
        let mut last = String::new();
        'attempt: for _ in 0..PORT_ATTEMPTS {
            let ports = free_ports(2 * n);
            let (client, route) = ports.split_at(n);
            let routes: Vec<String> = route
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let mut nodes = Vec::new();
            for i in 0..n {
                let extra = vec![
                    "-n".to_owned(),
                    format!("n{i}"),
                    "--cluster_name".to_owned(),
                    "blindcall-test".to_owned(),
                    "--cluster".to_owned(),
                    routes[i].clone(),
                    "--routes".to_owned(),
                    routes.join(","),
                ];
                let mut node = NatsServer::new(client[i], extra);
                // On failure, the nodes started so far are killed as `nodes` drops.
                if let Err(why) = node.spawn_and_wait() {
                    last = why;
                    continue 'attempt;
                }
                nodes.push(node);
            }
            return Some(Self { nodes });
        }
        panic!("{test}: nats cluster did not start after {PORT_ATTEMPTS} attempts: {last}");
    }
}

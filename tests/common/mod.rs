//! What the real-process tests share: child processes killed on drop, the JSON lines of
//! `blindcall join --events jsonl` gathered from several clients, and a `blindcall join`
//! launcher.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use blindcall_relay::cli::{RoleArg, TokenArgs, mint_token};
use serde_json::Value;

/// Bound on everything awaited (generous: a loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (e.g. "-TERM") by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}: {status}", self.0.id());
    }

    /// Waits (bounded by [`WAIT`]) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One JSON line of a client, with when the test read it.
pub struct Line {
    pub who: &'static str,
    pub at: Instant,
    pub v: Value,
}

/// The clients' reports, as they arrive, and everything seen so far per client.
pub struct Reports {
    pub rx: mpsc::Receiver<Line>,
    pub seen: BTreeMap<&'static str, Vec<(Instant, Value)>>,
}

impl Reports {
    /// Reports read from `rx`.
    pub fn new(rx: mpsc::Receiver<Line>) -> Self {
        Self {
            rx,
            seen: BTreeMap::new(),
        }
    }

    /// Waits for a line of `who` matching `pred` (lines of others are kept); returns it and
    /// when it was read.
    pub fn until(
        &mut self,
        who: &str,
        what: &str,
        pred: impl FnMut(&Value) -> bool,
    ) -> (Instant, Value) {
        self.until_after(who, what, None, pred)
    }

    /// [`Reports::until`] for a line read after `after` (lines read before it are kept but
    /// never match).
    pub fn until_after(
        &mut self,
        who: &str,
        what: &str,
        after: Option<Instant>,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.rx.recv_timeout(left) else {
                let last: Vec<String> = self
                    .seen
                    .get(who)
                    .into_iter()
                    .flat_map(|l| l.iter().rev().take(6).rev())
                    .map(|(_, v)| v.to_string())
                    .collect();
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; {who}'s last lines:\n{}",
                    last.join("\n")
                );
            };
            self.seen
                .entry(line.who)
                .or_default()
                .push((line.at, line.v.clone()));
            if line.who == who && after.is_none_or(|a| line.at > a) && pred(&line.v) {
                return (line.at, line.v);
            }
        }
    }

    pub fn events_of(&self, who: &str, kind: &str) -> Vec<&Value> {
        self.events_since(who, kind, 0)
    }

    /// Lines of `who` seen so far.
    pub fn mark(&self, who: &str) -> usize {
        self.seen.get(who).map_or(0, Vec::len)
    }

    /// Events `kind` of `who` after its first `mark` lines.
    pub fn events_since(&self, who: &str, kind: &str, mark: usize) -> Vec<&Value> {
        self.seen
            .get(who)
            .into_iter()
            .flat_map(|l| l.iter().skip(mark))
            .map(|(_, v)| v)
            .filter(|v| v["event"] == kind)
            .collect()
    }
}

/// Frames `stats` says were opened from `sender`.
pub fn opened_from(stats: &Value, sender: &str) -> u64 {
    stats["senders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["identity"] == sender)
        .map(|s| s["opened"].as_u64().unwrap_or(0))
        .sum()
}

/// The last `stats` line of `who` read before `at`.
pub fn last_stats<'a>(r: &'a Reports, who: &str, at: Instant) -> Option<&'a Value> {
    r.seen
        .get(who)?
        .iter()
        .rev()
        .find(|(t, v)| *t < at && v["event"] == "stats")
        .map(|(_, v)| v)
}

/// A capability token for `room` signed with `secret` (hex).
pub fn token(secret: &str, room: &str, role: RoleArg) -> String {
    let env = |v: &str| (v == "BLINDCALL_TOKEN_SECRET").then(|| secret.to_owned());
    let args = TokenArgs {
        room: room.into(),
        role,
        ttl_secs: 3600,
        secret_file: None,
        secret_env: None,
        config: None,
    };
    mint_token(&args, SystemTime::now(), &env).unwrap().text
}

/// How a client trusts its relays.
pub enum Trust {
    /// `--fingerprint`.
    Fingerprint(String),
    /// `--cert FILE`.
    Cert(PathBuf),
}

/// One `blindcall join` process.
pub struct JoinSpec<'a> {
    /// `--relay` (one address or a comma-separated list).
    pub relays: String,
    pub trust: &'a Trust,
    pub who: &'static str,
    /// `--bind`.
    pub ip: Ipv4Addr,
    pub role: RoleArg,
    /// The host writes its invite here; guests read it.
    pub invite: &'a Path,
    /// The token (`BLINDCALL_TOKEN`).
    pub token: String,
}

/// Starts `blindcall join --events jsonl` as `spec` says; its lines go to `tx`.
pub fn join(spec: JoinSpec<'_>, tx: mpsc::Sender<Line>) -> Proc {
    let who = spec.who;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blindcall"));
    cmd.args(["join", "--relay", &spec.relays, "--name", who])
        .args(["--bind", &spec.ip.to_string(), "--events", "jsonl"])
        .args(["--duration", "600"])
        .env("BLINDCALL_TOKEN", spec.token)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match spec.trust {
        Trust::Fingerprint(f) => cmd.args(["--fingerprint", f]),
        Trust::Cert(p) => cmd.arg("--cert").arg(p),
    };
    if spec.role == RoleArg::Host {
        cmd.arg("--auto-approve")
            .arg("--invite-out")
            .arg(spec.invite);
    } else {
        cmd.arg("--invite-file").arg(spec.invite);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            let v: Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("{who} printed a line that is not JSON ({e}): {l}"));
            assert!(v["event"].is_string(), "{who}: no event field: {l}");
            if tx
                .send(Line {
                    who,
                    at: Instant::now(),
                    v,
                })
                .is_err()
            {
                return;
            }
        }
    });
    Proc(child)
}

/// The `q` quantile of sorted durations (nearest rank).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

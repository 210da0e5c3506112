//! Real processes, a real network fault: `blindcall relay` and three `blindcall join`
//! processes, each client on its own loopback address. One client's address is blackholed for
//! 6 s (an nftables table of this test's own that drops every packet from or to it; removed when
//! the test ends): it resumes by itself — no host approval, same leaf, frames opened again both
//! ways — and its peers never see it leave. Another client's address is blackholed for good: the
//! relay notices the silence, keeps its leaf for the grace, then has it removed.
//!
//! Needs `nft` and the right to change the firewall (root or CAP_NET_ADMIN); `.ci/run`
//! installs nftables and sets `BLINDCALL_REQUIRE_NFT=1`, which turns a missing `nft` into a
//! failure. Elsewhere the test says why it cannot run and passes.
//!
//! `BLINDCALL_DROPS=20 cargo test --test network_faults -- --nocapture` repeats the drop and
//! prints resume times (network back → resumed, and → media opened again) with p50/p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use blindcall_relay::cli::RoleArg;
use serde_json::Value;

mod common;

use common::{JoinSpec, Line, Proc, Reports, Trust, last_stats, opened_from, percentile};

const SECRET: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";
const ROOM: &str = "netfault-room";
/// The relay's idle timeout and resume grace in this test (seconds).
const IDLE_SECS: u64 = 4;
const GRACE_SECS: u64 = 8;

/// Whether nftables can be used here; `Err` says why not.
fn nft_usable() -> Result<(), String> {
    let probe = format!("blindcall_probe_{}", std::process::id());
    let out = Command::new("nft")
        .args(["add", "table", "inet", &probe])
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft cannot change the firewall: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", &probe])
        .status();
    Ok(())
}

/// Deletes the tables a killed run of this test left behind (their process is gone).
fn remove_stale_tables() {
    let Ok(out) = Command::new("nft").args(["list", "tables"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.strip_prefix("table inet ") else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("blindcall_test_")
            .and_then(|r| r.split('_').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", name])
                .status();
        }
    }
}

/// Every packet from or to one loopback address is dropped while this lives: an nftables
/// table of the test's own, deleted on drop (also when the test fails).
struct Blackhole {
    table: String,
}

impl Blackhole {
    fn new(ip: Ipv4Addr, tag: &str) -> Self {
        assert!(ip.is_loopback(), "only loopback addresses are ever touched");
        let table = format!("blindcall_test_{}_{tag}", std::process::id());
        let script = format!(
            "table inet {table} {{\n\
               chain out {{\n\
                 type filter hook output priority 0; policy accept;\n\
                 ip saddr {ip} drop\n\
                 ip daddr {ip} drop\n\
               }}\n\
             }}\n"
        );
        let mut nft = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft runs");
        nft.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft rejected {script}");
        Self { table }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// A child process killed when dropped.
fn token(role: RoleArg) -> String {
    common::token(SECRET, ROOM, role)
}

struct Relay {
    _proc: Proc,
    addr: String,
    fingerprint: String,
}

fn relay(dir: &Path) -> Relay {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             [tls]\n\
             dev_self_signed = true\n\
             dev_cert_out = \"{}\"\n\
             [token_secret]\n\
             env = \"BLINDCALL_TOKEN_SECRET\"\n\
             [limits]\n\
             idle_timeout_secs = {IDLE_SECS}\n\
             resume_grace_secs = {GRACE_SECS}\n",
            dir.join("cert.pem").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args(["relay", "--log", "warn", "--config"])
        .arg(&config)
        .env("BLINDCALL_TOKEN_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut fingerprint, mut addr) = (None, None);
    while addr.is_none() {
        let l = lines.next().expect("the relay's start-up lines").unwrap();
        if let Some(f) = l.strip_prefix("development certificate SHA-256: ") {
            fingerprint = Some(f.to_owned());
        }
        if let Some(a) = l.strip_prefix("listening on ") {
            addr = Some(a.to_owned());
        }
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Relay {
        _proc: Proc(child),
        addr: addr.unwrap(),
        fingerprint: fingerprint.expect("the development certificate's fingerprint"),
    }
}

fn join(
    relay: &Relay,
    who: &'static str,
    ip: Ipv4Addr,
    role: RoleArg,
    invite: &Path,
    tx: mpsc::Sender<Line>,
) -> Proc {
    common::join(
        JoinSpec {
            relays: relay.addr.clone(),
            trust: &Trust::Fingerprint(relay.fingerprint.clone()),
            who,
            ip,
            role,
            invite,
            token: token(role),
        },
        tx,
    )
}

// covers: SDK-RES-1, SDK-RES-2, SDK-RES-4, DS-RES-2, DS-RES-3, DS-RES-7, SDK-CLI-1, SDK-CLI-2
#[test]
fn a_blackholed_client_resumes_by_itself_and_one_that_never_returns_is_removed() {
    if let Err(why) = nft_usable() {
        assert!(
            std::env::var_os("BLINDCALL_REQUIRE_NFT").is_none(),
            "BLINDCALL_REQUIRE_NFT is set but {why}"
        );
        eprintln!("network_faults: not run here: {why}");
        return;
    }
    remove_stale_tables();
    let drops: usize = std::env::var("BLINDCALL_DROPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("blindcall-netfault-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay = relay(&dir);
    let invite = dir.join("invite");
    let (tx, rx) = mpsc::channel();
    let mut r = Reports::new(rx);
    let (alice_ip, bob_ip, carol_ip) = (
        Ipv4Addr::new(127, 0, 0, 41),
        Ipv4Addr::new(127, 0, 0, 42),
        Ipv4Addr::new(127, 0, 0, 43),
    );
    let _alice = join(
        &relay,
        "alice",
        alice_ip,
        RoleArg::Host,
        &invite,
        tx.clone(),
    );
    r.until("alice", "alice's group", |v| v["event"] == "joined");
    assert!(invite.exists(), "the host wrote its invite link");
    let _bob = join(&relay, "bob", bob_ip, RoleArg::Guest, &invite, tx.clone());
    r.until("bob", "bob to join", |v| v["event"] == "joined");
    let mut carol = join(&relay, "carol", carol_ip, RoleArg::Guest, &invite, tx);
    r.until("carol", "carol to join", |v| v["event"] == "joined");
    // Everyone hears everyone.
    for (who, others) in [
        ("alice", ["bob", "carol"]),
        ("bob", ["alice", "carol"]),
        ("carol", ["alice", "bob"]),
    ] {
        r.until(who, &format!("{who} to open frames of both others"), |v| {
            v["event"] == "stats"
                && v["members"] == 3
                && others.iter().all(|o| opened_from(v, o) > 0)
        });
    }
    let requests_before = r.events_of("alice", "join_requested").len();
    assert_eq!(requests_before, 2);
    let marks: BTreeMap<&str, usize> = ["alice", "bob"].map(|w| (w, r.mark(w))).into();

    let mut to_resumed = Vec::new();
    let mut to_connected = Vec::new();
    let mut to_media = Vec::new();
    for n in 0..drops {
        // Bob's network goes dead (and, the first time, carol's, for good).
        let cut = Instant::now();
        let bob_hole = Blackhole::new(bob_ip, "bob");
        let carol_hole = (n == 0).then(|| Blackhole::new(carol_ip, "carol"));
        r.until("bob", "bob to notice the silence", |v| {
            v["event"] == "reconnecting" && v["attempt"] == 1
        });
        let noticed_at = Instant::now();
        std::thread::sleep(Duration::from_secs(6).saturating_sub(cut.elapsed()));
        drop(bob_hole);
        let back = Instant::now();
        // Bob was away at least from when we read that he noticed until the network came
        // back (how soon he notices depends on the machine's load, so no fixed figure).
        let away_at_least = back.duration_since(noticed_at);
        let (resumed_at, v) = r.until("bob", "bob to resume", |v| {
            v["event"] == "reconnected" || v["event"] == "ended"
        });
        assert_eq!(v["event"], "reconnected", "bob's call ended instead: {v}");
        assert!(
            u128::from(v["away_ms"].as_u64().unwrap()) >= away_at_least.as_millis(),
            "away for at least {away_at_least:?}: {v}"
        );
        let (connected_at, _) = r.until("bob", "bob's media to connect again", |v| {
            v["event"] == "media_connected"
        });
        // Frames opened again, both ways (counted from the last report before the network
        // came back: nothing was opened since).
        let bob_had = last_stats(&r, "bob", back).map_or(0, |v| opened_from(v, "alice"));
        let (media_at, _) = r.until("bob", "bob to open alice's frames again", |v| {
            v["event"] == "stats" && opened_from(v, "alice") > bob_had
        });
        let alice_had = last_stats(&r, "alice", back).map_or(0, |v| opened_from(v, "bob"));
        r.until("alice", "alice to open bob's frames again", |v| {
            v["event"] == "stats" && opened_from(v, "bob") > alice_had
        });
        to_resumed.push(resumed_at.saturating_duration_since(back));
        to_connected.push(connected_at.saturating_duration_since(back));
        to_media.push(media_at.saturating_duration_since(back));
        if let Some(hole) = carol_hole {
            // The relay cut carol's silent connection, kept its leaf for the grace, then
            // had it removed: alice sees exactly carol leave.
            let (_, v) = r.until("alice", "alice to see carol removed", |v| {
                v["event"] == "members" && !v["left"].as_array().unwrap().is_empty()
            });
            let left: Vec<&str> = v["left"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["identity"].as_str().unwrap())
                .collect();
            assert_eq!(left, vec!["carol"], "{v}");
            let _ = carol.0.kill();
            drop(hole);
        }
    }
    // Bob kept his seat: nobody saw him leave or ask to join again, and no host approved
    // anything after the first two joins.
    for who in ["alice", "bob"] {
        for v in r.events_since(who, "members", marks[who]) {
            let names: Vec<&Value> = v["left"]
                .as_array()
                .unwrap()
                .iter()
                .chain(v["joined"].as_array().unwrap())
                .map(|m| &m["identity"])
                .collect();
            assert!(!names.contains(&&Value::from("bob")), "{who} saw {v}");
        }
    }
    assert_eq!(
        r.events_of("alice", "join_requested").len(),
        requests_before
    );
    assert!(r.events_of("bob", "ended").is_empty());
    assert!(
        r.events_of("alice", "impersonation")
            .iter()
            .all(|v| v["reason"] == "no_signature")
    );
    let (_, s) = r.until("bob", "bob's stats", |v| v["event"] == "stats");
    assert_eq!(s["reconnects"].as_u64(), Some(drops as u64), "{s}");
    assert!(s["frames_dropped_away"].as_u64().unwrap() > 0, "{s}");

    for (what, d) in [
        ("resumed", &mut to_resumed),
        ("media connected", &mut to_connected),
        ("frames opened (stats lines 1 s apart)", &mut to_media),
    ] {
        d.sort();
        eprintln!(
            "network back → {what}: p50 {:?} p99 {:?} max {:?} over {drops} drops",
            percentile(d, 0.5),
            percentile(d, 0.99),
            d.last().unwrap()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! Real processes, a real relay cluster: a `nats-server` with JetStream, three `blindcall relay
//! --cluster` nodes sharing one certificate and one external-sender key file, and `blindcall
//! join` clients each given the three nodes in a different order. Each room is served by one
//! node, its home (spec/cluster.md): a client that reaches another node is redirected there.
//!
//! - The home is killed with SIGKILL mid-call: its lease runs out, another node takes the
//!   room, every member resumes there; media opens again at every member, the epoch and
//!   security code are unchanged, nobody leaves, and a member who joins afterwards is added by
//!   one commit that every member merges.
//! - The home is stopped with SIGTERM and `--drain`: it hands the room to another node and
//!   moves the members before it exits 0; the call goes on.
//! - NATS is killed and restarted mid-call: media keeps flowing, a join approved during the
//!   outage is sequenced once the store is back.
//!
//! Needs `nats-server` (Debian package; `.ci/run` installs it and sets `BLINDCALL_REQUIRE_NATS`,
//! which turns its absence into a failure). `BLINDCALL_KILLS=10 cargo test --test cluster --
//! --nocapture failover` repeats the kill and prints kill → media-opening times, p50/p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use blindcall_relay::cli::RoleArg;
use serde_json::Value;

mod common;
#[path = "../crates/relay/tests/nats/mod.rs"]
mod nats;

use common::{JoinSpec, Line, Proc, Reports, Trust, opened_from, percentile};
use nats::NatsServer;

const SECRET: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
/// A node's lease: without a heartbeat for this long, another node may take its rooms.
const LEASE_MS: u64 = 2000;
const HEARTBEAT_MS: u64 = 500;

/// The tests take turns: each runs three relay nodes and up to six clients with media, and two
/// at once on a 2-core machine would test the machine rather than the cluster.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One relay node process.
struct Node {
    id: String,
    addr: String,
    proc: Proc,
}

/// A nats-server and three relay nodes, and what they share.
struct Cluster {
    nats: NatsServer,
    dir: tempfile::TempDir,
    trust: Trust,
    nodes: Vec<Node>,
    /// Held until everything above is stopped (fields drop in order).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts NATS and three nodes (`drain`: the nodes hand their rooms over on SIGTERM), or
    /// `None` when nats-server is not installed and not required.
    fn start_or_skip(test: &str, drain: bool) -> Option<Self> {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let nats = NatsServer::start_or_skip(test)?;
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        let keys = dir.path().join("external-sender.keys");
        let status = Command::new(env!("CARGO_BIN_EXE_blindcall"))
            .args(["relay", "--new-external-sender-key"])
            .arg(&keys)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "writing the external-sender key file");
        let mut c = Self {
            _turn: turn,
            nats,
            trust: Trust::Cert(dir.path().join("cert.pem")),
            dir,
            nodes: Vec::new(),
        };
        for id in ["n1", "n2", "n3"] {
            let node = c.start_node(id, drain, "127.0.0.1:0");
            c.nodes.push(node);
        }
        Some(c)
    }

    /// Starts node `id` listening on `listen` (port 0: any).
    fn start_node(&self, id: &str, drain: bool, listen: &str) -> Node {
        let d = self.dir.path();
        let config = d.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"{listen}\"\n\
                 [tls]\n\
                 cert = \"{cert}\"\n\
                 key = \"{key}\"\n\
                 [token_secret]\n\
                 env = \"BLINDCALL_TOKEN_SECRET\"\n\
                 [limits]\n\
                 resume_grace_secs = 30\n\
                 [cluster]\n\
                 nats = \"{nats}\"\n\
                 node_id = \"{id}\"\n\
                 external_sender_key_file = \"{keys}\"\n\
                 lease_ms = {LEASE_MS}\n\
                 heartbeat_ms = {HEARTBEAT_MS}\n",
                cert = d.join("cert.pem").display(),
                key = d.join("key.pem").display(),
                nats = self.nats.url(),
                keys = d.join("external-sender.keys").display(),
            ),
        )
        .unwrap();
        // Each node's log (warnings, or BLINDCALL_NODE_LOG's filter) goes to <dir>/<id>.log.
        let filter = std::env::var("BLINDCALL_NODE_LOG").unwrap_or_else(|_| "warn".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(format!("{id}.log")))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blindcall"));
        cmd.args(["relay", "--log", &filter, "--config"])
            .arg(&config)
            .env("BLINDCALL_TOKEN_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log);
        if drain {
            cmd.arg("--drain");
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        while addr.is_none() {
            let l = lines
                .next()
                .unwrap_or_else(|| panic!("node {id} exited before listening"))
                .unwrap();
            addr = l.strip_prefix("listening on ").map(str::to_owned);
        }
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            id: id.to_owned(),
            addr: addr.unwrap(),
            proc: Proc(child),
        }
    }

    /// The nodes' addresses starting with node `first`, for a client's `--relay`.
    fn relays_from(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|i| self.nodes[(first + i) % n].addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_at(&self, addr: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.addr == addr)
            .unwrap_or_else(|| panic!("no node listens on {addr}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // With BLINDCALL_NODE_LOG set, the nodes' logs outlive the test's temporary directory.
        if std::env::var_os("BLINDCALL_NODE_LOG").is_some() {
            let keep = std::env::temp_dir().join("blindcall-cluster-logs");
            let _ = std::fs::create_dir_all(&keep);
            for n in &self.nodes {
                let f = format!("{}.log", n.id);
                let _ = std::fs::copy(self.dir.path().join(&f), keep.join(&f));
            }
            eprintln!("node logs in {}", keep.display());
        }
    }
}

/// A client of the call in `room`, joining through node `first` (then the others in order).
#[allow(clippy::too_many_arguments)]
fn join(
    c: &Cluster,
    room: &str,
    who: &'static str,
    ip: u8,
    role: RoleArg,
    first: usize,
    invite: &Path,
    tx: &mpsc::Sender<Line>,
) -> Proc {
    common::join(
        JoinSpec {
            relays: c.relays_from(first),
            trust: &c.trust,
            who,
            ip: Ipv4Addr::new(127, 0, 0, ip),
            role,
            invite,
            token: common::token(SECRET, room, role),
        },
        tx.clone(),
    )
}

/// Waits until `who` opens frames of every one of `others`.
fn hears(r: &mut Reports, who: &str, others: &[&str]) -> Value {
    r.until(who, &format!("{who} to open frames of {others:?}"), |v| {
        v["event"] == "stats" && others.iter().all(|o| opened_from(v, o) > 0)
    })
    .1
}

/// Waits until `who`, on a relay other than `not_on`, opens frames of every one of `others`
/// that it had not opened at its first stats line read after `since` on that relay: media
/// flows again (or goes on) after `since`. Returns when that line was read, and the line.
fn hears_again(
    r: &mut Reports,
    who: &str,
    others: &[&str],
    since: Instant,
    not_on: Option<&str>,
) -> (Instant, Value) {
    let moved = |v: &Value| not_on.is_none_or(|n| v["relay_addr"].as_str() != Some(n));
    let (at, first) = r.until_after(
        who,
        &format!("{who}'s first report after {since:?} on another relay than {not_on:?}"),
        Some(since),
        |v| v["event"] == "stats" && moved(v),
    );
    let base: BTreeMap<&str, u64> = others
        .iter()
        .map(|o| (*o, opened_from(&first, o)))
        .collect();
    r.until_after(
        who,
        &format!("{who} to open new frames of {others:?}"),
        Some(at),
        |v| v["event"] == "stats" && moved(v) && others.iter().all(|o| opened_from(v, o) > base[o]),
    )
}

/// `(epoch, code)` of a stats line.
fn epoch_code(v: &Value) -> (u64, String) {
    (
        v["epoch"].as_u64().expect("an epoch"),
        v["code"].as_str().expect("a security code").to_owned(),
    )
}

/// After dave joined at `epoch`: one commit added him and his own path update followed, and
/// all four reach that epoch with the same security code.
fn four_agree(r: &mut Reports, epoch: u64) {
    let want = epoch + 2;
    let mut codes = Vec::new();
    for who in ["alice", "bob", "carol", "dave"] {
        let (_, v) = r.until(
            who,
            &format!("{who} at epoch {want} with four members"),
            |v| v["event"] == "stats" && v["members"] == 4 && v["epoch"] == want,
        );
        codes.push(epoch_code(&v));
    }
    assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
}

/// Nobody saw anybody leave, and no call ended.
fn nobody_left(r: &Reports, names: &[&str]) {
    for who in names {
        for v in r.events_of(who, "members") {
            assert!(
                v["left"].as_array().is_none_or(Vec::is_empty),
                "{who} saw a member leave: {v}"
            );
        }
        assert!(
            r.events_of(who, "ended").is_empty(),
            "{who}'s call ended: {:?}",
            r.events_of(who, "ended")
        );
    }
}

/// Starts alice (host, through node 0), bob (node 1) and carol (node 2) in `room` and waits
/// until everyone hears everyone; returns the processes and the home node's index.
fn three_in_a_call(
    c: &Cluster,
    room: &str,
    r: &mut Reports,
    tx: &mpsc::Sender<Line>,
) -> (Vec<Proc>, usize) {
    let invite = c.dir.path().join(format!("{room}.invite"));
    let alice = join(c, room, "alice", 61, RoleArg::Host, 0, &invite, tx);
    r.until("alice", "alice's group", |v| v["event"] == "joined");
    let bob = join(c, room, "bob", 62, RoleArg::Guest, 1, &invite, tx);
    r.until("bob", "bob to join", |v| v["event"] == "joined");
    let carol = join(c, room, "carol", 63, RoleArg::Guest, 2, &invite, tx);
    r.until("carol", "carol to join", |v| v["event"] == "joined");
    let mut homes = Vec::new();
    for (who, others) in [
        ("alice", ["bob", "carol"]),
        ("bob", ["alice", "carol"]),
        ("carol", ["alice", "bob"]),
    ] {
        let v = hears(r, who, &others);
        homes.push(v["relay_addr"].as_str().unwrap().to_owned());
    }
    // One room, one home: the members who reached other nodes were redirected to it.
    assert!(homes.iter().all(|h| *h == homes[0]), "{homes:?}");
    let home = c.node_at(&homes[0]);
    (vec![alice, bob, carol], home)
}

// covers: CL-PROC-1, CL-HOME-8, CL-HOME-10, SDK-RES-8
#[test]
fn failover_a_call_outlives_a_sigkill_of_its_home_node() {
    let Some(mut c) = Cluster::start_or_skip("failover", false) else {
        return;
    };
    let kills: usize = std::env::var("BLINDCALL_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (tx, rx) = mpsc::channel();
    let mut r = Reports::new(rx);
    let (_clients, mut home) = three_in_a_call(&c, "failover-room", &mut r, &tx);
    let names = ["alice", "bob", "carol"];
    let before = {
        let (_, v) = r.until("alice", "alice's stats", |v| v["event"] == "stats");
        epoch_code(&v)
    };

    let mut to_media = Vec::new();
    for _ in 0..kills {
        let killed = c.nodes[home].addr.clone();
        let killed_at = Instant::now();
        let id = c.nodes[home].id.clone();
        // SIGKILL: no goodbye, no hand-over, its heartbeat just stops.
        let _ = c.nodes[home].proc.0.kill();
        let _ = c.nodes[home].proc.0.wait();
        let mut last = killed_at;
        let mut addrs = Vec::new();
        for who in names {
            let others: Vec<&str> = names.iter().copied().filter(|o| *o != who).collect();
            let (at, v) = hears_again(&mut r, who, &others, killed_at, Some(&killed));
            last = last.max(at);
            assert_eq!(
                epoch_code(&v),
                before,
                "{who}: the failover changed the epoch"
            );
            addrs.push(v["relay_addr"].as_str().unwrap().to_owned());
        }
        to_media.push(last.duration_since(killed_at));
        assert!(
            addrs.iter().all(|a| *a == addrs[0] && *a != killed),
            "{addrs:?}"
        );
        // The killed node comes back (same id and address, a new process) for the next round:
        // the clients know the nodes by their addresses.
        let node = c.start_node(&id, false, &killed);
        c.nodes[home] = node;
        home = c.node_at(&addrs[0]);
    }
    nobody_left(&r, &names);

    // After the failovers, dave joins through the restarted node: one commit adds him and
    // every member merges it (same epoch, same code everywhere).
    let invite = c.dir.path().join("failover-room.invite");
    let restarted = (home + 1) % c.nodes.len();
    let _dave = join(
        &c,
        "failover-room",
        "dave",
        64,
        RoleArg::Guest,
        restarted,
        &invite,
        &tx,
    );
    r.until("dave", "dave to join", |v| v["event"] == "joined");
    four_agree(&mut r, before.0);

    to_media.sort();
    eprintln!(
        "SIGKILL of the home → media opening again at every member (stats lines 1 s apart): \
         p50 {:?} p99 {:?} max {:?} over {kills} kills (lease {LEASE_MS} ms)",
        percentile(&to_media, 0.5),
        percentile(&to_media, 0.99),
        to_media.last().unwrap()
    );
}

// covers: CL-PROC-2
#[test]
fn drain_a_node_stopped_with_drain_hands_its_call_over_and_exits() {
    let Some(mut c) = Cluster::start_or_skip("drain", true) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let mut r = Reports::new(rx);
    let (_clients, home) = three_in_a_call(&c, "drain-room", &mut r, &tx);
    let names = ["alice", "bob", "carol"];
    let (_, v) = r.until("alice", "alice's stats", |v| v["event"] == "stats");
    let before = epoch_code(&v);
    let drained = c.nodes[home].addr.clone();
    let signalled = Instant::now();
    c.nodes[home].proc.signal("-TERM");
    let status = c.nodes[home].proc.wait_exit("the drained node to exit");
    assert!(status.success(), "the drained node exited with {status}");
    let mut addrs = Vec::new();
    for who in names {
        let others: Vec<&str> = names.iter().copied().filter(|o| *o != who).collect();
        let (_, v) = hears_again(&mut r, who, &others, signalled, Some(&drained));
        assert_eq!(epoch_code(&v), before, "{who}: the drain changed the epoch");
        addrs.push(v["relay_addr"].as_str().unwrap().to_owned());
    }
    assert!(
        addrs.iter().all(|a| *a == addrs[0] && *a != drained),
        "{addrs:?}"
    );
    nobody_left(&r, &names);
    c.nodes.remove(home);
}

// covers: CL-PROC-3
#[test]
fn nats_down_media_goes_on_and_a_join_approved_meanwhile_lands_when_it_is_back() {
    let Some(mut c) = Cluster::start_or_skip("nats_outage", false) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let mut r = Reports::new(rx);
    let (_clients, home) = three_in_a_call(&c, "outage-room", &mut r, &tx);
    let names = ["alice", "bob", "carol"];
    let (_, v) = r.until("alice", "alice's stats", |v| v["event"] == "stats");
    let before = epoch_code(&v);

    c.nats.kill();
    let down = Instant::now();
    // Media goes on through the home without its store.
    for who in names {
        let others: Vec<&str> = names.iter().copied().filter(|o| *o != who).collect();
        hears_again(&mut r, who, &others, down, None);
    }
    // dave asks to join through the home; alice approves; the commit cannot be sequenced
    // until the store is back.
    let invite = c.dir.path().join("outage-room.invite");
    let _dave = join(
        &c,
        "outage-room",
        "dave",
        64,
        RoleArg::Guest,
        home,
        &invite,
        &tx,
    );
    r.until("alice", "dave's join request", |v| {
        v["event"] == "join_requested"
    });
    r.until("alice", "the refusal of alice's commit", |v| {
        v["event"] == "warning" && v.to_string().contains("STORE_UNAVAILABLE")
    });
    c.nats.restart();
    r.until("dave", "dave to join", |v| v["event"] == "joined");
    four_agree(&mut r, before.0);
    nobody_left(&r, &names);
}

// covers: CL-STATUS-1, CL-HOME-11
#[test]
fn new_rooms_spread_over_the_nodes_and_status_lists_them() {
    let Some(c) = Cluster::start_or_skip("status", false) else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    let mut r = Reports::new(rx);
    // Six calls, every one created through node n1: each new room goes to the node homing the
    // fewest rooms (n1 on a tie), so they spread two per node. A host that created its room
    // hangs up (the room stays in the store).
    let hosts = ["h0", "h1", "h2", "h3", "h4", "h5"];
    for (i, who) in hosts.into_iter().enumerate() {
        let invite = c.dir.path().join(format!("{who}.invite"));
        let room = format!("room-{i}");
        let host = join(&c, &room, who, 80 + i as u8, RoleArg::Host, 0, &invite, &tx);
        r.until(who, &format!("{who}'s group"), |v| v["event"] == "joined");
        drop(host);
    }
    let status = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blindcall"));
        cmd.args(["cluster", "status", "--cluster", &c.nats.url()]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&status(true)).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{v}");
    assert!(nodes.iter().all(|n| n["alive"] == true), "{v}");
    let addrs: Vec<&str> = nodes.iter().map(|n| n["addr"].as_str().unwrap()).collect();
    for n in &c.nodes {
        assert!(
            addrs.contains(&n.addr.as_str()),
            "{} not in {addrs:?}",
            n.addr
        );
    }
    let rooms = v["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 6, "{v}");
    let homes: Vec<&str> = (0..6)
        .map(|i| {
            let room = rooms
                .iter()
                .find(|r| r["room"] == format!("room-{i}"))
                .unwrap_or_else(|| panic!("room-{i} not listed: {v}"));
            assert_eq!(room["members"], 1, "{room}");
            assert_eq!(room["term"], 1, "{room}");
            assert!(room["epoch"].as_u64().is_some(), "{room}");
            room["home"].as_str().unwrap()
        })
        .collect();
    assert_eq!(homes, ["n1", "n2", "n3", "n1", "n2", "n3"], "{v}");
    assert!(v["refused"].as_array().unwrap().is_empty(), "{v}");
    let text = status(false);
    assert!(
        text.contains("rooms per home node: n1=2 n2=2 n3=2"),
        "{text}"
    );
}

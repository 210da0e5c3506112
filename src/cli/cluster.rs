//! `blindcall cluster status`: a relay cluster's nodes and rooms, read from its NATS JetStream
//! room store (spec/cluster.md, CL-STATUS-1).

use std::collections::BTreeMap;
use std::time::Duration;

use blindcall_relay::cli::redact_url;
use blindcall_relay::store::{
    ClusterStatus, DEFAULT_BUCKET, DEFAULT_NODES_BUCKET, JetStreamConfig, RoomStore,
};
use serde_json::json;

use super::CliError;

/// `blindcall cluster`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// List the nodes (alive, rooms, members, connections) and rooms (home, epoch, members).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// The cluster's NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    cluster: String,
    /// The rooms bucket (as in the nodes' `[cluster] bucket`).
    #[arg(long, default_value = DEFAULT_BUCKET)]
    bucket: String,
    /// The heartbeats bucket.
    #[arg(long, default_value = DEFAULT_NODES_BUCKET)]
    nodes_bucket: String,
    /// A node whose last heartbeat is older than this is shown as not alive (the nodes' lease).
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    lease_ms: u64,
    /// One JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs the subcommand.
pub(crate) fn run(args: Args) -> Result<(), CliError> {
    let Sub::Status(a) = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let url = redact_url(&a.cluster);
    let status = runtime.block_on(async {
        let mut cfg = JetStreamConfig::new(a.cluster.clone());
        cfg.bucket = a.bucket.clone();
        cfg.nodes_bucket = a.nodes_bucket.clone();
        let store = RoomStore::jetstream(cfg)
            .await
            .map_err(|e| format!("cannot reach the room store at {url}: {e}"))?;
        store
            .status()
            .await
            .map_err(|e| format!("cannot read the room store at {url}: {e}"))
    })?;
    let lease = Duration::from_millis(a.lease_ms);
    if a.json {
        println!("{}", to_json(&status, lease));
    } else {
        print!("{}", to_text(&status, lease));
    }
    Ok(())
}

/// A room id as people read it: its text when it is printable ASCII, else hex.
fn room_name(id: &[u8]) -> String {
    if !id.is_empty() && id.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(id).into_owned()
    } else {
        format!("0x{}", hex::encode(id))
    }
}

fn to_json(s: &ClusterStatus, lease: Duration) -> serde_json::Value {
    json!({
        "nodes": s.nodes.iter().map(|n| json!({
            "id": n.record.node_id,
            "addr": n.record.addr,
            "alive": n.age <= lease,
            "age_ms": u64::try_from(n.age.as_millis()).unwrap_or(u64::MAX),
            "draining": n.record.draining,
            "rooms": n.record.rooms,
            "members": n.record.members,
            "connections": n.record.connections,
        })).collect::<Vec<_>>(),
        "rooms": s.rooms.iter().map(|r| json!({
            "room": room_name(&r.room.0),
            "home": r.home.as_ref().map(|h| h.node_id.clone()),
            "term": r.home.as_ref().map(|h| h.term),
            "epoch": r.epoch,
            "members": r.members,
        })).collect::<Vec<_>>(),
        "refused": s.refused,
    })
}

fn to_text(s: &ClusterStatus, lease: Duration) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "nodes ({}):", s.nodes.len());
    let _ = writeln!(
        out,
        "  {:<16} {:<22} {:<6} {:>8} {:>6} {:>8} {:>11}  draining",
        "id", "address", "alive", "beat", "rooms", "members", "connections"
    );
    for n in &s.nodes {
        let r = &n.record;
        let _ = writeln!(
            out,
            "  {:<16} {:<22} {:<6} {:>6.1} s {:>6} {:>8} {:>11}  {}",
            r.node_id.escape_debug().to_string(),
            r.addr.escape_debug().to_string(),
            if n.age <= lease { "yes" } else { "no" },
            n.age.as_secs_f64(),
            r.rooms,
            r.members,
            r.connections,
            if r.draining { "yes" } else { "no" }
        );
    }
    let mut per_home: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &s.rooms {
        if let Some(h) = &r.home {
            *per_home.entry(h.node_id.as_str()).or_default() += 1;
        }
    }
    let _ = writeln!(out, "rooms ({}):", s.rooms.len());
    let _ = writeln!(
        out,
        "  {:<24} {:<16} {:>5} {:>6} {:>8}",
        "room", "home", "term", "epoch", "members"
    );
    for r in &s.rooms {
        let dash = || "-".to_owned();
        let _ = writeln!(
            out,
            "  {:<24} {:<16} {:>5} {:>6} {:>8}",
            room_name(&r.room.0).escape_debug().to_string(),
            r.home
                .as_ref()
                .map_or_else(dash, |h| h.node_id.escape_debug().to_string()),
            r.home.as_ref().map_or_else(dash, |h| h.term.to_string()),
            r.epoch.map_or_else(dash, |e| e.to_string()),
            r.members.map_or_else(dash, |m| m.to_string()),
        );
    }
    let spread: Vec<String> = s
        .nodes
        .iter()
        .map(|n| {
            let id = n.record.node_id.as_str();
            format!("{id}={}", per_home.get(id).copied().unwrap_or(0))
        })
        .collect();
    let _ = writeln!(out, "rooms per home node: {}", spread.join(" "));
    for r in &s.refused {
        let _ = writeln!(out, "refused entry: {}", r.escape_debug());
    }
    out
}

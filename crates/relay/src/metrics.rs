//! Prometheus metrics: the DS's counters, the network shell's counters, and a minimal HTTP/1.1
//! responder for `GET /metrics` (OpenMetrics text).
//!
//! Every metric is prefixed `blindcall_relay_`. Media packet counters belong to the media
//! forwarder: [`crate::forward::ForwarderHandle`] plugs them in as a [`MetricsSource`]
//! (`media_*`, added by [`crate::start_with_media`]); nothing is exported that is not counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use blindcall_proto::{CommitRejectReason, ErrorCode, RefusedReason, ResumeRefusedReason};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::server::Cmd;
use crate::server::DsSnapshot;

/// Extra metrics registered into every scrape (the media forwarder's hook).
///
/// `register` is called once per scrape with the `blindcall_relay`-prefixed registry; register
/// clones of long-lived metrics (prometheus-client metrics share their value when cloned) or
/// metrics built from a snapshot taken now (as the media forwarder does).
pub trait MetricsSource: Send + Sync {
    /// Register this source's metrics.
    fn register(&self, registry: &mut Registry);
}

/// Counters the network shell keeps (the DS keeps its own, see [`crate::DsCounters`]).
#[derive(Debug, Clone)]
pub struct ShellMetrics {
    /// Control-channel plaintext bytes read from clients.
    pub bytes_in: Counter,
    /// Control-channel plaintext bytes written to clients.
    pub bytes_out: Counter,
    /// TLS handshakes that failed.
    pub tls_handshake_failures: Counter,
    /// TLS handshakes that did not finish in time.
    pub tls_handshake_timeouts: Counter,
    /// `accept()` errors.
    pub accept_errors: Counter,
    /// Connections closed at once because `max_connections` were open.
    pub connections_over_limit: Counter,
    /// Connections closed at once because their source address held
    /// `max_connections_per_address` already.
    pub connections_over_address_limit: Counter,
    /// Connections closed because their writer queue overflowed (peer not reading).
    pub writer_overflows: Counter,
    /// Forwarder events dropped because the forwarder's queue was full.
    pub forwarder_events_dropped: Counter,
    /// Media signals from members while no forwarder is attached.
    pub media_signals_unrouted: Counter,
    /// Forwarder signals the DS refused (unknown connection, not a member, too large).
    pub forwarder_commands_refused: Counter,
    /// Seconds from reading a commit's last bytes to its broadcast being queued to every member.
    pub commit_sequencing: Histogram,
    /// Cluster mode: seconds from starting a commit claim in the room store to its answer
    /// (the read first included, when asked), failed claims included.
    pub store_claim: Histogram,
    /// Cluster mode: seconds each other room-store operation took, by operation (`home_claim`,
    /// `read_winner`, `genesis_write`, `genesis_read`, `heartbeat`, `ban`, `lock`, `waiting`),
    /// failures included.
    pub store_op: Family<Labels, Histogram, fn() -> Histogram>,
}

fn store_op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl ShellMetrics {
    /// Zeroed counters; the histograms span 50 µs to ~1.6 s (commits) and ~6.6 s (claims).
    pub fn new() -> Self {
        Self {
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            tls_handshake_failures: Counter::default(),
            tls_handshake_timeouts: Counter::default(),
            accept_errors: Counter::default(),
            connections_over_limit: Counter::default(),
            connections_over_address_limit: Counter::default(),
            writer_overflows: Counter::default(),
            forwarder_events_dropped: Counter::default(),
            media_signals_unrouted: Counter::default(),
            forwarder_commands_refused: Counter::default(),
            commit_sequencing: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            store_claim: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            store_op: Family::new_with_constructor(store_op_histogram),
        }
    }

    /// Record how long room-store operation `op` took.
    pub fn observe_store(&self, op: &'static str, took: std::time::Duration) {
        self.store_op
            .get_or_create(&vec![("op", op.to_owned())])
            .observe(took.as_secs_f64());
    }
}

impl Default for ShellMetrics {
    fn default() -> Self {
        Self::new()
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// A counter family over a wire enum: every known value (from 0), plus any unknown value seen.
fn family<K: std::fmt::Display + Ord + Copy>(
    label: &'static str,
    known: &[K],
    counts: &BTreeMap<K, u64>,
) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    for k in known {
        f.get_or_create(&vec![(label, k.to_string())]).inc_by(0);
    }
    for (k, v) in counts {
        f.get_or_create(&vec![(label, k.to_string())]).inc_by(*v);
    }
    f
}

/// Render every metric as OpenMetrics text.
pub fn render(
    snap: &DsSnapshot,
    shell: &ShellMetrics,
    sources: &[Arc<dyn MetricsSource>],
) -> Result<String, std::fmt::Error> {
    let mut r = Registry::with_prefix("blindcall_relay");
    let o = &snap.occupancy;
    let c = &snap.counters;
    r.register(
        "rooms",
        "Rooms with at least one connection",
        gauge(o.rooms),
    );
    r.register(
        "connections",
        "Open control connections (TLS established)",
        gauge(o.connections),
    );
    r.register(
        "participants",
        "Connections admitted to a room",
        gauge(o.admitted),
    );
    r.register(
        "members",
        "Connections that are members of their room's MLS group",
        gauge(o.members),
    );
    r.register("waiting", "Joiners in a waiting room", gauge(o.waiting));
    r.register(
        "connections_opened",
        "Control connections opened",
        counter(c.connections_opened),
    );
    r.register(
        "admitted",
        "Connections admitted to a room",
        counter(c.admitted),
    );
    r.register(
        "refused",
        "Connections refused or expelled, by reason",
        family("reason", RefusedReason::KNOWN, &c.refused),
    );
    r.register(
        "protocol_errors",
        "Error messages sent, by code",
        family("code", ErrorCode::KNOWN, &c.errors),
    );
    r.register(
        "commits_accepted",
        "Commits sequenced",
        counter(c.commits_accepted),
    );
    r.register(
        "commits_rejected",
        "Commits refused, by reason",
        family("reason", CommitRejectReason::KNOWN, &c.commits_rejected),
    );
    r.register(
        "store_claims_won",
        "Store mode: commit claims that won their epoch",
        counter(c.claims_won),
    );
    r.register(
        "store_claims_lost",
        "Store mode: commit claims that lost their epoch to another node",
        counter(c.claims_lost),
    );
    r.register(
        "store_claims_failed",
        "Store mode: commit claims that failed (STORE_UNAVAILABLE)",
        counter(c.claims_failed),
    );
    r.register(
        "store_winners_applied",
        "Store mode: other nodes' winners merged here (by a lost claim or followed)",
        counter(c.winners_applied),
    );
    r.register(
        "store_winners_duplicate",
        "Store mode: followed winners of epochs already merged here",
        counter(c.winners_duplicate),
    );
    r.register(
        "store_winners_refused",
        "Store mode: other nodes' winners that did not validate here",
        counter(c.winners_refused),
    );
    r.register(
        "cluster_homes",
        "Cluster: rooms this node serves as their home",
        gauge(o.homes),
    );
    r.register(
        "cluster_heartbeats_received",
        "Cluster: other nodes' heartbeats received",
        counter(c.heartbeats_received),
    );
    r.register(
        "cluster_redirects",
        "Cluster: connections sent to their room's home node",
        counter(c.redirects),
    );
    r.register(
        "cluster_home_claims_won",
        "Cluster: room home terms claimed and won by this node",
        counter(c.home_claims_won),
    );
    r.register(
        "cluster_home_claims_lost",
        "Cluster: room home terms claimed by this node but held by another",
        counter(c.home_claims_lost),
    );
    r.register(
        "cluster_home_claims_failed",
        "Cluster: room home claims or handoffs that failed (store unavailable)",
        counter(c.home_claims_failed),
    );
    r.register(
        "cluster_rooms_loaded",
        "Cluster: rooms loaded from the store on becoming their home (takeovers, handoffs in)",
        counter(c.rooms_loaded),
    );
    r.register(
        "cluster_homes_lost",
        "Cluster: rooms served here taken by another node with a higher term",
        counter(c.homes_lost),
    );
    r.register(
        "cluster_handoffs_out",
        "Cluster: rooms handed to another node by a drain",
        counter(c.handoffs_out),
    );
    r.register(
        "store_bans_shared",
        "Store mode: bans made here and written to the room store",
        counter(c.bans_shared),
    );
    r.register(
        "store_bans_learned",
        "Store mode: bans made on other nodes that reached this one",
        counter(c.bans_learned),
    );
    r.register(
        "store_lock_changes_shared",
        "Store mode: room lock changes made here and written to the room store",
        counter(c.lock_changes_shared),
    );
    r.register(
        "store_lock_changes_learned",
        "Store mode: room lock changes from the room store applied here",
        counter(c.lock_changes_learned),
    );
    r.register(
        "store_waiting_learned",
        "Store mode: joiners waiting on other nodes shown to members here",
        counter(c.waiting_learned),
    );
    r.register(
        "store_waiting_refused",
        "Store mode: other nodes' waiting entries not shown here",
        counter(c.waiting_refused),
    );
    r.register(
        "groups_created",
        "Groups bootstrapped",
        counter(c.groups_created),
    );
    r.register(
        "key_packages_stored",
        "KeyPackages stored",
        counter(c.key_packages_stored),
    );
    r.register(
        "welcomes_routed",
        "Welcomes routed to joiners",
        counter(c.welcomes_routed),
    );
    r.register(
        "remove_proposals",
        "Remove proposals the relay issued as external sender",
        counter(c.remove_proposals),
    );
    r.register(
        "internal_faults",
        "Internal faults (bugs or library errors)",
        counter(c.internal_faults),
    );
    r.register(
        "unknown_connection_inputs",
        "Inputs for connections the DS did not know",
        counter(c.unknown_connection_inputs),
    );
    r.register(
        "media_signals_in",
        "Media signals from members to the forwarder",
        counter(c.media_signals_in),
    );
    r.register(
        "media_signals_out",
        "Media signals from the forwarder to members",
        counter(c.media_signals_out),
    );
    r.register(
        "member_proposals",
        "Members' own proposals (leaves) queued and sent to the other members",
        counter(c.member_proposals),
    );
    r.register(
        "members_removed",
        "Connected members removed by a sequenced commit (their connections closed)",
        counter(c.members_removed),
    );
    r.register(
        "peer_messages",
        "Members' peer messages fanned out to the other members",
        counter(c.peer_messages),
    );
    let peer_dropped = Family::<Labels, Counter>::default();
    for (reason, n) in [
        ("rate_limited", c.peer_messages_rate_limited),
        ("too_large", c.peer_messages_too_large),
    ] {
        peer_dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }
    r.register(
        "peer_messages_dropped",
        "Members' peer messages dropped (over the member's budget, or too large), by reason",
        peer_dropped,
    );
    r.register(
        "resumes_accepted",
        "Members that resumed their leaf on a new connection",
        counter(c.resumes_accepted),
    );
    r.register(
        "resumes_refused",
        "Resumes refused, by reason",
        family("reason", ResumeRefusedReason::KNOWN, &c.resumes_refused),
    );
    r.register(
        "commits_replayed",
        "Sequenced commits sent again to resuming members",
        counter(c.commits_replayed),
    );
    r.register(
        "resume_graces_started",
        "Lost members whose leaf the relay kept for a resume",
        counter(c.graces_started),
    );
    r.register(
        "resume_graces_expired",
        "Lost members not back within the grace (their removal was then proposed)",
        counter(c.graces_expired),
    );
    r.register(
        "control_bytes_in",
        "Control-channel bytes read (after TLS)",
        shell.bytes_in.clone(),
    );
    r.register(
        "control_bytes_out",
        "Control-channel bytes written (before TLS)",
        shell.bytes_out.clone(),
    );
    r.register(
        "tls_handshake_failures",
        "TLS handshakes that failed",
        shell.tls_handshake_failures.clone(),
    );
    r.register(
        "tls_handshake_timeouts",
        "TLS handshakes that timed out",
        shell.tls_handshake_timeouts.clone(),
    );
    r.register(
        "accept_errors",
        "TCP accept errors",
        shell.accept_errors.clone(),
    );
    r.register(
        "connections_over_limit",
        "Connections closed at once because the connection limit was reached",
        shell.connections_over_limit.clone(),
    );
    r.register(
        "connections_over_address_limit",
        "Connections closed at once because their source address held its share already",
        shell.connections_over_address_limit.clone(),
    );
    r.register(
        "writer_overflows",
        "Connections closed because they did not read their messages",
        shell.writer_overflows.clone(),
    );
    r.register(
        "forwarder_events_dropped",
        "Events for the media forwarder dropped because its queue was full",
        shell.forwarder_events_dropped.clone(),
    );
    r.register(
        "media_signals_unrouted",
        "Media signals received while no media forwarder is attached",
        shell.media_signals_unrouted.clone(),
    );
    r.register(
        "forwarder_commands_refused",
        "Media signals from the forwarder the DS refused",
        shell.forwarder_commands_refused.clone(),
    );
    r.register(
        "commit_sequencing_seconds",
        "Time from reading a commit to queuing its broadcast to every member",
        shell.commit_sequencing.clone(),
    );
    r.register(
        "store_claim_seconds",
        "Cluster mode: time from starting a commit claim in the room store to its answer",
        shell.store_claim.clone(),
    );
    r.register(
        "store_op_seconds",
        "Cluster mode: time each other room-store operation took, by operation",
        shell.store_op.clone(),
    );
    for s in sources {
        s.register(&mut r);
    }
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

/// Serve `GET /metrics` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    to_driver: mpsc::Sender<Cmd>,
    shell: ShellMetrics,
    sources: Vec<Arc<dyn MetricsSource>>,
    shutdown: CancellationToken,
) {
    let sources: Arc<[Arc<dyn MetricsSource>]> = sources.into();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let (to_driver, shell, sources) = (to_driver.clone(), shell.clone(), sources.clone());
        tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                respond(stream, &to_driver, &shell, &sources),
            )
            .await;
            if !matches!(r, Ok(Ok(()))) {
                debug!("metrics request failed or timed out");
            }
        });
    }
}

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

async fn respond(
    mut stream: TcpStream,
    to_driver: &mpsc::Sender<Cmd>,
    shell: &ShellMetrics,
    sources: &[Arc<dyn MetricsSource>],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return write_response(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
            )
            .await;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return write_response(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    if path != b"/metrics" {
        return write_response(&mut stream, "404 Not Found", "text/plain", "try /metrics\n").await;
    }
    let (tx, rx) = oneshot::channel();
    let snap = match to_driver.send(Cmd::Snapshot(tx)).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let Some(snap) = snap else {
        return write_response(
            &mut stream,
            "503 Service Unavailable",
            "text/plain",
            "stopping\n",
        )
        .await;
    };
    match render(&snap, shell, sources) {
        Ok(body) => {
            write_response(
                &mut stream,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
            )
            .await
        }
        Err(_) => {
            write_response(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                "encode failed\n",
            )
            .await
        }
    }
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use blindcall_proto::{CommitRejectReason, ErrorCode, RefusedReason, ResumeRefusedReason};

    use super::*;

    struct Media(Counter);

    impl MetricsSource for Media {
        fn register(&self, registry: &mut Registry) {
            registry.register("media_packets_in", "test", self.0.clone());
        }
    }

    // covers: OPS-MET-1
    #[test]
    fn every_reason_is_exported_from_zero_and_sources_plug_in() {
        let mut snap = DsSnapshot::default();
        snap.counters.refused.insert(RefusedReason::EXPIRED, 2);
        snap.counters.refused.insert(RefusedReason(999), 1);
        snap.counters.errors.insert(ErrorCode::FRAME_TOO_LARGE, 3);
        snap.counters
            .resumes_refused
            .insert(ResumeRefusedReason::TOO_FAR_BEHIND, 5);
        snap.counters.resumes_accepted = 6;
        snap.counters.graces_expired = 8;
        snap.occupancy.rooms = 4;
        let shell = ShellMetrics::new();
        shell.bytes_in.inc_by(10);
        shell.commit_sequencing.observe(0.001);
        let media = Media(Counter::default());
        media.0.inc_by(7);
        let sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(media)];
        let text = render(&snap, &shell, &sources).unwrap();
        for line in [
            "blindcall_relay_rooms 4",
            "blindcall_relay_refused_total{reason=\"EXPIRED\"} 2",
            "blindcall_relay_refused_total{reason=\"RefusedReason(0x3e7)\"} 1",
            "blindcall_relay_refused_total{reason=\"MISSING_TOKEN\"} 0",
            "blindcall_relay_protocol_errors_total{code=\"FRAME_TOO_LARGE\"} 3",
            "blindcall_relay_protocol_errors_total{code=\"RATE_LIMITED\"} 0",
            "blindcall_relay_commits_rejected_total{reason=\"EPOCH_TAKEN\"} 0",
            "blindcall_relay_control_bytes_in_total 10",
            "blindcall_relay_commit_sequencing_seconds_count 1",
            "blindcall_relay_store_claim_seconds_count 0",
            "blindcall_relay_media_packets_in_total 7",
            "blindcall_relay_resumes_accepted_total 6",
            "blindcall_relay_resumes_refused_total{reason=\"TOO_FAR_BEHIND\"} 5",
            "blindcall_relay_resumes_refused_total{reason=\"BAD_SIGNATURE\"} 0",
            "blindcall_relay_resume_graces_started_total 0",
            "blindcall_relay_resume_graces_expired_total 8",
            "blindcall_relay_commits_replayed_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        let known = RefusedReason::KNOWN.len()
            + ErrorCode::KNOWN.len()
            + CommitRejectReason::KNOWN.len()
            + ResumeRefusedReason::KNOWN.len();
        let labelled = text
            .lines()
            .filter(|l| l.contains("{reason=") || l.contains("{code="))
            .filter(|l| !l.starts_with("blindcall_relay_peer_messages_dropped"))
            .count();
        assert_eq!(
            labelled,
            known + 1,
            "every known value plus the unknown one"
        );
    }
}

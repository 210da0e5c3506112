//! The relay over real TLS on loopback: admission, metrics, idle and handshake timeouts, stuck
//! readers, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use blindcall_proto::*;
use blindcall_relay::server::tls::client_config_trusting;
use common::tls::*;
use common::{mint, mint_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// covers: CP-TLS-1, ADM-HELLO-1, ADM-LOCK-1, ADM-BAN-1, OPS-MET-1
#[test]
fn every_refusal_over_tls_is_typed_closed_and_exported() {
    run(every_refusal_over_tls_is_typed_closed_and_exported_body());
}

async fn every_refusal_over_tls_is_typed_closed_and_exported_body() {
    let relay = start_relay(|_| {}).await;
    let room = b"room-adm";
    let now = now_secs();
    // Token refusals.
    expect_refused(&relay, room, b"", RefusedReason::MISSING_TOKEN).await;
    let forged = mint_with(&[9; 32], room, Role::GUEST, now + 600, 1);
    expect_refused(&relay, room, &forged, RefusedReason::BAD_SIGNATURE).await;
    let expired = mint(room, Role::GUEST, now - 1, 1);
    expect_refused(&relay, room, &expired, RefusedReason::EXPIRED).await;
    let elsewhere = mint(b"room-other", Role::GUEST, now + 600, 1);
    expect_refused(&relay, room, &elsewhere, RefusedReason::WRONG_ROOM).await;
    // A locked room refuses new guests: admitted to the lobby (to resume, if they can), they
    // are refused the moment they try to queue.
    let (mut host, ack) = relay.admitted(room, Role::HOST, 10, "host").await;
    assert_eq!(ack.role, Role::HOST);
    assert_eq!(host.tls_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    host.send(Body::LockRoom).await;
    assert!(matches!(host.recv("lock state").await, Body::RoomStateUpdate(s) if s.locked == 1));
    let (mut late, ack) = relay.admitted(room, Role::GUEST, 11, "late").await;
    assert_eq!(ack.room.locked, 1);
    late.send(Body::PublishKeyPackage(PublishKeyPackage {
        key_package: VLBytes::new(vec![0; 8]),
        join_proof: None,
    }))
    .await;
    let (bodies, ending) = late.closed("refusal in a locked room").await;
    assert_eq!(bodies, vec![refused(RefusedReason::ROOM_LOCKED)]);
    assert_eq!(ending, Ending::Clean);
    host.send(Body::UnlockRoom).await;
    assert!(matches!(host.recv("unlock state").await, Body::RoomStateUpdate(s) if s.locked == 0));
    // A removed participant is expelled and stays out.
    let banned = token(room, Role::GUEST, 12);
    let mut guest = relay.client().await;
    let Body::HelloAck(g) = guest.hello(room, &banned, "g").await else {
        panic!("guest not admitted")
    };
    host.send(Body::RemoveParticipant(RemoveParticipant {
        conn_id: g.conn_id,
    }))
    .await;
    let (bodies, ending) = guest.closed("removal").await;
    assert_eq!(
        bodies.last(),
        Some(&refused(RefusedReason::REMOVED_BY_HOST))
    );
    assert_eq!(ending, Ending::Clean);
    expect_refused(&relay, room, &banned, RefusedReason::REMOVED_BY_HOST).await;
    // Every refusal is counted by reason on the metrics endpoint.
    let m = relay.scrape().await;
    for (reason, n) in [
        ("MISSING_TOKEN", 1.0),
        ("BAD_SIGNATURE", 1.0),
        ("EXPIRED", 1.0),
        ("WRONG_ROOM", 1.0),
        ("ROOM_LOCKED", 1.0),
        ("REMOVED_BY_HOST", 2.0),
    ] {
        let name = format!("blindcall_relay_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &name), n, "{name}");
    }
    assert_eq!(metric(&m, "blindcall_relay_admitted_total"), 3.0);
    assert_eq!(metric(&m, "blindcall_relay_rooms"), 1.0);
    assert_eq!(metric(&m, "blindcall_relay_connections"), 1.0);
    assert!(metric(&m, "blindcall_relay_control_bytes_in_total") > 0.0);
    assert!(metric(&m, "blindcall_relay_control_bytes_out_total") > 0.0);
    drop(host);
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: OPS-MET-1
#[test]
fn metrics_endpoint_speaks_minimal_http() {
    run(metrics_endpoint_speaks_minimal_http_body());
}

async fn metrics_endpoint_speaks_minimal_http_body() {
    let relay = start_relay(|_| {}).await;
    let m = relay.scrape().await;
    assert!(
        m.contains("Content-Type: application/openmetrics-text"),
        "{m}"
    );
    for family in [
        "# TYPE blindcall_relay_rooms gauge",
        "# TYPE blindcall_relay_participants gauge",
        "# TYPE blindcall_relay_refused counter",
        "# TYPE blindcall_relay_protocol_errors counter",
        "# TYPE blindcall_relay_commits_rejected counter",
        "# TYPE blindcall_relay_commit_sequencing_seconds histogram",
        "# TYPE blindcall_relay_writer_overflows counter",
        "# TYPE blindcall_relay_connections_over_address_limit counter",
        "# TYPE blindcall_relay_member_proposals counter",
        "# TYPE blindcall_relay_members_removed counter",
        "# TYPE blindcall_relay_peer_messages counter",
        "# TYPE blindcall_relay_peer_messages_dropped counter",
    ] {
        assert!(m.contains(family), "missing {family}");
    }
    for sample in [
        "blindcall_relay_peer_messages_dropped_total{reason=\"rate_limited\"}",
        "blindcall_relay_peer_messages_dropped_total{reason=\"too_large\"}",
        "blindcall_relay_refused_total{reason=\"REMOVED_FROM_GROUP\"}",
        "blindcall_relay_refused_total{reason=\"TOO_MANY_CONNECTIONS\"}",
        "blindcall_relay_refused_total{reason=\"WAITING_ROOM_FULL\"}",
        "blindcall_relay_commits_rejected_total{reason=\"EXTERNAL_COMMIT\"}",
        "blindcall_relay_commits_rejected_total{reason=\"POLICY\"}",
        "blindcall_relay_protocol_errors_total{code=\"KEY_PACKAGE_TOO_LARGE\"}",
    ] {
        assert!(
            m.lines().any(|l| l == format!("{sample} 0")),
            "missing {sample} 0"
        );
    }
    assert!(m.trim_end().ends_with("# EOF"));
    assert!(
        relay
            .get("GET /other HTTP/1.1")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        relay
            .get("POST /metrics HTTP/1.1")
            .await
            .starts_with("HTTP/1.1 405")
    );
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: CP-TLS-1, CP-TLS-2
#[test]
fn tls_is_1_3_with_blindcall_alpn() {
    run(tls_is_1_3_with_blindcall_alpn_body());
}

async fn tls_is_1_3_with_blindcall_alpn_body() {
    let relay = start_relay(|_| {}).await;
    let c = relay.client().await;
    assert_eq!(c.tls_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // A client asking only for another application protocol is refused in the handshake.
    let mut cfg = (*client_config_trusting(&relay.cert).unwrap()).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(
        within("ALPN refusal", connector.connect(name, tcp))
            .await
            .is_err()
    );
    // Not TLS at all: the handshake fails and is counted.
    let mut raw = TcpStream::connect(relay.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = within("non-TLS close", raw.read_to_end(&mut buf)).await;
    let m = relay.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_tls_handshake_failures_total"),
        2.0
    );
    drop(c);
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: DS-IDLE-1, OPS-TIME-1
#[test]
fn silent_connections_are_closed() {
    run(silent_connections_are_closed_body());
}

async fn silent_connections_are_closed_body() {
    let idle = Duration::from_millis(400);
    let relay = start_relay(|s| {
        s.ds.idle_timeout = Some(idle);
        s.limits.handshake_timeout = Duration::from_millis(400);
    })
    .await;
    // Admitted, then silent: refused with IDLE_TIMEOUT and closed.
    let start = Instant::now();
    let (mut c, _) = relay.admitted(b"room-idle", Role::GUEST, 1, "quiet").await;
    let (bodies, ending) = c.closed("idle timeout").await;
    assert!(start.elapsed() >= idle);
    assert_eq!(bodies, vec![refused(RefusedReason::IDLE_TIMEOUT)]);
    assert_eq!(ending, Ending::Clean);
    // TCP connected but no TLS handshake: cut after the handshake timeout.
    let mut raw = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = within("handshake timeout close", raw.read_to_end(&mut buf)).await;
    assert!(r.is_ok_and(|n| n == 0) || buf.is_empty());
    let m = relay.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_refused_total{reason=\"IDLE_TIMEOUT\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "blindcall_relay_tls_handshake_timeouts_total"),
        1.0
    );
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: OPS-WRITE-1
#[test]
fn a_peer_that_does_not_read_is_cut_and_others_are_served() {
    run(a_peer_that_does_not_read_is_cut_and_others_are_served_body());
}

async fn a_peer_that_does_not_read_is_cut_and_others_are_served_body() {
    let relay = start_relay(|s| {
        s.limits.writer_queue = 4;
        s.ds.rate_burst = 1_000_000;
        s.ds.rate_per_second = 1_000_000;
    })
    .await;
    let (mut healthy, _) = relay.admitted(b"room-ok", Role::GUEST, 1, "ok").await;
    let (mut stuck, _) = relay.admitted(b"room-stuck", Role::GUEST, 2, "stuck").await;
    // Thousands of Pings in one write, never reading the Pongs.
    let mut burst = Vec::new();
    for nonce in 0..5000u64 {
        burst.extend(
            ControlMessage::new(Body::Ping(Ping { nonce }))
                .to_frame(64)
                .unwrap(),
        );
    }
    // The relay may cut the connection before the whole burst is written.
    let _ = stuck.try_send_raw(&burst).await;
    let (_, _) = stuck.closed("the stuck peer being cut").await;
    // The relay keeps serving everyone else.
    assert!(healthy.sync().await.is_empty());
    let m = relay.scrape().await;
    assert_eq!(metric(&m, "blindcall_relay_writer_overflows_total"), 1.0);
    assert_eq!(metric(&m, "blindcall_relay_connections"), 1.0);
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: OPS-SHUT-1, DS-SHUT-1
#[test]
fn graceful_shutdown_says_goodbye_and_completes() {
    run(graceful_shutdown_says_goodbye_and_completes_body());
}

async fn graceful_shutdown_says_goodbye_and_completes_body() {
    let relay = start_relay(|_| {}).await;
    let mut room = room_over_tls(&relay, b"room-shut", 1, 1).await;
    let (mut lobby, _) = relay.admitted(b"room-2", Role::GUEST, 9, "lobby").await;
    let mut unadmitted = relay.client().await;
    let addr = relay.addr;
    relay.handle.shutdown();
    let bye = refused(RefusedReason::SHUTTING_DOWN);
    for (c, _) in room.iter_mut() {
        let (bodies, ending) = c.closed("goodbye to a member").await;
        assert_eq!(bodies.last(), Some(&bye));
        assert!(
            !bodies.iter().any(|b| matches!(b, Body::RelayProposal(_))),
            "no removal proposals at shutdown: {bodies:?}"
        );
        assert_eq!(ending, Ending::Clean);
    }
    for c in [&mut lobby, &mut unadmitted] {
        let (bodies, ending) = c.closed("goodbye").await;
        assert_eq!(bodies, vec![bye.clone()]);
        assert_eq!(ending, Ending::Clean);
    }
    within("relay stop", relay.handle.wait()).await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

// covers: OPS-CONN-1
#[test]
fn connections_over_the_limit_are_closed_at_once() {
    run(connections_over_the_limit_are_closed_at_once_body());
}

async fn connections_over_the_limit_are_closed_at_once_body() {
    let relay = start_relay(|s| s.limits.max_connections = 1).await;
    let (mut first, _) = relay.admitted(b"room-lim", Role::GUEST, 1, "first").await;
    let mut second = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = within("over-limit close", second.read_to_end(&mut buf)).await;
    assert!(
        n.is_err() || buf.is_empty(),
        "no TLS for the second connection"
    );
    assert!(first.sync().await.is_empty(), "the first is unaffected");
    let m = relay.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_connections_over_limit_total"),
        1.0
    );
    // Once the first leaves, a new connection gets its slot.
    first.shutdown_write().await;
    let _ = first.closed("first closed").await;
    let (mut third, _) = relay.admitted(b"room-lim", Role::GUEST, 3, "third").await;
    assert!(third.sync().await.is_empty());
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

// covers: OPS-CONN-2
#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    run(one_address_holds_at_most_its_share_of_connections_body());
}

async fn one_address_holds_at_most_its_share_of_connections_body() {
    // The default leaves room for the largest loopback demo (64 participants on 127.0.0.1)
    // while no single address can take every slot.
    let d = blindcall_relay::ShellLimits::default();
    assert!(d.max_connections_per_address >= 64);
    assert!(d.max_connections_per_address < d.max_connections);
    let relay = start_relay(|s| s.limits.max_connections_per_address = 2).await;
    let (mut a, _) = relay.admitted(b"room-addr", Role::GUEST, 1, "a").await;
    let (_b, _) = relay.admitted(b"room-addr", Role::GUEST, 2, "b").await;
    // A third connection from 127.0.0.1 is closed before any TLS.
    let mut third = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = within("over-address-limit close", third.read_to_end(&mut buf)).await;
    assert!(n.is_err() || buf.is_empty(), "no TLS for the third");
    assert!(a.sync().await.is_empty(), "the others are unaffected");
    let m = relay.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_connections_over_address_limit_total"),
        1.0
    );
    assert_eq!(
        metric(&m, "blindcall_relay_connections_over_limit_total"),
        0.0
    );
    // Once one leaves, the address gets its slot back.
    a.shutdown_write().await;
    let _ = a.closed("a closed").await;
    let (mut c, _) = relay.admitted(b"room-addr", Role::GUEST, 3, "c").await;
    assert!(c.sync().await.is_empty());
    relay.handle.shutdown();
    within("relay stop", relay.handle.wait()).await.unwrap();
}

//! The SDK's control plane against the embedded relay (media off): waiting room approve and
//! deny, and typed errors on a misbehaving relay; and application media through the relay's
//! forwarder, seen from the relay's taps and metrics. Commit races run on the deterministic
//! simulation (`crates/sim/tests/races.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use blindcall_client::{
    Call, CallError, EndReason, Event, Events, JoinError, JoinOptions, MediaMode, MlsSuite,
    ProtocolError, RefusedReason, Role, TrustAnchor,
};
use blindcall_demo::embedded::{EmbeddedOptions, EmbeddedRelay};

mod common;

use common::{room_invite, runtime};

const WAIT: Duration = Duration::from_secs(20);

async fn next_matching(events: &mut Events, what: &str, pred: impl FnMut(&Event) -> bool) -> Event {
    common::next_event(events, WAIT, what, pred).await
}

/// The call's counters once they show `epoch` (stats refresh every interval).
async fn settled(call: &Call, epoch: u64) -> blindcall_client::CallStats {
    let mut w = call.watch_stats();
    let what = format!("{}'s stats at epoch {epoch}", call.identity());
    tokio::time::timeout(WAIT, w.wait_for(|s| s.epoch == Some(epoch)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
        .clone()
}

fn options(relay: &EmbeddedRelay) -> JoinOptions {
    let mut o = JoinOptions::new(relay.trust());
    o.media = MediaMode::Off;
    o
}

async fn join(relay: &EmbeddedRelay, name: &str, role: Role, o: JoinOptions) -> (Call, Events) {
    let token = relay.mint("room", role, Duration::from_secs(600)).unwrap();
    Call::join(relay.addr(), &token, name, o).await.unwrap()
}

/// Waits for an epoch change to `epoch` (or later) and returns its code.
async fn epoch_code(events: &mut Events, who: &str, epoch: u64) -> String {
    match next_matching(
        events,
        &format!("{who} at epoch {epoch}"),
        |e| matches!(e, Event::EpochChanged { epoch: got, .. } if *got >= epoch),
    )
    .await
    {
        Event::EpochChanged { epoch: got, code } => {
            assert_eq!(got, epoch, "{who} skipped an epoch");
            code.to_string()
        }
        _ => unreachable!(),
    }
}

// covers: SDK-JOIN-1, SDK-JOIN-4, SDK-EVT-1
#[test]
fn host_approves_one_joiner_and_denies_another() {
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions::default())
            .await
            .unwrap();
        let (alice, mut ae) = join(&relay, "alice", Role::HOST, options(&relay)).await;
        next_matching(&mut ae, "alice joined", |e| {
            matches!(e, Event::Joined { epoch: 0, .. })
        })
        .await;
        let (_bob, mut be) = join(&relay, "bob", Role::GUEST, options(&relay)).await;
        next_matching(&mut be, "bob waiting", |e| matches!(e, Event::Waiting)).await;
        let Event::JoinRequested {
            request,
            joiner,
            invite,
        } = next_matching(&mut ae, "bob's join request", |e| {
            matches!(e, Event::JoinRequested { .. })
        })
        .await
        else {
            unreachable!()
        };
        // What the host decides on comes from bob's KeyPackage: his name and key, unknown so far.
        assert_eq!(&*joiner.identity, "bob");
        assert_eq!(joiner.trust, blindcall_client::Trust::New);
        assert_eq!(invite, blindcall_client::InviteCheck::NotRequired);
        assert_eq!(
            alice.approve(request + 1000).await,
            Err(CallError::UnknownRequest(request + 1000))
        );
        alice.approve(request).await.unwrap();
        let Event::Joined { epoch, members } =
            next_matching(&mut be, "bob joined", |e| matches!(e, Event::Joined { .. })).await
        else {
            unreachable!()
        };
        assert_eq!(epoch, 1);
        let names: Vec<&str> = members.iter().map(|m| &*m.identity).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(members[0].host && !members[1].host);
        let Event::MembersJoined { members, .. } = next_matching(&mut ae, "alice sees bob", |e| {
            matches!(e, Event::MembersJoined { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(&*members[0].identity, "bob");
        // Bob's path update follows at once: both land on epoch 2 with the same code.
        let a2 = epoch_code(&mut ae, "alice", 2).await;
        let b2 = epoch_code(&mut be, "bob", 2).await;
        assert_eq!(a2, b2);

        let (_eve, mut ee) = join(&relay, "eve", Role::GUEST, options(&relay)).await;
        let Event::JoinRequested { request, .. } =
            next_matching(&mut ae, "eve's join request", |e| {
                matches!(e, Event::JoinRequested { .. })
            })
            .await
        else {
            unreachable!()
        };
        alice.deny(request).await.unwrap();
        let end = next_matching(&mut ee, "eve's end", |e| {
            matches!(e, Event::CallEnded { .. })
        })
        .await;
        assert_eq!(
            end,
            Event::CallEnded {
                reason: EndReason::Denied
            }
        );
        // Eve never became a member: the call still has alice and bob only.
        let stats = settled(&alice, 2).await;
        assert_eq!(stats.members, 2);
        // A locked room refuses new guests before they reach the waiting room.
        alice.lock_room(true).await.unwrap();
        next_matching(&mut ae, "the relay's room-locked state", |e| {
            matches!(e, Event::RoomLocked { locked: true })
        })
        .await;
        let token = relay
            .mint("room", Role::GUEST, Duration::from_secs(600))
            .unwrap();
        let err = Call::join(relay.addr(), &token, "mallory", options(&relay))
            .await
            .unwrap_err();
        assert!(
            matches!(err, JoinError::Refused(RefusedReason::ROOM_LOCKED)),
            "{err}"
        );
        relay.shutdown().await;
    });
}

/// Waits until every call shows `members` members at `epoch`; returns their stats.
async fn all_at(calls: &[&Call], members: usize, epoch: u64) -> Vec<blindcall_client::CallStats> {
    let fut = async {
        loop {
            let stats: Vec<_> = calls.iter().map(|c| c.stats()).collect();
            if stats
                .iter()
                .all(|s| s.members == members && s.epoch == Some(epoch))
            {
                return stats;
            }
            let mut w = calls[0].watch_stats();
            let _ = w.changed().await;
        }
    };
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| {
        let seen: Vec<_> = calls
            .iter()
            .map(|c| (c.identity().to_owned(), c.stats().members, c.stats().epoch))
            .collect();
        panic!("timed out waiting for {members} members at epoch {epoch}: {seen:?}")
    })
}

// covers: DS-EXT-3
#[test]
fn a_p256_call_gets_the_relays_removal_proposal_for_a_departed_member() {
    // Ciphersuite 2 signs with ECDSA P-256: the relay must list, and sign its Remove proposal
    // with, its P-256 external-sender identity.
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions::default())
            .await
            .unwrap();
        let opts = |relay: &EmbeddedRelay| {
            let mut o = options(relay);
            o.auto_approve = true;
            o.invite = Some(room_invite());
            o.mls_suite = MlsSuite::P256Aes128;
            o
        };
        let (alice, _ae) = join(&relay, "alice", Role::HOST, opts(&relay)).await;
        let (bob, _be) = join(&relay, "bob", Role::GUEST, opts(&relay)).await;
        all_at(&[&alice, &bob], 2, 2).await;
        let (carol, _ce) = join(&relay, "carol", Role::GUEST, opts(&relay)).await;
        all_at(&[&alice, &bob, &carol], 3, 4).await;
        carol.leave().await.unwrap();
        // The relay proposes carol's removal; alice or bob commits it.
        let stats = all_at(&[&alice, &bob], 2, 5).await;
        assert_eq!(stats[0].code, stats[1].code);
        relay.shutdown().await;
    });
}

/// A fake relay that completes TLS, reads the Hello, then answers with `answer`.
async fn fake_relay(answer: Vec<u8>) -> (std::net::SocketAddr, TrustAnchor) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A development certificate and its TLS server configuration, as the relay builds them.
    let mut cfg = blindcall_relay::config::RelayConfig::with_listen("127.0.0.1:0".parse().unwrap());
    cfg.tls.dev_self_signed = true;
    cfg.token_secret.hex = Some("42".repeat(32));
    let resolved = cfg.resolve(&|_| None).unwrap();
    let trust = TrustAnchor::CertificateDer(resolved.dev_cert.as_ref().unwrap().der().to_vec());
    let acceptor = tokio_rustls::TlsAcceptor::from(resolved.server.tls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await;
        tls.write_all(&answer).await.unwrap();
        tls.flush().await.unwrap();
        let _ = tls.read(&mut buf).await;
    });
    (addr, trust)
}

fn token() -> String {
    // A syntactically valid token for room "room" (the fake relay does not check it).
    let mut body = vec![1u8, 4, b'r', b'o', b'o', b'm', 2];
    body.extend_from_slice(&[0u8; 8 + 16 + 32]);
    format!("bct1.{}", hex::encode(body))
}

// covers: SDK-ERR-1
#[test]
fn a_misbehaving_relay_gets_typed_errors_not_panics() {
    runtime().block_on(async {
        // Garbage inside a well-formed frame.
        let (addr, trust) = fake_relay(vec![0, 0, 0, 3, 0xff, 0xfe, 0xfd]).await;
        let mut o = JoinOptions::new(trust);
        o.media = MediaMode::Off;
        let err = Call::join(addr, &token(), "zoe", o.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, JoinError::Protocol(ProtocolError::Malformed)),
            "{err}"
        );
        // A frame header announcing more than the limit.
        let (addr, trust) = fake_relay(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
        o.trust = trust;
        let err = Call::join(addr, &token(), "zoe", o.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, JoinError::Protocol(ProtocolError::Malformed)),
            "{err}"
        );
        // A refusal is reported with its reason.
        let refused = blindcall_proto::ControlMessage::new(blindcall_proto::Body::Refused(
            blindcall_proto::Refused {
                reason: RefusedReason::EXPIRED,
            },
        ))
        .to_frame(1 << 20)
        .unwrap();
        let (addr, trust) = fake_relay(refused).await;
        o.trust = trust;
        let err = Call::join(addr, &token(), "zoe", o.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, JoinError::Refused(RefusedReason::EXPIRED)),
            "{err}"
        );
        // A relay whose certificate is not the trusted one is refused during TLS.
        let (addr, _) = fake_relay(Vec::new()).await;
        o.trust = TrustAnchor::Fingerprint("00".repeat(32));
        let err = Call::join(addr, &token(), "zoe", o.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, JoinError::Tls(_)), "{err}");
        // A garbage token never reaches the network.
        let err = Call::join(addr, "not-a-token", "zoe", o).await.unwrap_err();
        assert!(matches!(err, JoinError::Options(_)), "{err}");
    });
}

/// `GET /metrics` on the relay's metrics endpoint: the body.
async fn scrape(relay: &EmbeddedRelay) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = relay
        .metrics_addr()
        .expect("the embedded relay exports metrics");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

/// The value of the sample line `name` (exact name and labels).
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

// covers: SDK-MEDIA-1, SDK-MEDIA-2, SDK-EVT-1, OPS-MET-2, OPS-TAP-1, CP-MEDIA-3
#[test]
fn application_frames_are_sealed_forwarded_and_delivered_with_the_sender() {
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions {
            tap: true,
            ..EmbeddedOptions::default()
        })
        .await
        .unwrap();
        let app = |relay: &EmbeddedRelay| {
            let mut o = JoinOptions::new(relay.trust());
            o.media = MediaMode::App;
            o.auto_approve = true;
            o.invite = Some(room_invite());
            o
        };
        let (alice, mut ae) = join(&relay, "alice", Role::HOST, app(&relay)).await;
        let (bob, mut be) = join(&relay, "bob", Role::GUEST, app(&relay)).await;
        let mut frames = be.take_frames().expect("app mode delivers frames");
        for (who, events) in [("alice", &mut ae), ("bob", &mut be)] {
            next_matching(events, &format!("{who}'s media connection"), |e| {
                matches!(e, Event::MediaConnected)
            })
            .await;
        }
        // Bob's path update moves the call to epoch 2; alice sends under it.
        settled(&alice, 2).await;
        settled(&bob, 2).await;
        next_matching(&mut ae, "alice's send epoch 2", |e| {
            matches!(e, Event::SendEpochActivated { epoch: 2 })
        })
        .await;
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
        // Publish until bob's subscription carries media (the relay renegotiates his leg).
        let got = tokio::time::timeout(WAIT, async {
            loop {
                alice
                    .publish(blindcall_client::MediaKind::Video, payload.clone())
                    .await
                    .unwrap();
                if let Ok(Some(f)) =
                    tokio::time::timeout(Duration::from_millis(100), frames.recv()).await
                {
                    return f;
                }
            }
        })
        .await
        .expect("bob receives alice's frame");
        assert_eq!(&*got.sender, "alice");
        assert_eq!(got.kind, blindcall_client::MediaKind::Video);
        assert_eq!(got.epoch, 2);
        assert_eq!(got.data(), payload);
        // The relay held only ciphertext.
        let payloads = relay.tapped_payloads();
        assert!(!payloads.is_empty());
        let hay: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        assert_eq!(
            blindcall_demo::report::plaintext_leaks(&[&payload], &hay),
            0
        );
        // The relay's control tap saw both directions of both connections, TLS removed:
        // each member's Join and Answer, the forwarder's Offers, and no plaintext.
        let control = relay.control_frames();
        let mut signals = std::collections::BTreeMap::<_, Vec<u8>>::new();
        for f in &control {
            let msg = blindcall_proto::ControlMessage::decode(&f.bytes[4..]).unwrap();
            if let blindcall_proto::Body::MediaSignal(m) = msg.body {
                let p = blindcall_proto::MediaSignalPayload::decode(m.payload.as_slice()).unwrap();
                let tag = p.encode()[0];
                signals.entry((f.conn, f.direction)).or_default().push(tag);
            }
        }
        use blindcall_relay::TapDirection::{FromClient, ToClient};
        let conns: std::collections::BTreeSet<_> = control.iter().map(|f| f.conn).collect();
        assert_eq!(conns.len(), 2, "alice's and bob's connections");
        for conn in conns {
            let from = &signals[&(conn, FromClient)];
            assert_eq!(from[0], 1, "a member's first media signal is Join");
            assert!(
                from[1..].iter().all(|t| *t == 3),
                "then only Answers: {from:?}"
            );
            let to = &signals[&(conn, ToClient)];
            assert!(
                to.iter().all(|t| *t == 2),
                "the forwarder only offers: {to:?}"
            );
            assert!(
                !to.is_empty() && from.len() - 1 <= to.len(),
                "answers follow offers"
            );
        }
        let hay: Vec<&[u8]> = control.iter().map(|f| f.bytes.as_slice()).collect();
        assert_eq!(
            blindcall_demo::report::plaintext_leaks(&[&payload], &hay),
            0
        );
        // The forwarder's counters are on the relay's /metrics.
        let fw = relay.forwarded();
        assert!(fw.packets_in > 0 && fw.packets_out > 0, "{fw:?}");
        let text = scrape(&relay).await;
        assert_eq!(sample(&text, "blindcall_relay_media_rooms"), 1);
        assert!(sample(&text, "blindcall_relay_media_packets_in_total") >= fw.packets_in);
        assert!(sample(&text, "blindcall_relay_media_packets_out_total") >= fw.packets_out);
        assert!(sample(&text, "blindcall_relay_media_bytes_in_total") >= fw.bytes_in);
        assert!(sample(&text, "blindcall_relay_media_bytes_out_total") > 0);
        for reason in ["no_subscriber", "queue_full", "leg_closed", "write_failed"] {
            sample(
                &text,
                &format!("blindcall_relay_media_packets_dropped_total{{reason=\"{reason}\"}}"),
            );
        }
        sample(&text, "blindcall_relay_media_keyframe_requests_total");
        // Misuse is typed.
        let huge = alice
            .publish(blindcall_client::MediaKind::Video, vec![0u8; 6_000_000])
            .await;
        assert!(matches!(huge, Err(CallError::FrameRejected(_))), "{huge:?}");
        relay.shutdown().await;
    });
}

/// The TLS acceptor of a fake cluster (one development certificate for all its nodes) and
/// the trust anchor for it.
fn fake_cluster() -> (tokio_rustls::TlsAcceptor, TrustAnchor) {
    let mut cfg = blindcall_relay::config::RelayConfig::with_listen("127.0.0.1:0".parse().unwrap());
    cfg.tls.dev_self_signed = true;
    cfg.token_secret.hex = Some("42".repeat(32));
    let resolved = cfg.resolve(&|_| None).unwrap();
    let trust = TrustAnchor::CertificateDer(resolved.dev_cert.as_ref().unwrap().der().to_vec());
    (
        tokio_rustls::TlsAcceptor::from(resolved.server.tls.clone()),
        trust,
    )
}

/// A fake cluster node: completes TLS, reads the Hello, answers `answer`, and records that it
/// was reached.
async fn fake_node(
    acceptor: tokio_rustls::TlsAcceptor,
    answer: blindcall_proto::Body,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let frame = blindcall_proto::ControlMessage::new(answer)
        .to_frame(1 << 20)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reached, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            return;
        };
        let _ = reached.send(());
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await;
        tls.write_all(&frame).await.unwrap();
        tls.flush().await.unwrap();
        let _ = tls.shutdown().await;
    });
    (addr, rx)
}

fn redirect(address: String) -> blindcall_proto::Body {
    blindcall_proto::Body::Redirect(blindcall_proto::Redirect {
        relay: blindcall_proto::VLBytes::new(address.into_bytes()),
    })
}

// covers: SDK-REDIR-1
#[test]
fn the_driver_follows_a_redirect_to_the_named_address_with_the_same_trust() {
    runtime().block_on(async {
        let (acceptor, trust) = fake_cluster();
        // Node B (the room's "home") refuses with a reason only it gives: reaching it shows
        // the driver dialed the redirect's address (a host name, resolved) over TLS with the
        // configured server name and trust anchor.
        let expired = blindcall_proto::Body::Refused(blindcall_proto::Refused {
            reason: RefusedReason::EXPIRED,
        });
        let (b, b_reached) = fake_node(acceptor.clone(), expired).await;
        let (a, _) = fake_node(acceptor, redirect(format!("localhost:{}", b.port()))).await;
        let mut o = JoinOptions::new(trust.clone());
        o.media = MediaMode::Off;
        let err = Call::join(a, &token(), "zoe", o.clone()).await.unwrap_err();
        assert!(
            matches!(err, JoinError::Refused(RefusedReason::EXPIRED)),
            "{err}"
        );
        b_reached.await.unwrap();

        // A redirect to a server whose certificate is not trusted does not widen the trust:
        // the TLS handshake there fails and the join fails (no other relay to try).
        let (other, _) = fake_cluster();
        let (c, c_reached) = fake_node(other, redirect("x".into())).await;
        let (acceptor, trust) = fake_cluster();
        let (a, _) = fake_node(acceptor, redirect(format!("127.0.0.1:{}", c.port()))).await;
        o.trust = trust;
        let err = Call::join(a, &token(), "zoe", o).await.unwrap_err();
        assert!(
            matches!(err, JoinError::Protocol(ProtocolError::Closed)),
            "{err}"
        );
        assert!(
            c_reached.await.is_err(),
            "no TLS session with the untrusted node"
        );
    });
}

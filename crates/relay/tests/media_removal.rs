//! A member removed by a commit is cut off the real media forwarder: after the commit is
//! sequenced, nothing of its media reaches the others and nothing reaches it, while the rest
//! of the room keeps flowing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_proto::*;
use blindcall_relay::forward::{ForwarderConfig, attach};
use blindcall_relay::{ConnId, ForwarderHandle};
use blindcall_transport::{
    ClientConfig, ClientEvent, ClientTransport, MediaKind, ParticipantId, RtpPacket, SdpKind,
    SessionDescription, TappedPacket,
};
use common::tls::*;
use tokio::sync::mpsc;

const ROOM: &[u8] = b"room-media-rm";

/// Drives one member's control connection: answers the forwarder's offers with its client
/// transport, sends what the test asks, and passes every other message to the test. Ends when
/// the relay closes the connection.
async fn member_task(
    mut tls: TlsClient,
    transport: ClientTransport,
    mut cmds: mpsc::UnboundedReceiver<Body>,
    out: mpsc::UnboundedSender<Body>,
) {
    loop {
        tokio::select! {
            c = cmds.recv() => match c {
                Some(body) => {
                    if tls.try_send(body).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            b = tls.next() => {
                let Some(body) = b else { return };
                if let Body::MediaSignal(m) = &body
                    && let Ok(MediaSignalPayload::Offer(sdp)) =
                        MediaSignalPayload::decode(m.payload.as_slice())
                {
                    let offer = SessionDescription { kind: SdpKind::Offer, sdp };
                    let answer = transport.handle_offer(offer).await.expect("client answers");
                    let payload = MediaSignalPayload::Answer(answer.sdp).encode();
                    let signal = Body::MediaSignal(MediaSignal { payload: VLBytes::new(payload) });
                    if tls.try_send(signal).await.is_err() {
                        return;
                    }
                    continue;
                }
                let _ = out.send(body);
            }
        }
    }
}

struct Member {
    conn: ConnId,
    transport: ClientTransport,
    events: mpsc::Receiver<ClientEvent>,
    cmds: mpsc::UnboundedSender<Body>,
    inbox: mpsc::UnboundedReceiver<Body>,
}

async fn with_media(tls: TlsClient, conn: ConnId, publish: bool, ssrc: u32) -> Member {
    let (transport, events) = ClientTransport::new(ClientConfig {
        publish,
        audio_ssrc: ssrc,
        video_ssrc: ssrc + 1,
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let (cmds, cmd_rx) = mpsc::unbounded_channel();
    let (out, inbox) = mpsc::unbounded_channel();
    tokio::spawn(member_task(tls, transport.clone(), cmd_rx, out));
    let join = MediaSignalPayload::Join { publish }.encode();
    cmds.send(Body::MediaSignal(MediaSignal {
        payload: VLBytes::new(join),
    }))
    .unwrap();
    Member {
        conn,
        transport,
        events,
        cmds,
        inbox,
    }
}

/// Sends one small audio packet every 10 ms (a paced media source) until `stop` is dropped;
/// returns how many the transport took (it refuses them before negotiation and after the
/// relay closed the connection).
fn publish_audio(
    transport: ClientTransport,
    tag: u8,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<u64>) {
    let (stop, mut stopped) = mpsc::channel::<()>(1);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let (mut n, mut taken): (u16, u64) = (0, 0);
        loop {
            tokio::select! {
                _ = stopped.recv() => return taken,
                _ = tick.tick() => {}
            }
            let packet = RtpPacket {
                sequence_number: n,
                timestamp: u32::from(n) * 480,
                marker: true,
                payload: vec![tag; 60],
            };
            if transport.send(MediaKind::Audio, packet).await.is_ok() {
                taken += 1;
                n = n.wrapping_add(1);
            }
        }
    });
    (stop, task)
}

/// Waits until `events` carry a packet from `from`; returns the count of media events seen.
async fn until_media_from(
    events: &mut mpsc::Receiver<ClientEvent>,
    from: ParticipantId,
    what: &str,
) {
    within(what, async {
        loop {
            let e = events.recv().await.expect("client events");
            if let ClientEvent::Media { from: f, .. } = e
                && f == from
            {
                return;
            }
        }
    })
    .await;
}

// covers: DS-RM-7, OPS-MEDIA-3
#[test]
fn a_removed_member_is_cut_off_the_real_forwarder() {
    run(body());
}

async fn body() {
    let (tap_tx, mut tap) = mpsc::channel::<TappedPacket>(100_000);
    let mut forwarder: Option<ForwarderHandle> = None;
    let relay = start_relay(|s| {
        let (hook, handle) = attach(ForwarderConfig {
            tap: Some(tap_tx),
            ..ForwarderConfig::default()
        });
        s.media = Some(hook);
        s.metrics_sources.push(Arc::new(handle.clone()));
        forwarder = Some(handle);
    })
    .await;
    let forwarder = forwarder.unwrap();
    let mut participants = forwarder.participants();
    let mut room = room_over_tls(&relay, ROOM, 1, 2).await;
    let (a_tls, a_mls) = room.pop().unwrap();
    let (m_tls, m_mls) = room.pop().unwrap();
    let (host_tls, mut host_mls) = room.pop().unwrap();
    // Everyone publishes (a receive-only first participant would get an offer with nothing in
    // it); only M and A send.
    let mut host = with_media(host_tls, host_mls.conn, true, 0x1000).await;
    let mut m = with_media(m_tls, m_mls.conn, true, 0x2000).await;
    let a = with_media(a_tls, a_mls.conn, true, 0x3000).await;
    within(
        "three participants at the forwarder",
        participants.wait_for(|n| *n == 3),
    )
    .await
    .unwrap();
    let (m_pid, a_pid) = (ParticipantId(m.conn.0), ParticipantId(a.conn.0));

    // Both publishers reach the host, and A reaches M.
    let (stop_m, m_sent) = publish_audio(m.transport.clone(), 0x4d);
    let (stop_a, a_sent) = publish_audio(a.transport.clone(), 0x41);
    until_media_from(&mut host.events, m_pid, "the host receiving M").await;
    until_media_from(&mut host.events, a_pid, "the host receiving A").await;
    until_media_from(&mut m.events, a_pid, "M receiving A").await;

    // The host removes M by commit.
    let commit = host_mls.remove(&[1]);
    host.cmds.send(Body::Commit(commit)).unwrap();
    within("CommitAccepted for the removal", async {
        while !matches!(host.inbox.recv().await, Some(Body::CommitAccepted(_))) {}
    })
    .await;
    let sequenced = Instant::now();
    host_mls.merge_pending();
    // The forwarder drops M (the driver told it in the step that sequenced the commit). The
    // time from the host reading CommitAccepted to the forwarder having dropped M's legs bounds
    // the window in which M's media could still be forwarded (the DS merged the commit
    // slightly before the host read the answer).
    within(
        "M gone from the forwarder",
        participants.wait_for(|n| *n == 2),
    )
    .await
    .unwrap();
    let window = sequenced.elapsed();
    // M heard the commit, then its refusal, then the relay closed.
    let mut m_got = Vec::new();
    within("M's connection closed", async {
        while let Some(b) = m.inbox.recv().await {
            m_got.push(b);
        }
    })
    .await;
    assert!(
        matches!(m_got.as_slice(), [.., Body::CommitBroadcast(_), Body::Refused(r)] if r.reason == RefusedReason::REMOVED_FROM_GROUP),
        "{m_got:?}"
    );

    // From now on: M keeps sending but nothing of it is received or forwarded, nothing is
    // forwarded to M, and A's media still reaches the host.
    while tap.try_recv().is_ok() {}
    while host.events.try_recv().is_ok() {}
    while m.events.try_recv().is_ok() {}
    let before = forwarder.counters();
    let mut from_a = 0;
    within("50 more packets of A at the host", async {
        while from_a < 50 {
            match host.events.recv().await.expect("host events") {
                ClientEvent::Media { from, .. } if from == a_pid => from_a += 1,
                ClientEvent::Media { from, .. } => {
                    panic!("the host received media from {from} after M's removal")
                }
                _ => {}
            }
        }
    })
    .await;
    drop(stop_a);
    drop(stop_m);
    let sent_by_m = m_sent.await.unwrap();
    let _ = a_sent.await.unwrap();
    let after = forwarder.counters();
    let mut tapped_from_m = 0;
    while let Ok(t) = tap.try_recv() {
        if t.publisher == m_pid {
            tapped_from_m += 1;
        }
    }
    assert_eq!(tapped_from_m, 0, "the forwarder still received M's media");
    let mut to_m = 0;
    while let Ok(e) = m.events.try_recv() {
        if matches!(e, ClientEvent::Media { .. }) {
            to_m += 1;
        }
    }
    assert_eq!(to_m, 0, "M still received media after its removal");
    // Every packet forwarded since went to the host, one copy per packet of A (no leg to M).
    let routed = after.routed - before.routed;
    let copies = after.copies - before.copies;
    let received = after.packets_in - before.packets_in;
    // (Some of the 50 may have been routed just before the snapshot.)
    assert!(routed >= 40, "{routed} routed");
    // (A snapshot can fall between a packet's two counter updates: allow one.)
    assert!(
        copies - routed <= 1,
        "one subscriber per packet, the host only: {copies} copies of {routed} packets"
    );
    assert!(
        received.abs_diff(routed) <= 1,
        "only A's packets arrive: {received} received, {routed} routed"
    );
    eprintln!(
        "removal window: forwarder done {window:?} after the host read CommitAccepted; \
         M's transport took {sent_by_m} packets in all"
    );
    drop(a);
    relay.handle.shutdown();
}

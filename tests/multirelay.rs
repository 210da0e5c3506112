//! Several relay addresses through the real SDK shell (TLS control connections to an embedded
//! relay): the driver connects where the core says. Joining skips an address nobody listens
//! on; a member whose relay path goes dead resumes through the next address of its list.
//! (The two addresses reach one relay here; resuming on another node of a cluster needs the
//! cluster's shared room state, spec/cluster.md.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use blindcall_client::{Call, Event, Events, JoinOptions, MediaMode, Role};
use blindcall_demo::embedded::{EmbeddedOptions, EmbeddedRelay};
use blindcall_demo::netsim::{FaultyPath, PathState};

const WAIT: Duration = Duration::from_secs(60);

fn invite() -> blindcall_client::Invite {
    static INVITE: std::sync::OnceLock<blindcall_client::Invite> = std::sync::OnceLock::new();
    INVITE
        .get_or_init(|| blindcall_client::Invite::new(b"room".to_vec(), None, None).unwrap())
        .clone()
}

fn options(relay: &EmbeddedRelay, relays: Vec<SocketAddr>) -> JoinOptions {
    let mut o = JoinOptions::new(relay.trust());
    o.media = MediaMode::Off;
    o.auto_approve = true;
    o.invite = Some(invite());
    o.relays = relays;
    o
}

async fn until(events: &mut Events, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
    let fut = async {
        loop {
            match events.next().await {
                Some(e) if pred(&e) => return e,
                Some(_) => {}
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// An address on this machine where nothing listens (connections are refused).
fn nobody() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// covers: SDK-RELAYS-2, SDK-RELAYS-3
#[test]
fn the_sdk_joins_past_a_dead_relay_and_resumes_through_the_next_address() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions::default())
            .await
            .unwrap();
        let token = |role| relay.mint("room", role, Duration::from_secs(600)).unwrap();
        // alice's first address is dead: she creates the call through the second.
        let dead = nobody();
        let (alice, mut ae) = Call::join(
            dead,
            &token(Role::HOST),
            "alice",
            options(&relay, vec![relay.addr()]),
        )
        .await
        .unwrap();
        until(&mut ae, "alice joined", |e| {
            matches!(e, Event::Joined { .. })
        })
        .await;
        let mut w = alice.watch_stats();
        let s = tokio::time::timeout(WAIT, w.wait_for(|s| s.epoch.is_some()))
            .await
            .unwrap()
            .unwrap()
            .clone();
        assert_eq!((s.relay, s.relay_addr), (1, Some(relay.addr())));

        // bob reaches the relay through a path that will go dead; his second address is
        // the relay itself.
        let path = FaultyPath::start(relay.addr()).await.unwrap();
        let (bob, mut be) = Call::join(
            path.addr(),
            &token(Role::GUEST),
            "bob",
            options(&relay, vec![relay.addr()]),
        )
        .await
        .unwrap();
        until(&mut be, "bob joined", |e| matches!(e, Event::Joined { .. })).await;
        path.set(PathState::Blackhole);
        let e = until(&mut be, "bob to notice", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await;
        assert!(
            matches!(
                e,
                Event::Reconnecting {
                    attempt: 1,
                    relay: 1
                }
            ),
            "{e:?}"
        );
        until(&mut be, "bob to resume", |e| {
            matches!(e, Event::Reconnected { .. })
        })
        .await;
        let mut w = bob.watch_stats();
        tokio::time::timeout(WAIT, w.wait_for(|s| s.reconnects == 1 && s.relay == 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bob.stats().relay_addr, Some(relay.addr()));
        drop((alice, bob));
    });
}

//! End to end: the demo scenario in miniature. An embedded relay (real TLS control channel,
//! real WebRTC forwarding) and four participants on loopback: alice creates the call, bob and
//! carol join through the waiting room, bob leaves, alice removes carol, dave joins late, all
//! send synthetic audio and video for about five seconds. The assertions read the raw records
//! of every participant, independently of the report's own checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use blindcall_demo::recorder::MembershipChange;
use blindcall_demo::report::{Fate, render};
use blindcall_demo::scenario::{ScenarioConfig, run_detailed};

/// The two tests that run a whole call (in process, and `blindcall demo` as a child) take
/// turns: together they would put ten participants and two relays on a 2-core machine, and
/// their loss and latency bounds are about the SDK, not about that contention.
static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_call_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CALL_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// covers: SDK-E2E-1, SDK-E2E-2, SDK-E2E-3, SDK-E2E-4, SDK-E2E-5, SDK-JOIN-1, SDK-JOIN-4, SDK-EPOCH-1, SDK-EPOCH-2, SDK-EPOCH-3, SDK-COMMIT-1, SDK-COMMIT-2, SDK-MEDIA-2, SDK-MEDIA-3, SDK-EVT-1, SDK-OBS-1, SDK-AUTH-1, SDK-PEER-1
#[test]
fn four_participants_join_leave_remove_late_join() {
    let _turn = one_call_at_a_time();
    let outcome = runtime()
        .block_on(run_detailed(
            ScenarioConfig {
                participants: 4,
                duration: Duration::from_secs(5),
                ..ScenarioConfig::default()
            },
            None,
        ))
        .expect("the scenario runs to the end");
    let report = &outcome.report;
    let text = render(report);
    println!("{text}");
    let log = outcome.log.lock();
    let fate_of = |f: Fate| {
        outcome
            .fates
            .iter()
            .find(|(_, v)| **v == f)
            .map(|(k, _)| k.clone())
            .expect("every fate is in the script")
    };
    let (host, left, removed, late) = (
        fate_of(Fate::Host),
        fate_of(Fate::Left),
        fate_of(Fate::Removed),
        fate_of(Fate::Late),
    );
    let when = |who: &str, change: MembershipChange| -> Instant {
        log.membership
            .iter()
            .find(|m| &*m.identity == who && m.change == change)
            .map(|m| m.at)
            .unwrap_or_else(|| panic!("{who} has no {change:?} record"))
    };
    let sealed_at: BTreeMap<(String, u8, u64), (Instant, u64)> = log
        .sent
        .iter()
        .map(|f| ((f.sender.to_string(), f.kind as u8, f.seq), (f.at, f.epoch)))
        .collect();
    let opened_by = |who: &str| -> Vec<((String, u8, u64), Instant)> {
        log.opened
            .iter()
            .filter(|o| &*o.receiver == who)
            .map(|o| {
                let key = (o.sender.to_string(), o.kind as u8, o.seq);
                let (at, epoch) = sealed_at[&key];
                assert_eq!(
                    epoch, o.epoch,
                    "{who} opened {key:?} under its sealing epoch"
                );
                (key, at)
            })
            .collect()
    };

    // Every member opened every frame sent while it was a member (after its media subscription
    // to that sender was up), across every epoch transition: nothing lost at transitions.
    for p in &report.participants {
        assert_eq!(p.missing, 0, "{} missed frames\n{text}", p.name);
        assert!(p.opened > 0, "{} opened nothing\n{text}", p.name);
    }
    // Nobody opened anything that does not authenticate; only new members drop frames of
    // epochs before they joined, only incomplete frames may be lost in transport, and only
    // the removed member's frames are refused once its removal is merged.
    for p in &report.participants {
        for (cause, n) in &p.dropped {
            assert!(
                cause == "BeforeJoin" || cause == "Incomplete" || cause == "SenderRemoved",
                "{} dropped {n} frames for {cause}\n{text}",
                p.name
            );
        }
    }

    // The late joiner opened nothing sealed before it joined.
    let joined = when(&late, MembershipChange::Joined);
    let join_epoch = log
        .membership
        .iter()
        .find(|m| *m.identity == *late && m.change == MembershipChange::Joined)
        .map(|m| m.epoch)
        .unwrap();
    let mut late_opened = 0;
    for (key, at) in opened_by(&late) {
        assert!(
            at >= joined,
            "{late} opened {key:?}, sealed before it joined"
        );
        assert!(sealed_at[&key].1 >= join_epoch);
        late_opened += 1;
    }
    assert!(late_opened > 0);
    // Frames of earlier epochs did reach it (the relay forwards everything) and were refused.
    let late_report = report.participants.iter().find(|p| p.name == late).unwrap();
    assert!(late_report.packets_received > 0);

    // The departed and the removed member opened nothing sealed after they were out, although
    // the others kept sending.
    for (who, change) in [
        (&left, MembershipChange::Left),
        (&removed, MembershipChange::Removed),
    ] {
        let out = when(who, change);
        for (key, at) in opened_by(who) {
            assert!(at <= out, "{who} opened {key:?}, sealed after it was out");
        }
        let later = log
            .sent
            .iter()
            .filter(|f| &*f.sender != who.as_str() && f.at > out)
            .count();
        assert!(
            later > 100,
            "the others sent only {later} frames after {who} was out"
        );
    }
    // The host's removal reached the removed member as a commit.
    assert_eq!(
        report
            .participants
            .iter()
            .find(|p| p.name == removed)
            .unwrap()
            .fate,
        Fate::Removed
    );

    // Security codes agree in every epoch; the host is in every epoch; after the removal the
    // host was alone (epoch 6) until the late joiner arrived.
    let mut codes: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    let mut entered: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for e in &log.epochs {
        codes.entry(e.epoch).or_default().insert(&e.code);
        entered.entry(e.epoch).or_default().insert(&e.identity);
    }
    for (epoch, c) in &codes {
        assert_eq!(c.len(), 1, "epoch {epoch} shows different codes: {c:?}");
    }
    // create, add bob, bob's path update, add carol, carol's path update, bob's removal,
    // carol's removal, add dave, dave's path update.
    assert_eq!(
        codes.len(),
        9,
        "epochs: {:?}",
        codes.keys().collect::<Vec<_>>()
    );
    let alone: Vec<u64> = entered
        .iter()
        .filter(|(_, w)| w.len() == 1)
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(alone, [0, 6], "epochs with a single member: {entered:?}");
    assert!(entered.values().all(|w| w.contains(host.as_str())));

    // Every commit was of the expected kind; joiners sent their path update.
    let kinds: BTreeSet<&str> = log.commits.iter().map(|c| c.kind).collect();
    assert!(kinds.is_superset(&["add", "update", "proposals", "remove"].into()));

    // After every switch of a sender's send epoch, its first video frame is a keyframe.
    let mut first_video: BTreeMap<(&str, u64), &blindcall_demo::recorder::SentFrame> =
        BTreeMap::new();
    for f in log
        .sent
        .iter()
        .filter(|f| f.kind == blindcall_client::MediaKind::Video)
    {
        let e = first_video.entry((&f.sender, f.epoch)).or_insert(f);
        if f.seq < e.seq {
            *e = f;
        }
    }
    assert!(first_video.len() > 8);
    for ((who, epoch), f) in &first_video {
        let info = blindcall_media::source::verify(f.plaintext.as_deref().unwrap()).unwrap();
        assert!(
            info.keyframe,
            "{who}'s first video frame in epoch {epoch} is a delta frame"
        );
    }
    // The relay forwarded keyframe requests (PLI) upstream.
    assert!(report.relay.keyframe_requests > 0);

    // The relay saw no plaintext: neither in the RTP payloads it received (SRTP removed) nor in
    // any control message (TLS removed).
    assert!(report.plaintext.frames > 500 && report.plaintext.rtp_payloads > 1000);
    assert!(report.plaintext.control_messages > 20);
    assert_eq!(report.plaintext.leaks, 0);
    assert_eq!(report.relay.tap_dropped, 0);
    assert!(report.passed, "{text}");
}

// covers: SDK-DEMO-1, SDK-RES-1, SDK-RES-2
#[test]
fn the_demo_command_reports_and_writes_json() {
    let _turn = one_call_at_a_time();
    let dir = std::env::temp_dir().join(format!("blindcall-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args([
            "demo",
            "--participants",
            "5",
            "--duration",
            "3",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run blindcall demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "rekey latency",
        "relay saw no plaintext",
        "security codes match",
        "came back by itself after its network dropped",
        "result: PASS",
    ] {
        assert!(
            stdout.contains(needle),
            "report lacks {needle:?}:\n{stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], serde_json::Value::Bool(true));
    let participants = report["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 5);
    // The fifth participant brings the script's network drop: one participant whose path to
    // the relay goes dark resumes by itself, and the report says how long it was away.
    let dropped: Vec<&serde_json::Value> = participants
        .iter()
        .filter(|p| p["fate"] == "dropped")
        .collect();
    assert_eq!(dropped.len(), 1, "{participants:?}");
    assert_eq!(
        dropped[0]["reconnects"].as_u64(),
        Some(1),
        "{:?}",
        dropped[0]
    );
    assert!(dropped[0]["time_away_ms"].as_f64().unwrap() > 0.0);
    assert!(dropped[0]["opened"].as_u64().unwrap() > 0);
    assert!(report["relay"]["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(report["plaintext"]["leaks"].as_u64(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);

    // Out-of-range participant counts are refused with a non-zero exit.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args(["demo", "--participants", "2", "--duration", "1", "--quiet"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

// covers: SDK-JOIN-2
#[test]
fn the_token_command_mints_a_token_naming_the_room() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args([
            "token",
            "--room",
            "standup",
            "--role",
            "host",
            "--secret-env",
            "BC_TEST_SECRET",
        ])
        .env("BC_TEST_SECRET", "42".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        blindcall_client::tls::room_from_token(token.trim()).unwrap(),
        b"standup"
    );
}

// covers: CL-DEMO-1, CL-HOME-9
#[test]
fn the_demo_call_on_three_relay_nodes_outlives_the_kill_of_its_home() {
    use blindcall_demo::cluster::ClusterError;
    use blindcall_demo::nats::NatsError;
    use blindcall_demo::scenario::{ClusterConfig, ScenarioError};

    let _turn = one_call_at_a_time();
    if let Ok(f) = std::env::var("DEBUG_LOG") {
        blindcall_relay::cli::init_logging(&f);
    }
    let result = runtime().block_on(run_detailed(
        ScenarioConfig {
            participants: 5,
            duration: Duration::from_secs(12),
            cluster: Some(ClusterConfig {
                nodes: 3,
                nats: None,
            }),
            ..ScenarioConfig::default()
        },
        None,
    ));
    let outcome = match result {
        Err(ScenarioError::Cluster(ClusterError::Nats(NatsError::NotInstalled))) => {
            assert!(
                std::env::var_os("BLINDCALL_REQUIRE_NATS").is_none(),
                "BLINDCALL_REQUIRE_NATS is set but nats-server is not installed"
            );
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return;
        }
        other => other.expect("the cluster scenario runs to the end"),
    };
    let report = &outcome.report;
    println!("{}", render(report));
    let f = report
        .failover
        .as_ref()
        .expect("the home node was killed halfway");
    assert_ne!(
        f.to.as_deref(),
        Some(f.node.as_str()),
        "another node took the room"
    );
    assert!(f.to.is_some(), "{f:?}");
    assert_eq!(f.epoch_before, f.epoch_after, "the failover changed no key");
    assert_eq!(f.members, 3, "{f:?}");
    // Every check of the demo holds across the failover: nobody opened a frame outside its
    // membership, no frame failed to authenticate, the removal and the late join after it
    // were sequenced by the node that took the room.
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(report.passed);
}

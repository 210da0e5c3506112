//! `blindcall relay` (the relay crate's `cli::run_relay`, the same code the `blindcall-relay`
//! binary runs) forwards media: two SDK participants join it over TLS, and one's sealed
//! application frame reaches the other through the relay's WebRTC forwarder. The relay's media
//! address is set on the command line and the clients use another one: media crosses between
//! configured addresses, not just 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use blindcall_client::{
    Call, Event, Events, JoinOptions, MediaKind, MediaMode, MediaNetwork, TrustAnchor,
};
use blindcall_relay::cli::{RoleArg, TokenArgs, mint_token};

const SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const WAIT: Duration = Duration::from_secs(20);

async fn until(events: &mut Events, what: &str, pred: impl Fn(&Event) -> bool) {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return;
            }
        }
        panic!("events ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

// covers: OPS-MEDIA-2, MT-NET-1
#[test]
fn blindcall_relay_forwards_media_by_default() {
    let cert_path =
        std::env::temp_dir().join(format!("blindcall-cli-cert-{}.pem", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindcall"))
        .args(["relay", "--listen", "127.0.0.1:0", "--dev-self-signed"])
        .args(["--media-bind", "127.0.0.2"])
        .args(["--log", "warn"])
        .arg("--dev-cert-out")
        .arg(&cert_path)
        .env("BLINDCALL_TOKEN_SECRET", SECRET)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let fingerprint = next()
        .strip_prefix("development certificate SHA-256: ")
        .unwrap()
        .to_owned();
    assert!(next().contains("PEM written to"));
    let addr: std::net::SocketAddr = next()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(next(), "media forwarder attached on 127.0.0.2");
    let _ = std::fs::remove_file(&cert_path);
    let env = |v: &str| (v == "BLINDCALL_TOKEN_SECRET").then(|| SECRET.to_owned());
    let token = |role| {
        let args = TokenArgs {
            room: "cli-room".into(),
            role,
            ttl_secs: 600,
            secret_file: None,
            secret_env: None,
            config: None,
        };
        mint_token(&args, SystemTime::now(), &env).unwrap().text
    };
    let options = || {
        let mut o = JoinOptions::new(TrustAnchor::Fingerprint(fingerprint.clone()));
        o.media = MediaMode::App;
        o.auto_approve = true;
        o.invite = Some(room_invite());
        o.media_network = MediaNetwork {
            bind: "127.0.0.3".parse().unwrap(),
            advertise: None,
        };
        o
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let (alice, mut ae) = Call::join(addr, &token(RoleArg::Host), "alice", options()).await?;
        let (_bob, mut be) = Call::join(addr, &token(RoleArg::Guest), "bob", options()).await?;
        let mut frames = be.take_frames().expect("app mode delivers frames");
        until(&mut be, "bob's media connection", |e| {
            matches!(e, Event::MediaConnected)
        })
        .await;
        until(&mut ae, "alice's send epoch 2", |e| {
            matches!(e, Event::SendEpochActivated { epoch: 2 })
        })
        .await;
        let payload: Vec<u8> = (0..1500u32).map(|i| (i * 13 + 5) as u8).collect();
        let got = tokio::time::timeout(WAIT, async {
            loop {
                alice
                    .publish(MediaKind::Audio, payload.clone())
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
        .expect("bob receives alice's frame through the relay");
        assert_eq!(&*got.sender, "alice");
        assert_eq!(got.data(), payload);
        Ok::<_, blindcall_client::JoinError>(())
    });
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    result.unwrap();
    assert!(status.success(), "{status:?}");
}

/// The room's invite (both participants hold it, as if shared out of band).
fn room_invite() -> blindcall_client::Invite {
    static INVITE: std::sync::OnceLock<blindcall_client::Invite> = std::sync::OnceLock::new();
    INVITE
        .get_or_init(|| blindcall_client::Invite::new(b"cli-room".to_vec(), None, None).unwrap())
        .clone()
}

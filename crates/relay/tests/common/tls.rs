//! A relay on loopback over real TLS, and a minimal async control-channel client.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blindcall_proto::{Body, ControlMessage, FrameDecoder, Hello, HelloAck, Ping, VLBytes};
use blindcall_relay::config::{RelayConfig, SecretSection};
use blindcall_relay::server::tls::client_config_trusting;
use blindcall_relay::{ConnId, RelayHandle, ServerConfig, start};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Client, SECRET};

/// How long any single awaited event may take before the test fails naming it.
pub const WAIT: Duration = Duration::from_secs(20);

/// Unix seconds now (the relay checks token expiry against the real clock).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `room` valid for an hour from now.
pub fn token(room: &[u8], role: blindcall_proto::Role, id: u8) -> Vec<u8> {
    super::mint(room, role, now_secs() + 3600, id)
}

/// Await `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A relay bound to 127.0.0.1:0 with a fresh development certificate and metrics enabled.
pub struct TestRelay {
    pub handle: RelayHandle,
    pub cert: CertificateDer<'static>,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

/// Start a relay; `tweak` adjusts the resolved configuration before start. The resume grace
/// is zero (a dropped member's removal is proposed at once) unless `tweak` sets one.
pub async fn start_relay(tweak: impl FnOnce(&mut ServerConfig)) -> TestRelay {
    let mut cfg = RelayConfig::with_listen("127.0.0.1:0".parse().unwrap());
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tls.dev_self_signed = true;
    cfg.token_secret = SecretSection {
        hex: Some(hex::encode(SECRET)),
        ..SecretSection::default()
    };
    let resolved = cfg.resolve(&|_| None).unwrap();
    let cert = resolved.dev_cert.as_ref().unwrap().der().clone();
    let mut server = resolved.server;
    server.ds.resume_grace = Duration::ZERO;
    tweak(&mut server);
    let handle = start(server).await.unwrap();
    let addr = handle.local_addr();
    let metrics = handle.metrics_addr().unwrap();
    TestRelay {
        handle,
        cert,
        addr,
        metrics,
    }
}

impl TestRelay {
    /// A TLS client connected to this relay.
    pub async fn client(&self) -> TlsClient {
        TlsClient::connect(self.addr, &self.cert).await
    }

    /// An admitted client: Hello with a fresh token, HelloAck checked.
    pub async fn admitted(
        &self,
        room: &[u8],
        role: blindcall_proto::Role,
        id: u8,
        name: &str,
    ) -> (TlsClient, HelloAck) {
        let mut c = self.client().await;
        let body = c.hello(room, &token(room, role, id), name).await;
        let Body::HelloAck(ack) = body else {
            panic!("{name} not admitted: {body:?}")
        };
        (c, ack)
    }

    /// An admitted client with fresh MLS credentials.
    pub async fn member(
        &self,
        room: &[u8],
        role: blindcall_proto::Role,
        id: u8,
        name: &str,
    ) -> (TlsClient, Client) {
        let (c, ack) = self.admitted(room, role, id, name).await;
        let conn = ConnId(ack.conn_id);
        (c, Client::new(name, conn, ack))
    }

    /// The metrics endpoint's response to `GET path`, via a raw TCP request.
    pub async fn get(&self, request_line: &str) -> String {
        let mut s = within("metrics connection", TcpStream::connect(self.metrics))
            .await
            .unwrap();
        s.write_all(format!("{request_line}\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        within("metrics response", s.read_to_string(&mut out))
            .await
            .unwrap();
        out
    }

    /// The scraped `/metrics` text.
    pub async fn scrape(&self) -> String {
        let r = self.get("GET /metrics HTTP/1.1").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        r
    }
}

/// The value of one sample (`name` includes labels, e.g. `x_total{reason="EXPIRED"}`), 0 if absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse::<f64>().unwrap())
        })
        .unwrap_or(0.0)
}

/// How a connection ended, seen from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// TLS close_notify then EOF: the relay closed cleanly.
    Clean,
    /// EOF without close_notify, or a reset.
    Abrupt,
}

/// A control-channel client over TLS.
pub struct TlsClient {
    stream: TlsStream<TcpStream>,
    decoder: FrameDecoder,
    pending: VecDeque<Body>,
    nonce: u64,
}

impl TlsClient {
    /// Connect and finish the TLS handshake, trusting exactly `cert`.
    pub async fn connect(addr: SocketAddr, cert: &CertificateDer<'static>) -> Self {
        let connector = TlsConnector::from(client_config_trusting(cert).unwrap());
        let tcp = within("TCP connect", TcpStream::connect(addr))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let stream = within("TLS handshake", connector.connect(name, tcp))
            .await
            .unwrap();
        Self {
            stream,
            decoder: FrameDecoder::new(u32::MAX),
            pending: VecDeque::new(),
            nonce: 0,
        }
    }

    /// The negotiated TLS version.
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    /// Write raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes)).await.unwrap();
        within("flush", self.stream.flush()).await.unwrap();
    }

    /// Write raw bytes, tolerating a relay that cuts the connection meanwhile.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("write", self.stream.write_all(bytes)).await?;
        within("flush", self.stream.flush()).await
    }

    /// Send one message.
    pub async fn send(&mut self, body: Body) {
        let frame = ControlMessage::new(body).to_frame(u32::MAX).unwrap();
        self.send_raw(&frame).await;
    }

    /// Send one message, tolerating a relay that cuts the connection meanwhile.
    pub async fn try_send(&mut self, body: Body) -> std::io::Result<()> {
        let frame = ControlMessage::new(body).to_frame(u32::MAX).unwrap();
        self.try_send_raw(&frame).await
    }

    /// The next message, or `None` once the stream ended (no deadline: callers bound it).
    pub async fn next(&mut self) -> Option<Body> {
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        self.fill().await?;
        self.pending.pop_front()
    }

    /// Read until one more message is available or the stream ends (`None`).
    async fn fill(&mut self) -> Option<()> {
        loop {
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            let mut input = &buf[..n];
            while let Some(frame) = self.decoder.decode(&mut input).unwrap() {
                self.pending
                    .push_back(ControlMessage::decode(&frame).unwrap().body);
            }
            if !self.pending.is_empty() {
                return Some(());
            }
        }
    }

    /// The next message; fails the test naming `what` on timeout or end of stream.
    pub async fn recv(&mut self, what: &str) -> Body {
        if let Some(b) = self.pending.pop_front() {
            return b;
        }
        within(what, self.fill())
            .await
            .unwrap_or_else(|| panic!("connection ended while waiting for {what}"));
        self.pending.pop_front().unwrap()
    }

    /// Every message up to and including the first that satisfies `pred`.
    pub async fn recv_until(&mut self, what: &str, pred: impl Fn(&Body) -> bool) -> Vec<Body> {
        let mut got = Vec::new();
        loop {
            let b = self.recv(what).await;
            let done = pred(&b);
            got.push(b);
            if done {
                return got;
            }
        }
    }

    /// Round trip a Ping: returns every message that arrived before its Pong. Everything the
    /// relay queued for this connection before it read the Ping is among them.
    pub async fn sync(&mut self) -> Vec<Body> {
        self.nonce += 1;
        let nonce = self.nonce;
        self.send(Body::Ping(Ping { nonce })).await;
        let mut got = self
            .recv_until("Pong", |b| matches!(b, Body::Pong(p) if p.nonce == nonce))
            .await;
        got.pop();
        got
    }

    /// Read until the relay ends the connection; returns the messages before the end and how it
    /// ended.
    pub async fn closed(&mut self, what: &str) -> (Vec<Body>, Ending) {
        let mut got: Vec<Body> = self.pending.drain(..).collect();
        let ending = within(what, async {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) => return Ending::Clean,
                    Ok(n) => {
                        let mut input = &buf[..n];
                        while let Ok(Some(frame)) = self.decoder.decode(&mut input) {
                            if let Ok(m) = ControlMessage::decode(&frame) {
                                got.push(m.body);
                            }
                        }
                    }
                    Err(_) => return Ending::Abrupt,
                }
            }
        })
        .await;
        (got, ending)
    }

    /// Say Hello and return the answer.
    pub async fn hello(&mut self, room: &[u8], token: &[u8], name: &str) -> Body {
        self.send(Body::Hello(Hello {
            room_id: VLBytes::new(room.to_vec()),
            token: VLBytes::new(token.to_vec()),
            display_name: VLBytes::new(name.as_bytes().to_vec()),
        }))
        .await;
        self.recv("answer to Hello").await
    }

    /// Half-close: send TLS close_notify and FIN.
    pub async fn shutdown_write(&mut self) {
        within("shutdown", self.stream.shutdown()).await.unwrap();
    }
}

/// A room over TLS: a host that created the group, and `guests` members it added in one
/// commit. Index 0 is the host.
pub async fn room_over_tls(
    relay: &TestRelay,
    room: &[u8],
    first_id: u8,
    guests: usize,
) -> Vec<(TlsClient, Client)> {
    use blindcall_proto::{CreateGroup, PublishKeyPackage, Role};

    let (mut host_tls, mut host) = relay.member(room, Role::HOST, first_id, "host").await;
    let r = super::relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&r);
    host_tls
        .send(Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }))
        .await;
    assert!(matches!(
        host_tls.recv("GroupCreated").await,
        Body::GroupCreated(_)
    ));
    let mut out = vec![(host_tls, host)];
    for i in 0..guests {
        let id = first_id + 1 + u8::try_from(i).unwrap();
        let name = format!("guest{i}");
        let (mut t, c) = relay.member(room, Role::GUEST, id, &name).await;
        t.send(Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(c.key_package()),
            join_proof: None,
        }))
        .await;
        assert!(matches!(
            t.recv("KeyPackageAccepted").await,
            Body::KeyPackageAccepted(_)
        ));
        t.send(Body::JoinRequest).await;
        assert!(matches!(
            t.recv("RoomStateUpdate").await,
            Body::RoomStateUpdate(_)
        ));
        out.push((t, c));
    }
    let (host_tls, host) = &mut out[0];
    let mut bodies = Vec::new();
    while super::waiting_kps(&bodies).len() < guests {
        bodies.push(host_tls.recv("waiting room with every guest").await);
    }
    let kps: Vec<Vec<u8>> = super::waiting_kps(&bodies)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let commit = host.add(&kps);
    host_tls.send(Body::Commit(commit)).await;
    host_tls
        .recv_until("CommitAccepted for the add", |b| {
            matches!(b, Body::CommitAccepted(_))
        })
        .await;
    host.merge_pending();
    let epoch = host.epoch();
    for (t, c) in out.iter_mut().skip(1) {
        let bodies = t
            .recv_until("Welcome", |b| matches!(b, Body::Welcome(_)))
            .await;
        c.apply(&bodies);
        assert_eq!(c.epoch(), epoch);
    }
    out
}

/// Run a test body on a two-worker multi-thread runtime.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Run a test body on a current-thread runtime (every task on the test's thread).
pub fn run_current_thread<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `Refused(reason)`.
pub fn refused(reason: blindcall_proto::RefusedReason) -> Body {
    Body::Refused(blindcall_proto::Refused { reason })
}

/// Hello with `token`; expect `Refused(want)` and then a clean close.
pub async fn expect_refused(
    relay: &TestRelay,
    room: &[u8],
    token: &[u8],
    want: blindcall_proto::RefusedReason,
) {
    let mut c = relay.client().await;
    let got = c.hello(room, token, "x").await;
    assert_eq!(got, refused(want), "{want:?}");
    let (rest, ending) = c.closed("close after refusal").await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(ending, Ending::Clean, "{want:?}");
}

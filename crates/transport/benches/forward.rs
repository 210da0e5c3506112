//! Forwarding load test: one publisher → N subscribers through the relay's forwarder on
//! loopback, against a plain UDP fan-out echo on the same machine in the same run.
//!
//! Per N it measures (1) added latency at a fixed offered rate (p50/p99, send → subscriber
//! event) and (2) saturated throughput (publisher writes as fast as back-pressure allows):
//! packets/s forwarded and per CPU core of the whole process (relay + clients for WebRTC;
//! sender + echo + receivers for UDP). Run: `cargo bench -p blindcall-transport --bench forward`
//! (env `FORWARD_NS=1,10,50`, `FORWARD_SECS=2`, `FORWARD_LOAD=10000` override the defaults;
//! the latency phase offers `FORWARD_LOAD / N` packets/s from the publisher, so every N is
//! measured at the same forwarded load).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blindcall_transport::{
    ClientConfig, ClientEvent, ClientTransport, ConnectionState, MediaKind, ParticipantId,
    ParticipantOptions, RtpPacket, Sfu, SfuConfig, SfuEvent,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

const PAYLOAD: usize = 1_000;
const WAIT: Duration = Duration::from_secs(60);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process CPU time (user + system) from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12 (clock ticks, 100 Hz).
    (ticks(11) + ticks(12)) / 100.0
}

fn payload(base: Instant, seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
    p
}

fn sent_at(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(8..16)?.try_into().ok()?))
}

/// Waits until `delivered` stops growing for 20 ms (everything in flight has arrived).
async fn drain(delivered: &AtomicU64) {
    let mut last = u64::MAX;
    loop {
        let now = delivered.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1_000.0
}

#[derive(Debug, Default, Clone)]
struct Phase {
    sent: u64,
    delivered: u64,
    latencies_ns: Vec<u64>,
    secs: f64,
    cpu: f64,
}

impl Phase {
    fn summary(&mut self) -> (f64, f64, f64, f64) {
        self.latencies_ns.sort_unstable();
        let rate = self.delivered as f64 / self.secs;
        (
            percentile(&self.latencies_ns, 0.5),
            percentile(&self.latencies_ns, 0.99),
            rate,
            if self.cpu > 0.0 {
                self.delivered as f64 / self.cpu
            } else {
                f64::NAN
            },
        )
    }
}

/// Sends for `secs`: at `rate` packets/s (paced in 1 ms ticks) or, with `None`, flat out.
async fn drive<F, Fut>(secs: f64, rate: Option<u64>, base: Instant, mut send: F) -> u64
where
    F: FnMut(u64, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut seq = 0u64;
    match rate {
        Some(rate) => {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut due = 0.0f64;
            while Instant::now() < end {
                tick.tick().await;
                due += rate as f64 / 1_000.0;
                while due >= 1.0 {
                    send(seq, payload(base, seq)).await;
                    seq += 1;
                    due -= 1.0;
                }
            }
        }
        None => {
            while Instant::now() < end {
                send(seq, payload(base, seq)).await;
                seq += 1;
            }
        }
    }
    seq
}

// ---------------------------------------------------------------- WebRTC through the relay

struct RelayRig {
    /// RTP sequence numbers continue across phases, as a real stream's would.
    next_seq: u64,
    sfu: Sfu,
    publisher: ClientTransport,
    subscribers: Vec<mpsc::Receiver<ClientEvent>>,
    _subscriber_handles: Vec<ClientTransport>,
}

async fn connected(events: &mut mpsc::Receiver<ClientEvent>) {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if e == ClientEvent::ConnectionState(ConnectionState::Connected) {
                return;
            }
        }
    })
    .await
    .expect("client connected");
}

async fn relay_rig(n: usize) -> RelayRig {
    let (sfu, mut sfu_events) = Sfu::new(SfuConfig {
        leg_queue: 4_096,
        ..SfuConfig::default()
    });
    let (publisher, mut pub_events) = ClientTransport::new(ClientConfig::default()).await.unwrap();
    let offer = sfu.add_participant(ParticipantId(0)).await.unwrap();
    let answer = publisher.handle_offer(offer).await.unwrap();
    assert!(
        sfu.handle_answer(ParticipantId(0), answer)
            .await
            .unwrap()
            .is_none()
    );
    connected(&mut pub_events).await;
    tokio::spawn(async move { while pub_events.recv().await.is_some() {} });
    let mut subscribers = Vec::new();
    let mut handles = Vec::new();
    for i in 1..=n as u64 {
        let (client, mut events) = ClientTransport::new(ClientConfig {
            publish: false,
            ..ClientConfig::default()
        })
        .await
        .unwrap();
        let id = ParticipantId(i);
        let offer = sfu
            .add_participant_with(id, ParticipantOptions { publish: false })
            .await
            .unwrap();
        let answer = client.handle_offer(offer).await.unwrap();
        assert!(sfu.handle_answer(id, answer).await.unwrap().is_none());
        connected(&mut events).await;
        subscribers.push(events);
        handles.push(client);
    }
    // Drain relay events (no renegotiation happens: subscribers do not publish).
    tokio::spawn(async move {
        while let Some(e) = sfu_events.recv().await {
            if let SfuEvent::Offer { to, .. } = e {
                panic!("unexpected renegotiation of {to}");
            }
        }
    });
    assert_eq!(sfu.active_legs(), 2 * n);
    RelayRig {
        next_seq: 0,
        sfu,
        publisher,
        subscribers,
        _subscriber_handles: handles,
    }
}

async fn relay_phase(rig: &mut RelayRig, secs: f64, rate: Option<u64>) -> Phase {
    let base = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let delivered = Arc::new(AtomicU64::new(0));
    for mut events in std::mem::take(&mut rig.subscribers) {
        let mut stop = stop.clone();
        let delivered = Arc::clone(&delivered);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Some(ClientEvent::Media { packet, .. }) => {
                            let now = base.elapsed().as_nanos() as u64;
                            if let Some(t) = sent_at(&packet.payload) {
                                lat.push(now.saturating_sub(t));
                            }
                            delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {}
                        None => break,
                    },
                    _ = stop.changed() => break,
                }
            }
            (events, lat)
        }));
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let publisher = rig.publisher.clone();
    let mut ts = 0u32;
    let seq0 = rig.next_seq;
    let sent = drive(secs, rate, base, |seq, payload| {
        let publisher = publisher.clone();
        ts = ts.wrapping_add(90);
        let packet = RtpPacket {
            sequence_number: (seq0 + seq) as u16,
            timestamp: ts,
            marker: true,
            payload,
        };
        async move { publisher.send(MediaKind::Video, packet).await.unwrap() }
    })
    .await;
    rig.next_seq += sent;
    drain(&delivered).await;
    // Until the last packet arrived (the drain's final 20 ms quiet period excluded).
    let secs = (t0.elapsed().as_secs_f64() - 0.02).max(1e-3);
    let cpu = cpu_seconds() - cpu0;
    let _ = stop_tx.send(true);
    let mut phase = Phase {
        sent,
        secs,
        cpu,
        ..Phase::default()
    };
    for t in tasks {
        let (events, lat) = t.await.unwrap();
        phase.delivered += lat.len() as u64;
        phase.latencies_ns.extend(lat);
        rig.subscribers.push(events);
    }
    phase
}

// ---------------------------------------------------------------- plain UDP fan-out echo

async fn udp_phase(n: usize, secs: f64, rate: Option<u64>) -> Phase {
    let echo = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let echo_addr = echo.local_addr().unwrap();
    let mut receivers = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = socket2::SockRef::from(&s);
        let _ = r.set_recv_buffer_size(blindcall_transport::SOCKET_BUFFER_BYTES);
        addrs.push(s.local_addr().unwrap());
        receivers.push(s);
    }
    let _ = socket2::SockRef::from(&*echo)
        .set_recv_buffer_size(blindcall_transport::SOCKET_BUFFER_BYTES);
    let echo_task = {
        let echo = Arc::clone(&echo);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2_048];
            while let Ok((len, _)) = echo.recv_from(&mut buf).await {
                for a in &addrs {
                    let _ = echo.send_to(&buf[..len], a).await;
                }
            }
        })
    };
    let base = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    let delivered = Arc::new(AtomicU64::new(0));
    for s in receivers {
        let mut stop = stop.clone();
        let delivered = Arc::clone(&delivered);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut buf = vec![0u8; 2_048];
            loop {
                tokio::select! {
                    r = s.recv(&mut buf) => {
                        let Ok(len) = r else { break };
                        let now = base.elapsed().as_nanos() as u64;
                        if let Some(t) = sent_at(&buf[..len]) {
                            lat.push(now.saturating_sub(t));
                        }
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ = stop.changed() => break,
                }
            }
            lat
        }));
    }
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sender.connect(echo_addr).await.unwrap();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let sender = &sender;
    let sent = drive(secs, rate, base, |_, payload| async move {
        // Flat out, yield now and then so the echo and receivers run on the same workers.
        let _ = sender.send(&payload).await;
        tokio::task::yield_now().await;
    })
    .await;
    drain(&delivered).await;
    // Until the last packet arrived (the drain's final 20 ms quiet period excluded).
    let secs = (t0.elapsed().as_secs_f64() - 0.02).max(1e-3);
    let cpu = cpu_seconds() - cpu0;
    let _ = stop_tx.send(true);
    echo_task.abort();
    let mut phase = Phase {
        sent,
        secs,
        cpu,
        ..Phase::default()
    };
    for t in tasks {
        let lat = t.await.unwrap();
        phase.delivered += lat.len() as u64;
        phase.latencies_ns.extend(lat);
    }
    phase
}

fn row(path: &str, n: usize, what: &str, p: &mut Phase, offered: Option<u64>) {
    let (p50, p99, rate, per_core) = p.summary();
    let offered = offered.map_or("max".to_owned(), |r| format!("{}", r * n as u64));
    println!(
        "{path:<7} N={n:<3} {what:<9} offered={offered:>6}/s sent={:>7} delivered={:>8} \
         ({rate:>7.0}/s) p50={p50:>9.1}us p99={p99:>9.1}us cpu={:.1}s {per_core:>7.0}/s/core",
        p.sent, p.delivered, p.cpu
    );
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` the load test is skipped.
    if !std::env::args().any(|a| a == "--bench") {
        println!("forward: load test skipped (run it with `cargo bench`)");
        return;
    }
    let ns: Vec<usize> = std::env::var("FORWARD_NS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50]);
    let secs: f64 = env_or("FORWARD_SECS", 2.0);
    let load: u64 = env_or("FORWARD_LOAD", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "forward bench: 1 publisher -> N subscribers, {PAYLOAD} B payloads, {secs} s per phase, \
         latency phase at {load} forwarded pkt/s; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    rt.block_on(async {
        for &n in &ns {
            let rate = (load / n as u64).max(1);
            let mut u_lat = udp_phase(n, secs, Some(rate)).await;
            row("udp", n, "latency", &mut u_lat, Some(rate));
            let mut u_max = udp_phase(n, secs, None).await;
            row("udp", n, "saturate", &mut u_max, None);

            let setup = Instant::now();
            let mut rig = relay_rig(n).await;
            println!(
                "relay   N={n:<3} setup {:.2} s",
                setup.elapsed().as_secs_f64()
            );
            let mut r_lat = relay_phase(&mut rig, secs, Some(rate)).await;
            row("relay", n, "latency", &mut r_lat, Some(rate));
            let before = rig.sfu.counters();
            let mut r_max = relay_phase(&mut rig, secs, None).await;
            row("relay", n, "saturate", &mut r_max, None);
            let after = rig.sfu.counters();
            println!(
                "relay   N={n:<3} relay counters (saturate): sent={} missing_upstream={} in={} \
                 out={} dropped_queue_full={} balanced={}",
                r_max.sent,
                after.missing_upstream - before.missing_upstream,
                after.packets_in - before.packets_in,
                after.packets_out - before.packets_out,
                after.dropped_queue_full - before.dropped_queue_full,
                after.balanced()
            );
            println!(
                "ratio   N={n:<3} added latency p50 {:.1} us, p99 {:.1} us; saturated throughput \
                 relay/udp = {:.3}",
                percentile(&r_lat.latencies_ns, 0.5) - percentile(&u_lat.latencies_ns, 0.5),
                percentile(&r_lat.latencies_ns, 0.99) - percentile(&u_lat.latencies_ns, 0.99),
                (r_max.delivered as f64 / r_max.secs) / (u_max.delivered as f64 / u_max.secs)
            );
            rig.sfu.close().await;
        }
    });
}

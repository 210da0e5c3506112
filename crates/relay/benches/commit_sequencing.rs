//! Commit sequencing latency through the room store: in memory vs NATS JetStream (a local
//! `nats-server -js` started by the bench, and a 3-node cluster), in the same run.
//!
//! `cargo bench -p blindcall-relay --bench commit_sequencing`
//!
//! Besides criterion's estimates, prints p50/p99 of every individual claim it timed, per case:
//! - `memory/won`, `jetstream/won`: a claim of a fresh epoch (the create-only write wins);
//! - `jetstream/lost`: a claim of an epoch already held (the write is refused, the winner read);
//! - `jetstream-r3/won`, `jetstream-r3/lost`: the same on a 3-node cluster (bucket of 3
//!   replicas), the claimer connected to one node.
//!
//! Commits are 2 KiB (about an Add commit in a grown tree of 256 members, DESIGN.md).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/nats/mod.rs"]
mod nats;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blindcall_relay::RoomId;
use blindcall_relay::store::{CommitRecord, JetStreamConfig, RoomStore, Sequenced};
use criterion::{Criterion, criterion_group, criterion_main};

const COMMIT_LEN: usize = 2048;
/// The memory case starts from an empty store every this many claims.
const FRESH_MEMORY_EVERY: u64 = 10_000;

thread_local! {
    static SAMPLES: RefCell<BTreeMap<&'static str, Vec<Duration>>> = const { RefCell::new(BTreeMap::new()) };
}

fn record(room: &RoomId, epoch: u64) -> CommitRecord {
    let mut commit = vec![0u8; COMMIT_LEN];
    commit[..8].copy_from_slice(&epoch.to_be_bytes());
    CommitRecord::new(room.clone(), epoch, commit)
}

/// Times each claim on its own; `fresh` claims new epochs, otherwise epochs already held.
fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &'static str,
    store: &RoomStore,
    fresh: bool,
) {
    let mut store = store.clone();
    let room = RoomId(format!("bench-{name}").into_bytes());
    let mut next_epoch = 0u64;
    if !fresh {
        // Epoch 0 is held by a winner; every timed claim of it loses.
        let held = rt
            .block_on(store.sequence_commit(&record(&room, 0)))
            .unwrap();
        assert_eq!(held, Sequenced::Won);
    }
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if fresh
                    && next_epoch.is_multiple_of(FRESH_MEMORY_EVERY)
                    && store.kind() == "memory"
                {
                    // Keep the bench's own memory bounded (a relay keeps `commit_history`).
                    store = RoomStore::default();
                }
                let rec = if fresh {
                    next_epoch += 1;
                    record(&room, next_epoch)
                } else {
                    CommitRecord::new(room.clone(), 0, vec![1u8; COMMIT_LEN])
                };
                let started = Instant::now();
                let outcome = rt.block_on(store.sequence_commit(&rec)).unwrap();
                let took = started.elapsed();
                assert_eq!(matches!(outcome, Sequenced::Won), fresh, "{name}");
                total += took;
                SAMPLES.with(|s| s.borrow_mut().entry(name).or_default().push(took));
            }
            total
        })
    });
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted[i]
}

fn commit_sequencing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = RoomStore::default();
    bench_store(c, &rt, "memory/won", &memory, true);

    let server = nats::NatsServer::start_or_skip("commit_sequencing jetstream");
    if let Some(server) = &server {
        let store = rt
            .block_on(RoomStore::jetstream(JetStreamConfig::new(server.url())))
            .unwrap();
        bench_store(c, &rt, "jetstream/won", &store, true);
        bench_store(c, &rt, "jetstream/lost", &store, false);
    }

    if let Some(cluster) = nats::NatsCluster::start_or_skip("commit_sequencing jetstream-r3", 3) {
        let mut cfg = JetStreamConfig::new(cluster.nodes[0].url());
        cfg.bucket = "blindcall_rooms_r3".to_owned();
        cfg.replicas = 3;
        cfg.op_timeout = Duration::from_secs(5);
        // The cluster serves JetStream once it has elected its leader.
        let deadline = Instant::now() + Duration::from_secs(60);
        let store = loop {
            match rt.block_on(RoomStore::jetstream(cfg.clone())) {
                Ok(store) => break store,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("cluster not ready yet: {e}");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("the 3-node cluster never served JetStream: {e}"),
            }
        };
        bench_store(c, &rt, "jetstream-r3/won", &store, true);
        bench_store(c, &rt, "jetstream-r3/lost", &store, false);
    }

    println!(
        "\ncommit sequencing latency per claim ({COMMIT_LEN}-byte commits, every timed claim):"
    );
    println!("{:<16} {:>8} {:>12} {:>12}", "case", "claims", "p50", "p99");
    SAMPLES.with(|s| {
        for (name, samples) in s.borrow_mut().iter_mut() {
            samples.sort();
            println!(
                "{:<16} {:>8} {:>12.1?} {:>12.1?}",
                name,
                samples.len(),
                percentile(samples, 50),
                percentile(samples, 99)
            );
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = commit_sequencing
}
criterion_main!(benches);

//! MLS call group: time to create a commit (add one, remove one, self-update) at member A and
//! to process it at member B, commit size, and memory per member, for calls of 2, 16, 128 and
//! 512 members in two kinds of tree:
//!
//! * `grown`: built the way a call builds it with our defaults: members join one by one, and
//!   each joiner sends its path-update commit right after joining (DESIGN.md "Tree health").
//! * `batch`: one batch add by A, no other member ever commits (worst case: blank tree).
//!
//! Only A (creator, host) and B (first joiner) are kept current while building; every other
//! joiner processes its Welcome, sends its path update, and is dropped. Create is measured on
//! A, then the pending commit is abandoned (untimed); process is measured on a fresh duplicate
//! of B for every iteration (duplication untimed). Then a report compares the 512 `grown`
//! medians with the targets (create and process < 10 ms, commit < 4 kB) and lists sizes and
//! memory for every fixture.
//!
//! Run: `cargo bench --bench group` (release). `BLINDCALL_BENCH_SIZES=2,16` limits sizes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use blindcall_group::{CallConfig, CallGroup, Client, MemberConfig, MlsSuite};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const DEFAULT_SIZES: [usize; 4] = [2, 16, 128, 512];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tree {
    Grown,
    Batch,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Tree::Grown => "grown",
            Tree::Batch => "batch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Add,
    Remove,
    Update,
}

impl Op {
    const ALL: [Op; 3] = [Op::Add, Op::Remove, Op::Update];
    fn name(self) -> &'static str {
        match self {
            Op::Add => "add_one",
            Op::Remove => "remove_one",
            Op::Update => "self_update",
        }
    }
}

struct Fixture {
    n: usize,
    tree: Tree,
    a: CallGroup,
    b: CallGroup,
    now: Instant,
    kp_counter: usize,
}

fn drain(g: &mut CallGroup) {
    while g.poll_event().is_some() {}
}

fn local() -> MemberConfig {
    MemberConfig::default()
}

fn build(n: usize, tree: Tree) -> Fixture {
    assert!(n >= 2);
    let mut now = Instant::now();
    let call = CallConfig::default();
    let mut a = CallGroup::create(
        Client::new("m0", MlsSuite::default()).unwrap(),
        &call,
        local(),
        now,
    )
    .unwrap();
    let mut b: Option<CallGroup> = None;
    match tree {
        Tree::Grown => {
            for i in 1..n {
                now += Duration::from_millis(1);
                let client = Client::new(&format!("m{i}"), MlsSuite::default()).unwrap();
                let kp = client.key_package().unwrap();
                let pc = a.add_members(&[&kp]).unwrap();
                let commit = pc.commit().to_vec();
                let welcome = pc.welcome().unwrap().to_vec();
                pc.confirm(&mut a, now).unwrap();
                if let Some(b) = b.as_mut() {
                    b.handle_message(now, &commit).unwrap();
                }
                let mut joiner = CallGroup::join(client, &welcome, local(), now).unwrap();
                // Our default: the joiner's path update, sequenced like any commit.
                let pu = joiner.self_update().unwrap();
                let update = pu.commit().to_vec();
                pu.confirm(&mut joiner, now).unwrap();
                a.handle_message(now, &update).unwrap();
                if let Some(b) = b.as_mut() {
                    b.handle_message(now, &update).unwrap();
                }
                drain(&mut a);
                if b.is_none() {
                    drain(&mut joiner);
                    b = Some(joiner);
                } else if let Some(b) = b.as_mut() {
                    drain(b);
                }
            }
        }
        Tree::Batch => {
            let clients: Vec<Client> = (1..n)
                .map(|i| Client::new(&format!("m{i}"), MlsSuite::default()).unwrap())
                .collect();
            let kps: Vec<Vec<u8>> = clients.iter().map(|c| c.key_package().unwrap()).collect();
            let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
            let pc = a.add_members(&refs).unwrap();
            let welcome = pc.welcome().unwrap().to_vec();
            pc.confirm(&mut a, now).unwrap();
            let first = clients.into_iter().next().unwrap();
            b = Some(CallGroup::join(first, &welcome, local(), now).unwrap());
        }
    }
    let mut b = b.unwrap();
    // Steady state: old epochs' retention has passed.
    now += Duration::from_secs(11);
    a.handle_timeout(now);
    b.handle_timeout(now);
    drain(&mut a);
    drain(&mut b);
    assert_eq!(a.roster().len(), n);
    assert_eq!(a.security_code(), b.security_code());
    Fixture {
        n,
        tree,
        a,
        b,
        now,
        kp_counter: 0,
    }
}

impl Fixture {
    fn fresh_kp(&mut self) -> Vec<u8> {
        self.kp_counter += 1;
        Client::new(&format!("new{}", self.kp_counter), MlsSuite::default())
            .unwrap()
            .key_package()
            .unwrap()
    }

    /// The member removed by `Op::Remove`: the last leaf (B itself in a call of 2).
    fn remove_target(&self) -> u32 {
        self.a
            .roster()
            .members()
            .iter()
            .map(|m| m.leaf)
            .max()
            .unwrap()
    }

    /// Creates `op` at A, returns (time to create, commit bytes); A's pending commit is
    /// abandoned afterwards (untimed).
    fn create(&mut self, op: Op) -> (Duration, Vec<u8>) {
        let kp = if op == Op::Add {
            Some(self.fresh_kp())
        } else {
            None
        };
        let target = self.remove_target();
        let start = Instant::now();
        let pc = match op {
            Op::Add => self.a.add_members(&[kp.as_deref().unwrap()]),
            Op::Remove => self.a.remove_members(&[target]),
            Op::Update => self.a.self_update(),
        }
        .unwrap();
        let took = start.elapsed();
        let commit = pc.commit().to_vec();
        drop(black_box(pc));
        self.a.abandon_pending_commit().unwrap();
        (took, commit)
    }

    /// Processes `commit` at a fresh duplicate of B; returns the time to process.
    fn process(&self, commit: &[u8]) -> Duration {
        let mut b = self.b.duplicate_for_bench().unwrap();
        let start = Instant::now();
        b.handle_message(self.now, commit).unwrap();
        let took = start.elapsed();
        drop(black_box(b));
        took
    }
}

fn sizes() -> Vec<usize> {
    match std::env::var("BLINDCALL_BENCH_SIZES") {
        Ok(s) => s
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .filter(|n| *n >= 2)
            .collect(),
        Err(_) => DEFAULT_SIZES.to_vec(),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    n: usize,
    tree: Tree,
    op: Op,
    create_median: Duration,
    process_median: Duration,
    commit_bytes: usize,
}

struct MemRow {
    n: usize,
    tree: Tree,
    storage_a: usize,
    storage_b: usize,
    heap_b: isize,
    build: Duration,
}

fn benches(c: &mut Criterion) {
    let mut rows = Vec::new();
    let mut mem = Vec::new();
    for n in sizes() {
        for tree in [Tree::Grown, Tree::Batch] {
            let started = Instant::now();
            let mut fx = build(n, tree);
            let build_time = started.elapsed();
            // Memory per member: heap of one member's full state (a duplicate of B: MLS storage,
            // loaded group, key ring) and the serialized MLS storage of A and B.
            let region = Region::new(GLOBAL);
            let copy = fx.b.duplicate_for_bench().unwrap();
            let heap_b = region.change().bytes_allocated as isize
                - region.change().bytes_deallocated as isize;
            drop(copy);
            mem.push(MemRow {
                n,
                tree,
                storage_a: fx.a.storage_bytes(),
                storage_b: fx.b.storage_bytes(),
                heap_b,
                build: build_time,
            });

            let mut group = c.benchmark_group(format!("group/{}", tree.name()));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(2));
            for op in Op::ALL {
                group.bench_function(
                    BenchmarkId::new(format!("create_{}", op.name()), fx.n),
                    |bch| bch.iter_custom(|iters| (0..iters).map(|_| fx.create(op).0).sum()),
                );
                let (_, commit) = fx.create(op);
                group.bench_function(
                    BenchmarkId::new(format!("process_{}", op.name()), fx.n),
                    |bch| bch.iter_custom(|iters| (0..iters).map(|_| fx.process(&commit)).sum()),
                );
                // Our own medians for the report (criterion's are in target/criterion).
                let runs = if n >= 512 { 11 } else { 21 };
                let creates: Vec<Duration> = (0..runs).map(|_| fx.create(op).0).collect();
                let processes: Vec<Duration> = (0..runs).map(|_| fx.process(&commit)).collect();
                rows.push(Row {
                    n,
                    tree,
                    op,
                    create_median: median(creates),
                    process_median: median(processes),
                    commit_bytes: commit.len(),
                });
            }
            group.finish();
            assert_eq!(fx.tree, tree);
        }
    }
    report(&rows, &mem);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(rows: &[Row], mem: &[MemRow]) {
    println!("\n== blindcall-group: commit cost (medians of our own runs) ==");
    println!(
        "{:>5} {:>6} {:>12} {:>12} {:>12} {:>12}",
        "n", "tree", "op", "create ms", "process ms", "commit B"
    );
    for r in rows {
        println!(
            "{:>5} {:>6} {:>12} {:>12.3} {:>12.3} {:>12}",
            r.n,
            r.tree.name(),
            r.op.name(),
            ms(r.create_median),
            ms(r.process_median),
            r.commit_bytes
        );
    }
    println!("\n== memory per member ==");
    println!(
        "{:>5} {:>6} {:>14} {:>14} {:>14} {:>10}",
        "n", "tree", "storage A (B)", "storage B (B)", "heap B (B)", "build s"
    );
    for m in mem {
        println!(
            "{:>5} {:>6} {:>14} {:>14} {:>14} {:>10.1}",
            m.n,
            m.tree.name(),
            m.storage_a,
            m.storage_b,
            m.heap_b,
            m.build.as_secs_f64()
        );
    }
    let limit_ms = 10.0;
    let limit_bytes = 4096usize;
    println!("\n== targets at 512 members, grown tree (our defaults) ==");
    let mut all_ok = true;
    for r in rows.iter().filter(|r| r.n == 512 && r.tree == Tree::Grown) {
        let (c, p) = (ms(r.create_median), ms(r.process_median));
        let ok = c < limit_ms && p < limit_ms && r.commit_bytes < limit_bytes;
        all_ok &= ok;
        println!(
            "{:>12}: create {:.3} ms ({:.2}x of 10 ms), process {:.3} ms ({:.2}x), commit {} B ({:.2}x of 4 kB) -> {}",
            r.op.name(),
            c,
            c / limit_ms,
            p,
            p / limit_ms,
            r.commit_bytes,
            r.commit_bytes as f64 / limit_bytes as f64,
            if ok { "PASS" } else { "FAIL" }
        );
        if let Some(w) = rows
            .iter()
            .find(|w| w.n == 512 && w.tree == Tree::Batch && w.op == r.op)
        {
            println!(
                "{:>12}  worst case (batch tree): create {:.3} ms, process {:.3} ms, commit {} B",
                "",
                ms(w.create_median),
                ms(w.process_median),
                w.commit_bytes
            );
        }
    }
    if rows.iter().any(|r| r.n == 512) {
        println!("targets: {}", if all_ok { "ALL PASS" } else { "SOME FAIL" });
    }
}

criterion_group!(group_benches, benches);
criterion_main!(group_benches);

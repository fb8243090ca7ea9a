//! One writer, even when the leader stalls (issue 19), on the test bed's real control plane: two
//! `spillway run` replicas, each behind its own fault proxy, with short Lease settings. The
//! leader is frozen (SIGSTOP) or cut off from the apiserver (the proxy forwards nothing) in the
//! middle of a decision, for longer than the Lease; the standby takes over and scales; the old
//! leader comes back. The apiserver's audit log then says who wrote what and when: no gateway
//! write may come from a replica that did not hold the Lease when the apiserver received it.
//!
//! The pause point is made from outside the process: the proxy holds the leader's scale PATCH
//! (so it is frozen after it read the load and decided, with its write in flight), or, in the
//! seeded loop, the pause falls at a random moment after a load change.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use support::audit::{Tenures, tenures};
use support::faultproxy::Hold;
use support::live::{
    Agent, agent, bed, lease_holder, metric_sum, policy, signal, terminate, wait_for, workdir,
};
use support::prom::{LoadExporter, Prom, try_http_get};
use support::testbed::Testbed;

/// A Lease of 3 s renewed every 0.5 s; a write needs 1 s left (every API call is bounded by 1 s).
const LEASE: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--lease-retry-period",
    "500ms",
    "--api-timeout",
    "1s",
];

const SCALE: &str = "/deployments/istio-ingressgateway/scale";

/// Two replicas: agent-a leads, agent-b stands by.
async fn pair(tb: &Testbed, dir: &std::path::Path, prom: &str) -> (Agent, Agent) {
    let a = agent(tb, dir, prom, "agent-a", true, &LEASE).await;
    wait_for("agent-a leads", 60, || async {
        lease_holder(tb).await.as_deref() == Some("agent-a")
    })
    .await;
    let b = agent(tb, dir, prom, "agent-b", true, &LEASE).await;
    wait_for("agent-b decides as a standby", 30, || async {
        try_http_get(b.admin, "/metrics").is_some_and(|(_, m)| m.contains("spillway_leader 0"))
    })
    .await;
    (a, b)
}

fn fenced(a: &Agent) -> f64 {
    metric_sum(a, "spillway_fenced_writes_total")
}

/// Whether the agent answers and says it does not lead.
fn follows(a: &Agent) -> bool {
    try_http_get(a.admin, "/metrics").is_some_and(|(_, m)| m.contains("spillway_leader 0"))
}

/// The replica count the policy asks for at `rps` (500 per replica, 2 to 30).
fn replicas_for(rps: f64) -> i32 {
    ((rps / 500.0).ceil() as i32).clamp(2, 30)
}

/// Stops both agents (a graceful stop finishes in-flight work, so every write they will ever
/// send is in the audit log) and reads the log.
fn finish(tb: &Testbed, agents: &mut [&mut Agent]) -> Tenures {
    for a in agents.iter_mut() {
        terminate(a);
    }
    let t = tenures(&tb.audit(), "spillway");
    assert!(
        t.stale.is_empty(),
        "{} of {} gateway writes came from a replica that did not hold the Lease:\n{}",
        t.stale.len(),
        t.gateway_writes,
        t.stale.join("\n")
    );
    t
}

/// How the leader is taken away.
#[derive(Clone, Copy, Debug)]
enum Pause {
    /// SIGSTOP: the whole process stops (a long GC-like pause, a throttled container).
    Freeze,
    /// The proxy forwards nothing and answers nothing (a network partition).
    Partition,
}

fn pause(a: &Agent, how: Pause) {
    match how {
        Pause::Freeze => signal(a, "STOP"),
        Pause::Partition => a.proxy.with(|st| st.partitioned = true),
    }
}

fn resume(a: &Agent, how: Pause) {
    match how {
        Pause::Freeze => signal(a, "CONT"),
        Pause::Partition => a.proxy.with(|st| st.partitioned = false),
    }
}

/// The leader decides a scale-up; its PATCH is held at its proxy; then it is paused (frozen or
/// cut off) for longer than the Lease. The standby takes over and scales further; the old leader
/// comes back and must not write again.
async fn paused_mid_write(name: &str, how: Pause) {
    let dir = workdir(name);
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let (mut a, mut b) = pair(&tb, dir.path(), &prom.url()).await;
    wait_for("the gateway at 4 replicas", 60, || async {
        tb.replicas().await == 4
    })
    .await;

    a.proxy.with(|st| {
        st.hold = Some(Hold {
            method: "PATCH",
            path_contains: SCALE.into(),
        })
    });
    load.set(5000.0);
    wait_for("agent-a's scale to 10 sent (and held)", 30, || async {
        a.proxy.with(|st| st.held) >= 1
    })
    .await;
    pause(&a, how);
    let paused_at = Instant::now();
    // Frozen, the write it sent before the pause goes on (and lands while agent-a still holds
    // the Lease); cut off, it waits in the partition until agent-a gives up on it.
    a.proxy.with(|st| st.hold = None);
    load.set(8000.0);
    wait_for("agent-b takes the Lease", 30, || async {
        lease_holder(&tb).await.as_deref() == Some("agent-b")
    })
    .await;
    let takeover = paused_at.elapsed();
    wait_for("agent-b scales to 16", 60, || async {
        tb.replicas().await == 16
    })
    .await;
    let first_b_write = b.writes().first().map(|w| w.at).unwrap();
    resume(&a, how);
    wait_for("agent-a knows it lost the Lease", 30, || async {
        follows(&a)
    })
    .await;
    // The proxy's view: what of agent-a's reached the apiserver after agent-b wrote.
    let late = |a: &Agent| -> Vec<String> {
        a.proxy.with(|st| {
            st.writes()
                .into_iter()
                .filter(|l| l.forwarded && l.at > first_b_write)
                .filter(|l| !l.is_lease() && !l.path.contains("/events"))
                .map(|l| format!("{} {} {}", l.method, l.path, l.status))
                .collect()
        })
    };
    if matches!(how, Pause::Freeze) {
        // Its in-flight decision goes on to write the status: fenced (or, without a fence,
        // written late).
        wait_for("agent-a's in-flight decision ends", 30, || async {
            fenced(&a) >= 1.0 || !late(&a).is_empty()
        })
        .await;
    }
    let late = late(&a);
    assert!(late.is_empty(), "agent-a wrote after agent-b: {late:?}");
    let fenced_a = fenced(&a);
    if matches!(how, Pause::Freeze) {
        assert!(fenced_a >= 1.0, "agent-a's status write was not fenced");
    }
    let t = finish(&tb, &mut [&mut a, &mut b]);
    let closest = t.margins.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "{how:?}: takeover {takeover:?} after the pause; 0 stale of {} gateway writes; agent-a fenced {fenced_a} write(s); holders {:?}; closest call {closest:.2} s",
        t.gateway_writes,
        t.takeovers
            .iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
    );
    assert!(t.takeovers.len() >= 2, "{:?}", t.takeovers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_mid_write_never_writes_after_the_new_leader() {
    paused_mid_write("fence-frozen", Pause::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_mid_write_never_writes_after_the_new_leader() {
    paused_mid_write("fence-partition", Pause::Partition).await;
}

/// Random pause points: each run changes the load and pauses the leader (frozen or cut off, at
/// random) a random 0–2 s later, which falls before, during or after its Prometheus query,
/// decision and writes; the standby takes over and scales to the next load; the old leader comes
/// back. `SPILLWAY_FENCE_RUNS` (3) runs, seeded by `SPILLWAY_FENCE_SEED` (19);
/// `scripts/fence-soak.sh` runs a longer count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pause_points_leave_no_stale_write() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let runs = env("SPILLWAY_FENCE_RUNS", 3);
    let seed = env("SPILLWAY_FENCE_SEED", 19);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = workdir("fence-random");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let (a, b) = pair(&tb, dir.path(), &prom.url()).await;
    let mut agents = [a, b];
    // 2,500 to 9,000 rps in steps of 500: every step asks for another replica count, within
    // what the cluster holds (ECS 12, ECI 9 pods).
    let rps = |step: u64| 500.0 * (5 + step % 14) as f64;
    let mut step = 0;
    let mut takeovers = vec![];
    for run in 0..runs {
        let holder = lease_holder(&tb).await.unwrap();
        let l = agents.iter().position(|a| a.who == holder).unwrap();
        let f = 1 - l;
        step += 1;
        load.set(rps(step));
        // The pause point: chosen at random, not a wait for anything.
        let after = Duration::from_millis(rng.next_u64() % 2000);
        let how = if rng.next_u64() % 2 == 0 {
            Pause::Freeze
        } else {
            Pause::Partition
        };
        tokio::time::sleep(after).await;
        pause(&agents[l], how);
        let paused_at = Instant::now();
        step += 1;
        load.set(rps(step));
        let standby = agents[f].who.clone();
        wait_for("the standby takes the Lease", 30, || async {
            lease_holder(&tb).await.as_deref() == Some(standby.as_str())
        })
        .await;
        let takeover = paused_at.elapsed();
        takeovers.push(takeover.as_secs_f64());
        let want = replicas_for(rps(step));
        wait_for("the new leader scales", 60, || async {
            tb.replicas().await == want
        })
        .await;
        resume(&agents[l], how);
        wait_for("the old leader knows it lost the Lease", 30, || async {
            follows(&agents[l])
        })
        .await;
        eprintln!(
            "run {run}: {} {how:?} {after:?} after the load change; {standby} took over after {takeover:?}",
            agents[l].who
        );
    }
    let fenced_total = agents.iter().map(fenced).fold(0.0, |s, x| s + x);
    let [a, b] = &mut agents;
    let t = finish(&tb, &mut [a, b]);
    takeovers.sort_by(f64::total_cmp);
    let closest = t.margins.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "{runs} runs (seed {seed}): 0 stale of {} gateway writes; {} changes of holder; takeover after the pause {:.2}–{:.2} s (median {:.2} s); {fenced_total} writes fenced; closest call {closest:.2} s",
        t.gateway_writes,
        t.takeovers.len() - 1,
        takeovers[0],
        takeovers[takeovers.len() - 1],
        takeovers[takeovers.len() / 2],
    );
    assert!(t.takeovers.len() > runs as usize, "{:?}", t.takeovers);
}

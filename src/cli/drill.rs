//! `spillway drill`: a scenario (the built-in one, a file, the cluster as it is, or a load
//! recorded by Prometheus) run under each policy on the simulator, or a folder of them as a
//! suite; optionally serving the `spillway` policy's metrics, paced, for Prometheus to scrape.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use spillway::clock::unix_now;
use spillway::sim::drill::{Observer, Point};
use spillway::sim::{PolicyKind, Scenario};

use super::flags::{
    ClusterArgs, HistoryArgs, chunk_progress, history_prometheus, history_window, kube_client,
    read_options,
};
use super::mark::MarkArgs;
use super::score::ScoreArgs;

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Score a real drill (a load test against the real gateway) from Prometheus history: the
    /// load and spillway's own metrics give the same figures as a simulated drill, beside the
    /// simulator's prediction for the recorded load. Writes report.json, timeline.csv,
    /// chart.svg and report.html.
    Score(Box<ScoreArgs>),
    /// Mark a drill's window on its ElasticGateway (annotation `drill.spillway.io/NAME`): the
    /// agent exports it as `spillway_drill_active`, which the shipped dashboard shows as an
    /// annotation, and `drill score --name` finds the window by it.
    Mark(MarkArgs),
}

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DrillArgs {
    #[command(subcommand)]
    pub action: Option<DrillCommand>,
    /// Scenario file (YAML). Without one, the built-in scenario: the guide's cluster (4 dedicated
    /// ECS nodes, one virtual node, a gateway at 80/20) and a 10x flash crowd.
    #[arg(conflicts_with = "suite")]
    pub scenario: Option<PathBuf>,
    /// Run every scenario (*.yaml) of this folder under spillway, hpa, the reactive bound and the
    /// oracle, and print the scorecard (also written to OUT/scorecard.txt and OUT/suite.json).
    #[arg(long)]
    pub suite: Option<PathBuf>,
    /// Folder for report.json, timeline.csv and chart.svg.
    #[arg(long, env = "SPILLWAY_DRILL_OUT", default_value = "drill-out")]
    pub out: PathBuf,
    /// Policies to compare (default: the scenario's, normally spillway,hpa,static,oracle).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub policies: Vec<PolicyKind>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the scenario's duration, in seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Print the scenario as YAML and exit: the built-in one, the file given, the cluster's
    /// (--from-cluster) and/or with the recorded load (--load-from-prometheus). What it prints,
    /// `spillway drill SCENARIO` runs as it is.
    #[arg(long)]
    pub print_scenario: bool,
    /// Make the scenario from the cluster as it is now (read-only): the ECS pool's nodes and what
    /// other workloads request on them, the virtual nodes, the gateway's replicas, pod requests
    /// and policy.
    #[arg(long, conflicts_with = "scenario", requires = "gateway")]
    pub from_cluster: bool,
    #[command(flatten)]
    pub kube: ClusterArgs,
    /// With --from-cluster: the ElasticGateway, as NAMESPACE/NAME or a NAME unique across
    /// namespaces.
    #[arg(long)]
    pub gateway: Option<String>,
    /// With --from-cluster: requests per second one gateway pod serves (default: the policy's
    /// target per replica × 1.4).
    #[arg(long)]
    pub capacity_per_pod: Option<f64>,
    /// Replay the load Prometheus recorded in --start..--end (a range query) instead of the
    /// scenario's own, under every policy.
    #[arg(long, requires_all = ["start", "end"])]
    pub load_from_prometheus: Option<String>,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Serve spillway's metrics (as the live agent would) at this address while the `spillway`
    /// policy runs, paced by --speed, so Prometheus can scrape a drill.
    #[arg(long, env = "SPILLWAY_DRILL_METRICS_ADDR")]
    pub serve_metrics: Option<std::net::SocketAddr>,
    /// With --serve-metrics: simulated seconds per wall second (1 = real time).
    #[arg(long, default_value_t = 1.0, requires = "serve_metrics")]
    pub speed: f64,
    /// With --serve-metrics: keep serving this many seconds after the drill ends.
    #[arg(long, default_value_t = 0, requires = "serve_metrics")]
    pub linger: u64,
}

/// Drives the progress bar and, when serving metrics, records and paces the `spillway` policy.
pub struct DrillObserver {
    pub bar: indicatif::ProgressBar,
    pub serve: Option<Served>,
}

pub struct Served {
    pub metrics: std::sync::Arc<spillway::metrics::Metrics>,
    pub gw: spillway::model::GatewayKey,
    pub policy: spillway::policy::ElasticGatewaySpec,
    pub speed: f64,
    /// How often the drill's spillway decides, in wall-clock time at this speed.
    pub every: std::time::Duration,
    pub started: std::time::Instant,
    /// Unix time the served drill started.
    pub started_unix: f64,
}

impl Observer for DrillObserver {
    fn step(&mut self, policy: PolicyKind, t: u64, _point: &Point) {
        self.bar.inc(1);
        if let (Some(s), PolicyKind::Spillway) = (&self.serve, policy) {
            let due = s.started + std::time::Duration::from_secs_f64(t as f64 / s.speed);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
    }

    fn decision(
        &mut self,
        policy: PolicyKind,
        gateway: &str,
        obs: &spillway::engine::Observation<'_>,
        d: &spillway::engine::Decision,
        plan: &spillway::act::Plan,
        seconds: f64,
    ) {
        if let (Some(s), PolicyKind::Spillway) = (&self.serve, policy) {
            // A neighbour's series carry its own name, in the drill gateway's namespace.
            let neighbour;
            let gw = if gateway == "gateway" {
                &s.gw
            } else {
                neighbour = spillway::model::GatewayKey::new(&s.gw.namespace, gateway);
                &neighbour
            };
            s.metrics
                .record_decision(gw, &s.policy, obs.pods, obs.fast, d, plan, seconds);
            s.metrics.reconciled(gw, s.every);
            // A served drill is a drill: marked as one while it runs, as `drill mark` would.
            s.metrics.record_drills(
                gw,
                &[spillway::policy::marks::Mark {
                    name: "served-drill".into(),
                    start: s.started_unix,
                    end: None,
                }],
                unix_now(),
            );
        }
    }
}

/// Runs the drill with the metrics endpoint up; the `spillway` policy runs first, paced.
pub fn serve_drill(
    scenario: &Scenario,
    addr: std::net::SocketAddr,
    speed: f64,
    linger: u64,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<spillway::sim::DrillReport> {
    anyhow::ensure!(
        (0.001..=1e6).contains(&speed),
        "--speed must be within 0.001 and 1000000 (simulated seconds per wall second), got {speed}"
    );
    anyhow::ensure!(
        scenario.policies.contains(&PolicyKind::Spillway),
        "--serve-metrics shows the spillway policy: add it to --policies"
    );
    let mut scenario = scenario.clone();
    scenario
        .policies
        .sort_by_key(|p| *p != PolicyKind::Spillway);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = std::sync::Arc::new(spillway::metrics::Metrics::new());
    let admin = spillway::server::Admin::new(metrics.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (bound, serve) = runtime
        .block_on(spillway::server::bind(addr, admin.clone(), stopped))
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    let server = runtime.spawn(serve);
    admin.set_ready(true);
    // In a drill, this process is the one agent acting.
    admin.metrics.set_leader(true);
    eprintln!("serving drill metrics on http://{bound}/metrics at {speed}x");
    let policy = &scenario.policy;
    let mut observer = DrillObserver {
        bar,
        serve: Some(Served {
            metrics,
            gw: spillway::model::GatewayKey::new("istio-system", &policy.target.name),
            policy: policy.clone(),
            speed,
            every: std::time::Duration::from_secs_f64(
                scenario.controllers.spillway_interval_seconds as f64 / speed,
            ),
            started: std::time::Instant::now(),
            started_unix: unix_now(),
        }),
    };
    let report = spillway::sim::run(&scenario, &mut observer);
    observer.bar.finish_and_clear();
    std::thread::sleep(std::time::Duration::from_secs(linger));
    let _ = stop.send(true);
    let _ = runtime.block_on(server);
    Ok(report)
}

pub fn drill_suite(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use spillway::sim::suite;
    let loads = match suite::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let started = std::time::Instant::now();
    let results = suite::run(&loads, &mut spillway::sim::drill::Quiet);
    let card = suite::scorecard(&results);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("scorecard.txt"), &card)?;
    std::fs::write(
        out.join("suite.json"),
        serde_json::to_vec(&serde_json::json!({
            "verdict": suite::verdict(&results),
            "loads": results.iter().map(|r| serde_json::json!({
                "load": r.load,
                "summaries": r.report.runs.iter().map(|run| &run.summary).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?,
    )?;
    print!("{card}");
    println!(
        "ran {} loads in {:.1} s; wrote {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        out.join("scorecard.txt").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `spillway drill`: the scenario made, run under each policy, its report written.
pub fn drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.suite {
        return drill_suite(dir, &args.out);
    }
    let mut scenario = match &args.scenario {
        None => Scenario::default(),
        Some(path) => match Scenario::load(path) {
            Ok(s) => s,
            Err(errors) => {
                let errors = spillway::config::render(&errors);
                eprintln!("{}: invalid scenario\n{errors}", path.display());
                return Ok(ExitCode::from(2));
            }
        },
    };
    let now = unix_now();
    // The gateway's namespace, for the policy's load query.
    let mut namespace = "istio-system".to_string();
    if args.from_cluster {
        (scenario, namespace) = from_cluster(&args, now)?;
    }
    let mut data_notes = Vec::new();
    if let Some(url) = &args.load_from_prometheus {
        (scenario, data_notes) = with_recorded_load(&args, url, scenario, &namespace, now)?;
    }
    if args.print_scenario {
        let yaml = serde_saphyr::to_string(&scenario).context("rendering the scenario")?;
        print!("{yaml}");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.policies.is_empty() {
        scenario.policies = args.policies.clone();
    }
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(d) = args.duration {
        scenario.duration_seconds = d;
    }
    let errors = scenario.validate();
    if !errors.is_empty() {
        let errors = spillway::config::render(&errors);
        eprintln!("invalid drill settings\n{errors}");
        return Ok(ExitCode::from(2));
    }
    run_and_write(&args, &scenario, data_notes)
}

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The scenario of the cluster as it is now (read-only), and the gateway's namespace.
fn from_cluster(args: &DrillArgs, now: f64) -> anyhow::Result<(Scenario, String)> {
    let gateway = args.gateway.clone().unwrap_or_default();
    let (scenario, namespace) = current_thread()?.block_on(async {
        let client = kube_client(&args.kube).await?;
        spillway::replay::snapshot::read(&client, &gateway, args.capacity_per_pod, now)
            .await
            .map_err(anyhow::Error::from)
    })?;
    eprintln!(
        "read {}: {} ECS/virtual nodes, {} replicas of {} CPU / {} B, {} rps per pod",
        scenario.name,
        scenario.cluster.extra_nodes.len(),
        scenario.gateway.replicas,
        scenario.gateway.cpu,
        scenario.gateway.memory,
        scenario.gateway.capacity_per_pod_rps
    );
    Ok((scenario, namespace))
}

/// The scenario with the load Prometheus recorded in the window instead of its own, and the
/// notes on what was done to the data to make it whole.
fn with_recorded_load(
    args: &DrillArgs,
    url: &str,
    scenario: Scenario,
    namespace: &str,
    now: f64,
) -> anyhow::Result<(Scenario, Vec<String>)> {
    let (window, query) = history_window(&args.history, &scenario.policy, namespace, now)?;
    let prom = history_prometheus(url, &args.history)?;
    let opts = read_options(&args.history);
    let rec = current_thread()?.block_on(async {
        let raw =
            spillway::replay::recorded::fetch(&prom, &query, &window, &mut chunk_progress("load"))
                .await?;
        spillway::replay::recorded::to_grid(raw, &query, &window, opts)
    })?;
    let notes = rec.quality.notes();
    for n in &notes {
        eprintln!("note: {n}");
    }
    let source = format!("{query} from {}", prom.shown_url());
    let scenario = spillway::replay::recorded::replay_scenario(&scenario, &rec, &source);
    eprintln!(
        "recorded load: {} values, peak {:.0} rps, {} surge(s)",
        rec.values.len(),
        rec.values.iter().copied().fold(0.0, f64::max),
        scenario.load.surges().len()
    );
    Ok((scenario, notes))
}

/// Runs the scenario (serving metrics if asked) and writes the report, the timeline, the chart
/// and the HTML page.
fn run_and_write(
    args: &DrillArgs,
    scenario: &Scenario,
    data_notes: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // A progress bar only for runs long enough to need one (and only on a terminal).
    let samples = scenario.duration_seconds
        / (scenario.duration_seconds / 1500)
            .max(scenario.step_seconds)
            .max(1);
    let bar = if scenario.duration_seconds >= 6 * 3600 {
        indicatif::ProgressBar::new((samples + 1) * scenario.policies.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut report = match args.serve_metrics {
        None => {
            let mut observer = DrillObserver { bar, serve: None };
            let report = spillway::sim::run(scenario, &mut observer);
            observer.bar.finish_and_clear();
            report
        }
        Some(addr) => serve_drill(scenario, addr, args.speed, args.linger, bar)?,
    };
    report.data_notes = data_notes;
    let written = write_report(&report, &args.out)?;
    print!("{}", spillway::sim::report::table(&report));
    println!(
        "simulated {} s × {} policies in {:.2} s; wrote {written}",
        scenario.duration_seconds,
        scenario.policies.len(),
        started.elapsed().as_secs_f64(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes report.json, timeline.csv, chart.svg and report.html; returns their paths, listed.
pub fn write_report(
    report: &spillway::sim::DrillReport,
    out: &std::path::Path,
) -> anyhow::Result<String> {
    let context = || format!("writing the report to {}", out.display());
    let mut written = spillway::sim::report::write_all(report, out).with_context(context)?;
    written.push(spillway::replay::html::write(report, out).with_context(context)?);
    Ok(written
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", "))
}

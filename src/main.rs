//! The `spillway` command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::CustomResourceExt;

use spillway::policy::ElasticGateway;
use spillway::sim::drill::{Observer, Point};
use spillway::sim::{PolicyKind, Scenario};
use spillway::telemetry::{self, LogFormat};

/// Elasticity agent for Kubernetes ingress gateways: the gateway lives on ECS, the peak
/// overflows onto virtual-kubelet (ECI) nodes and comes back when it passes.
#[derive(Parser, Debug)]
#[command(name = "spillway", version, propagate_version = true)]
struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,spillway=debug`).
    #[arg(long, env = "SPILLWAY_LOG", default_value = "info", global = true)]
    log: String,
    /// Log format.
    #[arg(long, env = "SPILLWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Rehearse a traffic spike: the real engine on a simulated cluster, beside baseline policies.
    Drill(DrillArgs),
    /// Validate ElasticGateway policy files; every error is reported with its field path.
    Check {
        /// Policy manifests (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the ElasticGateway CustomResourceDefinition as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
struct DrillArgs {
    /// Scenario file (YAML). Without one, the built-in scenario: the guide's cluster (4 dedicated
    /// ECS nodes, one virtual node, a gateway at 80/20) and a 10x flash crowd.
    scenario: Option<PathBuf>,
    /// Folder for report.json, timeline.csv and chart.svg.
    #[arg(long, env = "SPILLWAY_DRILL_OUT", default_value = "drill-out")]
    out: PathBuf,
    /// Policies to compare (default: the scenario's, normally spillway,hpa,static,oracle).
    #[arg(long, value_enum, value_delimiter = ',')]
    policies: Vec<PolicyKind>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the scenario's duration, in seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Print the built-in scenario as YAML (a starting point for your own) and exit.
    #[arg(long)]
    print_scenario: bool,
    /// Serve spillway's metrics (as the live agent would) at this address while the `spillway`
    /// policy runs, paced by --speed, so Prometheus can scrape a drill.
    #[arg(long, env = "SPILLWAY_DRILL_METRICS_ADDR")]
    serve_metrics: Option<std::net::SocketAddr>,
    /// With --serve-metrics: simulated seconds per wall second (1 = real time).
    #[arg(long, default_value_t = 1.0, requires = "serve_metrics")]
    speed: f64,
    /// With --serve-metrics: keep serving this many seconds after the drill ends.
    #[arg(long, default_value_t = 0, requires = "serve_metrics")]
    linger: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.log, cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Crd => {
            print!("{}", crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => Ok(check(&files)),
        Command::Drill(args) => drill(args),
    }
}

fn crd_yaml() -> anyhow::Result<String> {
    serde_saphyr::to_string(&ElasticGateway::crd()).context("rendering the CRD")
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        match spillway::policy::load_policy_file(f) {
            Ok(egw) => println!(
                "{}: ok (ElasticGateway {}/{})",
                f.display(),
                egw.metadata.namespace.as_deref().unwrap_or("default"),
                egw.metadata.name.as_deref().unwrap_or("")
            ),
            Err(errors) => {
                failed = true;
                println!(
                    "{}: {} error(s)\n{}",
                    f.display(),
                    errors.len(),
                    spillway::config::render(&errors)
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Drives the progress bar and, when serving metrics, records and paces the `spillway` policy.
struct DrillObserver {
    bar: indicatif::ProgressBar,
    serve: Option<Served>,
}

struct Served {
    metrics: std::sync::Arc<spillway::metrics::Metrics>,
    gw: spillway::metrics::Gw,
    policy: spillway::policy::ElasticGatewaySpec,
    speed: f64,
    started: std::time::Instant,
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
        obs: &spillway::engine::Observation<'_>,
        d: &spillway::engine::Decision,
        plan: &spillway::act::Plan,
        seconds: f64,
    ) {
        if let (Some(s), PolicyKind::Spillway) = (&self.serve, policy) {
            s.metrics
                .record_decision(&s.gw, &s.policy, obs, d, plan, seconds);
        }
    }
}

/// Runs the drill with the metrics endpoint up; the `spillway` policy runs first, paced.
fn serve_drill(
    scenario: &Scenario,
    addr: std::net::SocketAddr,
    speed: f64,
    linger: u64,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<spillway::sim::DrillReport> {
    anyhow::ensure!(
        speed > 0.0 && speed.is_finite(),
        "--speed must be greater than 0, got {speed}"
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
            gw: spillway::metrics::Gw::new("istio-system", &policy.target.name),
            policy: policy.clone(),
            speed,
            started: std::time::Instant::now(),
        }),
    };
    let report = spillway::sim::run(&scenario, &mut observer);
    observer.bar.finish_and_clear();
    std::thread::sleep(std::time::Duration::from_secs(linger));
    let _ = stop.send(true);
    let _ = runtime.block_on(server);
    Ok(report)
}

fn drill(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = match &args.scenario {
        None => Scenario::default(),
        Some(path) => match Scenario::load(path) {
            Ok(s) => s,
            Err(errors) => {
                eprintln!(
                    "{}: invalid scenario\n{}",
                    path.display(),
                    spillway::config::render(&errors)
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    if args.print_scenario {
        print!(
            "{}",
            serde_saphyr::to_string(&scenario).context("rendering the scenario")?
        );
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
        eprintln!(
            "invalid drill settings\n{}",
            spillway::config::render(&errors)
        );
        return Ok(ExitCode::from(2));
    }
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
    let report = match args.serve_metrics {
        None => {
            let mut observer = DrillObserver { bar, serve: None };
            let report = spillway::sim::run(&scenario, &mut observer);
            observer.bar.finish_and_clear();
            report
        }
        Some(addr) => serve_drill(&scenario, addr, args.speed, args.linger, bar)?,
    };
    let written = spillway::sim::report::write_all(&report, &args.out)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    print!("{}", spillway::sim::report::table(&report));
    println!(
        "simulated {} s × {} policies in {:.2} s; wrote {}",
        scenario.duration_seconds,
        scenario.policies.len(),
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

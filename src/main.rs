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

struct Progress(indicatif::ProgressBar);

impl Observer for Progress {
    fn step(&mut self, _policy: PolicyKind, _t: u64, _point: &Point) {
        self.0.inc(1);
    }
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
    let mut progress = Progress(bar);
    let report = spillway::sim::run(&scenario, &mut progress);
    progress.0.finish_and_clear();
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

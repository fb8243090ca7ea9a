//! The command line: the top-level flags, one module per command, and the flag groups they
//! share ([`flags`]). Only this binary uses anyhow; the library returns its own errors.

mod check;
mod doctor;
mod drill;
mod flags;
mod mark;
mod run;
mod score;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spillway::telemetry::LogFormat;

use doctor::DoctorArgs;
use drill::DrillArgs;
use run::RunArgs;

/// Elasticity agent for Kubernetes ingress gateways: the gateway lives on ECS, the peak
/// overflows onto virtual-kubelet (ECI) nodes and comes back when it passes.
#[derive(Parser, Debug)]
#[command(name = "spillway", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,spillway=debug`).
    #[arg(long, env = "SPILLWAY_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(long, env = "SPILLWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent in a cluster: watch ElasticGateways, nodes and pods, read the load from
    /// Prometheus, decide, and (as the leader) scale and steer the gateways.
    Run(Box<RunArgs>),
    /// Rehearse a traffic spike: the real engine on a simulated cluster, beside baseline policies.
    Drill(Box<DrillArgs>),
    /// Validate ElasticGateway policy files; every error is reported with its field path.
    Check {
        /// Policy manifests (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a CustomResourceDefinition as YAML: the ElasticGateway's (deploy/crd.yaml), or
    /// the PlannedEvent's (deploy/plannedevent-crd.yaml).
    Crd {
        #[arg(value_enum, default_value = "elastic-gateway")]
        kind: check::CrdKind,
    },
    /// Check one ElasticGateway against the live cluster(s) and Prometheus: each query with its
    /// result, the pools, the target (and a dry-run write), HPAs or ASM autoscaling, the Lease.
    /// One line per check; exits 1 if any would stop the agent.
    Doctor(Box<DoctorArgs>),
    /// Print a shell completion script: `source <(spillway completion bash)`, or write it
    /// where your shell loads completions from.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `spillway man > spillway.1 && man ./spillway.1`.
    Man,
}

/// The name this binary was run as: `spillway`, or `kubectl-spillway` when kubectl runs it as a
/// plugin (`kubectl spillway doctor NS/NAME`).
fn invoked_as() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| n == "kubectl-spillway")
        .unwrap_or_else(|| "spillway".into())
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            // Installed as `kubectl-spillway` (a kubectl plugin), complete that name.
            let name = invoked_as();
            clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            use clap::CommandFactory as _;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { kind } => {
            print!("{}", check::crd_yaml(kind)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { files } => Ok(check::check(&files)),
        Command::Drill(args) => match args.action {
            Some(drill::DrillCommand::Score(score)) => score::run(*score),
            Some(drill::DrillCommand::Mark(mark)) => mark::run(mark),
            None => drill::drill(*args),
        },
        Command::Doctor(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(doctor::run(*args))
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run::run(*args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

//! `spillway doctor`: one ElasticGateway checked against the live cluster(s) and Prometheus with
//! the agent's own flags and code ([`spillway::doctor`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use spillway::policy::ElasticGateway;

use super::flags::{FastPathArgs, KubeArgs, LeaseArgs, PromArgs, kube_clients, mesh_client};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// The ElasticGateway to examine, as NAMESPACE/NAME in the cluster.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub gateway: Option<String>,
    /// Examine the policy in this file instead (YAML; its first document).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub prom: PromArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub fast_path: FastPathArgs,
    /// Output: one line per check (text), or one JSON object with every check (json), for CI
    /// pipelines and scripts.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

/// `spillway doctor`.
pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (data, _) = kube_clients(&args.kube, "doctor").await?;
    let egw: ElasticGateway = match (&args.file, &args.gateway) {
        (Some(f), _) => {
            let mut docs = spillway::policy::load_policy_files(f)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            anyhow::ensure!(!docs.is_empty(), "{}: no ElasticGateway in it", f.display());
            docs.remove(0).map_err(|errors| {
                anyhow::anyhow!(
                    "{}: invalid policy\n{}",
                    f.display(),
                    spillway::config::render(&errors)
                )
            })?
        }
        (None, Some(g)) => {
            let (ns, name) = g
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("{g:?} is not NAMESPACE/NAME"))?;
            kube::Api::<ElasticGateway>::namespaced(data.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading ElasticGateway {g}"))?
        }
        (None, None) => anyhow::bail!("give NAMESPACE/NAME or -f FILE"),
    };
    let doc = spillway::doctor::Doctor {
        data,
        mesh: mesh_client(&args.kube, "doctor").await?,
        prom: args.prom.client()?,
        lease: args.lease.leader_election.then(|| {
            (
                args.lease.lease_name.clone(),
                args.lease.lease_namespace.clone(),
            )
        }),
        api_timeout: args.kube.api_timeout,
        fast_path: args
            .fast_path
            .config()
            .map(spillway::fastpath::FastPath::new)
            .transpose()?,
        now: spillway::clock::unix_now(),
    };
    let gateway = format!(
        "{}/{}",
        egw.metadata.namespace.as_deref().unwrap_or("default"),
        egw.metadata.name.as_deref().unwrap_or("")
    );
    if args.output == Output::Text {
        println!(
            "spillway doctor: ElasticGateway {gateway}, Prometheus {}",
            doc.prom.shown_url()
        );
    }
    let report = doc.examine(&egw).await;
    match args.output {
        Output::Text => print!("{report}"),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&spillway::doctor::JsonReport {
                gateway,
                prometheus: doc.prom.shown_url().to_string(),
                checks: &report.checks,
                failed: report.failed(),
            })?
        ),
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

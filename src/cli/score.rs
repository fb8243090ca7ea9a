//! `spillway drill score`: a real drill scored from Prometheus history, beside the simulator's
//! prediction for the recorded load.

use std::path::PathBuf;
use std::process::ExitCode;

use spillway::clock::unix_now;
use spillway::sim::{PolicyKind, Scenario};

use super::drill::write_report;
use super::flags::{
    ClusterArgs, HistoryArgs, history_prometheus, history_window, kube_client, parse_lookback,
    read_options, split_gateway,
};

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// Prometheus base URL holding the drill's history.
    #[arg(long, env = "SPILLWAY_PROMETHEUS_URL")]
    pub prometheus: String,
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The drill's name (from `spillway drill mark`): its window, instead of --start/--end.
    #[arg(long)]
    pub name: Option<String>,
    /// How far back to look for a named drill.
    #[arg(long, default_value = "30d", value_parser = parse_lookback)]
    pub within: f64,
    /// The ElasticGateway manifest (YAML) that ran the drill.
    #[arg(long, conflicts_with = "from_cluster")]
    pub policy: Option<PathBuf>,
    /// Read the policy and the cluster for the prediction from the cluster (read-only).
    #[arg(long)]
    pub from_cluster: bool,
    #[command(flatten)]
    pub kube: ClusterArgs,
    /// The ElasticGateway, as NAMESPACE/NAME or a NAME unique across namespaces.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Scenario (YAML) whose cluster the prediction runs on (default: the cluster with
    /// --from-cluster, else the built-in one).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Requests per second one gateway pod serves (default: the scenario's).
    #[arg(long)]
    pub capacity_per_pod: Option<f64>,
    /// Policies predicted beside the real run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "spillway,hpa"
    )]
    pub policies: Vec<PolicyKind>,
    /// Folder for report.json, timeline.csv, chart.svg and report.html.
    #[arg(long, default_value = "drill-score")]
    pub out: PathBuf,
}

/// `spillway drill score`: the drill's window (given, or found by its mark), its history
/// fetched, scored beside the prediction, and written.
pub fn run(a: ScoreArgs) -> anyhow::Result<ExitCode> {
    use spillway::replay::{recorded, score};
    let now = unix_now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (mut base, ns, name) = base_scenario(&a, now).await?;
        if let Some(c) = a.capacity_per_pod {
            base.gateway.capacity_per_pod_rps = c;
        }
        base.policies = a.policies.clone();
        let prom = history_prometheus(&a.prometheus, &a.history)?;
        let mut history = a.history.clone();
        if let Some(drill) = &a.name {
            let (start, end) = marked_window(&prom, drill, &ns, &name, a.within, now).await?;
            history.start = Some(format!("{start}"));
            history.end = Some(format!("{end}"));
        }
        let (window, query) = history_window(&history, &base.policy, &ns, now)?;
        let target = score::Target {
            namespace: ns.clone(),
            name: name.clone(),
            load_query: query,
            capacity_per_pod_rps: base.gateway.capacity_per_pod_rps,
            currency: base.policy.cost.currency.clone(),
        };
        let mut progress = |what: &str, done: usize, total: usize| {
            if total > 1 {
                eprintln!("{what}: {done}/{total} range queries");
            }
        };
        let h = score::fetch(
            &prom,
            &target,
            &window,
            read_options(&history),
            &mut progress,
        )
        .await?;
        let report = score::report(
            &h,
            &target,
            &window,
            &base,
            &mut spillway::sim::drill::Quiet,
        )?;
        for n in &report.data_notes {
            eprintln!("note: {n}");
        }
        let written = write_report(&report, &a.out)?;
        print!("{}", spillway::sim::report::table(&report));
        let surges = h.load.as_ref().map(|load| {
            let capacity = target.capacity_per_pod_rps;
            recorded::detect_surges(&load.values, window.step, capacity, window.start).len()
        });
        println!(
            "scored {ns}/{name} over {} ({} values of the load{}); wrote {written}",
            window.describe(),
            h.load.as_ref().map_or(0, |l| l.values.len()),
            surges
                .map(|n| format!(", {n} surge(s)"))
                .unwrap_or_default(),
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// The scenario the prediction runs on (the cluster's, a file's, or the built-in one) with the
/// drill's policy, and the ElasticGateway's namespace and name.
async fn base_scenario(a: &ScoreArgs, now: f64) -> anyhow::Result<(Scenario, String, String)> {
    if a.from_cluster {
        let gateway = a.gateway.clone().ok_or_else(|| {
            anyhow::anyhow!("--from-cluster needs --gateway NAMESPACE/NAME (or NAME)")
        })?;
        let client = kube_client(&a.kube).await?;
        let (s, ns) =
            spillway::replay::snapshot::read(&client, &gateway, a.capacity_per_pod, now).await?;
        return Ok((s, ns, split_gateway(&gateway).1));
    }
    let mut base = match &a.scenario {
        None => Scenario::default(),
        Some(p) => Scenario::load(p).map_err(|errors| {
            let errors = spillway::config::render(&errors);
            anyhow::anyhow!("{}: invalid scenario\n{errors}", p.display())
        })?,
    };
    let (ns, name) = if let Some(path) = &a.policy {
        let docs = spillway::policy::load_policy_files(path)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
        let egw = match docs.into_iter().next() {
            Some(Ok(egw)) => egw,
            Some(Err(errors)) => anyhow::bail!(
                "{}: invalid ElasticGateway\n{}",
                path.display(),
                spillway::config::render(&errors)
            ),
            None => anyhow::bail!("{}: no ElasticGateway in it", path.display()),
        };
        base.policy = egw.spec.clone();
        (
            egw.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            egw.metadata.name.clone().unwrap_or_default(),
        )
    } else if let Some(g) = &a.gateway {
        split_gateway(g)
    } else {
        anyhow::bail!(
            "say which ElasticGateway ran the drill: --policy FILE, --gateway NAMESPACE/NAME, or --from-cluster --gateway NAMESPACE/NAME"
        );
    };
    Ok((base, ns, name))
}

/// A named drill's window, from the marks the agent exported to Prometheus.
async fn marked_window(
    prom: &spillway::prom::Prometheus,
    drill: &str,
    ns: &str,
    name: &str,
    within: f64,
    now: f64,
) -> anyhow::Result<(f64, f64)> {
    use spillway::model::LoadSample;
    use spillway::replay::marks;
    marks::check_name(drill)?;
    let [qs, qe] = marks::window_queries(ns, name, drill, within);
    let value = |q: String| async move {
        match prom.query(&q, now).await {
            LoadSample::Total(v) => Ok(v),
            LoadSample::Missing(why) => Err(why),
            other => Err(format!("unexpected answer {other:?}")),
        }
    };
    let start = value(qs).await.map_err(|why| {
        anyhow::anyhow!(
            "no drill named {drill:?} for ElasticGateway {ns}/{name} in the last {:.0} days ({why}); mark one with `spillway drill mark`, or give --start and --end",
            within / 86_400.0
        )
    })?;
    let end = value(qe).await.map_err(|_| {
        anyhow::anyhow!(
            "the drill {drill:?} has no end yet: end it with `spillway drill mark --name {drill} --gateway {ns}/{name} --end now`"
        )
    })?;
    let (s, e) = (
        spillway::clock::rfc3339(start),
        spillway::clock::rfc3339(end),
    );
    eprintln!("drill {drill}: {s} .. {e}");
    Ok((start, end))
}

//! `spillway drill mark`: a drill's window marked on its ElasticGateway.

use std::process::ExitCode;

use spillway::clock::unix_now;

use super::flags::{ClusterArgs, kube_client};

#[derive(clap::Args, Debug)]
pub struct MarkArgs {
    /// The drill's name (letters, digits, '-', '_', '.').
    #[arg(long)]
    pub name: String,
    /// The ElasticGateway, as NAMESPACE/NAME or a NAME unique across namespaces.
    #[arg(long)]
    pub gateway: String,
    /// Start of the window (default: now). RFC 3339, Unix seconds, now or now-<duration>.
    #[arg(long)]
    pub start: Option<String>,
    /// End of the window; without it the drill is open until marked again with --end.
    #[arg(long)]
    pub end: Option<String>,
    /// Remove the mark.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub remove: bool,
    #[command(flatten)]
    pub kube: ClusterArgs,
}

/// `spillway drill mark`.
pub fn run(a: MarkArgs) -> anyhow::Result<ExitCode> {
    let now = unix_now();
    let time = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<f64>> {
        v.as_deref()
            .map(|v| {
                spillway::clock::parse_time(v, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
            })
            .transpose()
    };
    let (start, end) = (time("start", &a.start)?, time("end", &a.end)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mark = runtime.block_on(async {
        let client = kube_client(&a.kube).await?;
        spillway::replay::marks::set(&client, &a.gateway, &a.name, start, end, a.remove, now)
            .await
            .map_err(anyhow::Error::from)
    })?;
    match mark {
        Some(m) => println!(
            "drill {} marked on {}: {}{}",
            m.name,
            a.gateway,
            m.value(),
            if m.end.is_none() {
                " (open: end it with --end now)"
            } else {
                ""
            }
        ),
        None => println!("drill {} unmarked on {}", a.name, a.gateway),
    }
    Ok(ExitCode::SUCCESS)
}

//! `spillway check` (policy files validated, every error with its field path) and `spillway crd`
//! (the CustomResourceDefinition as YAML).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use kube::CustomResourceExt;
use spillway::policy::{ElasticGateway, PlannedEvent};

/// The custom resources spillway defines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CrdKind {
    ElasticGateway,
    PlannedEvent,
}

pub fn crd_yaml(kind: CrdKind) -> anyhow::Result<String> {
    let crd = match kind {
        CrdKind::ElasticGateway => ElasticGateway::crd(),
        CrdKind::PlannedEvent => PlannedEvent::crd(),
    };
    serde_saphyr::to_string(&crd).context("rendering the CRD")
}

pub fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for f in files {
        let docs = match spillway::policy::load_policy_files(f) {
            Ok(docs) => docs,
            Err(e) => {
                failed = true;
                println!(
                    "{}: 1 error(s)\n{}",
                    f.display(),
                    spillway::config::render(&[e])
                );
                continue;
            }
        };
        let several = docs.len() > 1;
        for (i, doc) in docs.into_iter().enumerate() {
            let at = if several {
                format!("{} (document {})", f.display(), i + 1)
            } else {
                f.display().to_string()
            };
            match doc {
                Ok(egw) => {
                    println!(
                        "{at}: ok (ElasticGateway {}/{})",
                        egw.metadata.namespace.as_deref().unwrap_or("default"),
                        egw.metadata.name.as_deref().unwrap_or("")
                    );
                    for a in egw.spec.advice() {
                        println!("  warning: {a}");
                    }
                }
                Err(errors) => {
                    failed = true;
                    println!(
                        "{at}: {} error(s)\n{}",
                        errors.len(),
                        spillway::config::render(&errors)
                    );
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

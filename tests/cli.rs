//! The `spillway` binary as a user runs it.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

fn spillway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .output()
        .expect("spillway runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn crd_matches_the_checked_in_manifest() {
    let (code, out, err) = spillway(&["crd"]);
    assert_eq!(code, 0, "{err}");
    let checked_in = std::fs::read_to_string(format!("{ROOT}/deploy/crd.yaml")).unwrap();
    assert!(
        out == checked_in,
        "deploy/crd.yaml is stale: run `cargo run -- crd > deploy/crd.yaml`"
    );
}

#[test]
fn the_planned_event_crd_matches_the_checked_in_manifests() {
    let (code, out, err) = spillway(&["crd", "planned-event"]);
    assert_eq!(code, 0, "{err}");
    for f in [
        "deploy/plannedevent-crd.yaml",
        "charts/spillway/files/plannedevent-crd.yaml",
    ] {
        let checked_in = std::fs::read_to_string(format!("{ROOT}/{f}")).unwrap();
        assert!(
            out == checked_in,
            "{f} is stale: run `cargo run -- crd planned-event > {f}`"
        );
    }
    assert!(out.contains("kind: PlannedEvent"), "{out}");
}

#[test]
fn check_accepts_the_examples() {
    for f in [
        "deploy/examples/elasticgateway.yaml",
        "deploy/examples/elasticgateway-full.yaml",
    ] {
        let (code, out, _) = spillway(&["check", &format!("{ROOT}/{f}")]);
        assert_eq!(code, 0, "{f}: {out}");
        assert!(out.contains(": ok (ElasticGateway istio-system/"), "{out}");
    }
}

/// Valid settings that move the fleet to ECI (issue 27's "no fleet flip by accident") pass, with
/// a warning that says what they cost; the examples carry none.
#[test]
fn check_warns_about_eci_preferring_weights() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("yield.yaml");
    std::fs::write(
        &f,
        "apiVersion: spillway.io/v1alpha1\nkind: ElasticGateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  target: {name: istio-ingressgateway}\n  placement:\n    exhaustedWeights: {ecs: 20, eci: 80}\n",
    )
    .unwrap();
    let (code, out, _) = spillway(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: spec.placement.exhaustedWeights {ecs: 20, eci: 80} prefers ECI (yield mode)"
        ) && out.contains("rolls every gateway pod"),
        "{out}"
    );
    for example in ["elasticgateway.yaml", "elasticgateway-full.yaml"] {
        let (_, out, _) = spillway(&["check", &format!("{ROOT}/deploy/examples/{example}")]);
        assert!(!out.contains("warning"), "{example}: {out}");
    }
}

#[test]
fn check_names_every_bad_field() {
    let (code, out, _) = spillway(&["check", &format!("{ROOT}/tests/fixtures/bad-policy.yaml")]);
    assert_eq!(code, 1);
    for field in [
        "spec.maxReplicas: must be at least minReplicas (10), got 3",
        "spec.metrics[0].query: is not valid PromQL",
        "spec.metrics[0].targetPerReplica: must be greater than 0",
        "spec.placement.normalWeights.eci: must be within 1..100",
        "spec.cost.eciGibPricePerSecond: must be a price of 0 or more",
    ] {
        assert!(out.contains(field), "missing {field:?} in:\n{out}");
    }
    assert!(out.contains("5 error(s)"), "{out}");
}

#[test]
fn check_reports_unreadable_files() {
    let (code, out, _) = spillway(&["check", "/nonexistent/policy.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn drill_writes_a_report_and_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let (code, out, err) = spillway(&["drill", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for policy in ["spillway", "hpa", "static", "oracle"] {
        assert!(
            out.lines().any(|l| l.starts_with(policy)),
            "no {policy} row in\n{out}"
        );
    }
    for f in ["report.json", "timeline.csv", "chart.svg"] {
        assert!(
            out_dir
                .join(f)
                .metadata()
                .map(|m| m.len() > 100)
                .unwrap_or(false),
            "{f} missing"
        );
    }
    let svg = std::fs::read_to_string(out_dir.join("chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg")
            && svg.contains("spillway: pods")
            && svg.contains("oracle: load vs serving capacity")
    );
}

#[test]
fn drill_rejects_a_bad_scenario_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    std::fs::write(
        &f,
        "latencies:\n  eciStartSecond: 30\ngateway:\n  replicas: 0\n",
    )
    .unwrap();
    let (code, _, err) = spillway(&[
        "drill",
        f.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("latencies.eciStartSecond: unknown field"),
        "{err}"
    );
}

#[test]
fn printed_scenario_runs_as_a_scenario_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, yaml, err) = spillway(&["drill", "--print-scenario"]);
    assert_eq!(code, 0, "{err}");
    let f = dir.path().join("builtin.yaml");
    std::fs::write(
        &f,
        yaml.replace("durationSeconds: 3600", "durationSeconds: 900"),
    )
    .unwrap();
    let (code, out, err) = spillway(&[
        "drill",
        f.to_str().unwrap(),
        "--policies",
        "spillway",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("900 s simulated"), "{out}");
}

/// The CRD's schema is structural (apiextensions.k8s.io/v1 requires it): every node has a type
/// (or says why not), no `$ref`, and the value-validation keywords carry no types of their own.
#[test]
fn crd_schema_is_structural() {
    fn walk(path: &str, v: &serde_json::Value, errors: &mut Vec<String>) {
        let Some(obj) = v.as_object() else { return };
        let exempt = obj.contains_key("x-kubernetes-int-or-string")
            || obj.contains_key("x-kubernetes-preserve-unknown-fields");
        if !obj.contains_key("type") && !exempt {
            errors.push(format!("{path}: no type"));
        }
        for bad in ["$ref", "definitions", "$schema"] {
            if obj.contains_key(bad) {
                errors.push(format!("{path}: has {bad}"));
            }
        }
        for kw in ["anyOf", "oneOf", "allOf"] {
            for (i, sub) in obj
                .get(kw)
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
                .enumerate()
            {
                if sub.get("type").is_some() || sub.get("properties").is_some() {
                    errors.push(format!(
                        "{path}.{kw}[{i}]: declares types inside a logical junctor"
                    ));
                }
            }
        }
        if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
            for (k, sub) in props {
                walk(&format!("{path}.{k}"), sub, errors);
            }
        }
        if let Some(items) = obj.get("items") {
            walk(&format!("{path}[]"), items, errors);
        }
        if let Some(extra) = obj.get("additionalProperties").filter(|a| a.is_object()) {
            walk(&format!("{path}{{}}"), extra, errors);
        }
    }
    let (_, yaml, _) = spillway(&["crd"]);
    let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let mut errors = vec![];
    walk(
        "openAPIV3Schema",
        &version["schema"]["openAPIV3Schema"],
        &mut errors,
    );
    assert!(errors.is_empty(), "not structural:\n{}", errors.join("\n"));
}

#[test]
fn out_of_range_durations_are_errors_not_panics() {
    for flag in [
        "--interval",
        "--api-timeout",
        "--lease-duration",
        "--prometheus-timeout",
    ] {
        for value in ["1e20", "1e300s", "-1", "NaN", "2m5"] {
            let (code, _, err) = spillway(&["run", flag, value]);
            assert_eq!(code, 2, "{flag} {value}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let (code, _, err) = spillway(&[
        "drill",
        "--serve-metrics",
        "127.0.0.1:0",
        "--speed",
        "1e-300",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--speed") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_garbage_ca_file_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "this is not a certificate").unwrap();
    let (code, _, err) = spillway(&["run", "--prometheus-ca-file", ca.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("--prometheus-ca-file"), "{err}");
}

#[test]
fn check_takes_several_documents_and_names_each() {
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(format!("{ROOT}/deploy/examples/elasticgateway.yaml")).unwrap();
    let f = dir.path().join("two.yaml");
    std::fs::write(
        &f,
        format!(
            "{good}\n---\n{}",
            good.replace("maxReplicas:", "maxReplicas: 0 #")
        ),
    )
    .unwrap();
    let (code, out, _) = spillway(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(document 1): ok"), "{out}");
    assert!(
        out.contains("(document 2): 1 error(s)") && out.contains("spec.maxReplicas"),
        "{out}"
    );
}

#[test]
fn drill_suite_prints_a_scorecard_for_every_load() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite");
    std::fs::create_dir(&suite).unwrap();
    std::fs::write(
        suite.join("a-spike.yaml"),
        "durationSeconds: 900\nload:\n  components:\n    - {kind: Constant, rps: 2000}\n    - {kind: Spike, atSeconds: 120, riseSeconds: 30, holdSeconds: 300, fallSeconds: 60, rps: 12000}\n",
    )
    .unwrap();
    std::fs::write(
        suite.join("b-noise.yaml"),
        "durationSeconds: 600\ngateway: {replicas: 8}\nload:\n  components:\n    - {kind: Constant, rps: 4000}\n    - {kind: Noise, rps: 800}\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let (code, out, err) = spillway(&[
        "drill",
        "--suite",
        suite.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for section in [
        "## a-spike",
        "## b-noise",
        "## total over 2 loads",
        "summary: ECI spend",
    ] {
        assert!(out.contains(section), "no {section:?} in\n{out}");
    }
    for policy in ["spillway", "hpa", "reactive", "oracle"] {
        assert!(
            out.lines().filter(|l| l.starts_with(policy)).count() == 3,
            "{policy} rows in\n{out}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("suite.json")).unwrap()).unwrap();
    assert_eq!(json["loads"].as_array().map(Vec::len), Some(2));
    assert!(out_dir.join("scorecard.txt").exists());
    // An empty folder is an error that says so.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, err) = spillway(&["drill", "--suite", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no *.yaml scenario"), "{err}");
}

/// A write goes out only with `--api-timeout` left on the Lease: a Lease too short for that
/// would let the leader write nothing, so it is refused at start, naming the flags.
#[test]
fn a_lease_too_short_for_one_write_is_refused_at_start() {
    let (code, _, err) = spillway(&["run", "--lease-duration", "5s"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--api-timeout") && err.contains("--lease-duration"),
        "{err}"
    );
    let (code, _, err) = spillway(&[
        "run",
        "--lease-duration",
        "4s",
        "--api-timeout",
        "1s",
        "--prometheus-timeout",
        "5s",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--prometheus-timeout"), "{err}");
}

/// `spillway completion bash` is a script bash itself loads: after sourcing it, bash has a
/// completion for `spillway`, and it offers the subcommands.
#[test]
fn bash_loads_the_completion_and_it_offers_the_commands() {
    let (code, script, err) = spillway(&["completion", "bash"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spillway.bash");
    std::fs::write(&file, &script).unwrap();
    // What bash's completion machinery does on `spillway <TAB>`.
    let probe = format!(
        "source {}; complete -p spillway; COMP_WORDS=(spillway ''); COMP_CWORD=1; COMP_LINE='spillway '; COMP_POINT=9; $(complete -p spillway | sed -E 's/.* -F ([^ ]+) .*/\\1/') spillway '' spillway; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for sub in ["run", "drill", "check", "doctor", "completion", "man"] {
        assert!(text.lines().any(|l| l == sub), "{sub} not offered:\n{text}");
    }
}

/// `spillway man` is a manual page: roff, titled, with every command in it.
#[test]
fn the_manual_page_names_every_command() {
    let (code, page, err) = spillway(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH spillway"),
        "{page}"
    );
    for sub in [
        "run",
        "drill",
        "check",
        "crd",
        "doctor",
        "completion",
        "man",
    ] {
        assert!(page.contains(sub), "{sub} missing");
    }
}

/// Installed as `kubectl-spillway` on the PATH, the binary is a kubectl plugin: the test bed's
/// real kubectl finds it and runs `kubectl spillway check FILE`.
#[test]
fn kubectl_runs_it_as_a_plugin() {
    let kubectl = support::testbed::binaries().join("kubectl");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_spillway"),
        dir.path().join("kubectl-spillway"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let example = format!("{ROOT}/deploy/examples/elasticgateway.yaml");
    let out = Command::new(&kubectl)
        .args(["spillway", "check", &example])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("kubectl-spillway"));
    let (code, script, _) = {
        let out = Command::new(dir.path().join("kubectl-spillway"))
            .args(["completion", "bash"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            (),
        )
    };
    assert_eq!(code, Some(0));
    assert!(
        script.contains("kubectl-spillway"),
        "completes the name it runs as"
    );
}

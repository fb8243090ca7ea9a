//! The book under docs/ and the README, checked so that they cannot rot: every relative link
//! resolves (to a file, and to one of its headings when it names one), every alert links to its
//! entry in the runbook, and the ElasticGateway reference is the CRD's schema, rendered.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use serde_json::Value;
use spillway::policy::ElasticGateway;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where each alert's `runbook_url` points, up to the heading's anchor.
const RUNBOOK: &str = "https://github.com/spillway-dev/spillway/blob/main/docs/operations.md#";

/// README.md and every page of the book.
fn pages() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut out = vec![Path::new(ROOT).join("README.md")];
    out.extend(docs);
    out
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lowercase, only alphanumerics, spaces, hyphens and
/// underscores kept, spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(*c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings.
fn anchors(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap();
    prose(&text)
        .into_iter()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|rest| rest.trim_start_matches('#'))
        .filter(|title| title.starts_with(' '))
        .map(|title| slug(title.trim()))
        .collect()
}

/// The targets of a page's markdown links and images, outside code blocks.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = vec![];
    for line in prose(text) {
        // Code spans (`...`) are not links, whatever brackets they hold (a CEL regex).
        let line: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            // A title after the target (`[x](path "title")`) is not part of it.
            if let Some(target) = rest[..end].split_whitespace().next() {
                out.push(target.to_string());
            }
        }
    }
    out
}

#[test]
fn links_resolve() {
    let mut bad = vec![];
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in link_targets(&text) {
            if ["http://", "https://", "mailto:"]
                .iter()
                .any(|scheme| target.starts_with(*scheme))
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((target.as_str(), ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            let name = page.strip_prefix(ROOT).unwrap().display().to_string();
            if !file.exists() {
                bad.push(format!("{name}: ({target}): no such file"));
                continue;
            }
            if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&file).contains(anchor)
            {
                bad.push(format!(
                    "{name}: ({target}): no heading with the anchor #{anchor}"
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn alerts_have_runbooks() {
    let rules: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/spillway-rules.yaml")).unwrap(),
    )
    .unwrap();
    let headings = anchors(&Path::new(ROOT).join("docs/operations.md"));
    let mut alerts = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("alert {alert} has no runbook_url annotation"));
            let fragment = url.strip_prefix(RUNBOOK).unwrap_or_else(|| {
                panic!("alert {alert}: runbook_url {url} does not start with {RUNBOOK}")
            });
            assert!(
                headings.contains(fragment),
                "alert {alert}: docs/operations.md has no heading with the anchor #{fragment}"
            );
            assert_eq!(
                fragment,
                slug(alert),
                "alert {alert}: its runbook entry is headed by the alert's name"
            );
        }
    }
    assert!(alerts >= 10, "only {alerts} alerts found");
}

/// A markdown table cell: a `|` would end it.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `path.key`, where either may be empty.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The type column: the schema's type, what an array holds or a map maps to, the allowed
/// values, and whether the field is required.
fn type_of(node: &Value, required: bool) -> String {
    let t = node["type"].as_str().unwrap_or("");
    let mut s = match (
        t,
        node["items"]["type"].as_str(),
        node["additionalProperties"]["type"].as_str(),
    ) {
        ("array", Some(item), _) => format!("array of {item}"),
        ("object", _, Some(value)) => format!("map of {value}"),
        _ => t.to_string(),
    };
    if let Some(values) = node["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| {
                format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                )
            })
            .collect();
        s.push_str(&format!(" ({})", values.join(", ")));
    }
    if required {
        s.push_str(", required");
    }
    s
}

/// One row per property under `node` (depth first, keys in order), and one per CEL rule.
fn walk(node: &Value, path: &str, rows: &mut Vec<String>, rules: &mut Vec<String>) {
    for rule in node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let at = join(
            path,
            rule["fieldPath"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('.'),
        );
        let at = if at.is_empty() {
            "spec".to_string()
        } else {
            at
        };
        rules.push(format!(
            "| `{}` | `{}` | {} |",
            cell(&at),
            cell(rule["rule"].as_str().unwrap_or("")),
            cell(rule["message"].as_str().unwrap_or(""))
        ));
    }
    let required: Vec<&str> = node["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(properties) = node["properties"].as_object() {
        for (key, child) in properties {
            let p = join(path, key);
            let default = child
                .get("default")
                .map_or_else(|| "—".to_string(), |d| format!("`{d}`"));
            let description = child["description"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            rows.push(format!(
                "| `{}` | {} | {} | {} |",
                cell(&p),
                cell(&type_of(child, required.contains(&key.as_str()))),
                cell(&default),
                cell(&description)
            ));
            walk(child, &p, rows, rules);
        }
    }
    if node["items"].is_object() {
        walk(&node["items"], &format!("{path}[]"), rows, rules);
    }
}

/// The reference's first comment: what to do instead of editing it.
const GENERATED: &str = "<!-- Generated from the CRD by tests/docs.rs; do not edit by hand. \
Regenerate with: SPILLWAY_BLESS=1 cargo test --test docs -->";

/// The reference's text after the kind's name, up to the table of fields.
const INTRO: &str = "one per gateway, in the gateway's namespace.
This page is generated from the CRD's schema (what `spillway crd` prints and
[`deploy/crd.yaml`](../deploy/crd.yaml) holds), so its names, types and defaults are the ones
the API server applies; a default on an object applies when the whole object is left out. What
each setting is for and how they work together:
[Concepts](concepts.md#the-policy-field-by-field-explained). Every field spelled out:
[`deploy/examples/elasticgateway-full.yaml`](../deploy/examples/elasticgateway-full.yaml);
`spillway check FILE` names each mistake with its path.

## spec

| field | type | default | description |
|---|---|---|---|";

/// The reference's text between the table of fields and the table of CEL rules.
const RULES: &str = "
## Rules across fields

The API server refuses an object that breaks one of these (CEL rules in the CRD), with the \
message shown.

| field | rule | message |
|---|---|---|";

/// docs/reference.md, rendered from the CRD that `spillway crd` prints.
fn render_reference() -> String {
    let crd = serde_json::to_value(ElasticGateway::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
    let group = crd["spec"]["group"].as_str().unwrap();
    let name = version["name"].as_str().unwrap();
    let short: Vec<String> = crd["spec"]["names"]["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| format!("`{s}`"))
        .collect();
    let (mut rows, mut rules) = (vec![], vec![]);
    walk(spec, "", &mut rows, &mut rules);

    let mut out = format!(
        "# {kind} reference\n\n{GENERATED}\n\n`{kind}` (`{group}/{name}`, short name {}), {INTRO}\n",
        short.join(", ")
    );
    for row in rows {
        out.push_str(&row);
        out.push('\n');
    }
    out.push_str(RULES);
    out.push('\n');
    for rule in rules {
        out.push_str(&rule);
        out.push('\n');
    }
    out
}

#[test]
fn reference_is_generated_from_the_crd() {
    let rendered = render_reference();
    let path = Path::new(ROOT).join("docs/reference.md");
    if std::env::var("SPILLWAY_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != rendered {
        let line = rendered
            .lines()
            .zip(checked_in.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "the lengths differ".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "docs/reference.md is not the CRD's schema rendered ({line}): run `SPILLWAY_BLESS=1 cargo test --test docs`"
        );
    }
}

/// `deploy/examples/elasticgateway-full.yaml`: every field at spillway's own default (only the
/// target has none), rendered from the types, so that the example cannot drift from the defaults
/// it claims to show (issue 27: it once showed ECI-preferring exhausted weights as the default).
fn render_full_example() -> String {
    let spec: spillway::policy::ElasticGatewaySpec = serde_json::from_value(serde_json::json!({
        "target": {"kind": "Deployment", "name": "istio-ingressgateway"}
    }))
    .unwrap();
    let value = serde_json::json!({
        "apiVersion": "spillway.io/v1alpha1",
        "kind": "ElasticGateway",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": spec,
    });
    let body = serde_saphyr::to_string(&value).unwrap();
    let rules = |up: bool| {
        let r = if up {
            spec.behavior.scale_up.effective(true)
        } else {
            spec.behavior.scale_down.effective(false)
        };
        let policies: Vec<String> = r
            .policies
            .iter()
            .map(|p| {
                let v = serde_json::to_value(p).unwrap();
                format!(
                    "{} {} per {} s",
                    v["type"].as_str().unwrap(),
                    v["value"],
                    v["periodSeconds"]
                )
            })
            .collect();
        format!(
            "{} ({:?}) after a {} s window",
            policies.join(" or "),
            r.select_policy,
            r.stabilization_window_seconds
        )
    };
    format!(
        "# Every field of an ElasticGateway at spillway's own default: only `target` has none.\n\
         # Generated by tests/docs.rs from the types' defaults; do not edit by hand. Regenerate with:\n\
         # SPILLWAY_BLESS=1 cargo test --test docs\n\
         # Empty by default, and what that means:\n\
         # - behavior.scaleUp: the HPA's rules, {}\n\
         # - behavior.scaleDown: the HPA's rules, {}\n\
         # - behavior.ecsHoldSeconds: the pods ECS holds stay {} s after the load that needed them (twice the scale-down window; longer after a flap)\n\
         # - behavior.resetBudgetPercent: a minute's scale-ins reset at most {} % of the open connections the pods' Envoys report (the first pod of a minute always goes)\n\
         # - eci: no cap beyond maxReplicas; ECI start taken as {} s, ECI pods released after {} s; an ECI pod's share of an ECS pod learnt from each pool's CPU per request (1 until then)\n\
         # - cost.ecsNodePricePerHour: every ECS node at ecsDefaultNodePricePerHour\n\
         # A short policy that keeps the defaults: deploy/examples/elasticgateway.yaml.\n{body}",
        rules(true),
        rules(false),
        spec.behavior.ecs_hold(),
        spec.behavior.reset_budget(),
        spec.eci.start(),
        spec.eci.scale_down_window()
    )
}

#[test]
fn the_full_example_is_every_default() {
    let rendered = render_full_example();
    let path = Path::new(ROOT).join("deploy/examples/elasticgateway-full.yaml");
    if std::env::var("SPILLWAY_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == rendered,
        "deploy/examples/elasticgateway-full.yaml is not the defaults rendered: run `SPILLWAY_BLESS=1 cargo test --test docs`"
    );
}

/// Every path the README's layout table names exists: the table matches the tree.
#[test]
fn the_layout_table_matches_the_tree() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let table = readme
        .split("## Layout")
        .nth(1)
        .expect("a Layout section")
        .split("\n## ")
        .next()
        .unwrap();
    let mut named = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let place = row.split('|').nth(1).unwrap();
        for path in place.split('`').skip(1).step_by(2) {
            named += 1;
            assert!(
                Path::new(ROOT).join(path).exists(),
                "README's layout names {path}, which does not exist"
            );
        }
    }
    assert!(named >= 15, "only {named} paths in the layout table");
    // And every top-level module of src/ has its row.
    for e in std::fs::read_dir(Path::new(ROOT).join("src")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if name == "lib.rs"
            || name.ends_with(".rs")
                && Path::new(ROOT)
                    .join("src")
                    .join(name.trim_end_matches(".rs"))
                    .is_dir()
        {
            continue;
        }
        let module = name.trim_end_matches(".rs");
        if ["clock", "config", "redact", "telemetry"].contains(&module) {
            continue;
        }
        assert!(
            table.contains(&format!("`src/{name}")),
            "src/{name} has no row in the README's layout table"
        );
    }
}

/// The README's drill table is what the built-in drill prints today.
#[test]
fn the_readme_shows_the_builtin_drill_as_it_runs() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["drill", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    for line in stdout
        .lines()
        .filter(|l| !l.starts_with("simulated") && !l.starts_with("drill:"))
    {
        assert!(
            readme.contains(line),
            "the README's drill table lacks today's line:\n{line}"
        );
    }
}

/// Every real-trace extract of the suite is the one its README records (source, window,
/// licence and SHA-256): an edit to the numbers shows as a changed checksum, and no extract is
/// committed without its row.
#[test]
fn the_suites_traces_are_the_recorded_extracts() {
    let suite = Path::new(ROOT).join("drills/suite");
    let readme = std::fs::read_to_string(suite.join("README.md")).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&suite)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("trace-") && n.ends_with(".csv"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{f}`")))
            .unwrap_or_else(|| panic!("drills/suite/README.md has no row for {f}"));
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &std::fs::read(suite.join(&f)).unwrap(),
        );
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            row.contains(&format!("`{hex}`")),
            "{f}: its SHA-256 is {hex}, not the README's"
        );
    }
}

//! The README's commands, checked so that they cannot rot: every `spillway …` / `cargo run -- …`
//! line parses against the real CLI (the quick start itself runs in .ci/run), and every
//! `kubectl apply -k DIR` builds with kustomize.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    // Commands are the lines of ```sh blocks, and `$ `-prompted lines in other blocks (the rest
    // of those is output).
    let mut block: Option<String> = None;
    let mut out = vec![];
    for line in text.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            block = if block.is_some() {
                None
            } else {
                Some(fence.to_string())
            };
            continue;
        }
        let Some(lang) = &block else { continue };
        let cmd = match line.trim().strip_prefix("$ ") {
            Some(c) => c,
            None if lang == "sh" => line.trim(),
            None => continue,
        };
        out.push(cmd.split(" #").next().unwrap().trim().to_string());
    }
    // And inline `spillway …` spans in the prose (not the `[OPTIONAL]` synopses).
    for span in text.split('`').skip(1).step_by(2) {
        if span.starts_with("spillway ") && !span.contains('[') && !span.contains('\n') {
            out.push(span.to_string());
        }
    }
    out
}

#[test]
fn spillway_commands_in_the_readme_parse() {
    let cmds: Vec<String> = readme_commands()
        .into_iter()
        .filter_map(|c| {
            c.strip_prefix("spillway ")
                .or_else(|| c.strip_prefix("cargo run -- "))
                .map(|rest| rest.split(" > ").next().unwrap().to_string())
        })
        .collect();
    assert!(cmds.len() >= 3, "found only {cmds:?}");
    for c in &cmds {
        let mut args: Vec<&str> = c.split_whitespace().collect();
        // Parse only: `--help` after the real arguments makes clap validate them and stop.
        args.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command `spillway {c}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kustomize_paths_in_the_readme_build() {
    let dirs: Vec<String> = readme_commands()
        .into_iter()
        .filter_map(|c| {
            c.strip_prefix("kubectl apply -k ")
                .map(|d| d.split_whitespace().next().unwrap().to_string())
        })
        .collect();
    assert!(dirs.len() >= 2, "{dirs:?}");
    for d in dirs {
        let out = Command::new("kubectl")
            .args(["kustomize", &format!("{ROOT}/{d}")])
            .output()
            .expect("kubectl is needed");
        assert!(
            out.status.success(),
            "README's `kubectl apply -k {d}` does not build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! The commands in the README and the book under docs/, checked so that they cannot rot: every
//! `spillway …` / `cargo run -- …` line parses against the real CLI (the quick start itself runs
//! in .ci/run), and every `kubectl apply -k DIR` builds with kustomize.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and every page of docs/, as (name, text).
fn pages() -> Vec<(String, String)> {
    let mut paths = vec![PathBuf::from(format!("{ROOT}/README.md"))];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(format!("{ROOT}/docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(ROOT).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The commands of one page.
fn page_commands(text: &str) -> Vec<String> {
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

/// Every page's commands, as (page, command).
fn readme_commands() -> Vec<(String, String)> {
    pages()
        .into_iter()
        .flat_map(|(page, text)| {
            page_commands(&text)
                .into_iter()
                .map(move |c| (page.clone(), c))
        })
        .collect()
}

#[test]
fn spillway_commands_in_the_readme_parse() {
    let cmds: Vec<(String, String)> = readme_commands()
        .into_iter()
        .filter_map(|(page, c)| {
            c.strip_prefix("spillway ")
                .or_else(|| c.strip_prefix("cargo run -- "))
                .map(|rest| (page, rest.split(" > ").next().unwrap().to_string()))
        })
        .collect();
    // Across the README and the book; the README alone has only the quick start's few.
    assert!(cmds.len() >= 3, "found only {cmds:?}");
    for (page, c) in &cmds {
        let mut args: Vec<&str> = c.split_whitespace().collect();
        // Parse only: `--help` after the real arguments makes clap validate them and stop.
        args.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{page}: command `spillway {c}` does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn kustomize_paths_in_the_readme_build() {
    let dirs: Vec<(String, String)> = readme_commands()
        .into_iter()
        .filter_map(|(page, c)| {
            c.strip_prefix("kubectl apply -k ")
                .map(|d| (page, d.split_whitespace().next().unwrap().to_string()))
        })
        .collect();
    assert!(dirs.len() >= 2, "{dirs:?}");
    for (page, d) in dirs {
        let out = Command::new("kubectl")
            .args(["kustomize", &format!("{ROOT}/{d}")])
            .output()
            .expect("kubectl is needed");
        assert!(
            out.status.success(),
            "{page}: `kubectl apply -k {d}` does not build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! The shape of the house, checked so that it cannot drift back: `main` only hands over, the
//! agent's reconcile reads like a table of contents, no function of the agent outgrows one
//! head, imports run only down the layers, and the shared helpers exist once.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers, lowest first: a module may import only modules of a lower rank, and itself.
const RANKS: &[(&str, u8)] = &[
    ("clock", 0),
    ("config", 0),
    ("redact", 0),
    ("telemetry", 0),
    ("model", 1),
    ("policy", 2),
    ("scheduler", 2),
    ("engine", 3),
    // The adapters: they see the model and the policy, never the engine or the agent.
    ("k8s", 3),
    ("prom", 3),
    ("fastpath", 3),
    ("act", 4),
    ("metrics", 5),
    ("sim", 5),
    ("server", 6),
    ("doctor", 6),
    ("replay", 6),
    // The admission webhook: the policy's validation behind the server's TLS listener.
    ("webhook", 7),
    ("agent", 8),
];

fn rank(module: &str) -> u8 {
    RANKS
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("module {module} has no rank in tests/house.rs"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its test module and comments.
fn code(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(String::from)
        .collect()
}

/// The top-level module a file of `src/` belongs to (`src/agent/apply.rs` → `agent`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(format!("{ROOT}/src")).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn imports_run_only_down_the_layers() {
    let mut files = vec![];
    rust_files(Path::new(&format!("{ROOT}/src")), &mut files);
    let mut wrong = vec![];
    for f in &files {
        let module = module_of(f);
        if matches!(module.as_str(), "main" | "lib" | "cli") || f.ends_with("tests.rs") {
            continue;
        }
        let own = rank(&module);
        for line in code(f) {
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used.is_empty() || used == "Error" || used == module {
                    continue;
                }
                if rank(&used) >= own {
                    wrong.push(format!("{}: {module} imports {used}", f.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up the layers:\n{}",
        wrong.join("\n")
    );
}

/// Lines of each function in `path` (outside its tests): `(name, lines)`.
fn functions(path: &Path) -> Vec<(String, usize)> {
    let lines = code(path);
    let mut out = vec![];
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        let l = l
            .strip_prefix("pub(super) ")
            .or_else(|| l.strip_prefix("pub "))
            .unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        if let Some(rest) = l.strip_prefix("fn ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let (mut depth, mut opened, start) = (0i32, false, i);
            while i < lines.len() {
                for c in lines[i].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth == 0) || (!opened && lines[i].trim_end().ends_with(';')) {
                    break;
                }
                i += 1;
            }
            out.push((name, i - start + 1));
        }
        i += 1;
    }
    out
}

#[test]
fn the_agent_reads_like_a_table_of_contents() {
    let main = std::fs::read_to_string(format!("{ROOT}/src/main.rs")).unwrap();
    assert!(
        main.lines().count() <= 30,
        "main.rs has {} lines",
        main.lines().count()
    );
    let controller = Path::new(ROOT).join("src/agent/controller.rs");
    let reconcile = functions(&controller)
        .into_iter()
        .find(|(n, _)| n == "reconcile_one")
        .expect("agent::controller::reconcile_one");
    assert!(reconcile.1 <= 40, "reconcile_one has {} lines", reconcile.1);
    let mut files = vec![];
    rust_files(&Path::new(ROOT).join("src/agent"), &mut files);
    let long: Vec<String> = files
        .iter()
        .flat_map(|f| {
            functions(f)
                .into_iter()
                .map(move |(n, l)| (f.clone(), n, l))
        })
        .filter(|(_, _, l)| *l > 80)
        .map(|(f, n, l)| format!("{}: {n} ({l} lines)", f.display()))
        .collect();
    assert!(
        long.is_empty(),
        "functions over 80 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn shared_helpers_exist_once() {
    let mut files = vec![];
    rust_files(Path::new(&format!("{ROOT}/src")), &mut files);
    for helper in [
        "fn unix_now(",
        "fn rfc3339(",
        "fn is_status(",
        "fn parse_time(",
    ] {
        let defs: Vec<String> = files
            .iter()
            .filter(|f| code(f).iter().any(|l| l.contains(helper)))
            .map(|f| f.display().to_string())
            .collect();
        assert_eq!(defs.len(), 1, "{helper} defined in {defs:?}");
    }
}

//! The project's documents cite only what a user has: the paper, and the project's own notes. Every
//! `algorithms.md §N` cited anywhere names a section that exists, no document cites a file the repository does
//! not hold, the README's links resolve, and the README stays a user's guide rather than a lab notebook.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Tracked-looking text files: sources, configs and documents (build outputs, caches and runs left out).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !(name.starts_with('.') || ["target", "runs", "node_modules", "__pycache__"].contains(&name.as_str())) {
                files(&p, out);
            }
        } else if ["rs", "md", "toml", "py", "pyi"].iter().any(|x| name.ends_with(&format!(".{x}"))) {
            out.push(p);
        }
    }
}

fn is_word_spec(text: &str, at: usize) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + 4..].chars().next();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    !word(before) && !word(after)
}

#[test]
fn no_document_cites_a_spec_the_repository_does_not_hold() {
    let mut all = Vec::new();
    files(&root(), &mut all);
    assert!(all.len() > 100, "found only {} files under {}", all.len(), root().display());
    // Spelled in two halves so that this file does not cite it either.
    let word = ["SP", "EC"].concat();
    let mut offenders = Vec::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.match_indices(word.as_str()).any(|(i, _)| is_word_spec(line, i)) {
                offenders.push(format!("{}:{}: {line}", f.strip_prefix(root()).unwrap().display(), n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "cite the paper or docs/algorithms.md instead:\n{}", offenders.join("\n"));
}

#[test]
fn every_cited_section_of_the_algorithm_notes_exists() {
    let notes = std::fs::read_to_string(root().join("docs/algorithms.md")).unwrap();
    let headings: Vec<String> = notes
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| {
            l.trim_start_matches('#').split_whitespace().next().map(|n| n.trim_end_matches('.').to_string())
        })
        .collect();
    let decisions: Vec<String> = notes
        .lines()
        .filter_map(|l| l.strip_prefix("| D"))
        .map(|l| format!("D{}", l.split(' ').next().unwrap()))
        .collect();
    assert_eq!(decisions.len(), 20, "{decisions:?}");
    let mut all = Vec::new();
    files(&root(), &mut all);
    let mut missing = Vec::new();
    let mut cited = 0;
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("algorithms.md ") {
            // "algorithms.md §4.4, §8.6, D13": every reference in the run that follows.
            let rest: String = text[i + "algorithms.md ".len()..].chars().take(40).collect();
            for token in rest.split([',', ' ', ';', ')', '(', '\n']).filter(|t| !t.is_empty()) {
                let token = token.trim_end_matches(['.', ':']);
                let decision =
                    token.len() > 1 && token.starts_with('D') && token[1..].bytes().all(|b| b.is_ascii_digit());
                let section = token.strip_prefix('§').filter(|s| s.starts_with(|c: char| c.is_ascii_digit()));
                if let Some(section) = section {
                    // A range, "§4.2–4.3", cites both ends.
                    for end in section.split('–') {
                        cited += 1;
                        if !headings.iter().any(|h| h == end) {
                            missing.push(format!("{}: §{end}", f.display()));
                        }
                    }
                } else if decision {
                    cited += 1;
                    if !decisions.iter().any(|d| d == token) {
                        missing.push(format!("{}: {token}", f.display()));
                    }
                } else {
                    break;
                }
            }
        }
    }
    assert!(cited > 30, "only {cited} citations found: is the pattern right?");
    assert!(missing.is_empty(), "cited but not in docs/algorithms.md:\n{}", missing.join("\n"));
}

#[test]
fn the_readme_is_a_users_guide_whose_links_resolve() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines; history and analysis belong in docs/performance.md");
    // The two commands, verbatim.
    assert!(readme.contains("cargo run --release -p fedsoft -- run\n"));
    assert!(readme.contains("./scripts/test\n"));
    for (i, _) in readme.match_indices("](") {
        let target: String = readme[i + 2..].chars().take_while(|c| *c != ')').collect();
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        let file = target.split('#').next().unwrap();
        assert!(root().join(file).exists(), "README links to {target}, which does not exist");
    }
}

/// The crate table of ARCHITECTURE.md says what each crate must not depend on; its manifests say what it does.
/// A rule broken here is either a wrong arrow in the code or a sentence to correct in the table.
#[test]
fn no_crate_depends_on_what_architecture_md_forbids_it() {
    let burn = ["burn", "burn-autodiff", "burn-backend", "burn-flex"];
    let rules: [(&str, &[&str]); 8] = [
        ("crates/fedsoft-core", &[&burn[..], &["fedsoft-model", "fedsoft-engine", "tokio", "tonic"]].concat()),
        ("crates/fedsoft-wireless", &[&burn[..], &["fedsoft-model", "fedsoft-engine"]].concat()),
        ("crates/fedsoft-data", &[&burn[..], &["fedsoft-model", "fedsoft-engine"]].concat()),
        ("crates/fedsoft-model", &["fedsoft-engine", "fedsoft-data", "fedsoft-net"]),
        ("crates/fedsoft-engine", &["fedsoft", "fedsoft-net", "fedsoft-report"]),
        ("crates/fedsoft-report", &[&burn[..], &["fedsoft-model", "fedsoft-engine"]].concat()),
        ("crates/fedsoft-net", &[&burn[..], &["fedsoft-model"]].concat()),
        ("python", &["fedsoft-net", "fedsoft-model"]),
    ];
    for (dir, forbidden) in rules {
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(root().join(dir).join("Cargo.toml")).unwrap()).unwrap();
        let deps = manifest.get("dependencies").and_then(|d| d.as_table()).cloned().unwrap_or_default();
        for name in deps.keys() {
            assert!(!forbidden.contains(&name.as_str()), "{dir} depends on {name}, which ARCHITECTURE.md forbids it");
        }
    }
    let records: toml::Table =
        toml::from_str(&std::fs::read_to_string(root().join("crates/fedsoft-records/Cargo.toml")).unwrap()).unwrap();
    let deps: Vec<&String> = records["dependencies"].as_table().unwrap().keys().collect();
    assert_eq!(deps, ["serde"], "fedsoft-records depends on nothing but serde");
}

/// The engine's roles each live in their own module: no type of the engine has `impl` blocks in more than two
/// files, so "where does the server decide rho?" has one answer (ARCHITECTURE.md, the engine's row).
#[test]
fn no_engine_type_is_implemented_across_more_than_two_files() {
    let mut sources = Vec::new();
    files(&root().join("crates/fedsoft-engine/src"), &mut sources);
    let mut homes: std::collections::BTreeMap<String, std::collections::BTreeSet<PathBuf>> = Default::default();
    for path in sources.iter().filter(|p| p.extension().is_some_and(|x| x == "rs")) {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let Some(header) = line.trim_start().strip_prefix("impl") else { continue };
            let Some((header, _)) = header.split_once('{') else { continue };
            if !(header.starts_with(' ') || header.starts_with('<')) {
                continue;
            }
            // The implementing type: after `for` when a trait is implemented, its path and generics cut off.
            let header = header.trim();
            let target = header.rsplit(" for ").next().unwrap_or(header);
            let target = if target.starts_with('<') && !header.contains(" for ") {
                target.split_once("> ").map_or(target, |(_, t)| t)
            } else {
                target
            };
            let name = target.split('<').next().unwrap().rsplit("::").next().unwrap().trim().to_string();
            homes.entry(name).or_default().insert(path.clone());
        }
    }
    assert!(homes.contains_key("Server") && homes.contains_key("Experiment"), "the scan found {homes:?}");
    for (name, files) in &homes {
        assert!(files.len() <= 2, "{name} has impl blocks in {} files: {files:?}", files.len());
    }
}

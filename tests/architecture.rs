//! The shape of the source tree, as docs/architecture.md states it: top-level modules import
//! only modules below them in the layering, the files of one folder do not import each other in
//! a circle, and no source file grows past 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layering, lowest first: a module may import only modules of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["error", "record", "lifecycle", "batch"],
    &["export"],
    &["telemetry"],
    &["model"],
    &["task", "connector"],
    &["config"],
    &["pipeline"],
    &["optimize", "bench"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its unit tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names following `prefix` in `text` (`crate::` -> the top-level modules named).
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The top-level module a file of `src/` belongs to (`src/task/embed/mod.rs` -> `task`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is not in the layering of tests/architecture.rs (and docs/architecture.md)"))
}

#[test]
fn imports_run_down_the_layering() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for f in &files {
        let Some(me) = top_module(f) else { continue };
        for used in names_after(&code(f), "crate::") {
            if used == me {
                continue;
            }
            if layer(&used) >= layer(&me) {
                wrong.push(format!(
                    "{} ({me}) imports crate::{used}",
                    f.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports up or across the layering:\n{}",
        wrong.join("\n")
    );
}

/// The files and folders directly inside `dir` that a file refers to, by `crate::<path of
/// dir>::NAME` or through `super::`.
fn sibling_refs(dir: &Path, file: &Path, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let text = code(file);
    let rel = dir.strip_prefix(src()).unwrap();
    let crate_path = format!(
        "crate::{}::",
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join("::")
    );
    // `super::` climbs one module: from `dir/x.rs` and `dir/y/mod.rs` to `dir`, from
    // `dir/y/z.rs` two are needed.
    let depth = file.strip_prefix(dir).unwrap().components().count();
    let is_mod = file.file_name().is_some_and(|n| n == "mod.rs");
    let levels = depth - usize::from(is_mod && depth > 1);
    let prefixes = vec![crate_path, "super::".repeat(levels)];
    let mut out = BTreeSet::new();
    for p in prefixes {
        for n in names_after(&text, &p) {
            if siblings.contains(&n) {
                out.insert(n);
            }
        }
    }
    out
}

/// The unit (file or folder) directly inside `dir` that `file` belongs to.
fn unit(dir: &Path, file: &Path) -> String {
    let first = file
        .strip_prefix(dir)
        .unwrap()
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_folder_has_files_importing_each_other_in_a_circle() {
    let mut dirs = vec![src()];
    let mut i = 0;
    while i < dirs.len() {
        for e in std::fs::read_dir(&dirs[i]).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            }
        }
        i += 1;
    }
    let mut circles = Vec::new();
    for dir in dirs.iter().skip(1) {
        let mut files = Vec::new();
        rust_files(dir, &mut files);
        // The folder's mod.rs holds the seams its children share; the units are its other files
        // and its sub-folders.
        let siblings: BTreeSet<String> = files
            .iter()
            .map(|f| unit(dir, f))
            .filter(|u| u != "mod")
            .collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let u = unit(dir, f);
            if u == "mod" {
                continue;
            }
            let refs = sibling_refs(dir, f, &siblings);
            graph
                .entry(u.clone())
                .or_default()
                .extend(refs.into_iter().filter(|r| *r != u));
        }
        if let Some(c) = find_cycle(&graph) {
            circles.push(format!(
                "{}: {}",
                dir.strip_prefix(src()).unwrap().display(),
                c.join(" -> ")
            ));
        }
    }
    assert!(
        circles.is_empty(),
        "files importing each other in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 800).then(|| format!("{} ({n} lines)", f.strip_prefix(src()).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}

#[test]
fn the_checks_see_a_circle_and_an_upward_import() {
    // The cycle finder and the layering see what they are meant to see.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("stages".into(), ["infer".to_string()].into());
    g.insert("infer".into(), ["flow".to_string()].into());
    assert!(find_cycle(&g).is_none());
    g.insert("flow".into(), ["stages".to_string()].into());
    assert!(find_cycle(&g).is_some());
    assert!(layer("connector") < layer("config"));
    assert!(layer("pipeline") > layer("config"));
    let refs = names_after("use crate::config::X; x_crate::bench::y", "crate::");
    assert_eq!(refs, ["config".to_string()].into());
}

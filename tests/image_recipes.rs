//! The container recipes still match the tree, in seconds (the full image build is `make
//! image-check`): the files each Dockerfile's build stage copies, assembled into an empty folder,
//! form a Cargo workspace that resolves from the lock file and holds the sources of what the
//! stage builds; every path a Dockerfile or compose file names exists and is not excluded from
//! the build context; the CUDA image's build stage is the CPU image's, step for step, so that it
//! comes from the same layer cache.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One instruction of a Dockerfile: its keyword (upper case) and arguments, continuation lines
/// joined, with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        if !acc.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body.trim());
        if continues {
            pending = Some((start, acc));
            continue;
        }
        if acc.is_empty() {
            continue;
        }
        let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction {
            line: start,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    out
}

/// A build stage: the instructions from one FROM to the next.
#[derive(Debug)]
struct Stage {
    name: Option<String>,
    instructions: Vec<Instruction>,
}

fn stages(instructions: &[Instruction]) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|p| words.get(p + 1))
                .map(|s| s.to_string());
            out.push(Stage {
                name,
                instructions: vec![ins.clone()],
            });
        } else if let Some(s) = out.last_mut() {
            s.instructions.push(ins.clone());
        }
    }
    out
}

/// The sources and destination of a COPY/ADD from the build context (`None` for `--from=`).
fn copy_from_context(ins: &Instruction) -> Option<(Vec<String>, String)> {
    if ins.keyword != "COPY" && ins.keyword != "ADD" {
        return None;
    }
    let words: Vec<&str> = ins.args.split_whitespace().collect();
    if words.iter().any(|w| w.starts_with("--from")) {
        return None;
    }
    let words: Vec<String> = words
        .into_iter()
        .filter(|w| !w.starts_with("--"))
        .map(str::to_string)
        .collect();
    let (dest, sources) = words.split_last()?;
    Some((sources.to_vec(), dest.clone()))
}

/// The build context's exclusions (.dockerignore), as glob patterns.
fn ignored(root: &Path) -> Vec<glob::Pattern> {
    std::fs::read_to_string(root.join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| glob::Pattern::new(l.trim_start_matches('/').trim_end_matches('/')).unwrap())
        .collect()
}

fn is_ignored(patterns: &[glob::Pattern], rel: &str) -> bool {
    let mut prefix = String::new();
    for part in rel.trim_start_matches("./").split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if patterns.iter().any(|p| p.matches(&prefix)) {
            return true;
        }
    }
    false
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

/// Check one Dockerfile against the tree at `context`: every COPY source exists in the context
/// and is not excluded from it, every `COPY --from` names an earlier stage, and each stage that
/// runs `cargo build` gets a workspace that `cargo metadata --locked --offline` resolves, whose
/// built package's targets have their sources. Returns every problem found, each naming the
/// Dockerfile and line.
fn check_dockerfile(name: &str, text: &str, context: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let ignore = ignored(context);
    let all = stages(&parse(text));
    if all.is_empty() {
        return vec![format!("{name}: no FROM instruction")];
    }
    let mut seen_stages = BTreeSet::new();
    for stage in &all {
        let mut workdir = PathBuf::from("/");
        let assembled = tempfile::tempdir().unwrap();
        for ins in &stage.instructions {
            let at = format!("{name}:{}", ins.line);
            match ins.keyword.as_str() {
                "WORKDIR" => workdir = workdir.join(&ins.args),
                "COPY" | "ADD" => {
                    if let Some(from) = ins
                        .args
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("--from="))
                    {
                        if !seen_stages.contains(from) {
                            problems
                                .push(format!("{at}: COPY --from={from} names no earlier stage"));
                        }
                        continue;
                    }
                    let Some((sources, dest)) = copy_from_context(ins) else {
                        continue;
                    };
                    let dest = workdir.join(&dest);
                    for src in &sources {
                        let path = context.join(src);
                        if !path.exists() {
                            problems.push(format!("{at}: `{src}` does not exist in the tree"));
                            continue;
                        }
                        if is_ignored(&ignore, src) {
                            problems.push(format!("{at}: `{src}` is excluded by .dockerignore"));
                            continue;
                        }
                        // Files copied to a folder (`dest/`, several sources) keep their names;
                        // a folder's contents go into the destination.
                        let into_dir = ins.args.trim_end().ends_with('/') || sources.len() > 1;
                        let target = if path.is_file() && into_dir {
                            dest.join(path.file_name().unwrap())
                        } else {
                            dest.clone()
                        };
                        let local = assembled.path().join(target.strip_prefix("/").unwrap());
                        copy_tree(&path, &local).unwrap();
                    }
                }
                "RUN" if ins.args.contains("cargo build") => {
                    let dir = assembled.path().join(workdir.strip_prefix("/").unwrap());
                    if let Err(e) = cargo_workspace_builds(&dir, &ins.args) {
                        problems.push(format!("{at}: the copied files do not build: {e}"));
                    }
                }
                _ => {}
            }
        }
        if let Some(n) = &stage.name {
            seen_stages.insert(n.clone());
        }
    }
    problems
}

/// `cargo metadata --locked --offline` over the assembled folder (the workspace loads, every
/// member's manifest is there, the lock file matches), then the sources of the package that the
/// RUN line builds (`--package NAME`, else the root package).
fn cargo_workspace_builds(dir: &Path, run: &str) -> Result<(), String> {
    // The packages of this platform only (others' crates are not downloaded); from the local
    // registry cache, else (a crate the cache lacks, e.g. before any build of the Python
    // member) from the registry.
    let metadata = |offline: bool| {
        let mut c = Command::new(env!("CARGO"));
        c.args(["metadata", "--locked", "--format-version", "1"])
            .args(["--filter-platform", &host_triple()])
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"));
        if offline {
            c.arg("--offline");
        }
        c.output().map_err(|e| format!("running cargo: {e}"))
    };
    let mut out = metadata(true)?;
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("failed to download")
    {
        out = metadata(false)?;
    }
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let words: Vec<&str> = run.split_whitespace().collect();
    let wanted = words
        .iter()
        .position(|w| *w == "--package" || *w == "-p")
        .and_then(|p| words.get(p + 1))
        .map(|s| s.to_string());
    let root_manifest = dir.join("Cargo.toml").canonicalize().unwrap();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| match &wanted {
            Some(n) => p["name"] == n.as_str(),
            None => Path::new(p["manifest_path"].as_str().unwrap()) == root_manifest,
        })
        .ok_or_else(|| format!("no package {wanted:?} in the copied workspace"))?;
    for target in package["targets"].as_array().unwrap() {
        let src = target["src_path"].as_str().unwrap();
        if !Path::new(src).is_file() {
            return Err(format!("target source {src} was not copied"));
        }
    }
    Ok(())
}

/// The host's target triple (`rustc -vV`).
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().expect("rustc");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// Paths that docker/compose.yaml names: build contexts and Dockerfiles, host sides of bind
/// mounts, and the files a service's command names under a mounted folder.
fn check_compose(file: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let base = file.parent().unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let name = file.display();
    let services = doc["services"].as_mapping().expect("services");
    for (svc, s) in services {
        let svc = svc.as_str().unwrap();
        if let Some(build) = s.get("build") {
            let ctx = base.join(build["context"].as_str().unwrap_or("."));
            if !ctx.is_dir() {
                problems.push(format!(
                    "{name}: {svc}: build context {} is missing",
                    ctx.display()
                ));
            }
            if let Some(df) = build["dockerfile"].as_str() {
                if !ctx.join(df).is_file() {
                    problems.push(format!("{name}: {svc}: dockerfile {df} is missing"));
                }
            }
        }
        let mut mounts = Vec::new();
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let Some(v) = v.as_str() else { continue };
            let parts: Vec<&str> = v.split(':').collect();
            if parts.len() < 2 || !(parts[0].starts_with('.') || parts[0].starts_with('/')) {
                continue; // a named volume
            }
            let host = base.join(parts[0]);
            if !host.exists() {
                problems.push(format!(
                    "{name}: {svc}: mounted path {} is missing",
                    parts[0]
                ));
            }
            mounts.push((parts[1].to_string(), host));
        }
        for arg in s["command"].as_sequence().into_iter().flatten() {
            let Some(arg) = arg.as_str() else { continue };
            for (inside, host) in &mounts {
                if let Some(rest) = arg.strip_prefix(&format!("{inside}/")) {
                    if !host.join(rest).exists() {
                        problems.push(format!(
                            "{name}: {svc}: command names {arg}, missing at {}",
                            host.join(rest).display()
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn dockerfiles() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("docker"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Dockerfile")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_dockerfile_builds_from_the_files_it_copies() {
    let files = dockerfiles();
    assert!(
        files.len() >= 2,
        "docker/ should hold the CPU and CUDA Dockerfiles: {files:?}"
    );
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        assert!(text.contains("cargo build"), "{name} builds nothing?");
        problems.extend(check_dockerfile(&name, &text, &root()));
    }
    assert!(
        problems.is_empty(),
        "image recipes out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_guard_refuses_a_recipe_that_misses_a_workspace_member() {
    // The recipe as it stood when the Python package joined the workspace: root manifest, lock
    // file and src/ only.
    let broken = "FROM rust:1.95-bookworm AS build\nWORKDIR /src\n\
                  COPY Cargo.toml Cargo.lock ./\nCOPY src ./src\n\
                  RUN cargo build --release --locked\n\
                  FROM debian:bookworm-slim\nCOPY --from=build /src/target/release/bertflow /b\n";
    let problems = check_dockerfile("broken", broken, &root());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("broken:5: the copied files do not build")
            && problems[0].contains("python"),
        "{}",
        problems[0]
    );
    // Missing, excluded and mis-staged paths are named too.
    let other = "FROM x AS build\nWORKDIR /src\nCOPY nosuch.toml ./\nCOPY bench ./bench\n\
                 FROM y\nCOPY --from=builder /a /b\n";
    let problems = check_dockerfile("other", other, &root());
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("`nosuch.toml` does not exist"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("`bench` is excluded by .dockerignore"),
        "{problems:?}"
    );
    assert!(
        problems[2].contains("--from=builder names no earlier stage"),
        "{problems:?}"
    );
}

#[test]
fn the_cuda_build_stage_is_the_cpu_build_stage() {
    let read = |f: &str| stages(&parse(&std::fs::read_to_string(root().join(f)).unwrap()));
    let (cpu, cuda) = (read("docker/Dockerfile"), read("docker/Dockerfile.cuda"));
    let strip = |s: &Stage| -> Vec<(String, String)> {
        let upto = s
            .instructions
            .iter()
            .position(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
            .expect("a cargo build step");
        s.instructions[..=upto]
            .iter()
            .map(|i| (i.keyword.clone(), i.args.clone()))
            .collect()
    };
    assert_eq!(
        strip(&cpu[0]),
        strip(&cuda[0]),
        "docker/Dockerfile.cuda's build stage must repeat docker/Dockerfile's up to its cargo \
         build, so that the release build comes from the CPU image's layer cache"
    );
}

#[test]
fn compose_names_only_paths_that_exist() {
    let problems = check_compose(&root().join("docker/compose.yaml"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // A missing mount is found.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("compose.yaml");
    std::fs::write(
        &f,
        "services:\n  w:\n    image: x\n    command: [run, /p/missing.yaml]\n    volumes:\n      - ./p:/p:ro\n      - cache:/c\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    let problems = check_compose(&f);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("command names /p/missing.yaml"),
        "{problems:?}"
    );
}

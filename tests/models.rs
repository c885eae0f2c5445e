//! `bertflow models pull / inspect` and the start-up checks of a task's model. The hub is a
//! local HTTP server on 127.0.0.1 serving a mirror of the Hugging Face Hub's file layout
//! (`/api/models/<repo>/revision/<rev>` and `/<repo>/resolve/<rev>/<file>`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

/// A hub mirror: repository id -> files (path in the repo -> bytes).
struct Mirror {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve_mirror(repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> Mirror {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (req, st) = (requests.clone(), stop.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if st.load(Ordering::SeqCst) {
                break;
            }
            let Ok(mut stream) = stream else { continue };
            req.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut range: Option<(usize, Option<usize>)> = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) <= 2 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    range = Some((a.parse().unwrap(), b.parse().ok()));
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let sha = "0123456789abcdef0123456789abcdef01234567";
            let respond = |stream: &mut std::net::TcpStream,
                           status: &str,
                           headers: &[(String, String)],
                           body: &[u8]| {
                let mut h = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    h.push_str(&format!("{k}: {v}\r\n"));
                }
                h.push_str("\r\n");
                let _ = stream.write_all(h.as_bytes());
                let _ = stream.write_all(body);
            };
            if let Some(rest) = path.strip_prefix("/api/models/") {
                // <org>/<repo>/revision/<rev>
                let parts: Vec<&str> = rest.split('/').collect();
                let repo = format!("{}/{}", parts[0], parts.get(1).unwrap_or(&""));
                match repos.get(&repo) {
                    Some(files) => {
                        let siblings: Vec<serde_json::Value> = files
                            .keys()
                            .map(|f| serde_json::json!({"rfilename": f}))
                            .collect();
                        let body =
                            serde_json::json!({"id": repo, "sha": sha, "siblings": siblings})
                                .to_string();
                        respond(
                            &mut stream,
                            "200 OK",
                            &[("Content-Type".into(), "application/json".into())],
                            body.as_bytes(),
                        );
                    }
                    None => respond(
                        &mut stream,
                        "404 Not Found",
                        &[],
                        b"{\"error\":\"Repository not found\"}",
                    ),
                }
                continue;
            }
            // /<org>/<repo>/resolve/<rev>/<file...>
            let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
            let found = (parts.len() == 5 && parts[2] == "resolve")
                .then(|| repos.get(&format!("{}/{}", parts[0], parts[1])))
                .flatten()
                .and_then(|files| files.get(parts[4]));
            match found {
                Some(data) => {
                    let etag = format!("\"etag-{}-{}\"", parts[4].replace('/', "_"), data.len());
                    let (a, b) = range.unwrap_or((0, None));
                    let b = b
                        .unwrap_or(data.len().saturating_sub(1))
                        .min(data.len().saturating_sub(1));
                    let body = if data.is_empty() {
                        &data[..]
                    } else {
                        &data[a..=b]
                    };
                    respond(
                        &mut stream,
                        "206 Partial Content",
                        &[
                            ("ETag".into(), etag),
                            ("X-Repo-Commit".into(), sha.into()),
                            (
                                "Content-Range".into(),
                                format!("bytes {a}-{b}/{}", data.len()),
                            ),
                        ],
                        body,
                    );
                }
                None => respond(&mut stream, "404 Not Found", &[], b"Entry not found"),
            }
        }
    });
    Mirror {
        url,
        requests,
        stop,
    }
}

fn dir_files(dir: &Path, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            m.insert(format!("{prefix}{name}"), std::fs::read(&p).unwrap());
        }
    }
    m
}

fn models_cmd(hf_home: &Path, endpoint: &str) -> std::process::Command {
    let mut c = bin();
    c.env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_TOKEN");
    c
}

#[test]
fn pull_from_a_hub_mirror_then_run_an_hf_reference_offline() {
    let sentiment = PathBuf::from(fixture_model("bert-sentiment"));
    // A repository laid out like the hub's: the graph under onnx/, the rest at the top.
    let mut files = dir_files(&sentiment, "");
    let graph = files.remove("model.onnx").unwrap();
    files.insert("onnx/model.onnx".into(), graph.clone());
    files.insert("README.md".into(), b"# test model".to_vec());
    let mut repos = BTreeMap::new();
    repos.insert("acme/tiny-sentiment".to_string(), files);
    let mirror = serve_mirror(repos);
    let home = tempfile::tempdir().unwrap();

    let o = models_cmd(home.path(), &mirror.url)
        .args(["models", "pull", "hf:acme/tiny-sentiment"])
        .output()
        .unwrap();
    assert_ok(&o);
    let dir = PathBuf::from(stdout(&o).trim());
    assert!(dir.starts_with(home.path()), "{}", dir.display());
    assert_eq!(std::fs::read(dir.join("model.onnx")).unwrap(), graph);
    for f in ["tokenizer.json", "config.json"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(
        !dir.join("README.md").exists(),
        "only the files a model directory needs"
    );

    // A pipeline names the model by reference; the assembled directory is reused offline.
    let work = tempfile::tempdir().unwrap();
    let before = mirror.requests.load(Ordering::SeqCst);
    let o = {
        let input = work.path().join("in.parquet");
        texts_parquet(&input, &["a", "b"], &[Some("great service"), Some("awful")]);
        let p = work.path().join("p.yaml");
        std::fs::write(
            &p,
            format!(
                "source: {{parquet: {{path: {}, id_column: id}}}}\ntasks:\n  sentiment: {{model: 'hf:acme/tiny-sentiment'}}\nsink: {{parquet: {{path: {}}}}}\n",
                input.display(),
                work.path().join("out.parquet").display()
            ),
        )
        .unwrap();
        models_cmd(home.path(), "http://127.0.0.1:9")
            .args(["run", p.to_str().unwrap(), "--no-progress"])
            .output()
            .unwrap()
    };
    assert_ok(&o);
    assert_eq!(
        mirror.requests.load(Ordering::SeqCst),
        before,
        "no request once pulled"
    );
    let out = read_parquet(&work.path().join("out.parquet"));
    assert_eq!(out.num_rows(), 2);

    // inspect takes the reference too.
    let o = models_cmd(home.path(), &mirror.url)
        .args(["models", "inspect", "hf:acme/tiny-sentiment", "--json"])
        .output()
        .unwrap();
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["tasks"],
        serde_json::json!(["sentiment", "cross_encoder"])
    );
}

#[test]
fn pull_explains_missing_repositories_and_graphs() {
    let mut repos = BTreeMap::new();
    let mut files = dir_files(&PathBuf::from(fixture_model("bert-ner")), "");
    files.remove("model.onnx");
    files.insert("onnx/model_quantized.onnx".into(), b"x".to_vec());
    repos.insert("acme/no-default-graph".to_string(), files);
    let mirror = serve_mirror(repos);
    let home = tempfile::tempdir().unwrap();
    let o = models_cmd(home.path(), &mirror.url)
        .args(["models", "pull", "hf:acme/nothing-here"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot list the repository's files"),
        "{}",
        stderr(&o)
    );
    let o = models_cmd(home.path(), &mirror.url)
        .args(["models", "pull", "hf:acme/no-default-graph"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--onnx-file") && e.contains("onnx/model_quantized.onnx"),
        "{e}"
    );
    let o = models_cmd(home.path(), &mirror.url)
        .args(["models", "pull", "acme/no-prefix"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hf:<org>/<repo>"), "{}", stderr(&o));
}

#[test]
fn inspect_reports_io_labels_and_tasks() {
    let o = bin()
        .args(["models", "inspect", &fixture_model("bert-ner")])
        .output()
        .unwrap();
    assert_ok(&o);
    let s = stdout(&o);
    for want in [
        "input         input_ids",
        "output        logits",
        "tasks         ner",
        "WordPiece",
    ] {
        assert!(s.contains(want), "{want}: {s}");
    }
    let o = bin()
        .args(["models", "inspect", &fixture_model("bert-qa"), "--json"])
        .output()
        .unwrap();
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["tasks"], serde_json::json!(["qa"]));
    assert!(v["max_length"].as_u64().unwrap() > 0);
}

#[test]
fn a_model_of_the_wrong_kind_or_tokenizer_fails_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    // An NER model configured as sentiment.
    let o = run_tasks(
        dir.path(),
        &[Some("hello")],
        None,
        &format!("  sentiment: {{model: {}}}\n", fixture_model("bert-ner")),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("configured as `sentiment`") && e.contains("tasks.ner"),
        "{e}"
    );

    // A tokenizer with more tokens than the model's vocabulary.
    let m = dir.path().join("mixed");
    std::fs::create_dir_all(&m).unwrap();
    let src = PathBuf::from(fixture_model("bert-sentiment"));
    for f in ["model.onnx", "config.json"] {
        std::fs::copy(src.join(f), m.join(f)).unwrap();
    }
    std::fs::copy(
        model("all-MiniLM-L6-v2").join("tokenizer.json"),
        m.join("tokenizer.json"),
    )
    .unwrap();
    let o = run_tasks(
        dir.path(),
        &[Some("hello")],
        None,
        &format!("  sentiment: {{model: {}}}\n", m.display()),
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("belongs to another model") && e.contains("vocab_size"),
        "{e}"
    );
}

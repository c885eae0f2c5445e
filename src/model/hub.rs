//! Models from the Hugging Face Hub: `hf:<org>/<repo>[@revision]`.
//!
//! `bertflow models pull` (and any task whose `model` is an `hf:` reference) downloads the files
//! a model directory needs (the ONNX graph, `tokenizer.json`, `config.json`, the
//! sentence-transformers files) with the `hf-hub` client, which keeps them in its cache under
//! `$HF_HOME/hub` (default `~/.cache/huggingface/hub`) and talks to `$HF_ENDPOINT` (default
//! `https://huggingface.co`, or a mirror). The files are then assembled into a model directory
//! under `$HF_HOME/bertflow/<org>--<repo>/<revision>/`, with the chosen graph as `model.onnx`.
//! An assembled directory is reused without network access.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Repo, RepoType};

use crate::error::{Error, Result};

/// Files copied when the repository has them (besides the graph and `tokenizer.json`).
const OPTIONAL_FILES: &[&str] = &[
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
];

/// The file name of a file in a sentence-transformers module folder (`1_Pooling/config.json`,
/// `2_Dense/model.safetensors`).
fn in_module_folder(f: &str) -> Option<&str> {
    let mut parts = f.split('/');
    let (Some(folder), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let numbered = folder.split_once('_').is_some_and(|(n, rest)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
    });
    numbered.then_some(name)
}

/// A module folder's file that bertflow reads (configuration, safetensors weights): copied too.
fn module_file(f: &str) -> bool {
    in_module_folder(f).is_some_and(|n| n.ends_with(".json") || n.ends_with(".safetensors"))
}

/// Graphs looked for, in order, when no `--onnx-file` is given.
const ONNX_CANDIDATES: &[&str] = &["model.onnx", "onnx/model.onnx"];

/// A parsed `hf:` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub revision: String,
}

impl HubRef {
    /// `hf:org/repo` or `hf:org/repo@revision`; `None` for anything else (a local path).
    pub fn parse(spec: &str) -> Option<Result<HubRef>> {
        let rest = spec.strip_prefix("hf:")?;
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (rest, "main"),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| valid(p)) || revision.is_empty() {
            return Some(Err(Error::config(format!(
                "'{spec}' is not a Hugging Face reference: write hf:<org>/<repo> or hf:<org>/<repo>@<revision>"
            ))));
        }
        Some(Ok(HubRef {
            repo: repo.to_string(),
            revision: revision.to_string(),
        }))
    }

    /// Where the assembled model directory lives.
    pub fn local_dir(&self) -> PathBuf {
        let home = std::env::var_os("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface"))
            })
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface"));
        home.join("bertflow")
            .join(self.repo.replace('/', "--"))
            .join(self.revision.replace('/', "--"))
    }
}

/// A task's `model`: a local directory, or an `hf:` reference resolved to its assembled
/// directory (downloaded on first use).
pub fn resolve_model(model: &Path) -> Result<PathBuf> {
    let spec = model.to_string_lossy();
    match HubRef::parse(&spec) {
        None => Ok(model.to_path_buf()),
        Some(r) => {
            let r = r?;
            let dir = r.local_dir();
            if dir.join(".complete").is_file() {
                return Ok(dir);
            }
            pull(&r, None)
        }
    }
}

/// An error about a hub reference, with where it was looked for and what to set.
fn hub_error(spec: &str, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::model(
        PathBuf::from(spec),
        format!(
            "{what}: {e} (endpoint {}; set HF_ENDPOINT for a mirror, HF_TOKEN for a private repository)",
            std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into())
        ),
    )
}

/// A reference's repository on the hub, with its commit and file list.
struct OpenRepo {
    spec: String,
    repo: hf_hub::api::sync::ApiRepo,
    sha: String,
    files: Vec<String>,
}

fn open_repo(r: &HubRef) -> Result<OpenRepo> {
    let spec = format!("hf:{}@{}", r.repo, r.revision);
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| hub_error(&spec, "cannot set up the hub client", &e))?;
    let repo = api.repo(Repo::with_revision(
        r.repo.clone(),
        RepoType::Model,
        r.revision.clone(),
    ));
    let info = repo
        .info()
        .map_err(|e| hub_error(&spec, "cannot list the repository's files", &e))?;
    let files = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    Ok(OpenRepo {
        spec,
        repo,
        sha: info.sha,
        files,
    })
}

/// Download the model's files and assemble its directory; returns the directory.
pub fn pull(r: &HubRef, onnx_file: Option<&str>) -> Result<PathBuf> {
    let OpenRepo {
        spec,
        repo,
        sha,
        files,
    } = open_repo(r)?;
    let err = |what: &str, e: &dyn std::fmt::Display| hub_error(&spec, what, e);
    let has = |f: &str| files.iter().any(|x| x == f);
    // A repository of safetensors (or PyTorch) weights without an ONNX graph: export it.
    if onnx_file.is_none()
        && !ONNX_CANDIDATES.iter().any(|c| has(c))
        && has("config.json")
        && files.iter().any(|f| is_weights(f))
    {
        let src = download(
            &repo,
            &spec,
            &files,
            &r.local_dir().with_extension("source"),
            source_file,
        )
        .map_err(|(what, e)| err(&what, &e))?;
        let dir = r.local_dir();
        let _ = std::fs::remove_dir_all(&dir);
        tracing::info!("{spec} has no ONNX graph: exporting its weights (bertflow models export)");
        crate::export::export(&src, &dir, &crate::export::ExportOptions::default())?;
        std::fs::write(
            dir.join(".complete"),
            format!("{spec}\ncommit {}\nexported from {}\n", sha, src.display()),
        )?;
        return Ok(dir);
    }
    let onnx = match onnx_file {
        Some(f) if has(f) => f.to_string(),
        Some(f) => {
            return Err(Error::model(
                PathBuf::from(&spec),
                format!("has no file {f}; its ONNX files: {}", onnx_files(&files)),
            ))
        }
        None => ONNX_CANDIDATES
            .iter()
            .find(|c| has(c))
            .map(|s| s.to_string())
            .ok_or_else(|| {
                Error::model(
                    PathBuf::from(&spec),
                    format!(
                        "has no model.onnx or onnx/model.onnx; pick one with --onnx-file (its ONNX files: {})",
                        onnx_files(&files)
                    ),
                )
            })?,
    };
    if !has("tokenizer.json") {
        return Err(Error::model(
            PathBuf::from(&spec),
            "has no tokenizer.json (bertflow needs a fast tokenizer file)",
        ));
    }
    let dir = r.local_dir();
    let tmp = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| err(&format!("cannot create {}", tmp.display()), &e))?;
    let mut wanted: Vec<(String, String)> = vec![
        (onnx.clone(), "model.onnx".to_string()),
        ("tokenizer.json".into(), "tokenizer.json".into()),
    ];
    // External weights of a large graph sit beside it under the name the graph refers to.
    for data in [format!("{onnx}_data"), format!("{onnx}.data")] {
        if has(&data) {
            let name = Path::new(&data)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            wanted.push((data, name));
        }
    }
    for f in OPTIONAL_FILES {
        if has(f) {
            wanted.push((f.to_string(), f.to_string()));
        }
    }
    for f in files.iter().filter(|f| module_file(f)) {
        wanted.push((f.clone(), f.clone()));
    }
    for (remote, local) in &wanted {
        tracing::info!(file = %remote, "downloading from {spec}");
        let cached = repo
            .get(remote)
            .map_err(|e| err(&format!("cannot download {remote}"), &e))?;
        let dest = tmp.join(local);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&cached, &dest)
            .map_err(|e| err(&format!("cannot copy {remote} into place"), &e))?;
    }
    std::fs::write(
        tmp.join(".complete"),
        format!("{spec}\ncommit {}\nonnx {onnx}\n", sha),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(&tmp, &dir)
        .map_err(|e| err(&format!("cannot move the model into {}", dir.display()), &e))?;
    Ok(dir)
}

/// A weights file transformers loads.
fn is_weights(f: &str) -> bool {
    !f.contains('/')
        && (f == "pytorch_model.bin"
            || f.ends_with(".safetensors")
            || f.ends_with(".safetensors.index.json")
            || f == "pytorch_model.bin.index.json"
            || (f.starts_with("pytorch_model-") && f.ends_with(".bin")))
}

/// The files of a repository that `models export` reads: configuration, tokenizer, weights and
/// the sentence-transformers files and module folders.
fn source_file(f: &str) -> bool {
    is_weights(f)
        || OPTIONAL_FILES.contains(&f)
        || module_file(f)
        || in_module_folder(f) == Some("pytorch_model.bin")
        || [
            "tokenizer.json",
            "vocab.txt",
            "merges.txt",
            "vocab.json",
            "sentencepiece.bpe.model",
            "spm.model",
            "tokenizer.model",
            "added_tokens.json",
        ]
        .contains(&f)
}

/// Download the files `keep` accepts into `dest` (replaced); errors as (what, why).
fn download(
    repo: &hf_hub::api::sync::ApiRepo,
    spec: &str,
    files: &[String],
    dest: &Path,
    keep: impl Fn(&str) -> bool,
) -> std::result::Result<PathBuf, (String, String)> {
    let _ = std::fs::remove_dir_all(dest);
    for f in files.iter().filter(|f| keep(f)) {
        tracing::info!(file = %f, "downloading from {spec}");
        let cached = repo
            .get(f)
            .map_err(|e| (format!("cannot download {f}"), e.to_string()))?;
        let to = dest.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| (format!("cannot create {}", parent.display()), e.to_string()))?;
        }
        std::fs::copy(&cached, &to)
            .map_err(|e| (format!("cannot copy {f} into place"), e.to_string()))?;
    }
    Ok(dest.to_path_buf())
}

/// The transformers folder of a repository (for `models export hf:...`), downloaded into the
/// cache beside where its assembled model goes.
pub fn pull_source(r: &HubRef) -> Result<PathBuf> {
    let o = open_repo(r)?;
    download(
        &o.repo,
        &o.spec,
        &o.files,
        &r.local_dir().with_extension("source"),
        source_file,
    )
    .map_err(|(what, e)| hub_error(&o.spec, &what, &e))
}

fn onnx_files(files: &[String]) -> String {
    let v: Vec<&str> = files
        .iter()
        .filter(|f| f.ends_with(".onnx"))
        .map(String::as_str)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert!(HubRef::parse("models/x").is_none());
        let r = HubRef::parse("hf:sentence-transformers/all-MiniLM-L6-v2")
            .unwrap()
            .unwrap();
        assert_eq!(r.repo, "sentence-transformers/all-MiniLM-L6-v2");
        assert_eq!(r.revision, "main");
        let r = HubRef::parse("hf:a/b@v1.0").unwrap().unwrap();
        assert_eq!(r.revision, "v1.0");
        for bad in ["hf:", "hf:a", "hf:a/b/c", "hf:a/b@", "hf:a b/c"] {
            assert!(HubRef::parse(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_export_reads_weights_tokenizer_and_modules() {
        for f in [
            "model.safetensors",
            "pytorch_model.bin",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "tokenizer.json",
            "sentencepiece.bpe.model",
            "config.json",
            "modules.json",
            "2_Dense/pytorch_model.bin",
            "2_Dense/config.json",
        ] {
            assert!(source_file(f), "{f}");
        }
        for f in [
            "onnx/model.onnx",
            "tf_model.h5",
            "flax_model.msgpack",
            "openvino/openvino_model.bin",
            "README.md",
        ] {
            assert!(!source_file(f), "{f}");
        }
    }

    #[test]
    fn module_folders_are_copied() {
        for f in [
            "1_Pooling/config.json",
            "2_Dense/model.safetensors",
            "2_Dense/config.json",
        ] {
            assert!(module_file(f), "{f}");
        }
        for f in [
            "onnx/model.onnx",
            "2_Dense/pytorch_model.bin",
            "_x/config.json",
            "a_b/config.json",
            "1_Pooling/x/config.json",
            "config.json",
        ] {
            assert!(!module_file(f), "{f}");
        }
    }
}

//! `bertflow models export SRC OUT`: a transformers / sentence-transformers model folder
//! (safetensors or pytorch_model.bin weights), or an `hf:` reference, exported to the ONNX model
//! folder `run` uses. The graph follows the folder, as the reference libraries load it (see
//! [`Head::for_folder`]); torch.onnx exports it in a Python environment (`export.py`), which then
//! checks the graph against the framework on sample texts and refuses one that differs. Nothing
//! is left under OUT when anything fails.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

const SCRIPT: &str = include_str!("export.py");

/// The graph exported: which transformers class, with which outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The bare encoder (`last_hidden_state`): sentence-transformers embedders.
    Encoder,
    /// `...ForMaskedLM` (`logits` over the vocabulary): SPLADE.
    MaskedLm,
    /// `...ForSequenceClassification`.
    Sequence,
    /// `...ForTokenClassification`.
    Token,
    /// `...ForQuestionAnswering`.
    Qa,
}

impl Head {
    fn arg(self) -> &'static str {
        match self {
            Head::Encoder => "encoder",
            Head::MaskedLm => "mlm",
            Head::Sequence => "sequence",
            Head::Token => "token",
            Head::Qa => "qa",
        }
    }

    /// The tasks a graph with this head serves.
    pub fn tasks(self) -> &'static str {
        match self {
            Head::Encoder => "embed",
            Head::MaskedLm => "sparse",
            Head::Sequence => "sentiment, zero_shot, cross_encoder",
            Head::Token => "ner",
            Head::Qa => "qa",
        }
    }

    /// The head of a task (`--task`).
    fn for_task(task: &str) -> Option<Head> {
        Some(match task {
            "embed" => Head::Encoder,
            "sparse" => Head::MaskedLm,
            "sentiment" | "zero_shot" | "cross_encoder" => Head::Sequence,
            "ner" => Head::Token,
            "qa" => Head::Qa,
            _ => return None,
        })
    }

    /// The head `config.json`'s architecture names (`None`: a bare encoder or none named).
    fn of_architecture(arch: &str) -> Option<Head> {
        [
            ("ForMaskedLM", Head::MaskedLm),
            ("ForSequenceClassification", Head::Sequence),
            ("ForTokenClassification", Head::Token),
            ("ForQuestionAnswering", Head::Qa),
        ]
        .into_iter()
        .find(|(s, _)| arch.ends_with(s))
        .map(|(_, h)| h)
    }

    /// The graph a folder is loaded as by the reference libraries: a sentence-transformers
    /// layout (`modules.json` with a Transformer module) is the bare encoder whatever head
    /// config.json names, a SparseEncoder layout (MLMTransformer, SpladePooling) the MLM, else
    /// config.json's architecture. `task` overrides it, when the folder has that head (or, for
    /// `embed`, any encoder).
    pub fn for_folder(src: &Path, task: Option<&str>) -> Result<Head> {
        let config = read_json(&src.join("config.json"))?.ok_or_else(|| {
            Error::model(
                src,
                "no config.json: not a transformers model folder (it needs config.json and the weights)",
            )
        })?;
        let arch = config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let module_types: Vec<String> = read_json(&src.join("modules.json"))?
            .and_then(|m| m.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|m| m.get("type").and_then(Value::as_str).map(str::to_string))
            .collect();
        let sparse_layout = module_types
            .iter()
            .any(|t| t.ends_with("MLMTransformer") || t.ends_with("SpladePooling"));
        let from_folder = if sparse_layout {
            Head::MaskedLm
        } else if !module_types.is_empty() {
            Head::Encoder
        } else {
            Head::of_architecture(&arch).unwrap_or(Head::Encoder)
        };
        let Some(task) = task else {
            return Ok(from_folder);
        };
        let wanted = Head::for_task(task).ok_or_else(|| {
            Error::config(format!(
                "--task {task} is not a task (embed, sparse, sentiment, ner, qa, zero_shot, cross_encoder)"
            ))
        })?;
        let has = sparse_layout && wanted == Head::MaskedLm
            || Head::of_architecture(&arch) == Some(wanted)
            || wanted == Head::Encoder;
        if !has {
            return Err(Error::model(
                src,
                format!(
                    "--task {task} needs a model with a ...{} head, but config.json names {}; a head the model was not trained with would be random",
                    match wanted {
                        Head::MaskedLm => "ForMaskedLM",
                        Head::Sequence => "ForSequenceClassification",
                        Head::Token => "ForTokenClassification",
                        Head::Qa => "ForQuestionAnswering",
                        Head::Encoder => "",
                    },
                    if arch.is_empty() { "no architecture".to_string() } else { arch }
                ),
            ));
        }
        Ok(wanted)
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::model(path, format!("not valid JSON: {e}")))
}

/// What `models export` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Export the head this task needs instead of the folder's own.
    pub task: Option<String>,
    /// Python with torch, transformers, onnx and onnxruntime.
    pub python: Option<PathBuf>,
}

/// What an export made.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub head: Head,
    /// The export script's summary (model type, inputs, outputs, largest difference, versions).
    pub summary: Value,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.summary;
        let list = |k: &str| {
            s.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        writeln!(f, "exported      {}", self.out.display())?;
        writeln!(
            f,
            "graph         {} {} (inputs {}; outputs {})",
            s.get("model_type").and_then(Value::as_str).unwrap_or("-"),
            self.head.arg(),
            list("inputs"),
            list("outputs")
        )?;
        writeln!(
            f,
            "checked       largest difference to torch {:.2e} (relative) on sample texts",
            s.get("max_difference")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        )?;
        writeln!(f, "tasks         {}", self.head.tasks())?;
        write!(
            f,
            "made with     torch {}, transformers {}",
            s.get("torch").and_then(Value::as_str).unwrap_or("?"),
            s.get("transformers").and_then(Value::as_str).unwrap_or("?")
        )
    }
}

/// The Python interpreter for exports: `--python`, else `$BERTFLOW_EXPORT_PYTHON`, else the
/// environment `make refenv` makes (`$XDG_CACHE_HOME/bertflow/refenv`, when it exists), else
/// `python3`.
pub fn python(opts: &ExportOptions) -> PathBuf {
    if let Some(p) = &opts.python {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("BERTFLOW_EXPORT_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        let refenv = c.join("bertflow/refenv/bin/python");
        if refenv.is_file() {
            return refenv;
        }
    }
    PathBuf::from("python3")
}

/// What a Python tool script said last on stderr (its reason for failing), Python's warnings
/// left out.
pub fn script_reason(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.contains("WARNING") && !l.contains("Warning"))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Whether a folder holds weights transformers loads.
fn has_weights(src: &Path) -> bool {
    [
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ]
    .iter()
    .any(|f| src.join(f).is_file())
}

/// Export `src` (a folder) into `out`, which must not exist yet.
pub fn export(src: &Path, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    if !src.is_dir() {
        return Err(Error::model(
            src,
            "not a directory: give a model folder or an hf:<org>/<repo> reference",
        ));
    }
    if out.exists() {
        return Err(Error::model(
            out,
            "already exists: give a new folder for the exported model (or remove this one)",
        ));
    }
    let head = Head::for_folder(src, opts.task.as_deref())?;
    if !has_weights(src) {
        return Err(Error::model(
            src,
            "no weights: the folder needs model.safetensors or pytorch_model.bin (or their sharded index)",
        ));
    }
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let result = run_script(src, &partial, head, opts);
    match result {
        Ok(summary) => {
            std::fs::rename(&partial, out).map_err(|e| {
                Error::model(out, format!("cannot move the export into place: {e}"))
            })?;
            Ok(ExportReport {
                out: out.to_path_buf(),
                head,
                summary,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn run_script(src: &Path, dest: &Path, head: Head, opts: &ExportOptions) -> Result<Value> {
    let py = python(opts);
    let script = tempfile::Builder::new()
        .prefix("bertflow-export")
        .suffix(".py")
        .tempfile()?;
    std::fs::write(script.path(), SCRIPT)?;
    let install = "it needs Python with torch, transformers, onnx and onnxruntime: `make refenv` makes one, or `pip install torch transformers onnx onnxruntime` and name the interpreter with --python or BERTFLOW_EXPORT_PYTHON";
    let output = std::process::Command::new(&py)
        .arg(script.path())
        .arg(src)
        .arg(dest)
        .arg(head.arg())
        .env("PYTHONWARNINGS", "ignore")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot run {} to export the model ({e}); {install}",
                py.display()
            ))
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = script_reason(&stderr);
    match output.status.code() {
        Some(0) => {}
        Some(2) if reason.starts_with("missing Python package") => {
            return Err(Error::Runtime(format!(
                "{} ({}): {reason}; {install}",
                py.display(),
                "export"
            )))
        }
        Some(2) => return Err(Error::model(src, reason)),
        Some(3) => {
            return Err(Error::model(
                src,
                format!("the export is refused: {reason}"),
            ))
        }
        _ => {
            return Err(Error::Runtime(format!(
                "exporting {} failed: {}",
                src.display(),
                stderr.trim()
            )))
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("{}");
    serde_json::from_str(last)
        .map_err(|e| Error::Runtime(format!("the export script's summary: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(config: &str, modules: Option<&str>) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        if let Some(m) = modules {
            std::fs::write(d.path().join("modules.json"), m).unwrap();
        }
        d
    }

    #[test]
    fn the_graph_follows_the_folder() {
        let st = r#"[{"path": "", "type": "sentence_transformers.models.Transformer"}, {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
        // all-mpnet-base-v2: config.json names MPNetForMaskedLM, sentence-transformers loads
        // the bare encoder.
        let d = folder(r#"{"architectures": ["MPNetForMaskedLM"]}"#, Some(st));
        assert_eq!(Head::for_folder(d.path(), None).unwrap(), Head::Encoder);
        assert_eq!(
            Head::for_folder(d.path(), Some("sparse")).unwrap(),
            Head::MaskedLm
        );
        let sparse = r#"[{"path": "", "type": "sentence_transformers.sparse_encoder.models.MLMTransformer"}, {"path": "1_SpladePooling", "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}]"#;
        let d = folder(r#"{"architectures": ["BertForMaskedLM"]}"#, Some(sparse));
        assert_eq!(Head::for_folder(d.path(), None).unwrap(), Head::MaskedLm);
        for (arch, head) in [
            ("BertForMaskedLM", Head::MaskedLm),
            ("RobertaForSequenceClassification", Head::Sequence),
            ("DebertaV2ForTokenClassification", Head::Token),
            ("DistilBertForQuestionAnswering", Head::Qa),
            ("BertModel", Head::Encoder),
        ] {
            let d = folder(&format!(r#"{{"architectures": ["{arch}"]}}"#), None);
            assert_eq!(Head::for_folder(d.path(), None).unwrap(), head, "{arch}");
            // Any model's encoder serves embed.
            assert_eq!(
                Head::for_folder(d.path(), Some("embed")).unwrap(),
                Head::Encoder
            );
        }
    }

    #[test]
    fn a_head_the_model_lacks_is_refused() {
        let d = folder(
            r#"{"architectures": ["BertForSequenceClassification"]}"#,
            None,
        );
        let e = Head::for_folder(d.path(), Some("ner"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--task ner needs a model with a ...ForTokenClassification head")
                && e.contains("BertForSequenceClassification"),
            "{e}"
        );
        assert_eq!(
            Head::for_folder(d.path(), Some("zero_shot")).unwrap(),
            Head::Sequence
        );
        let e = Head::for_folder(d.path(), Some("summarize"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a task"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = Head::for_folder(empty.path(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no config.json"), "{e}");
    }

    #[test]
    fn a_folder_without_weights_writes_nothing() {
        let d = folder(
            r#"{"architectures": ["BertModel"], "model_type": "bert"}"#,
            None,
        );
        let out = d.path().join("out");
        let e = export(d.path(), &out, &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no weights"), "{e}");
        assert!(!out.exists());
        let e = export(d.path(), d.path(), &ExportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("already exists"), "{e}");
    }
}

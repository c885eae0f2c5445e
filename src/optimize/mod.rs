//! `bertflow models optimize DIR --precision P`: make a precision variant of a model with ONNX
//! Runtime's own tooling (the transformer optimizer fuses attention, skip-layer-norm, bias-GELU
//! and embedding-layer-norm; the dynamic quantizer makes int8 weights per channel; the float16
//! converter keeps fp32 inputs and outputs), then judge it with the quality guard ([`guard`])
//! against the fp32 model on a calibration sample, and store it beside the model with its record
//! (`model.<precision>.onnx`, `model.<precision>.json`) only when it passes, or when forced.
//!
//! The graph rewriting runs in Python (`onnxruntime` and `onnx` packages, the script is built
//! into the binary); everything measured runs through bertflow's own sessions and task code.

pub mod guard;
pub mod ranges;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::precision::{
    sha256_file, CpuFeatures, GraphPooling, Precision, Quality, Thresholds, VariantMeta,
};
use crate::model::runtime::OrtRuntime;
use crate::model::{ModelDir, OnnxModel};
use crate::task::config::TaskSpec;

const SCRIPT: &str = include_str!("optimize.py");

/// What `models optimize` is asked to do.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub dir: PathBuf,
    pub precision: Precision,
    /// Judge these tasks only (default: every task the model serves).
    pub tasks: Vec<String>,
    /// Calibration texts (default: the bundled sample).
    pub calibration: Option<PathBuf>,
    pub min_cosine: Option<f64>,
    pub min_agreement: Option<f64>,
    /// Keep the variant although a figure is below its threshold.
    pub force: bool,
    /// Python interpreter with `onnxruntime` and `onnx` (default: `$BERTFLOW_PYTHON`, `python3`).
    pub python: Option<PathBuf>,
    /// int8 only: unsigned 8-bit weights instead of signed.
    pub u8_weights: bool,
    /// int8 only: matrix products of every layer left in fp32 (`ffn_output`,
    /// `attention_output`). `None`: all quantized first; when that fails the guard, the
    /// feed-forward output products are kept in fp32, then the attention output ones too, and the
    /// first variant that passes is kept.
    pub keep_fp32: Option<Vec<String>>,
    /// Embedding models: end the graph in the model's pooling and normalisation
    /// (`sentence_embedding`, `[batch, dim]`).
    pub pool: bool,
}

/// The int8 recipes tried in turn, fastest first.
const INT8_RECIPES: [&[&str]; 3] = [&[], &["ffn_output"], &["ffn_output", "attention_output"]];

/// What was made and measured.
#[derive(Debug, Clone)]
pub struct OptimizeReport {
    pub variant: PathBuf,
    pub meta: VariantMeta,
    /// Figures below their thresholds (non-empty only when forced).
    pub below: Vec<String>,
}

impl std::fmt::Display for OptimizeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "variant       {}", self.variant.display())?;
        writeln!(f, "precision     {}", self.meta.precision)?;
        writeln!(f, "method        {}", self.meta.method)?;
        let fused: Vec<String> = self
            .meta
            .fused_operators
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "operators     {}", fused.join(", "))?;
        if let Some(p) = &self.meta.pooling {
            writeln!(
                f,
                "output        {}: {p} in the graph (only tasks.{} with this pooling can use it)",
                p.output(),
                if p.is_sparse() { "sparse" } else { "embed" }
            )?;
        }
        writeln!(f, "calibration   {}", self.meta.calibration)?;
        for q in &self.meta.quality {
            writeln!(f, "quality       {q}")?;
        }
        writeln!(
            f,
            "thresholds    cosine >= {}, agreement/F1/exact match >= {}, pair score difference <= {}",
            self.meta.thresholds.min_cosine,
            self.meta.thresholds.min_agreement,
            self.meta.thresholds.max_score_diff
        )?;
        for b in &self.below {
            writeln!(f, "FORCED        {b}")?;
        }
        write!(f, "measured on   {}", self.meta.measured_on)
    }
}

/// Make, judge and store the variant.
pub fn optimize(rt: &Arc<OrtRuntime>, opts: &OptimizeOptions) -> Result<OptimizeReport> {
    let dir = ModelDir::open(&opts.dir)?;
    let precision = opts.precision;
    let cpu = CpuFeatures::detect();
    let openvino = rt.wants_openvino();
    if precision == Precision::Bf16 || openvino {
        if let Some(why) = cpu.unsuitable_on(precision, rt.config.execution_provider) {
            return Err(Error::model(
                &dir.dir,
                format!("cannot make and measure a {precision} variant here: {why}"),
            ));
        }
    }
    let (model_type, heads, hidden) = architecture(&dir)?;
    let mut fp32 = OnnxModel::load(rt, &dir.onnx)?;
    let served = crate::model::inspect::tasks_served(&dir, &fp32.io().1);
    let tasks: Vec<&'static str> = if opts.tasks.is_empty() {
        // Every task served, but pair tasks only when the model is made for them (listed first).
        served
            .iter()
            .enumerate()
            .filter(|(i, t)| *i == 0 || !matches!(**t, "zero_shot" | "cross_encoder"))
            .map(|(_, t)| *t)
            .collect()
    } else {
        let mut v = Vec::new();
        for t in &opts.tasks {
            match served.iter().find(|s| **s == t.as_str()) {
                Some(s) => v.push(*s),
                None => {
                    return Err(Error::model(
                        &dir.dir,
                        format!(
                            "cannot judge a variant on task '{t}': this model serves {} (its outputs decide)",
                            if served.is_empty() { "no task".to_string() } else { served.join(", ") }
                        ),
                    ))
                }
            }
        }
        v
    };
    if tasks.is_empty() {
        return Err(Error::model(
            &dir.dir,
            "the model serves no task bertflow knows (see `bertflow models inspect`), so no variant can be judged",
        ));
    }
    let pooling = if opts.pool {
        Some(graph_pooling(&dir, &fp32, &served, &tasks)?)
    } else {
        None
    };
    let (samples, calibration) = match &opts.calibration {
        Some(p) => (guard::read(p)?, p.display().to_string()),
        None => {
            let s = guard::bundled();
            let n = s.len();
            (s, format!("bundled sample ({n} records)"))
        }
    };
    let references = references(&dir, &mut fp32, &tasks, &samples)?;

    // Make the graph under a hidden name; it gets its final name only once judged.
    let variant = precision.variant_path(&dir.onnx);
    let staged = variant.with_file_name(format!(
        ".{}.inprogress",
        variant.file_name().unwrap_or_default().to_string_lossy()
    ));
    let recipes: Vec<Vec<String>> = match (&opts.keep_fp32, precision) {
        (Some(k), _) => vec![k.clone()],
        (None, Precision::Int8) if !openvino => INT8_RECIPES
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect(),
        (None, _) => vec![vec![]],
    };
    let mut thresholds = Thresholds::default_for(precision);
    if let Some(c) = opts.min_cosine {
        thresholds.min_cosine = c;
    }
    if let Some(a) = opts.min_agreement {
        thresholds.min_agreement = a;
    }
    let mut rejected = Vec::new();
    let mut kept = None;
    for (i, keep) in recipes.iter().enumerate() {
        let last = i + 1 == recipes.len();
        let script = Script {
            keep_fp32: keep,
            model_type: &model_type,
            heads,
            hidden,
            pooling: pooling.as_ref(),
            as_exported: openvino,
        };
        let attempt = run_script(opts, &script, &dir.onnx, &staged).and_then(|made| {
            let quality = judge(rt, &dir, &staged, precision, &references)?;
            Ok((made, quality))
        });
        let (made, quality) = match attempt {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                return Err(e);
            }
        };
        let below: Vec<String> = quality
            .iter()
            .flat_map(|q| thresholds.failures(q))
            .collect();
        if below.is_empty() || (last && opts.force) {
            kept = Some((made, quality, below));
            break;
        }
        let _ = std::fs::remove_file(&staged);
        let recipe = if precision != Precision::Int8 {
            format!("{precision}")
        } else if keep.is_empty() {
            "every product in int8".to_string()
        } else {
            format!("{} kept in fp32", keep.join(" + "))
        };
        tracing::info!(recipe = %recipe, "the {precision} variant fails the quality guard: {}", below.join("; "));
        rejected.push(format!("{recipe}: {}", below.join("; ")));
    }
    let Some((made, quality, below)) = kept else {
        return Err(Error::model(
            &dir.dir,
            format!(
                "the {precision} variant fails the quality guard against fp32 on {calibration}: {}; nothing was written (lower --min-cosine / --min-agreement, use other calibration texts, or pass --force to keep it anyway)",
                rejected.join(" | ")
            ),
        ));
    };
    let meta = VariantMeta {
        precision,
        source: dir
            .onnx
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        source_sha256: sha256_file(&dir.onnx)?,
        method: made.1,
        fused_operators: made.0,
        calibration,
        quality,
        thresholds,
        forced: !below.is_empty(),
        measured_on: if rt.wants_cuda() {
            format!("CUDA device {}", rt.config.device_id)
        } else if openvino {
            format!("OpenVINO {} on {cpu}", rt.config.openvino_device)
        } else {
            cpu.to_string()
        },
        execution_provider: openvino.then(|| "openvino".to_string()),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        pooling: pooling.map(|(p, _)| p),
    };
    let meta_path = precision.meta_path(&dir.onnx);
    let write = |p: &Path, bytes: &[u8]| {
        std::fs::write(p, bytes).map_err(|e| Error::model(p, format!("cannot write: {e}")))
    };
    let meta_tmp = meta_path.with_extension("json.inprogress");
    write(
        &meta_tmp,
        serde_json::to_string_pretty(&meta)
            .expect("variant record")
            .as_bytes(),
    )?;
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| Error::model(to, format!("cannot write: {e}")))
    };
    rename(&staged, &variant)?;
    rename(&meta_tmp, &meta_path)?;
    Ok(OptimizeReport {
        variant,
        meta,
        below,
    })
}

/// `config.json`'s model type, attention heads and hidden size (0: let the optimizer read them
/// from the graph).
fn architecture(dir: &ModelDir) -> Result<(String, u64, u64)> {
    let cfg = dir.config.as_ref().ok_or_else(|| {
        Error::model(
            &dir.dir,
            "no config.json: the architecture (model_type, heads, hidden size) is needed to fuse the graph",
        )
    })?;
    let num = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| cfg.get(*k).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("bert")
        .to_string();
    Ok((
        model_type,
        num(&["num_attention_heads", "n_heads"]),
        num(&["hidden_size", "dim"]),
    ))
}

fn python(opts: &OptimizeOptions) -> PathBuf {
    opts.python
        .clone()
        .or_else(|| std::env::var_os("BERTFLOW_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The pooling to build into the graph: for an embedding model the one bertflow's embed task
/// applies by default (sentence-transformers' `1_Pooling` and `Normalize` modules), for a
/// masked-language (SPLADE) model the sparse task's activation and pooling; with the output it
/// pools.
fn graph_pooling(
    dir: &ModelDir,
    fp32: &OnnxModel,
    served: &[&'static str],
    tasks: &[&'static str],
) -> Result<(GraphPooling, String)> {
    let model = dir.dir.display().to_string();
    if served == ["sparse"] && tasks == ["sparse"] {
        let cfg: crate::task::config::SparseConfig = task_defaults(&model, serde_json::json!({}))?;
        let task = crate::task::sparse::SparseTask::new(&cfg, dir, fp32)?;
        if task.pre_pooled() {
            return Err(Error::model(
                &dir.onnx,
                "the graph already returns pooled sparse vectors ('sparse_embedding'); --pool is not needed",
            ));
        }
        return Ok((task.graph_pooling(), "logits".to_string()));
    }
    if served != ["embed"] || tasks != ["embed"] {
        return Err(Error::model(
            &dir.dir,
            format!(
                "--pool ends the graph in sentence embeddings (embedding models) or sparse vectors (masked-language models for tasks.sparse); this model serves {}",
                if served.is_empty() { "no task".to_string() } else { served.join(", ") }
            ),
        ));
    }
    let cfg: crate::task::config::EmbedConfig = task_defaults(&model, serde_json::json!({}))?;
    let task = crate::task::embed::EmbedTask::new(&cfg, dir, fp32)?;
    if let Some(d) = task.dense().first() {
        return Err(Error::model(
            &dir.dir,
            format!(
                "--pool builds the pooling into the graph, but the model runs the Dense module {} after it; make the variant without --pool",
                d.path
            ),
        ));
    }
    if task.excludes_prompt() {
        return Err(Error::model(
            &dir.dir,
            "--pool builds the pooling into the graph, but the model's pooling leaves its prompt's tokens out (include_prompt: false); make the variant without --pool",
        ));
    }
    if task.pre_pooled() {
        return Err(Error::model(
            &dir.onnx,
            format!(
                "the graph already returns pooled embeddings ('{}'); --pool is not needed",
                task.output()
            ),
        ));
    }
    Ok((
        GraphPooling {
            modes: task.pools().iter().map(|p| p.name().to_string()).collect(),
            normalize: task.normalizes(),
            activation: None,
        },
        task.output().to_string(),
    ))
}

/// What the rewriting script is asked to do beyond the precision.
struct Script<'a> {
    keep_fp32: &'a [String],
    model_type: &'a str,
    heads: u64,
    hidden: u64,
    /// Pooling to append, and the token output it pools.
    pooling: Option<&'a (GraphPooling, String)>,
    /// Keep the exported graph (no fusion into ONNX Runtime's own operators): for OpenVINO,
    /// which compiles the graph itself.
    as_exported: bool,
}

/// Run the rewriting script; returns the fused operator counts and the method description.
fn run_script(
    opts: &OptimizeOptions,
    script_args: &Script<'_>,
    src: &Path,
    out: &Path,
) -> Result<(std::collections::BTreeMap<String, usize>, String)> {
    let Script {
        keep_fp32,
        model_type,
        heads,
        hidden,
        pooling,
        as_exported,
    } = *script_args;
    let py = python(opts);
    let script = tempfile::Builder::new()
        .prefix("bertflow-optimize-")
        .suffix(".py")
        .tempfile()
        .map_err(|e| Error::Runtime(format!("cannot write a temporary file: {e}")))?;
    std::fs::write(script.path(), SCRIPT)
        .map_err(|e| Error::Runtime(format!("cannot write a temporary file: {e}")))?;
    let mut cmd = Command::new(&py);
    cmd.arg(script.path())
        .arg(src)
        .arg(out)
        .arg(opts.precision.name())
        .arg(model_type)
        .arg(heads.to_string())
        .arg(hidden.to_string());
    if opts.u8_weights {
        cmd.arg("--u8-weights");
    }
    if as_exported {
        cmd.arg("--as-exported");
    }
    if !keep_fp32.is_empty() {
        cmd.arg(format!("--keep-fp32={}", keep_fp32.join(",")));
    }
    if let Some((p, output)) = pooling {
        cmd.arg(format!("--pool={output}:{}", p.modes.join(",")));
        if let Some(a) = &p.activation {
            cmd.arg(format!("--activation={a}"));
        }
        if p.normalize {
            cmd.arg("--normalize");
        }
    }
    let install = format!(
        "it needs Python with ONNX Runtime's tooling: `pip install onnxruntime=={} onnx sympy` (choose the interpreter with --python or BERTFLOW_PYTHON)",
        crate::model::runtime::ORT_VERSION
    );
    let output = cmd.output().map_err(|e| {
        Error::Runtime(format!(
            "cannot run {} to make the variant ({e}); {install}",
            py.display()
        ))
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = crate::export::script_reason(&stderr);
    match output.status.code() {
        Some(0) => {}
        Some(3) => {
            return Err(Error::model(
                src,
                format!(
                    "cannot make a {} variant: {}",
                    opts.precision,
                    stderr.trim()
                ),
            ))
        }
        Some(4) => {
            return Err(Error::Runtime(format!(
                "{} cannot make the variant ({}); {install}",
                py.display(),
                stderr.trim()
            )))
        }
        _ => {
            return Err(Error::model(
                src,
                format!(
                    "making the {} variant failed ({}): {reason}",
                    opts.precision, output.status
                ),
            ))
        }
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let v: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            Error::Runtime(format!(
                "the optimizer script printed no result: {}",
                stdout.trim()
            ))
        })?;
    let fused = v
        .get("fused_operators")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let method = v
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok((fused, method))
}

/// One task judged by the guard: its post-processing, the calibration records it takes and the
/// fp32 model's results on them (computed once, whatever the number of variants tried).
struct Reference {
    cfg: Box<dyn TaskSpec>,
    samples: Vec<guard::Sample>,
    fp32: Vec<Option<crate::task::TaskOutput>>,
}

/// The fp32 results of every task on its calibration records.
fn references(
    dir: &ModelDir,
    fp32: &mut OnnxModel,
    tasks: &[&'static str],
    samples: &[guard::Sample],
) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    for &name in tasks {
        let model = dir.dir.display().to_string();
        let cfg = task_config(name, &model)?;
        let task = crate::task::load(cfg.as_ref(), dir, fp32)?;
        let picked: Vec<guard::Sample> = if name == "qa" || name == "cross_encoder" {
            samples
                .iter()
                .filter(|s| s.question.is_some())
                .cloned()
                .collect()
        } else {
            samples
                .iter()
                .map(|s| guard::Sample {
                    text: s.text.clone(),
                    question: None,
                })
                .collect()
        };
        if picked.is_empty() {
            return Err(Error::config(
                "the calibration texts have no question, so question answering and cross-encoders cannot be judged: add lines {\"text\": ..., \"question\": ...}",
            ));
        }
        let results = guard::run_task(task.as_ref(), fp32, &picked)?;
        out.push(Reference {
            cfg,
            samples: picked,
            fp32: results,
        });
    }
    Ok(out)
}

/// Run every task with the variant (the task reading the variant's own outputs, e.g. pooled
/// embeddings); one [`Quality`] per task against its fp32 results.
fn judge(
    rt: &Arc<OrtRuntime>,
    dir: &ModelDir,
    variant: &Path,
    precision: Precision,
    references: &[Reference],
) -> Result<Vec<Quality>> {
    let mut var = OnnxModel::load_as(rt, variant, precision)?;
    let mut out = Vec::new();
    for r in references {
        let task = crate::task::load(r.cfg.as_ref(), dir, &var)?;
        let got = guard::run_task(task.as_ref(), &mut var, &r.samples)?;
        out.push(guard::compare(task.as_ref(), &r.fp32, &got));
    }
    Ok(out)
}

/// The task's configuration with every default (the question read from the calibration record).
fn task_config(task: &str, model: &str) -> Result<Box<dyn TaskSpec>> {
    use crate::task::config::{CrossEncoderConfig, SparseConfig, ZeroShotConfig};
    use crate::task::config::{EmbedConfig, NerConfig, QaConfig, SentimentConfig};
    let none = serde_json::json!({});
    Ok(match task {
        "embed" => Box::new(task_defaults::<EmbedConfig>(model, none)?),
        "sentiment" => Box::new(task_defaults::<SentimentConfig>(model, none)?),
        "ner" => Box::new(task_defaults::<NerConfig>(model, none)?),
        "zero_shot" => Box::new(task_defaults::<ZeroShotConfig>(
            model,
            serde_json::json!({ "labels": guard::ZERO_SHOT_LABELS }),
        )?),
        "sparse" => Box::new(task_defaults::<SparseConfig>(model, none)?),
        "cross_encoder" => Box::new(task_defaults::<CrossEncoderConfig>(
            model,
            serde_json::json!({ "query_column": "question" }),
        )?),
        _ => Box::new(task_defaults::<QaConfig>(
            model,
            serde_json::json!({ "question_column": "question" }),
        )?),
    })
}

/// A task's configuration for `model` with every default but the keys of `extra`.
fn task_defaults<T: serde::de::DeserializeOwned>(
    model: &str,
    extra: serde_json::Value,
) -> Result<T> {
    let mut v = serde_json::json!({ "model": model });
    if let (Some(m), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
        m.extend(x);
    }
    serde_json::from_value(v).map_err(|e| Error::Runtime(format!("internal: task defaults: {e}")))
}

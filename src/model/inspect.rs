//! What a model directory holds and which tasks it can serve (`bertflow models inspect`), and
//! the start-up check that a task is given a model of the right kind.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::session::TensorInfo;
use super::{ModelDir, OnnxModel, OrtRuntime};
use crate::error::{Error, Result};
use crate::model::labels::{default_max_length, Labels};

/// The tasks a graph can serve, judged by its outputs (and `architectures` when the graph does
/// not declare ranks).
pub fn tasks_served(dir: &ModelDir, outputs: &[TensorInfo]) -> Vec<&'static str> {
    let has = |n: &str| outputs.iter().find(|o| o.name == n);
    let mut tasks = Vec::new();
    if has("start_logits").is_some() && has("end_logits").is_some() {
        tasks.push("qa");
    }
    let arch: Vec<String> = dir
        .config
        .as_ref()
        .and_then(|c| c.get("architectures"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(l) = has("logits") {
        let sequence = match l.shape.len() {
            2 => true,
            3 => false,
            _ => arch
                .iter()
                .any(|a| a.ends_with("ForSequenceClassification")),
        };
        if sequence {
            // A sequence classifier also scores pairs; the likeliest use comes first.
            match pair_head(dir) {
                Some(PairHead::Nli(_)) => tasks.extend(["zero_shot", "sentiment", "cross_encoder"]),
                Some(PairHead::CrossEncoder(_)) => tasks.extend(["cross_encoder", "sentiment"]),
                None => tasks.extend(["sentiment", "cross_encoder"]),
            }
        } else if is_masked_lm(dir, l, &arch) {
            tasks.push("sparse");
        } else if l.shape.len() == 3 || arch.iter().any(|a| a.ends_with("ForTokenClassification")) {
            tasks.push("ner");
        }
    }
    if has("sparse_embedding").is_some() {
        tasks.push("sparse");
    }
    if [
        "last_hidden_state",
        "token_embeddings",
        "sentence_embedding",
    ]
    .iter()
    .any(|n| has(n).is_some())
    {
        tasks.push("embed");
    }
    tasks
}

/// Whether `logits` are a masked-language model's (one per vocabulary entry): the
/// architecture says so, or the last dimension is `config.json`'s `vocab_size`.
fn is_masked_lm(dir: &ModelDir, logits: &TensorInfo, arch: &[String]) -> bool {
    let vocab = dir
        .config
        .as_ref()
        .and_then(|c| c.get("vocab_size"))
        .and_then(Value::as_u64);
    arch.iter().any(|a| a.ends_with("ForMaskedLM"))
        || (logits.shape.len() == 3
            && vocab.is_some_and(|v| logits.shape.last().is_some_and(|&d| d as u64 == v && d > 0)))
}

/// What a sequence classifier's `config.json` says it reads pairs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairHead {
    /// An NLI model: the entailment label's index and name (zero-shot classification).
    Nli(String),
    /// A sentence-transformers cross-encoder: its activation (`config.json`
    /// `sentence_transformers.activation_fn`).
    CrossEncoder(String),
}

/// The pair head a model folder declares, if any.
pub fn pair_head(dir: &ModelDir) -> Option<PairHead> {
    let cfg = dir.config.as_ref()?;
    if let Some((name, id)) = cfg
        .get("label2id")
        .and_then(Value::as_object)
        .and_then(|m| {
            m.iter()
                .find(|(n, _)| n.to_lowercase().starts_with("entail"))
        })
    {
        return Some(PairHead::Nli(format!("entailment label {id} ({name})")));
    }
    let activation = cfg
        .get("sentence_transformers")
        .and_then(|s| s.get("activation_fn"))
        .or_else(|| cfg.get("sbert_ce_default_activation_function"))
        .and_then(Value::as_str)?;
    Some(PairHead::CrossEncoder(format!(
        "sentence-transformers cross-encoder, activation {}",
        activation.rsplit('.').next().unwrap_or(activation)
    )))
}

/// Why a model cannot serve `task`, if it cannot; also catches a tokenizer that does not belong
/// to the model.
pub fn check_for_task(task: &str, dir: &ModelDir, model: &OnnxModel) -> Result<()> {
    let (_, outputs) = model.io();
    let served = tasks_served(dir, &outputs);
    // Outputs with unusual names are left to the task to judge, and so is a sequence classifier
    // without an entailment label given to zero_shot (the task says what its config lacks).
    let classifier_for_zero_shot = task == "zero_shot" && served.contains(&"sentiment");
    if !served.is_empty() && !served.contains(&task) && !classifier_for_zero_shot {
        let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        let hint = if served.is_empty() {
            "it serves none of embed, sentiment, ner, qa, zero_shot, cross_encoder, sparse"
                .to_string()
        } else {
            format!(
                "it can serve {}: configure it under tasks.{} instead",
                served.join(", "),
                served[0]
            )
        };
        return Err(Error::model(
            &dir.dir,
            format!(
                "configured as `{task}`, but its outputs ({}) are not those of a model for the {task} task; {hint} (see `bertflow models inspect {}`)",
                names.join(", "),
                dir.dir.display()
            ),
        ));
    }
    if let Some(problem) = vocab_mismatch(dir)? {
        return Err(Error::model(&dir.dir, problem));
    }
    Ok(())
}

/// A tokenizer with more tokens than the model's embedding table produces ids the model cannot
/// look up: the tokenizer is not this model's.
fn vocab_mismatch(dir: &ModelDir) -> Result<Option<String>> {
    let Some(model_vocab) = dir
        .config
        .as_ref()
        .and_then(|c| c.get("vocab_size"))
        .and_then(Value::as_u64)
    else {
        return Ok(None);
    };
    let tok = tokenizers::Tokenizer::from_file(&dir.tokenizer)
        .map_err(|e| Error::model(&dir.tokenizer, format!("cannot load tokenizer: {e}")))?;
    let n = tok.get_vocab_size(true) as u64;
    Ok((n > model_vocab).then(|| {
        format!(
            "tokenizer.json has {n} tokens but config.json says the model knows {model_vocab} (vocab_size): the tokenizer belongs to another model; copy the model's own tokenizer.json"
        )
    }))
}

/// Everything `bertflow models inspect` prints.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub dir: String,
    pub onnx: String,
    pub onnx_bytes: u64,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    pub labels: Vec<String>,
    pub max_length: usize,
    /// The length each task it serves cuts texts at by default, where it differs from the
    /// model's (`embed 256 (sentence-transformers max_seq_length)`).
    pub task_lengths: Vec<String>,
    /// The graph's arithmetic: `fp32`, or the quantisation its operators show.
    pub graph_precision: String,
    pub config_vocab_size: Option<u64>,
    pub tokenizer_type: String,
    pub tokenizer_vocab_size: usize,
    pub pooling: Option<String>,
    /// The modules after pooling (`2_Dense 384 -> 768, tanh`, `Normalize`).
    pub modules: Vec<String>,
    /// The model's named prompts (`query "query: "`), the default one marked.
    pub prompts: Vec<String>,
    /// What a sequence classifier reads pairs for (an NLI head, a cross-encoder).
    pub pair_head: Option<String>,
    pub tasks: Vec<&'static str>,
    /// Precision variants stored beside the graph, with their measured quality.
    pub variants: Vec<String>,
    /// This CPU and its matrix instructions.
    pub cpu: String,
    /// The precisions this CPU runs natively, per execution provider (`cpu: fp32 int8`,
    /// `openvino: fp32 bf16`).
    pub native_precisions: Vec<String>,
    pub problems: Vec<String>,
}

/// Per CPU execution provider, the precisions this CPU runs in hardware (int8 only with
/// int8 dot-product instructions; bf16 on ONNX Runtime's kernels only on aarch64, through
/// OpenVINO with AMX-BF16 or AVX512-BF16).
fn native_precisions() -> Vec<String> {
    native_precisions_on(&super::precision::CpuFeatures::detect())
}

fn native_precisions_on(cpu: &super::precision::CpuFeatures) -> Vec<String> {
    use super::config::ExecutionProvider;
    use super::precision::Precision;
    [ExecutionProvider::Cpu, ExecutionProvider::Openvino]
        .iter()
        .map(|&ep| {
            let mut ok: Vec<&str> = Vec::new();
            for p in [
                Precision::Fp32,
                Precision::Int8,
                Precision::Bf16,
                Precision::Fp16,
            ] {
                let native = match p {
                    Precision::Int8 => cpu.int8_dot(),
                    _ => true,
                };
                if native && cpu.unsuitable_on(p, ep).is_none() {
                    ok.push(p.name());
                }
            }
            let mut line = format!("{}: {}", ep.name(), ok.join(" "));
            if ep == ExecutionProvider::Openvino && ok.contains(&"bf16") && !cpu.has("amx_bf16")
            {
                // AVX512-BF16 alone: OpenVINO's bf16 products were measured slower than its
                // fp32 ones on a Xeon whose AMX was not exposed (docs/benchmarks.md).
                line.push_str(
                    " (bf16 through AVX512-BF16 without AMX: can be slower than fp32, compare both with `bertflow bench`)",
                );
            }
            line
        })
        .collect()
}

pub fn inspect(rt: &Arc<OrtRuntime>, dir: &std::path::Path) -> Result<Inspection> {
    let md = ModelDir::open(dir)?;
    let model = OnnxModel::load(rt, &md.onnx)?;
    let (inputs, outputs) = model.io();
    let cfg = md.config.clone().unwrap_or(Value::Null);
    let tok = tokenizers::Tokenizer::from_file(&md.tokenizer)
        .map_err(|e| Error::model(&md.tokenizer, format!("cannot load tokenizer: {e}")))?;
    let tokenizer_type = match tok.get_model() {
        tokenizers::models::ModelWrapper::WordPiece(_) => "WordPiece",
        tokenizers::models::ModelWrapper::BPE(_) => "BPE",
        tokenizers::models::ModelWrapper::Unigram(_) => "Unigram",
        tokenizers::models::ModelWrapper::WordLevel(_) => "WordLevel",
    }
    .to_string();
    let labels = Labels::from_model(&md);
    let tasks = tasks_served(&md, &outputs);
    let mut problems = Vec::new();
    if tasks.is_empty() {
        problems.push(
            "no task recognised: outputs should include last_hidden_state (embed), logits (sentiment, zero_shot, cross_encoder: 2-D; ner, sparse (masked-language model): 3-D) or start_logits/end_logits (qa)"
                .to_string(),
        );
    }
    if let Some(p) = vocab_mismatch(&md)? {
        problems.push(p);
    }
    if (tasks.contains(&"sentiment") || tasks.contains(&"ner")) && !labels.from_config {
        problems.push("config.json has no id2label: labels will be LABEL_0, LABEL_1, ...".into());
    }
    let pooling = md.json("1_Pooling/config.json")?.map(|p| {
        let modes: Vec<&str> = match super::modules::pools_from_st_config(&p) {
            Ok(pools) => pools.iter().map(|p| p.name()).collect(),
            Err(e) => {
                problems.push(format!("1_Pooling/config.json: {e}"));
                Vec::new()
            }
        };
        let mut s = modes.join("+");
        if p.get("include_prompt").and_then(Value::as_bool) == Some(false) {
            s.push_str(" (prompt tokens left out: include_prompt false)");
        }
        s
    });
    let modules = match super::modules::post_pooling(&md) {
        Ok(m) => m
            .iter()
            .map(|m| match m {
                super::modules::Module::Dense(d) => format!(
                    "{} Dense {} -> {}, {}",
                    d.path,
                    d.in_features,
                    d.out_features,
                    d.activation.name()
                ),
                super::modules::Module::Normalize => "Normalize".to_string(),
            })
            .collect(),
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    let prompts = prompts_of(&md);
    Ok(Inspection {
        dir: md.dir.display().to_string(),
        onnx: md.onnx.display().to_string(),
        onnx_bytes: std::fs::metadata(&md.onnx).map(|m| m.len()).unwrap_or(0),
        inputs,
        outputs,
        model_type: cfg
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_string),
        architectures: cfg
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        labels: (0..labels.len()).map(|i| labels.name(i)).collect(),
        max_length: default_max_length(&md),
        task_lengths: task_lengths(&md, &tasks)?,
        graph_precision: super::precision::quantised_ops(&md.onnx)
            .unwrap_or("fp32")
            .to_string(),
        config_vocab_size: cfg.get("vocab_size").and_then(Value::as_u64),
        tokenizer_type,
        tokenizer_vocab_size: tok.get_vocab_size(true),
        pooling,
        modules,
        prompts,
        pair_head: pair_head(&md).map(|h| match h {
            PairHead::Nli(s) | PairHead::CrossEncoder(s) => s,
        }),
        tasks,
        variants: variants(&md, &mut problems),
        cpu: super::precision::CpuFeatures::detect().to_string(),
        native_precisions: native_precisions(),
        problems,
    })
}

/// The named prompts of `config_sentence_transformers.json`, the default one marked.
fn prompts_of(md: &ModelDir) -> Vec<String> {
    let Ok(Some(v)) = md.json("config_sentence_transformers.json") else {
        return Vec::new();
    };
    let default = v.get("default_prompt_name").and_then(Value::as_str);
    v.get("prompts")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, p)| {
                    format!(
                        "{k} {}{}",
                        serde_json::to_string(p).unwrap_or_default(),
                        if default == Some(k.as_str()) {
                            " (default)"
                        } else {
                            ""
                        }
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The default length of each served task that cuts texts shorter than the model allows.
fn task_lengths(md: &ModelDir, tasks: &[&'static str]) -> Result<Vec<String>> {
    let model = default_max_length(md);
    let mut out = Vec::new();
    for t in tasks {
        let (len, why) = match *t {
            "embed" => match md.st_max_seq_length()? {
                Some(m) => (
                    m.min(md.max_positions().unwrap_or(512).min(512)),
                    "sentence-transformers max_seq_length",
                ),
                None => continue,
            },
            "qa" => (
                model.min(super::labels::QA_MAX_SEQ_LEN),
                "question answering windows",
            ),
            _ => continue,
        };
        if len != model {
            out.push(format!("{t} {len} ({why})"));
        }
    }
    Ok(out)
}

/// The variants beside the graph (`model.int8.onnx` ...), described; a stale or unreadable one
/// is a problem.
fn variants(md: &ModelDir, problems: &mut Vec<String>) -> Vec<String> {
    use super::precision::{resolve, Precision};
    let mut out = Vec::new();
    for p in Precision::ALL {
        if !p.variant_path(&md.onnx).is_file() && !p.meta_path(&md.onnx).is_file() {
            continue;
        }
        match resolve(&md.onnx, p) {
            Ok((path, Some(meta))) => out.push(format!(
                "{} {} on {}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                meta.describe(),
                meta.calibration
            )),
            Ok((_, None)) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    out
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |t: &TensorInfo| {
            let dims: Vec<String> = t
                .shape
                .iter()
                .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
                .collect();
            format!("{} {} [{}]", t.name, t.dtype, dims.join(", "))
        };
        writeln!(f, "model         {}", self.dir)?;
        writeln!(
            f,
            "onnx          {} ({:.1} MB)",
            self.onnx,
            self.onnx_bytes as f64 / 1e6
        )?;
        for i in &self.inputs {
            writeln!(f, "input         {}", shape(i))?;
        }
        for o in &self.outputs {
            writeln!(f, "output        {}", shape(o))?;
        }
        writeln!(
            f,
            "architecture  {} {}",
            self.model_type.as_deref().unwrap_or("-"),
            self.architectures.join(", ")
        )?;
        if !self.labels.is_empty() {
            writeln!(f, "labels        {}", self.labels.join(", "))?;
        }
        writeln!(f, "max length    {} tokens", self.max_length)?;
        for t in &self.task_lengths {
            writeln!(f, "task length   {t}")?;
        }
        writeln!(f, "graph         {}", self.graph_precision)?;
        writeln!(
            f,
            "tokenizer     {}, {} tokens (config vocab_size {})",
            self.tokenizer_type,
            self.tokenizer_vocab_size,
            self.config_vocab_size
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        )?;
        if let Some(p) = &self.pooling {
            writeln!(f, "pooling       {p}")?;
        }
        for m in &self.modules {
            writeln!(f, "then          {m}")?;
        }
        for p in &self.prompts {
            writeln!(f, "prompt        {p}")?;
        }
        if let Some(h) = &self.pair_head {
            writeln!(f, "pair head     {h}")?;
        }
        writeln!(
            f,
            "tasks         {}",
            if self.tasks.is_empty() {
                "none".to_string()
            } else {
                self.tasks.join(", ")
            }
        )?;
        for v in &self.variants {
            writeln!(f, "variant       {v}")?;
        }
        writeln!(f, "cpu           {}", self.cpu)?;
        for p in &self.native_precisions {
            writeln!(f, "runs natively {p}")?;
        }
        for p in &self.problems {
            writeln!(f, "problem       {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod native_precision_tests {
    use super::native_precisions_on;
    use crate::model::precision::CpuFeatures;

    fn line(flags: &str, provider: &str) -> String {
        let cpu = CpuFeatures::from_cpuinfo(
            &format!("model name\t: test\nflags\t\t: {flags}\n"),
            "x86_64",
        );
        native_precisions_on(&cpu)
            .into_iter()
            .find(|l| l.starts_with(provider))
            .unwrap()
    }

    #[test]
    fn bf16_without_amx_is_listed_with_a_warning_and_with_amx_without() {
        let avx = line("avx2 fma avx512f avx512_vnni avx512_bf16", "openvino");
        assert!(avx.contains("bf16"), "{avx}");
        assert!(avx.contains("can be slower than fp32"), "{avx}");
        let amx = line(
            "avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16",
            "openvino",
        );
        assert!(amx.contains("bf16"), "{amx}");
        assert!(!amx.contains("slower"), "{amx}");
        let plain = line("avx2 fma", "openvino");
        assert!(!plain.contains("bf16"), "{plain}");
    }
}

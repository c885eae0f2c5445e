//! Numeric precision of a model: the fp32 graph as exported, or a variant made from it by
//! `bertflow models optimize` (fused fp32, int8, fp16, bf16) and stored beside it as
//! `model.<precision>.onnx` with `model.<precision>.json`, the record of how it was made and what
//! its quality guard measured. The CPU's matrix instructions decide which precisions pay off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The arithmetic a task's model runs in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// The fp32 graph (the fused one, `model.fp32.onnx`, when `models optimize` made it).
    #[default]
    Fp32,
    /// Dynamic int8 quantisation: int8 weights per output channel, activations quantised per
    /// batch at run time.
    Int8,
    /// Half precision (for the CUDA execution provider).
    Fp16,
    /// bf16 matrix products (aarch64 CPUs with BF16 instructions), fp32 elsewhere in the graph.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Int8,
        Precision::Fp16,
        Precision::Bf16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
    }

    /// The variant's graph beside `onnx` (`model.onnx` -> `model.int8.onnx`).
    pub fn variant_path(self, onnx: &Path) -> PathBuf {
        let stem = onnx
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        onnx.with_file_name(format!("{stem}.{}.onnx", self.name()))
    }

    /// The record of how the variant was made (`model.int8.json`).
    pub fn meta_path(self, onnx: &Path) -> PathBuf {
        self.variant_path(onnx).with_extension("json")
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Matrix instructions of this CPU that decide which precisions are fast.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CpuFeatures {
    pub model: String,
    pub arch: &'static str,
    /// The relevant flags present, in a fixed order (e.g. `avx2 avx512f avx512_vnni`).
    pub flags: Vec<&'static str>,
}

/// Flags worth reporting, as `/proc/cpuinfo` spells them.
const X86_FLAGS: [&str; 10] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
];
const ARM_FLAGS: [&str; 5] = ["asimd", "asimddp", "i8mm", "bf16", "fphp"];

impl CpuFeatures {
    /// This machine's CPU (Linux `/proc/cpuinfo`; elsewhere only the architecture).
    pub fn detect() -> CpuFeatures {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::from_cpuinfo(&text, std::env::consts::ARCH)
    }

    pub fn from_cpuinfo(text: &str, arch: &'static str) -> CpuFeatures {
        let field = |names: &[&str]| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                names
                    .contains(&k.trim())
                    .then(|| v.trim().to_string())
                    .filter(|v| !v.is_empty())
            })
        };
        let present: std::collections::HashSet<String> = field(&["flags", "Features"])
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let known: &[&'static str] = if arch == "aarch64" {
            &ARM_FLAGS
        } else {
            &X86_FLAGS
        };
        CpuFeatures {
            model: field(&["model name", "CPU part"]).unwrap_or_else(|| "unknown CPU".into()),
            arch,
            flags: known
                .iter()
                .copied()
                .filter(|f| present.contains(*f))
                .collect(),
        }
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// int8 dot products in one instruction (VNNI, AMX or Arm's dot product).
    pub fn int8_dot(&self) -> bool {
        ["avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"]
            .iter()
            .any(|f| self.has(f))
    }

    /// Why `precision` is not worth running with `provider` on this CPU, if it is not (`None`
    /// for CUDA, which runs on the GPU).
    pub fn unsuitable_on(
        &self,
        precision: Precision,
        provider: crate::model::config::ExecutionProvider,
    ) -> Option<String> {
        use crate::model::config::ExecutionProvider;
        match provider {
            ExecutionProvider::Cuda => None,
            ExecutionProvider::Cpu => self.unsuitable(precision),
            ExecutionProvider::Openvino => match precision {
                Precision::Fp32 => None,
                Precision::Bf16 if self.openvino_bf16() => None,
                Precision::Bf16 => Some(format!(
                    "bf16 through OpenVINO needs a CPU with AMX-BF16 or AVX512-BF16; this is {} ({}) with [{}]",
                    self.model, self.arch, self.flags.join(" ")
                )),
                Precision::Int8 | Precision::Fp16 => Some(format!(
                    "the openvino provider runs fp32 models and bf16 variants; for {precision} use runtime.execution_provider: cpu (int8) or cuda (fp16)"
                )),
            },
        }
    }

    /// bf16 matrix products in hardware for OpenVINO's CPU plugin (AMX or AVX512-BF16).
    pub fn openvino_bf16(&self) -> bool {
        self.has("amx_bf16") || self.has("avx512_bf16")
    }

    /// Why `precision` is not worth running on this CPU, if it is not (run it on a GPU or
    /// another CPU instead).
    pub fn unsuitable(&self, precision: Precision) -> Option<String> {
        match precision {
            Precision::Fp32 | Precision::Int8 => None,
            // ONNX Runtime's CPU provider runs bf16 matrix products only through its aarch64
            // fast-math kernels.
            Precision::Bf16 if self.arch == "aarch64" && self.has("bf16") => None,
            Precision::Bf16 => Some(format!(
                "bf16 needs an aarch64 CPU with BF16 instructions (ONNX Runtime's CPU provider has bf16 matrix kernels only there); this is {} ({}) with [{}]",
                self.model, self.arch, self.flags.join(" ")
            )),
            Precision::Fp16 if self.has("avx512_fp16") || self.has("fphp") => None,
            Precision::Fp16 => Some(format!(
                "fp16 is meant for the CUDA execution provider; this CPU ({}, [{}]) has no fp16 arithmetic, so ONNX Runtime would run it slower than fp32",
                self.model,
                self.flags.join(" ")
            )),
        }
    }
}

impl std::fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}; {})",
            self.model,
            self.arch,
            self.flags.join(" ")
        )
    }
}

/// The quality guard's figures for one task, measured against the fp32 model on the same
/// calibration texts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub task: String,
    /// Records compared.
    pub records: usize,
    /// Embeddings: lowest and mean cosine similarity to the fp32 embedding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_cosine: Option<f64>,
    /// Classification: share of records with the same top label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_agreement: Option<f64>,
    /// Token classification: entity F1 against the fp32 entities (type and span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_f1: Option<f64>,
    /// Question answering: share of questions with exactly the fp32 answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// Pair scores (zero-shot labels, cross-encoder queries): the largest difference of a
    /// score from its fp32 score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_score_diff: Option<f64>,
    /// Sparse vectors: the mean share of the fp32 vector's 32 largest entries that are among
    /// the variant's 32 largest (reported; the guard judges the cosine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_overlap: Option<f64>,
}

impl Quality {
    /// The figure the guard judges, with its name: `(name, value)`.
    pub fn headline(&self) -> Option<(&'static str, f64)> {
        self.min_cosine
            .map(|v| ("min cosine", v))
            .or(self.label_agreement.map(|v| ("label agreement", v)))
            .or(self.entity_f1.map(|v| ("entity F1", v)))
            .or(self.exact_match.map(|v| ("exact match", v)))
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let (Some(min), Some(mean)) = (self.min_cosine, self.mean_cosine) {
            parts.push(format!("cosine min {min:.5} mean {mean:.5}"));
        }
        if let Some(v) = self.label_agreement {
            parts.push(format!("label agreement {v:.4}"));
        }
        if let Some(v) = self.entity_f1 {
            parts.push(format!("entity F1 {v:.4}"));
        }
        if let Some(v) = self.exact_match {
            parts.push(format!("exact match {v:.4}"));
        }
        if let Some(v) = self.max_score_diff {
            parts.push(format!("max score difference {v:.5}"));
        }
        if let Some(v) = self.top_overlap {
            parts.push(format!("top-32 overlap {v:.4}"));
        }
        write!(
            f,
            "{}: {} over {} records",
            self.task,
            parts.join(", "),
            self.records
        )
    }
}

/// Thresholds of the quality guard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Lowest cosine to fp32 allowed for any embedding.
    pub min_cosine: f64,
    /// Lowest share of equal labels / exact answers / entity F1 allowed.
    pub min_agreement: f64,
    /// Largest difference of a pair score (zero-shot, cross-encoder) from fp32's allowed.
    #[serde(default = "default_max_score_diff")]
    pub max_score_diff: f64,
}

fn default_max_score_diff() -> f64 {
    0.05
}

impl Thresholds {
    /// Defaults per precision (cosine / agreement / pair score difference): int8 (and bf16)
    /// 0.99 / 0.99 / 0.05; fp16 0.999 / 0.995 / 0.01; fused fp32 0.9999 / 1.0 / 0.001 (exact up
    /// to rounding).
    pub fn default_for(p: Precision) -> Thresholds {
        match p {
            Precision::Fp32 => Thresholds {
                min_cosine: 0.9999,
                min_agreement: 1.0,
                max_score_diff: 1e-3,
            },
            Precision::Int8 | Precision::Bf16 => Thresholds {
                min_cosine: 0.99,
                min_agreement: 0.99,
                max_score_diff: 0.05,
            },
            Precision::Fp16 => Thresholds {
                min_cosine: 0.999,
                min_agreement: 0.995,
                max_score_diff: 0.01,
            },
        }
    }

    /// Each figure below its threshold, described (empty: the variant passes).
    pub fn failures(&self, q: &Quality) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(v) = q.min_cosine.filter(|v| *v < self.min_cosine) {
            out.push(format!(
                "{}: min cosine {v:.5} is below the threshold {}",
                q.task, self.min_cosine
            ));
        }
        for (name, v) in [
            ("label agreement", q.label_agreement),
            ("entity F1", q.entity_f1),
            ("exact match", q.exact_match),
        ] {
            if let Some(v) = v.filter(|v| *v < self.min_agreement) {
                out.push(format!(
                    "{}: {name} {v:.4} is below the threshold {}",
                    q.task, self.min_agreement
                ));
            }
        }
        if let Some(v) = q.max_score_diff.filter(|v| *v > self.max_score_diff) {
            out.push(format!(
                "{}: max score difference {v:.5} is above the threshold {}",
                q.task, self.max_score_diff
            ));
        }
        out
    }
}

/// `model.<precision>.json`: how a variant was made and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantMeta {
    pub precision: Precision,
    /// The fp32 graph it was made from (file name) and that file's SHA-256.
    pub source: String,
    pub source_sha256: String,
    /// What made it (ONNX Runtime's transformer optimizer and quantizer, and their settings).
    pub method: String,
    /// Fused operators in the variant's graph, by type.
    pub fused_operators: BTreeMap<String, usize>,
    pub calibration: String,
    pub quality: Vec<Quality>,
    pub thresholds: Thresholds,
    /// Made with `--force` although a figure was below its threshold.
    pub forced: bool,
    /// The CPU it was measured on.
    pub measured_on: String,
    pub created_unix: u64,
    /// Set when the graph ends in sentence-embedding pooling: it returns `[batch, dim]` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<GraphPooling>,
    /// The execution provider the variant is made and judged for, when it is not ONNX Runtime's
    /// own kernels (`openvino`: the exported graph, compiled by OpenVINO at this precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_provider: Option<String>,
}

/// Pooling built into a variant's graph (`models optimize --pool`): sentence-embedding pooling
/// (output `sentence_embedding`) or SPLADE pooling (output `sparse_embedding`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphPooling {
    /// sentence-transformers' pooling modes, concatenated in this order (`mean`, `cls`, ...), or
    /// one SPLADE mode (`splade_max`, `splade_sum`).
    pub modes: Vec<String>,
    /// Whether the graph also divides by the L2 norm.
    pub normalize: bool,
    /// SPLADE pooling: the activation applied to the logits (`relu`: log(1 + relu(x)),
    /// `log1p_relu`: log(1 + log(1 + relu(x)))).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
}

impl GraphPooling {
    /// Whether the graph ends in SPLADE pooling (a sparse vector per text).
    pub fn is_sparse(&self) -> bool {
        self.modes.iter().any(|m| m.starts_with("splade_"))
    }

    /// The graph's output.
    pub fn output(&self) -> &'static str {
        if self.is_sparse() {
            "sparse_embedding"
        } else {
            "sentence_embedding"
        }
    }
}

impl std::fmt::Display for GraphPooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_sparse() {
            let mode = self.modes.join(" + ");
            let mode = mode.strip_prefix("splade_").unwrap_or(&mode);
            let act = match self.activation.as_deref() {
                Some("log1p_relu") => "log(1 + log(1 + relu(logits)))",
                _ => "log(1 + relu(logits))",
            };
            return write!(f, "SPLADE {mode} pooling of {act}");
        }
        write!(f, "{} pooling", self.modes.join(" + "))?;
        if self.normalize {
            write!(f, " + normalize")?;
        }
        Ok(())
    }
}

impl VariantMeta {
    pub fn read(path: &Path) -> Result<VariantMeta> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::model(path, format!("cannot read: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::model(
                path,
                format!("not a variant record ({e}); make the variant again with `bertflow models optimize`"),
            )
        })
    }

    /// One line for summaries: `int8 (min cosine 0.99612)` / `int8 (forced: ...)`.
    pub fn describe(&self) -> String {
        // With several judged tasks each figure names its task.
        let named = self.quality.len() > 1;
        let figures: Vec<String> = self
            .quality
            .iter()
            .filter_map(|q| {
                q.headline().map(|(n, v)| {
                    if named {
                        format!("{}: {n} {v:.4}", q.task)
                    } else {
                        format!("{n} {v:.4}")
                    }
                })
            })
            .collect();
        let forced = if self.forced {
            ", forced below its threshold"
        } else {
            ""
        };
        let pooled = match &self.pooling {
            Some(p) => format!(", {p} in the graph"),
            None => String::new(),
        };
        format!(
            "{} ({}{forced}{pooled})",
            self.precision,
            if figures.is_empty() {
                "not measured".to_string()
            } else {
                figures.join(", ")
            }
        )
    }
}

/// A variant made for OpenVINO runs only there, and OpenVINO runs only variants made for it (a
/// variant for ONNX Runtime's kernels holds operators OpenVINO does not compile).
pub fn check_provider(
    meta: &VariantMeta,
    graph: &Path,
    provider: crate::model::config::ExecutionProvider,
) -> Result<()> {
    let made_for = meta.execution_provider.as_deref();
    let openvino = provider == crate::model::config::ExecutionProvider::Openvino;
    let make = format!(
        "bertflow models optimize {} --precision {} --execution-provider {}",
        graph.parent().unwrap_or(Path::new(".")).display(),
        meta.precision,
        provider.name()
    );
    match (made_for, openvino) {
        (Some("openvino"), false) => {
            // Offer a variant for this provider only where the precision runs on it.
            let other = match CpuFeatures::detect().unsuitable_on(meta.precision, provider) {
                Some(why) => format!("({why})"),
                None => format!("or make a variant for {} with `{make}`", provider.name()),
            };
            Err(Error::model(
                graph,
                format!(
                    "this {} variant was made and judged for runtime.execution_provider: openvino, not {}; set openvino {other}",
                    meta.precision,
                    provider.name()
                ),
            ))
        }
        (other, true) if other != Some("openvino") => Err(Error::model(
            graph,
            format!(
                "this {} variant was made for ONNX Runtime's own kernels, not for OpenVINO; make one for OpenVINO with `{make}`",
                meta.precision
            ),
        )),
        _ => Ok(()),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::model(path, format!("cannot read: {e}")))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::model(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// The graph a task loads for `precision`, with the variant's record (none for the plain fp32
/// graph). A missing variant, or one made from another version of the model, is an error that
/// says how to make it.
pub fn resolve(onnx: &Path, precision: Precision) -> Result<(PathBuf, Option<VariantMeta>)> {
    let variant = precision.variant_path(onnx);
    let meta_path = precision.meta_path(onnx);
    let make = format!(
        "bertflow models optimize {} --precision {precision}",
        onnx.parent().unwrap_or(Path::new(".")).display()
    );
    if !variant.is_file() || !meta_path.is_file() {
        if precision == Precision::Fp32 {
            return Ok((onnx.to_path_buf(), None));
        }
        return Err(Error::model(
            onnx,
            format!(
                "no {precision} variant ({} with its record {}); make it with `{make}`",
                file_name(&variant),
                file_name(&meta_path)
            ),
        ));
    }
    let meta = VariantMeta::read(&meta_path)?;
    if meta.precision != precision {
        return Err(Error::model(
            &meta_path,
            format!(
                "records a {} variant, not {precision}; make it again with `{make}`",
                meta.precision
            ),
        ));
    }
    let sha = sha256_file(onnx)?;
    if meta.source_sha256 != sha {
        return Err(Error::model(
            &variant,
            format!(
                "was made from another version of {} (its checksum changed since); make it again with `{make}`",
                file_name(onnx)
            ),
        ));
    }
    Ok((variant, Some(meta)))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the graph of `path` computes in beyond fp32, read from the operators it holds: dynamic
/// or static int8 quantisation, 4-bit weights. `None`: no quantised operator (fp32, or fp16
/// weights, which the operators do not show). Reads the file once.
pub fn quantised_ops(path: &std::path::Path) -> Option<&'static str> {
    let bytes = std::fs::read(path).ok()?;
    let has = |op: &str| memchr::memmem::find(&bytes, op.as_bytes()).is_some();
    if has("MatMulNBits") {
        Some("4-bit weights (MatMulNBits)")
    } else if has("DynamicQuantizeLinear") || has("MatMulInteger") || has("QAttention") {
        Some("int8, dynamic quantisation")
    } else if has("QLinearMatMul") || has("QLinearConv") {
        Some("int8, static quantisation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_sit_beside_the_model() {
        let onnx = Path::new("/m/onnx/model.onnx");
        assert_eq!(
            Precision::Int8.variant_path(onnx),
            Path::new("/m/onnx/model.int8.onnx")
        );
        assert_eq!(
            Precision::Fp16.meta_path(onnx),
            Path::new("/m/onnx/model.fp16.json")
        );
        assert_eq!(Precision::parse("INT8"), Some(Precision::Int8));
        assert_eq!(Precision::parse("int4"), None);
    }

    #[test]
    fn cpu_flags_are_read_from_cpuinfo() {
        let x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16\n";
        let c = CpuFeatures::from_cpuinfo(x86, "x86_64");
        assert_eq!(c.model, "Intel(R) Xeon(R) Platinum");
        assert_eq!(
            c.flags,
            [
                "avx2",
                "fma",
                "avx512f",
                "avx512_vnni",
                "avx512_bf16",
                "avx512_fp16"
            ]
        );
        assert!(c.int8_dot());
        assert!(c.unsuitable(Precision::Fp16).is_none());
        // bf16 kernels exist only on aarch64 in ONNX Runtime's CPU provider.
        assert!(c.unsuitable(Precision::Bf16).unwrap().contains("aarch64"));
        let amd =
            CpuFeatures::from_cpuinfo("model name\t: AMD EPYC\nflags\t\t: avx2 fma\n", "x86_64");
        assert!(!amd.int8_dot());
        assert!(amd.unsuitable(Precision::Fp16).unwrap().contains("CUDA"));
        let arm = CpuFeatures::from_cpuinfo(
            "CPU part\t: 0xd4f\nFeatures\t: fp asimd asimddp bf16 i8mm\n",
            "aarch64",
        );
        assert_eq!(arm.flags, ["asimd", "asimddp", "i8mm", "bf16"]);
        assert!(arm.unsuitable(Precision::Bf16).is_none());
        // OpenVINO runs bf16 on AVX512-BF16 or AMX, never on AVX2 alone; int8 is the CPU
        // provider's; CUDA is judged by the GPU.
        use crate::model::config::ExecutionProvider::{Cuda, Openvino};
        assert!(c.unsuitable_on(Precision::Bf16, Openvino).is_none());
        assert!(amd
            .unsuitable_on(Precision::Bf16, Openvino)
            .unwrap()
            .contains("AMX-BF16 or AVX512-BF16"));
        assert!(c.unsuitable_on(Precision::Int8, Openvino).is_some());
        assert!(amd.unsuitable_on(Precision::Fp16, Cuda).is_none());
    }

    #[test]
    fn the_guard_names_each_figure_below_its_threshold() {
        let t = Thresholds::default_for(Precision::Int8);
        let good = Quality {
            task: "embed".into(),
            records: 10,
            min_cosine: Some(0.995),
            mean_cosine: Some(0.999),
            ..Default::default()
        };
        assert!(t.failures(&good).is_empty());
        let bad = Quality {
            task: "ner".into(),
            records: 10,
            entity_f1: Some(0.9),
            ..Default::default()
        };
        let f = t.failures(&bad);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("entity F1 0.9000") && f[0].contains("0.99"),
            "{f:?}"
        );
        let low = Quality {
            min_cosine: Some(0.98),
            ..good
        };
        assert!(t.failures(&low)[0].contains("min cosine 0.98000"));
    }

    #[test]
    fn a_variant_of_another_model_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let onnx = d.path().join("model.onnx");
        std::fs::write(&onnx, b"graph v1").unwrap();
        // No variant: fp32 falls back to the graph itself, int8 says how to make it.
        assert_eq!(resolve(&onnx, Precision::Fp32).unwrap().0, onnx);
        let e = resolve(&onnx, Precision::Int8).unwrap_err().to_string();
        assert!(
            e.contains("bertflow models optimize") && e.contains("--precision int8"),
            "{e}"
        );
        let meta = VariantMeta {
            precision: Precision::Int8,
            source: "model.onnx".into(),
            source_sha256: sha256_file(&onnx).unwrap(),
            method: "test".into(),
            fused_operators: BTreeMap::new(),
            calibration: "test".into(),
            quality: vec![],
            thresholds: Thresholds::default_for(Precision::Int8),
            forced: false,
            measured_on: "test".into(),
            created_unix: 0,
            pooling: None,
            execution_provider: None,
        };
        // Made for ONNX Runtime's kernels: not for OpenVINO, and the other way round.
        use crate::model::config::ExecutionProvider;
        assert!(check_provider(&meta, &onnx, ExecutionProvider::Cpu).is_ok());
        let e = check_provider(&meta, &onnx, ExecutionProvider::Openvino)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--execution-provider openvino"), "{e}");
        let ov = VariantMeta {
            execution_provider: Some("openvino".into()),
            ..meta.clone()
        };
        assert!(check_provider(&ov, &onnx, ExecutionProvider::Openvino).is_ok());
        assert!(check_provider(&ov, &onnx, ExecutionProvider::Cuda).is_err());
        std::fs::write(Precision::Int8.variant_path(&onnx), b"int8 graph").unwrap();
        std::fs::write(
            Precision::Int8.meta_path(&onnx),
            serde_json::to_string(&meta).unwrap(),
        )
        .unwrap();
        let (p, m) = resolve(&onnx, Precision::Int8).unwrap();
        assert_eq!(p, d.path().join("model.int8.onnx"));
        assert_eq!(m.unwrap().precision, Precision::Int8);
        std::fs::write(&onnx, b"graph v2").unwrap();
        let e = resolve(&onnx, Precision::Int8).unwrap_err().to_string();
        assert!(e.contains("another version"), "{e}");
    }
}

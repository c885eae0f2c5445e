//! The sentence-transformers modules of a model folder: the pooling modes of
//! `1_Pooling/config.json`, and the modules run after pooling as `modules.json` lists them:
//! `Dense` layers (`activation(W x + b)`, weights from the module folder's `model.safetensors`)
//! and `Normalize`, in order. A module bertflow cannot run is refused by name, never skipped.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::ModelDir;

/// One pooling operation; several are concatenated in this order (sentence-transformers' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    LastToken,
}

impl Pool {
    /// sentence-transformers' name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            Pool::Cls => "cls",
            Pool::Max => "max",
            Pool::Mean => "mean",
            Pool::MeanSqrtLen => "mean_sqrt_len",
            Pool::LastToken => "lasttoken",
        }
    }
}

/// Pooling modes from a sentence-transformers `1_Pooling/config.json`: `pooling_mode` (a mode or
/// a list of modes, in order; sentence-transformers 5) or the older `pooling_mode_*_tokens`
/// flags.
pub fn pools_from_st_config(v: &Value) -> std::result::Result<Vec<Pool>, String> {
    let weighted = || {
        "weighted-mean pooling is not supported; set tasks.embed.pooling to mean, cls or max"
            .to_string()
    };
    if let Some(mode) = v.get("pooling_mode") {
        let names: Vec<&str> = match mode {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err("`pooling_mode` is neither a mode nor a list of modes".into()),
        };
        let mut pools = Vec::new();
        for n in names {
            pools.push(match n {
                "cls" => Pool::Cls,
                "max" => Pool::Max,
                "mean" => Pool::Mean,
                "mean_sqrt_len_tokens" | "mean_sqrt_len" => Pool::MeanSqrtLen,
                "lasttoken" => Pool::LastToken,
                "weightedmean" => return Err(weighted()),
                other => return Err(format!("pooling_mode '{other}' is not one bertflow runs (cls, max, mean, mean_sqrt_len_tokens, lasttoken)")),
            });
        }
        if pools.is_empty() {
            return Err("1_Pooling/config.json enables no pooling mode".into());
        }
        return Ok(pools);
    }
    let on = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut pools = Vec::new();
    if on("pooling_mode_cls_token") {
        pools.push(Pool::Cls);
    }
    if on("pooling_mode_max_tokens") {
        pools.push(Pool::Max);
    }
    if on("pooling_mode_mean_tokens") {
        pools.push(Pool::Mean);
    }
    if on("pooling_mode_mean_sqrt_len_tokens") {
        pools.push(Pool::MeanSqrtLen);
    }
    if on("pooling_mode_weightedmean_tokens") {
        return Err(weighted());
    }
    if on("pooling_mode_lasttoken") {
        pools.push(Pool::LastToken);
    }
    if pools.is_empty() {
        return Err("1_Pooling/config.json enables no pooling mode".into());
    }
    Ok(pools)
}

/// One step after pooling.
#[derive(Debug, Clone, PartialEq)]
pub enum Module {
    Dense(Dense),
    Normalize,
}

/// The activation of a Dense module (`activation_function`, a torch class name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    /// torch's default GELU (erf, not the tanh approximation).
    Gelu,
    Sigmoid,
    Silu,
}

impl DenseActivation {
    fn parse(name: &str) -> Option<DenseActivation> {
        Some(match name.rsplit('.').next().unwrap_or(name) {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            "ReLU" => DenseActivation::Relu,
            "GELU" => DenseActivation::Gelu,
            "Sigmoid" => DenseActivation::Sigmoid,
            "SiLU" => DenseActivation::Silu,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DenseActivation::Identity => "identity",
            DenseActivation::Tanh => "tanh",
            DenseActivation::Relu => "relu",
            DenseActivation::Gelu => "gelu",
            DenseActivation::Sigmoid => "sigmoid",
            DenseActivation::Silu => "silu",
        }
    }

    fn apply(self, x: f32) -> f32 {
        match self {
            DenseActivation::Identity => x,
            DenseActivation::Tanh => x.tanh(),
            DenseActivation::Relu => x.max(0.0),
            DenseActivation::Gelu => {
                let x = x as f64;
                (0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))) as f32
            }
            DenseActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            DenseActivation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// A Dense module: `out = activation(weight · in + bias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// The module's folder (`2_Dense`).
    pub path: String,
    pub in_features: usize,
    pub out_features: usize,
    /// `out_features x in_features`, row-major (torch's `linear.weight`).
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    pub activation: DenseActivation,
}

impl Dense {
    /// A module from its weights (`out_features x in_features`, row-major) and bias.
    pub fn new(
        path: &str,
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        in_features: usize,
        out_features: usize,
        activation: DenseActivation,
    ) -> Dense {
        assert_eq!(weight.len(), in_features * out_features, "weight shape");
        Dense {
            path: path.to_string(),
            in_features,
            out_features,
            weight,
            bias,
            activation,
        }
    }

    /// Apply to one vector of `in_features` values.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        (0..self.out_features)
            .map(|o| {
                let row = &self.weight[o * self.in_features..(o + 1) * self.in_features];
                let mut acc = self.bias.as_ref().map_or(0.0, |b| b[o]);
                for (w, v) in row.iter().zip(x) {
                    acc += w * v;
                }
                self.activation.apply(acc)
            })
            .collect()
    }

    /// Read a Dense module folder: `config.json` (`in_features`, `out_features`, `bias`,
    /// `activation_function`) and `model.safetensors` (`linear.weight`, `linear.bias`).
    fn read(dir: &Path, path: &str) -> Result<Dense> {
        let folder = dir.join(path);
        let cfg_file = folder.join("config.json");
        let cfg: Value = std::fs::read_to_string(&cfg_file)
            .map_err(|e| {
                Error::model(
                    &cfg_file,
                    format!("cannot read the Dense module's configuration: {e}"),
                )
            })
            .and_then(|t| {
                serde_json::from_str(&t)
                    .map_err(|e| Error::model(&cfg_file, format!("not valid JSON: {e}")))
            })?;
        let num = |k: &str| {
            cfg.get(k)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| Error::model(&cfg_file, format!("`{k}` is missing")))
        };
        let (in_features, out_features) = (num("in_features")?, num("out_features")?);
        let has_bias = cfg.get("bias").and_then(Value::as_bool).unwrap_or(true);
        let act_name = cfg
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("torch.nn.modules.activation.Tanh");
        let activation = DenseActivation::parse(act_name).ok_or_else(|| {
            Error::model(
                &cfg_file,
                format!("activation_function {act_name} is not one bertflow runs (Identity, Tanh, ReLU, GELU, Sigmoid, SiLU)"),
            )
        })?;
        let weights = folder.join("model.safetensors");
        if !weights.is_file() {
            let hint = if folder.join("pytorch_model.bin").is_file() {
                "its weights are in pytorch_model.bin (a PyTorch pickle, which bertflow does not read); save them as model.safetensors (`bertflow models export` does, as does sentence-transformers' `model.save(dir)` since 2.3)"
            } else {
                "the module has no model.safetensors"
            };
            return Err(Error::model(
                &folder,
                format!("Dense module {path}: {hint}"),
            ));
        }
        let tensors = read_safetensors(&weights)?;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let (s, v) = tensors
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, s, v)| (s, v))
                .ok_or_else(|| Error::model(&weights, format!("no tensor `{name}`")))?;
            if s != shape {
                return Err(Error::model(
                    &weights,
                    format!("`{name}` has shape {s:?}, config.json says {shape:?}"),
                ));
            }
            Ok(v.clone())
        };
        let weight = get("linear.weight", &[out_features, in_features])?;
        let bias = if has_bias {
            Some(get("linear.bias", &[out_features])?)
        } else {
            None
        };
        Ok(Dense {
            path: path.to_string(),
            in_features,
            out_features,
            weight,
            bias,
            activation,
        })
    }
}

/// One tensor of a safetensors file: name, shape, values as float32.
pub type Tensor = (String, Vec<usize>, Vec<f32>);

/// The tensors of a safetensors file as float32. Reads F32, F16, BF16 and F64.
pub fn read_safetensors(path: &Path) -> Result<Vec<Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::model(path, format!("cannot read: {e}")))?;
    let bad = |m: &str| Error::model(path, format!("not a safetensors file: {m}"));
    if bytes.len() < 8 {
        return Err(bad("too short"));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| bad("header past the end"))?;
    let data = &bytes[8 + n..];
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let mut out = Vec::new();
    for (name, t) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("");
        let numbers = |key: &str| -> Vec<usize> {
            t.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (shape, offs) = (numbers("shape"), numbers("data_offsets"));
        let [a, b] = offs[..] else {
            return Err(bad(&format!("`{name}` has no data_offsets")));
        };
        let raw = data
            .get(a..b)
            .ok_or_else(|| bad(&format!("`{name}` past the end")))?;
        let values: Vec<f32> = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "F64" => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(bad(&format!(
                    "`{name}` has dtype {other}, not a float type"
                )))
            }
        };
        if values.len() != shape.iter().product::<usize>() {
            return Err(bad(&format!(
                "`{name}` holds {} values for shape {shape:?}",
                values.len()
            )));
        }
        out.push((name, shape, values));
    }
    Ok(out)
}

/// The modules after pooling that `modules.json` lists, in order; empty without a
/// `modules.json`. The transformer and pooling modules come first; any module other than
/// Dense and Normalize after them is refused, naming it.
pub fn post_pooling(dir: &ModelDir) -> Result<Vec<Module>> {
    let Some(v) = dir.json("modules.json")? else {
        return Ok(Vec::new());
    };
    let file = dir.dir.join("modules.json");
    let list = v
        .as_array()
        .ok_or_else(|| Error::model(&file, "not a list of modules"))?;
    let mut out = Vec::new();
    for m in list {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
        let path = m.get("path").and_then(Value::as_str).unwrap_or("");
        match ty.rsplit('.').next().unwrap_or(ty) {
            "Transformer" | "MLMTransformer" | "Pooling" | "SpladePooling" if out.is_empty() => {}
            "Dense" => out.push(Module::Dense(Dense::read(&dir.dir, path)?)),
            "Normalize" => out.push(Module::Normalize),
            _ => {
                return Err(Error::model(
                    &file,
                    format!(
                        "module '{path}' is a {ty}, which bertflow cannot run (it runs the transformer, Pooling, then Dense and Normalize modules); use a model without it, or export the whole pipeline into the graph"
                    ),
                ))
            }
        }
    }
    Ok(out)
}

/// erf(x) in double precision: its Maclaurin series below 2.5, the continued fraction of erfc
/// above (GELU's exact form, as torch computes it, for float32 output).
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // Maclaurin series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut sum = 0.0f64;
        let mut term = x;
        let x2 = x * x;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x2 / n;
            if n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc, evaluated from the tail.
        let ax = x.abs();
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        let erfc = (-ax * ax).exp() / (ax + f) / std::f64::consts::PI.sqrt();
        (1.0 - erfc) * x.signum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.5, -0.966_105_146_475_310_7),
            (2.4, 0.999_311_486_103_354_9),
            (3.0, 0.999_977_909_503_001_4),
            (-4.0, -0.999_999_984_582_742_1),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} not {want}",
                erf(x)
            );
        }
    }

    fn write_safetensors(path: &Path, tensors: &[(&str, &[usize], &[f32])]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, shape, values) in tensors {
            let start = data.len();
            for v in *values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let h = serde_json::to_vec(&header).unwrap();
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend(h);
        bytes.extend(data);
        std::fs::write(path, bytes).unwrap();
    }

    fn model_dir(modules: &str) -> (tempfile::TempDir, ModelDir) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("modules.json"), modules).unwrap();
        let m = ModelDir::files_only(d.path());
        (d, m)
    }

    const MODULES: &str = r#"[
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]"#;

    #[test]
    fn dense_then_normalize_in_order() {
        let (d, m) = model_dir(MODULES);
        let dense = d.path().join("2_Dense");
        std::fs::create_dir(&dense).unwrap();
        std::fs::write(
            dense.join("config.json"),
            r#"{"in_features": 3, "out_features": 2, "bias": true, "activation_function": "torch.nn.modules.activation.Tanh"}"#,
        )
        .unwrap();
        write_safetensors(
            &dense.join("model.safetensors"),
            &[
                ("linear.weight", &[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]),
                ("linear.bias", &[2], &[0.1, -0.2]),
            ],
        );
        let mods = post_pooling(&m).unwrap();
        assert_eq!(mods.len(), 2);
        let Module::Dense(dl) = &mods[0] else {
            panic!("{mods:?}")
        };
        assert_eq!(mods[1], Module::Normalize);
        let y = dl.forward(&[1.0, 2.0, 3.0]);
        assert!((y[0] - (1.0f32 - 3.0 + 0.1).tanh()).abs() < 1e-7, "{y:?}");
        assert!((y[1] - (3.0f32 - 0.2).tanh()).abs() < 1e-7, "{y:?}");
        // A shape that disagrees with config.json is refused, naming the tensor.
        std::fs::write(
            dense.join("config.json"),
            r#"{"in_features": 4, "out_features": 2, "activation_function": "torch.nn.modules.linear.Identity"}"#,
        )
        .unwrap();
        let e = post_pooling(&m).unwrap_err().to_string();
        assert!(e.contains("`linear.weight` has shape [2, 3]"), "{e}");
        // Weights only as a PyTorch pickle: refused with what to do.
        std::fs::remove_file(dense.join("model.safetensors")).unwrap();
        std::fs::write(dense.join("pytorch_model.bin"), b"pickle").unwrap();
        let e = post_pooling(&m).unwrap_err().to_string();
        assert!(
            e.contains("pytorch_model.bin") && e.contains("model.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn unknown_modules_and_activations_are_refused_by_name() {
        let (_d, m) = model_dir(
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}]"#,
        );
        let e = post_pooling(&m).unwrap_err().to_string();
        assert!(
            e.contains("'2_LayerNorm' is a sentence_transformers.models.LayerNorm"),
            "{e}"
        );
        let (d, m) = model_dir(MODULES);
        std::fs::create_dir(d.path().join("2_Dense")).unwrap();
        std::fs::write(
            d.path().join("2_Dense/config.json"),
            r#"{"in_features": 3, "out_features": 2, "activation_function": "torch.nn.modules.activation.Softplus"}"#,
        )
        .unwrap();
        let e = post_pooling(&m).unwrap_err().to_string();
        assert!(e.contains("Softplus is not one bertflow runs"), "{e}");
        // No modules.json: nothing after pooling.
        let (_d, mut m) = model_dir("[]");
        m.dir = m.dir.join("missing");
        assert!(post_pooling(&m).unwrap().is_empty());
    }
}

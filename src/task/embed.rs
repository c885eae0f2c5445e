//! Sentence embeddings, as sentence-transformers computes them: token embeddings pooled over the
//! attention mask (mean, CLS, max, ... as configured in `1_Pooling/config.json`), then optionally
//! L2-normalised.

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use serde_json::Value;

use super::{single_text_featurized, Featurized, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::config::{EmbedConfig, PoolingMode};
use crate::error::{Error, Result};
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::Chunk;

/// One pooling operation; several are concatenated in this order (sentence-transformers' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Cls,
    Max,
    Mean,
    MeanSqrtLen,
    LastToken,
}

pub struct EmbedTask {
    tokenizer: TextTokenizer,
    pools: Vec<Pool>,
    normalize: bool,
    /// Model output holding token embeddings `[batch, seq, hidden]`, or pooled `[batch, dim]`.
    output: String,
    pre_pooled: bool,
    dim: usize,
    column: String,
}

/// Pooling modes from a sentence-transformers `1_Pooling/config.json`.
pub fn pools_from_st_config(v: &Value) -> std::result::Result<Vec<Pool>, String> {
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
        return Err(
            "weighted-mean pooling is not supported; set tasks.embed.pooling to mean, cls or max"
                .into(),
        );
    }
    if on("pooling_mode_lasttoken") {
        pools.push(Pool::LastToken);
    }
    if pools.is_empty() {
        return Err("1_Pooling/config.json enables no pooling mode".into());
    }
    Ok(pools)
}

impl EmbedTask {
    /// Load the tokenizer and read the pooling, normalisation and length settings of `cfg`,
    /// checking them against the model's outputs.
    pub fn new(cfg: &EmbedConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        let pools = match cfg.pooling {
            PoolingMode::Mean => vec![Pool::Mean],
            PoolingMode::Cls => vec![Pool::Cls],
            PoolingMode::Max => vec![Pool::Max],
            PoolingMode::Auto => match dir.json("1_Pooling/config.json")? {
                Some(v) => pools_from_st_config(&v)
                    .map_err(|m| Error::model(dir.dir.join("1_Pooling/config.json"), m))?,
                None => vec![Pool::Mean],
            },
        };
        let normalize = match cfg.normalize {
            Some(n) => n,
            None => dir
                .json("modules.json")?
                .and_then(|m| {
                    m.as_array().map(|mods| {
                        mods.iter().any(|m| {
                            m.get("type")
                                .and_then(Value::as_str)
                                .is_some_and(|t| t.ends_with("Normalize"))
                        })
                    })
                })
                .unwrap_or(false),
        };
        let positions = dir.max_positions().unwrap_or(512).min(512);
        let max_length = match cfg.max_length {
            Some(m) => m,
            None => dir
                .json("sentence_bert_config.json")?
                .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
                .map(|m| m as usize)
                .unwrap_or(positions)
                .min(positions),
        };
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length,
                stride: 0,
                windows: false,
                only_second: false,
            },
        )?;

        // Pick the output: pooled if the graph already pools, else token embeddings.
        let names = &model.output_names;
        let (output, pre_pooled) =
            if let Some(n) = names.iter().find(|n| *n == "sentence_embedding") {
                (n.clone(), true)
            } else if let Some(n) = names
                .iter()
                .find(|n| *n == "last_hidden_state" || *n == "token_embeddings")
            {
                (n.clone(), false)
            } else if let Some(n) = names.first() {
                (n.clone(), false)
            } else {
                return Err(Error::model(&dir.onnx, "the graph has no outputs"));
            };
        let hidden = model
            .output_last_dim(&output)
            .or_else(|| {
                dir.config
                    .as_ref()
                    .and_then(|c| c.get("hidden_size").or_else(|| c.get("dim")))
                    .and_then(Value::as_u64)
                    .map(|d| d as usize)
            })
            .ok_or_else(|| {
                Error::model(
                    &dir.dir,
                    format!("cannot tell the embedding size: output '{output}' has a dynamic last dimension and config.json has no hidden_size"),
                )
            })?;
        let dim = if pre_pooled {
            hidden
        } else {
            hidden * pools.len()
        };
        Ok(EmbedTask {
            tokenizer,
            pools,
            normalize,
            output,
            pre_pooled,
            dim,
            column: cfg.column.clone(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    pub fn normalizes(&self) -> bool {
        self.normalize
    }
}

/// Pool one sequence's token embeddings (`seq x hidden`, row-major) over its mask.
pub fn pool(tokens: &[f32], mask: &[i64], hidden: usize, mode: Pool, out: &mut Vec<f32>) {
    let seq = mask.len();
    let count = mask.iter().filter(|&&m| m != 0).count();
    let row = |t: usize| &tokens[t * hidden..(t + 1) * hidden];
    match mode {
        Pool::Cls => out.extend_from_slice(row(0)),
        Pool::LastToken => {
            let last = (0..seq).rev().find(|&t| mask[t] != 0).unwrap_or(0);
            out.extend_from_slice(row(last));
        }
        Pool::Max => {
            // Masked positions count as -1e9, as in sentence-transformers.
            let mut acc = vec![f32::NEG_INFINITY; hidden];
            for (t, &m) in mask.iter().enumerate() {
                let r = row(t);
                let masked = m == 0;
                for (a, &v) in acc.iter_mut().zip(r) {
                    let v = if masked { -1e9 } else { v };
                    if v > *a {
                        *a = v;
                    }
                }
            }
            out.extend_from_slice(&acc);
        }
        Pool::Mean | Pool::MeanSqrtLen => {
            let mut acc = vec![0f32; hidden];
            for (t, &m) in mask.iter().enumerate() {
                if m != 0 {
                    for (a, &v) in acc.iter_mut().zip(row(t)) {
                        *a += v;
                    }
                }
            }
            let denom = if mode == Pool::Mean {
                (count as f32).max(1e-9)
            } else {
                (count as f32).max(1e-9).sqrt()
            };
            out.extend(acc.into_iter().map(|a| a / denom));
        }
    }
}

/// L2-normalise in place (eps 1e-12, as `torch.nn.functional.normalize`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v {
        *x /= norm;
    }
}

impl Task for EmbedTask {
    fn name(&self) -> &'static str {
        "embed"
    }

    fn fields(&self) -> Vec<FieldRef> {
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        vec![Arc::new(Field::new(
            &self.column,
            DataType::FixedSizeList(item, self.dim as i32),
            false,
        ))]
    }

    fn pad_id(&self) -> u32 {
        self.tokenizer.pad_id
    }

    fn featurize(&self, chunk: &Chunk, cache: &TokenCache) -> Featurized {
        single_text_featurized(chunk, cache, &self.tokenizer)
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (shape, data) = outputs.f32(&self.output)?;
        let rows = features.len();
        let mut results = Vec::with_capacity(rows);
        if self.pre_pooled {
            if shape.len() != 2 || shape[0] != rows {
                return Err(Error::Inference(format!(
                    "output '{}' has shape {shape:?}, expected [{rows}, dim]",
                    self.output
                )));
            }
            let dim = shape[1];
            for r in 0..rows {
                let mut v = data[r * dim..(r + 1) * dim].to_vec();
                if self.normalize {
                    l2_normalize(&mut v);
                }
                results.push(Ok(TaskOutput::Embedding(v)));
            }
            return Ok(results);
        }
        if shape.len() != 3 || shape[0] != rows || shape[1] != batch.seq_len {
            return Err(Error::Inference(format!(
                "output '{}' has shape {shape:?}, expected [{rows}, {}, hidden]",
                self.output, batch.seq_len
            )));
        }
        let (seq, hidden) = (shape[1], shape[2]);
        for r in 0..rows {
            let tokens = &data[r * seq * hidden..(r + 1) * seq * hidden];
            let mut v = Vec::with_capacity(self.dim);
            for &p in &self.pools {
                pool(tokens, batch.mask(r), hidden, p, &mut v);
            }
            if self.normalize {
                l2_normalize(&mut v);
            }
            if v.iter().any(|x| !x.is_finite()) {
                results.push(Err("the model produced a non-finite embedding".to_string()));
            } else {
                results.push(Ok(TaskOutput::Embedding(v)));
            }
        }
        Ok(results)
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let mut flat = Vec::with_capacity(outputs.len() * self.dim);
        for o in outputs {
            match o {
                TaskOutput::Embedding(v) if v.len() == self.dim => flat.extend(v),
                TaskOutput::Embedding(v) => {
                    return Err(Error::Inference(format!(
                        "embedding of size {} where {} was expected",
                        v.len(),
                        self.dim
                    )))
                }
                other => return Err(Error::Inference(format!("internal: embed got {other:?}"))),
            }
        }
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let values = Arc::new(Float32Array::from(flat));
        let list = FixedSizeListArray::try_new(item, self.dim as i32, values, None)
            .map_err(|e| Error::Inference(e.to_string()))?;
        Ok(vec![Arc::new(list)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // 3 tokens x 2 hidden, last one padding.
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = Vec::new();
        pool(&tokens, &[1, 1, 0], 2, Pool::Mean, &mut out);
        assert_eq!(out, vec![2.0, 3.0]);
    }

    #[test]
    fn max_cls_last_pooling() {
        let tokens = [1.0, 5.0, 3.0, 4.0, 100.0, 100.0];
        let mask = [1, 1, 0];
        let mut out = Vec::new();
        pool(&tokens, &mask, 2, Pool::Max, &mut out);
        assert_eq!(out, vec![3.0, 5.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::Cls, &mut out);
        assert_eq!(out, vec![1.0, 5.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::LastToken, &mut out);
        assert_eq!(out, vec![3.0, 4.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::MeanSqrtLen, &mut out);
        let s = 2f32.sqrt();
        assert!((out[0] - 4.0 / s).abs() < 1e-6 && (out[1] - 9.0 / s).abs() < 1e-6);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn st_pooling_config() {
        let v: Value =
            serde_json::json!({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true});
        assert_eq!(pools_from_st_config(&v).unwrap(), vec![Pool::Mean]);
        let v: Value =
            serde_json::json!({"pooling_mode_cls_token": true, "pooling_mode_max_tokens": true});
        assert_eq!(
            pools_from_st_config(&v).unwrap(),
            vec![Pool::Cls, Pool::Max]
        );
        let v: Value = serde_json::json!({"pooling_mode_weightedmean_tokens": true});
        assert!(pools_from_st_config(&v).is_err());
    }
}

//! Sentence embeddings, as sentence-transformers computes them: token embeddings pooled over the
//! attention mask (mean, CLS, max, ... as configured in `1_Pooling/config.json`), then optionally
//! L2-normalised, then optionally cut to `dimensions` and written as `output` ([`output`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use serde_json::Value;

pub mod output;
mod passages;
mod pooling;

pub use crate::model::modules::{self, Module};
pub use output::EmbeddingOutput;
pub use passages::{chunk_fields, document_embedding, ChunkEmbedding};
pub use pooling::{l2_normalize, pool, pools_from_st_config, Pool};

use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::Chunk;
use crate::task::config::{EmbedConfig, PoolingMode};
use crate::task::passages::Passages;
use crate::task::prompt::{self, Prompt};
use crate::task::quality;
use crate::task::{prompted_featurized, Featurized, Task, TaskOutput};

/// The length the embed task cuts texts at: `max_length`, else sentence-transformers'
/// `max_seq_length` of the model folder, else the tokenizer's `model_max_length` (where
/// sentence-transformers 5 keeps it), at most the model's positions (512 at most).
pub fn max_length(cfg: &EmbedConfig, dir: &ModelDir) -> Result<usize> {
    let positions = dir.max_positions().unwrap_or(512).min(512);
    Ok(match cfg.max_length {
        Some(m) => m,
        None => dir
            .st_max_seq_length()?
            .or_else(|| crate::model::tokenizer::model_max_length(&dir.dir))
            .unwrap_or(positions)
            .min(positions),
    })
}

/// The prompt `tasks.embed` runs with.
fn resolve_prompt(cfg: &EmbedConfig, dir: &ModelDir) -> Result<Option<Prompt>> {
    prompt::resolve(
        "embed",
        cfg.prompt.as_deref(),
        cfg.prompt_name.as_deref(),
        dir,
    )
}

/// The checks of `tasks.embed.chunking` that need the model folder but no session.
fn check_chunking(cfg: &EmbedConfig, dir: &ModelDir) -> Result<()> {
    match &cfg.chunking {
        Some(c) => {
            crate::task::passages::check("embed", c, max_length(cfg, dir)?, &dir.dir).map(|_| ())
        }
        None => Ok(()),
    }
}

/// `dimensions` and `output` against the model's embedding size (`dim`, when known).
fn check_output(cfg: &EmbedConfig, dim: usize) -> Result<()> {
    if let Some(d) = cfg.dimensions {
        if d == 0 || d > dim {
            return Err(Error::config(format!(
                "tasks.embed.dimensions is {d}: the model's embeddings have {dim} dimensions; give 1 to {dim} (Matryoshka models keep most of their quality at 1/2 or 1/4)"
            )));
        }
    } else if cfg.normalize_dimensions {
        return Err(Error::config(
            "tasks.embed.normalize_dimensions needs tasks.embed.dimensions",
        ));
    }
    match (cfg.output.scalar(), &cfg.output_ranges) {
        (true, None) => {
            return Err(Error::config(format!(
                "tasks.embed.output is {}: it needs tasks.embed.output_ranges, each dimension's range (make them with `bertflow models ranges MODEL --calibration TEXTS --output ranges.json`)",
                cfg.output.name()
            )))
        }
        (false, Some(_)) => {
            return Err(Error::config(format!(
                "tasks.embed.output_ranges applies to output int8 or uint8, not {}",
                cfg.output.name()
            )))
        }
        _ => {}
    }
    if cfg.chunking.is_some() && cfg.output != EmbeddingOutput::Float32 {
        return Err(Error::config(format!(
            "tasks.embed.output is {}: passages (tasks.embed.chunking) are written as float32; remove one of the two",
            cfg.output.name()
        )));
    }
    Ok(())
}

/// Check the Dense modules' sizes along the chain from the pooled size. A graph that already
/// returns pooled embeddings of the chain's final size (and not of its first input size) is an
/// export of the whole sentence-transformers pipeline: the modules are inside, and not run
/// again. Any other pooled graph is refused with Dense modules: whether its pooling normalised
/// the vectors before the modules would see them cannot be told.
fn chain_dense(
    post: Vec<Module>,
    pooled: usize,
    pre_pooled: bool,
    model: &std::path::Path,
) -> Result<Vec<Module>> {
    let dense: Vec<&modules::Dense> = post
        .iter()
        .filter_map(|m| match m {
            Module::Dense(d) => Some(d),
            Module::Normalize => None,
        })
        .collect();
    let Some(first) = dense.first() else {
        return Ok(post);
    };
    let last = dense.last().expect("one at least").out_features;
    if pre_pooled {
        if pooled == last && pooled != first.in_features {
            return Ok(post
                .into_iter()
                .filter(|m| *m == Module::Normalize)
                .collect());
        }
        return Err(Error::model(
            model,
            format!(
                "the graph returns pooled embeddings of {pooled} values and the model runs the Dense module {} after its pooling; whether the graph normalised them first cannot be told: export the encoder alone (`bertflow models export`)",
                first.path
            ),
        ));
    }
    let mut size = pooled;
    for d in &dense {
        if d.in_features != size {
            return Err(Error::model(
                model.join(&d.path),
                format!(
                    "the Dense module takes {} values but gets {size} (the pooled embedding, or the module before it); the module does not belong to this model",
                    d.in_features
                ),
            ));
        }
        size = d.out_features;
    }
    Ok(post)
}

/// `tasks.embed.chunking`, resolved against the model.
struct Chunking {
    passages: Passages,
    document: bool,
    column: String,
}

pub struct EmbedTask {
    tokenizer: TextTokenizer,
    pools: Vec<Pool>,
    /// The prompt put before every input, and how many leading tokens pooling leaves out
    /// (`include_prompt: false`), else 0.
    prompt: Option<Prompt>,
    prompt_excluded: usize,
    /// What runs after pooling, in order (`Dense`, `Normalize`).
    post: Vec<Module>,
    normalize: bool,
    /// Model output holding token embeddings `[batch, seq, hidden]`, or pooled `[batch, dim]`.
    output: String,
    pre_pooled: bool,
    dim: usize,
    column: String,
    chunking: Option<Chunking>,
    /// `tasks.embed.dimensions` and `normalize_dimensions`.
    dimensions: Option<usize>,
    normalize_dimensions: bool,
    output_type: EmbeddingOutput,
    /// Per-dimension ranges of int8 / uint8 output.
    ranges: Option<output::Ranges>,
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
        // The modules after pooling; `normalize` adds or removes the normalisation.
        let mut post = modules::post_pooling(dir)?;
        match cfg.normalize {
            Some(true) if !post.contains(&Module::Normalize) => post.push(Module::Normalize),
            Some(false) => post.retain(|m| *m != Module::Normalize),
            _ => {}
        }
        let normalize = post.contains(&Module::Normalize);
        let max_length = max_length(cfg, dir)?;
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
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
        let pooled = if pre_pooled {
            hidden
        } else {
            hidden * pools.len()
        };
        let post = chain_dense(post, pooled, pre_pooled, &dir.dir)?;
        let dim = post
            .iter()
            .rev()
            .find_map(|m| match m {
                Module::Dense(d) => Some(d.out_features),
                Module::Normalize => None,
            })
            .unwrap_or(pooled);
        let prompt = resolve_prompt(cfg, dir)?;
        let prompt_excluded = match &prompt {
            Some(p) if !prompt::pooling_includes_prompt(dir, "1_Pooling/config.json")? => {
                prompt::excluded_tokens(&tokenizer, &p.text)?
            }
            _ => 0,
        };
        if pre_pooled && prompt_excluded > 0 {
            return Err(Error::model(
                &dir.onnx,
                format!(
                    "the graph returns pooled embeddings ('{output}'), so the prompt's tokens cannot be left out of the pooling as the model's 1_Pooling/config.json asks (include_prompt: false); export the encoder alone (`bertflow models export`), or give no prompt"
                ),
            ));
        }
        let chunking = match &cfg.chunking {
            None => None,
            Some(c) => Some(Chunking {
                passages: Passages::new(
                    "embed",
                    c,
                    max_length,
                    &dir.dir,
                    &tokenizer,
                    prompt.as_ref().map(|p| p.text.as_str()),
                )?,
                document: c.document_embedding,
                column: c.column.clone(),
            }),
        };
        check_output(cfg, dim)?;
        if let Some(c) = &chunking {
            if c.document && c.column == cfg.column {
                return Err(Error::config(format!(
                    "tasks.embed.chunking.column and tasks.embed.column are both '{}'; give them different names",
                    c.column
                )));
            }
        }
        Ok(EmbedTask {
            tokenizer,
            pools,
            prompt,
            prompt_excluded,
            post,
            normalize,
            output,
            pre_pooled,
            dim,
            column: cfg.column.clone(),
            chunking,
            dimensions: cfg.dimensions,
            normalize_dimensions: cfg.normalize_dimensions,
            output_type: cfg.output,
            ranges: match &cfg.output_ranges {
                Some(path) => Some(output::Ranges::read(path, cfg.dimensions.unwrap_or(dim))?),
                None => None,
            },
        })
    }

    /// Dimensions of the written embeddings (`dimensions`, else the model's).
    pub fn out_dim(&self) -> usize {
        self.dimensions.unwrap_or(self.dim)
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

    /// The prompt put before every input.
    pub fn prompt(&self) -> Option<&Prompt> {
        self.prompt.as_ref()
    }

    /// Whether pooling leaves the prompt's tokens out (`include_prompt: false` with a prompt).
    pub fn excludes_prompt(&self) -> bool {
        self.prompt_excluded > 0
    }

    /// The Dense modules run after pooling.
    pub fn dense(&self) -> Vec<&modules::Dense> {
        self.post
            .iter()
            .filter_map(|m| match m {
                Module::Dense(d) => Some(d),
                Module::Normalize => None,
            })
            .collect()
    }

    /// The model output the task reads.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// Whether the graph returns pooled `[batch, dim]` embeddings.
    pub fn pre_pooled(&self) -> bool {
        self.pre_pooled
    }
}

impl Task for EmbedTask {
    fn name(&self) -> &'static str {
        "embed"
    }

    fn fields(&self) -> Vec<FieldRef> {
        let dim = self.out_dim();
        let Some(c) = &self.chunking else {
            return vec![Arc::new(self.output_type.field(&self.column, dim, false))];
        };
        let mut fields = vec![super::list_of_structs(&c.column, chunk_fields(dim))];
        if c.document {
            fields.push(Arc::new(self.output_type.field(&self.column, dim, true)));
        }
        fields
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn needs_offsets(&self) -> bool {
        // Passages are cut at character offsets; whole texts are not.
        self.chunking.is_some()
    }

    fn model_outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn featurize(&self, chunk: &Chunk, cache: &TokenCache) -> Featurized {
        match &self.chunking {
            Some(c) => c.passages.featurize(&self.tokenizer, chunk, cache),
            None => prompted_featurized(
                chunk,
                cache,
                &self.tokenizer,
                self.prompt.as_ref().map(|p| p.text.as_str()),
            ),
        }
    }

    fn combine(&self, parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        if self.chunking.is_none() {
            let mut parts = parts;
            return match parts.len() {
                1 => Ok(parts.remove(0)),
                n => Err(format!("internal: {n} results for one record")),
            };
        }
        let mut all = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                TaskOutput::Chunks(c) => all.extend(c),
                other => return Err(format!("internal: embed passage got {other:?}")),
            }
        }
        Ok(TaskOutput::Chunks(all))
    }

    fn accepts_graph_pooling(
        &self,
        pooling: &crate::model::precision::GraphPooling,
    ) -> std::result::Result<(), String> {
        if pooling.is_sparse() {
            return Err(format!(
                "the graph ends in {pooling} (sparse vectors): only tasks.sparse can use it"
            ));
        }
        if let Some(d) = self.dense().first() {
            return Err(format!(
                "the graph ends in {pooling} but the model runs the Dense module {} after pooling; use the variant made without --pool",
                d.path
            ));
        }
        if self.prompt_excluded > 0 {
            return Err(format!(
                "the graph ends in {pooling} but the model's pooling leaves the prompt's tokens out (include_prompt: false); use the variant made without --pool"
            ));
        }
        let modes: Vec<&str> = self.pools.iter().map(|p| p.name()).collect();
        if pooling.modes != modes || pooling.normalize != self.normalize {
            let want = crate::model::precision::GraphPooling {
                modes: modes.iter().map(|m| m.to_string()).collect(),
                normalize: self.normalize,
                activation: None,
            };
            return Err(format!(
                "the graph computes {pooling} but tasks.embed asks for {want}; set tasks.embed.pooling / normalize to match, or make the variant again with `bertflow models optimize` (it pools as the model directory says)"
            ));
        }
        Ok(())
    }

    fn empty_result(&self) -> Option<TaskOutput> {
        self.chunking
            .as_ref()
            .map(|_| TaskOutput::Chunks(Vec::new()))
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let results = self.embeddings(features, batch, outputs)?;
        if self.chunking.is_none() {
            return Ok(results);
        }
        Ok(results
            .into_iter()
            .zip(features)
            .map(|(r, f)| {
                r.and_then(|o| match o {
                    TaskOutput::Embedding(embedding) => {
                        let (start, end) = Passages::span(f);
                        Ok(TaskOutput::Chunks(vec![ChunkEmbedding {
                            index: f.part as u32,
                            start,
                            end,
                            embedding,
                        }]))
                    }
                    other => Err(format!("internal: embed got {other:?}")),
                })
            })
            .collect())
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        let mut vectors: Vec<(&[f32], &[f32])> = Vec::new();
        for (a, b) in pairs {
            match (a, b) {
                (TaskOutput::Embedding(x), TaskOutput::Embedding(y)) => vectors.push((x, y)),
                (TaskOutput::Chunks(x), TaskOutput::Chunks(y)) => vectors.extend(
                    x.iter()
                        .zip(y)
                        .map(|(p, r)| (&p.embedding[..], &r.embedding[..])),
                ),
                _ => {}
            }
        }
        quality::cosines(figures, vectors);
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let Some(c) = &self.chunking else {
            return self.vector_column(outputs);
        };
        let dim = self.out_dim();
        let mut lengths = Vec::with_capacity(outputs.len());
        let (mut index, mut start, mut end, mut flat) = (vec![], vec![], vec![], vec![]);
        let mut docs: Vec<Option<Vec<f32>>> = Vec::with_capacity(outputs.len());
        for o in outputs {
            let TaskOutput::Chunks(chunks) = o else {
                return Err(Error::Inference(format!("internal: embed got {o:?}")));
            };
            lengths.push(chunks.len());
            for ch in &chunks {
                if ch.embedding.len() != dim {
                    return Err(Error::Inference(format!(
                        "embedding of size {} where {} was expected",
                        ch.embedding.len(),
                        dim
                    )));
                }
                index.push(ch.index as i32);
                start.push(ch.start as i64);
                end.push(ch.end as i64);
                flat.extend_from_slice(&ch.embedding);
            }
            if c.document {
                docs.push(document_embedding(&chunks));
            }
        }
        let fields = chunk_fields(dim);
        let vectors = vector_array(dim, flat, None)?;
        let structs = arrow::array::StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(arrow::array::Int32Array::from(index)),
                Arc::new(arrow::array::Int64Array::from(start)),
                Arc::new(arrow::array::Int64Array::from(end)),
                Arc::new(vectors),
            ],
            None,
        )
        .map_err(|e| Error::Inference(e.to_string()))?;
        let item = Arc::new(Field::new("item", DataType::Struct(fields), false));
        let list = arrow::array::ListArray::try_new(
            item,
            arrow::buffer::OffsetBuffer::from_lengths(lengths),
            Arc::new(structs),
            None,
        )
        .map_err(|e| Error::Inference(e.to_string()))?;
        let mut cols: Vec<ArrayRef> = vec![Arc::new(list)];
        if c.document {
            let valid: Vec<bool> = docs.iter().map(Option::is_some).collect();
            let mut flat = Vec::with_capacity(docs.len() * dim);
            for d in docs {
                match d {
                    Some(v) => flat.extend(v),
                    None => flat.extend(std::iter::repeat_n(0.0, dim)),
                }
            }
            cols.push(Arc::new(vector_array(
                dim,
                flat,
                Some(arrow::buffer::NullBuffer::from(valid)),
            )?));
        }
        Ok(cols)
    }
}

fn vector_array(
    dim: usize,
    flat: Vec<f32>,
    nulls: Option<arrow::buffer::NullBuffer>,
) -> Result<FixedSizeListArray> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(flat)), nulls)
        .map_err(|e| Error::Inference(e.to_string()))
}

impl EmbedTask {
    /// One embedding per feature of a batch.
    fn embeddings(
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
                results.push(self.finish(data[r * dim..(r + 1) * dim].to_vec()));
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
        let mut masked = Vec::new();
        for r in 0..rows {
            let tokens = &data[r * seq * hidden..(r + 1) * seq * hidden];
            let mut mask = batch.mask(r);
            if self.prompt_excluded > 0 {
                // sentence-transformers' `attention_mask[:, :prompt_length] = 0`.
                masked.clear();
                masked.extend_from_slice(mask);
                let n = self.prompt_excluded.min(masked.len());
                masked[..n].fill(0);
                mask = &masked;
            }
            let mut v = Vec::with_capacity(hidden * self.pools.len());
            for &p in &self.pools {
                pool(tokens, mask, hidden, p, &mut v);
            }
            results.push(self.finish(v));
        }
        Ok(results)
    }

    /// A pooled vector as the record's embedding: normalised when configured; a non-finite one
    /// fails the record.
    fn finish(&self, mut v: Vec<f32>) -> std::result::Result<TaskOutput, String> {
        for m in &self.post {
            match m {
                Module::Dense(d) => v = d.forward(&v),
                Module::Normalize => l2_normalize(&mut v),
            }
        }
        output::truncate(&mut v, self.dimensions, self.normalize_dimensions);
        if v.iter().any(|x| !x.is_finite()) {
            return Err("the model produced a non-finite embedding".to_string());
        }
        Ok(TaskOutput::Embedding(v))
    }

    fn vector_column(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let dim = self.out_dim();
        let mut flat = Vec::with_capacity(outputs.len() * dim);
        for o in outputs {
            match o {
                TaskOutput::Embedding(v) if v.len() == dim => flat.extend(v),
                TaskOutput::Embedding(v) => {
                    return Err(Error::Inference(format!(
                        "embedding of size {} where {dim} was expected",
                        v.len()
                    )))
                }
                other => return Err(Error::Inference(format!("internal: embed got {other:?}"))),
            }
        }
        Ok(vec![Arc::new(self.output_type.column(
            dim,
            &flat,
            None,
            self.ranges.as_ref(),
        )?)])
    }
}

impl crate::task::config::TaskSpec for EmbedConfig {
    crate::task::config::task_spec_basics!("embed");

    fn preflight(&self, dir: &ModelDir) -> Result<()> {
        resolve_prompt(self, dir)?;
        modules::post_pooling(dir)?;
        check_chunking(self, dir)
    }

    fn passages_column(&self) -> Option<String> {
        self.chunking.as_ref().map(|c| c.column.clone())
    }

    fn load(&self, dir: &ModelDir, model: &OnnxModel) -> Result<std::sync::Arc<dyn Task>> {
        Ok(std::sync::Arc::new(EmbedTask::new(self, dir, model)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(path: &str, i: usize, o: usize) -> Module {
        Module::Dense(modules::Dense::new(
            path,
            vec![0.0; i * o],
            None,
            i,
            o,
            modules::DenseActivation::Identity,
        ))
    }

    #[test]
    fn dense_sizes_follow_the_chain() {
        let m = std::path::Path::new("m");
        let post = vec![
            dense("2_Dense", 384, 96),
            dense("3_Dense", 96, 32),
            Module::Normalize,
        ];
        assert_eq!(chain_dense(post.clone(), 384, false, m).unwrap(), post);
        let e = chain_dense(post.clone(), 768, false, m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 384 values but gets 768"), "{e}");
        // A pooled graph of the chain's final size holds the modules: only Normalize is left.
        assert_eq!(
            chain_dense(post.clone(), 32, true, m).unwrap(),
            vec![Module::Normalize]
        );
        // A pooled graph of the pooling's size may have normalised already: refused.
        let e = chain_dense(post.clone(), 384, true, m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2_Dense after its pooling"), "{e}");
        // A square module cannot tell either: refused.
        let square = vec![dense("2_Dense", 384, 384)];
        assert!(chain_dense(square, 384, true, m).is_err());
        // No Dense module: nothing to check.
        assert_eq!(
            chain_dense(vec![Module::Normalize], 100, true, m).unwrap(),
            vec![Module::Normalize]
        );
    }
}

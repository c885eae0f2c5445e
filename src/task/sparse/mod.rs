//! Sparse lexical embeddings (SPLADE), as sentence-transformers' `SparseEncoder` with
//! `SpladePooling`: the masked-language model's logits of every token of the attention mask go
//! through log(1 + relu(x)) (twice log1p for `log1p_relu`) and are pooled per vocabulary entry by
//! max or sum; `max_active_dims` keeps the largest weights. Max pooling takes the maximum logit
//! first and activates it once (the activation never decreases, so the result is the same). A
//! graph whose output is `sparse_embedding` `[batch, vocabulary]` has pooled already
//! (`scripts/bert_to_onnx.py --tied-mlm --splade`): its vectors are taken as they are, and only
//! one vector per text leaves ONNX Runtime instead of one per token. With `chunking`, long texts
//! are cut into passages as for dense embeddings ([`crate::task::passages`]), one vector each.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Builder, ListBuilder, StringBuilder, StructArray, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use serde_json::Value;

use super::{list_of_structs, list_of_structs_builder, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::default_max_length;
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::{Chunk, SPARSE_DIMENSIONS_KEY, SPARSE_MAX_ACTIVE_KEY};
use crate::task::config::{SparseConfig, SpladeActivation, SpladePoolingMode};
use crate::task::passages::Passages;
use crate::task::quality;
use crate::task::Featurized;

mod vector;

use vector::cut;
pub use vector::{SparsePassage, SparseVector};

/// `tasks.sparse.chunking`, resolved against the model.
struct SparseChunking {
    passages: Passages,
    document: bool,
    column: String,
}

/// The struct field of a passage's vector (a flat passage row's `chunk_sparse`).
const PASSAGE_VECTOR_FIELD: &str = "sparse";

/// The SPLADE settings of `1_SpladePooling/config.json`, when the folder has one.
fn splade_config(dir: &ModelDir) -> Result<(Option<SpladePoolingMode>, Option<SpladeActivation>)> {
    let Some(c) = dir.json("1_SpladePooling/config.json")? else {
        return Ok((None, None));
    };
    let file = dir.dir.join("1_SpladePooling/config.json");
    let pooling = match c.get("pooling_strategy").and_then(Value::as_str) {
        None => None,
        Some("max") => Some(SpladePoolingMode::Max),
        Some("sum") => Some(SpladePoolingMode::Sum),
        Some(other) => {
            return Err(Error::model(
                &file,
                format!("pooling_strategy '{other}' is not max or sum"),
            ))
        }
    };
    let activation = match c.get("activation_function").and_then(Value::as_str) {
        None => None,
        Some("relu") => Some(SpladeActivation::Relu),
        Some("log1p_relu") => Some(SpladeActivation::Log1pRelu),
        Some(other) => {
            return Err(Error::model(
                &file,
                format!("activation_function '{other}' is not relu or log1p_relu"),
            ))
        }
    };
    Ok((pooling, activation))
}

pub struct SparseTask {
    tokenizer: TextTokenizer,
    /// The prompt put before every input.
    prompt: Option<crate::task::prompt::Prompt>,
    /// The output read: `logits` `[batch, sequence, vocabulary]`, or `sparse_embedding`
    /// `[batch, vocabulary]` pooled in the graph.
    output: String,
    pre_pooled: bool,
    pooling: SpladePoolingMode,
    activation: SpladeActivation,
    vocab: usize,
    max_active_dims: Option<usize>,
    top_tokens: Option<usize>,
    column: String,
    chunking: Option<SparseChunking>,
}

/// The length the sparse task cuts texts (or passages) at: `max_length`, else
/// sentence-transformers' `max_seq_length`, at most the model's limit.
fn max_length(cfg: &SparseConfig, dir: &ModelDir) -> Result<usize> {
    Ok(match cfg.max_length {
        Some(m) => m,
        None => {
            let model_len = default_max_length(dir);
            dir.st_max_seq_length()?
                .map_or(model_len, |m| m.min(model_len))
        }
    })
}

pub(crate) fn check_settings(cfg: &SparseConfig) -> Result<()> {
    if cfg.max_active_dims == Some(0) {
        return Err(Error::config(
            "tasks.sparse.max_active_dims is 0: give at least 1, or leave it out to keep every weight",
        ));
    }
    if let Some(c) = &cfg.chunking {
        if cfg.top_tokens.is_some() && !c.document_embedding {
            return Err(Error::config(
                "tasks.sparse.top_tokens lists the document vector's tokens: with tasks.sparse.chunking it needs chunking.document_embedding: true (or leave top_tokens out)",
            ));
        }
        if c.document_embedding && c.column == cfg.column {
            return Err(Error::config(format!(
                "tasks.sparse.chunking.column and tasks.sparse.column are both '{}'; give them different names",
                c.column
            )));
        }
    }
    if cfg.top_tokens == Some(0) {
        return Err(Error::config(
            "tasks.sparse.top_tokens is 0: give at least 1, or leave it out",
        ));
    }
    Ok(())
}

/// The prompt `tasks.sparse` runs with.
fn resolve_prompt(
    cfg: &SparseConfig,
    dir: &ModelDir,
) -> Result<Option<crate::task::prompt::Prompt>> {
    crate::task::prompt::resolve(
        "sparse",
        cfg.prompt.as_deref(),
        cfg.prompt_name.as_deref(),
        dir,
    )
}

impl SparseTask {
    /// The prompt put before every input.
    pub fn prompt(&self) -> Option<&crate::task::prompt::Prompt> {
        self.prompt.as_ref()
    }

    pub fn new(cfg: &SparseConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        check_settings(cfg)?;
        let pre_pooled = model.output_names.iter().any(|n| n == "sparse_embedding");
        let output = if pre_pooled {
            "sparse_embedding"
        } else {
            "logits"
        };
        let rank = if pre_pooled { 2 } else { 3 };
        if !model.output_names.iter().any(|n| n == output)
            || model.output_rank(output).is_some_and(|r| r != rank)
        {
            return Err(Error::model(
                &dir.onnx,
                format!(
                    "tasks.sparse needs a masked-language model whose 'logits' are [batch, sequence, vocabulary], or a graph with 'sparse_embedding' [batch, vocabulary] (outputs: {}); export the ...ForMaskedLM head (optimum's fill-mask export does)",
                    model.output_names.join(", ")
                ),
            ));
        }
        let config_vocab = dir
            .config
            .as_ref()
            .and_then(|c| c.get("vocab_size"))
            .and_then(Value::as_u64)
            .map(|v| v as usize);
        let vocab = match (model.output_last_dim(output), config_vocab) {
            (Some(w), Some(v)) if w != v => {
                return Err(Error::model(
                    &dir.dir,
                    format!("the logits have {w} entries per token but config.json's vocab_size is {v}: this is a token classifier, not a masked-language model (configure it under tasks.ner)"),
                ))
            }
            (Some(w), _) => w,
            (None, Some(v)) => v,
            (None, None) => {
                return Err(Error::model(
                    &dir.dir,
                    "cannot tell the vocabulary size: the logits have a dynamic last dimension and config.json has no vocab_size",
                ))
            }
        };
        let (st_pooling, st_activation) = splade_config(dir)?;
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
        let prompt = resolve_prompt(cfg, dir)?;
        let chunking = match &cfg.chunking {
            None => None,
            Some(c) => Some(SparseChunking {
                passages: Passages::new(
                    "sparse",
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
        Ok(SparseTask {
            tokenizer,
            prompt,
            output: output.to_string(),
            pre_pooled,
            pooling: cfg.pooling.or(st_pooling).unwrap_or(SpladePoolingMode::Max),
            activation: cfg
                .activation
                .or(st_activation)
                .unwrap_or(SpladeActivation::Relu),
            vocab,
            max_active_dims: cfg.max_active_dims,
            top_tokens: cfg.top_tokens,
            column: cfg.column.clone(),
            chunking,
        })
    }

    /// The SPLADE pooling this task applies, as a graph records it (`models optimize --pool`).
    pub fn graph_pooling(&self) -> crate::model::precision::GraphPooling {
        crate::model::precision::GraphPooling {
            modes: vec![match self.pooling {
                SpladePoolingMode::Max => "splade_max".to_string(),
                SpladePoolingMode::Sum => "splade_sum".to_string(),
            }],
            normalize: false,
            activation: Some(
                match self.activation {
                    SpladeActivation::Relu => "relu",
                    SpladeActivation::Log1pRelu => "log1p_relu",
                }
                .to_string(),
            ),
        }
    }

    /// Whether the graph returns pooled vectors (`sparse_embedding`) rather than logits.
    pub fn pre_pooled(&self) -> bool {
        self.pre_pooled
    }

    fn activate(&self, x: f32) -> f32 {
        let v = x.max(0.0).ln_1p();
        match self.activation {
            SpladeActivation::Relu => v,
            SpladeActivation::Log1pRelu => v.ln_1p(),
        }
    }

    /// The sparse vector of one row of logits (`tokens` x `vocab`, the first `n` real).
    fn pool(&self, logits: &[f32], n: usize, cap: Option<usize>) -> SparseVector {
        let vocab = self.vocab;
        let mut pooled = vec![0f32; vocab];
        match self.pooling {
            SpladePoolingMode::Max => {
                let mut best = vec![f32::NEG_INFINITY; vocab];
                for t in 0..n {
                    for (b, &x) in best.iter_mut().zip(&logits[t * vocab..(t + 1) * vocab]) {
                        *b = b.max(x);
                    }
                }
                for (p, b) in pooled.iter_mut().zip(best) {
                    *p = if n == 0 { 0.0 } else { self.activate(b) };
                }
            }
            SpladePoolingMode::Sum => {
                for t in 0..n {
                    for (p, &x) in pooled.iter_mut().zip(&logits[t * vocab..(t + 1) * vocab]) {
                        if x > 0.0 {
                            *p += self.activate(x);
                        }
                    }
                }
            }
        }
        self.prune(&pooled, cap)
    }

    /// The non-zero entries of a pooled vector, cut to `max_active_dims`.
    fn prune(&self, pooled: &[f32], cap: Option<usize>) -> SparseVector {
        let indices: Vec<u32> = (0..pooled.len() as u32)
            .filter(|&i| pooled[i as usize] != 0.0)
            .collect();
        let values = indices.iter().map(|&i| pooled[i as usize]).collect();
        cut(SparseVector { indices, values }, cap)
    }

    /// One vector per feature of a batch, cut to `cap` weights.
    fn vectors(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
        cap: Option<usize>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (shape, data) = outputs.f32(&self.output)?;
        let rows = features.len();
        if self.pre_pooled {
            if shape != [rows, self.vocab] {
                return Err(Error::Inference(format!(
                    "output 'sparse_embedding' has shape {shape:?}, expected [{rows}, {}]",
                    self.vocab
                )));
            }
            return Ok((0..rows)
                .map(|r| {
                    let v = self.prune(&data[r * self.vocab..(r + 1) * self.vocab], cap);
                    if v.values.iter().any(|x| !x.is_finite()) {
                        Err("the model produced non-finite weights".to_string())
                    } else {
                        Ok(TaskOutput::Sparse(v))
                    }
                })
                .collect());
        }
        if shape.len() != 3
            || shape[0] != rows
            || shape[1] != batch.seq_len
            || shape[2] != self.vocab
        {
            return Err(Error::Inference(format!(
                "output 'logits' has shape {shape:?}, expected [{rows}, {}, {}]",
                batch.seq_len, self.vocab
            )));
        }
        let per_row = shape[1] * shape[2];
        Ok((0..rows)
            .map(|r| {
                let logits = &data[r * per_row..(r + 1) * per_row];
                // Right padding: the mask's real tokens come first.
                let n = batch.mask(r).iter().filter(|&&m| m != 0).count();
                let v = self.pool(logits, n, cap);
                if v.values.iter().any(|x| !x.is_finite()) {
                    Err("the model produced non-finite weights".to_string())
                } else {
                    Ok(TaskOutput::Sparse(v))
                }
            })
            .collect())
    }

    /// The column field of vectors, with the vocabulary size (and `max_active_dims`) as metadata.
    fn vector_field(&self, name: &str, nullable: bool) -> Field {
        let mut meta = std::collections::HashMap::from([(
            SPARSE_DIMENSIONS_KEY.to_string(),
            self.vocab.to_string(),
        )]);
        if let Some(k) = self.max_active_dims {
            meta.insert(SPARSE_MAX_ACTIVE_KEY.to_string(), k.to_string());
        }
        Field::new(name, DataType::Struct(Self::vector_fields()), nullable).with_metadata(meta)
    }

    /// A passage: `{index, start, end, sparse}`.
    fn passage_fields(&self) -> Fields {
        Fields::from(vec![
            Field::new("index", DataType::Int32, false),
            Field::new("start", DataType::Int64, false),
            Field::new("end", DataType::Int64, false),
            self.vector_field(PASSAGE_VECTOR_FIELD, false),
        ])
    }

    /// A document's vector from its passages': pooled per vocabulary entry as the model pools
    /// tokens (max or sum) from the passages' vectors before `max_active_dims`, then cut to it;
    /// `None` without passages.
    fn document_vector(&self, passages: &[SparsePassage]) -> Option<SparseVector> {
        if passages.is_empty() {
            return None;
        }
        let mut merged: std::collections::BTreeMap<u32, f32> = Default::default();
        for p in passages {
            let v = p.uncut.as_ref().unwrap_or(&p.vector);
            for (&i, &x) in v.indices.iter().zip(&v.values) {
                let e = merged.entry(i).or_insert(0.0);
                *e = match self.pooling {
                    SpladePoolingMode::Max => e.max(x),
                    SpladePoolingMode::Sum => *e + x,
                };
            }
        }
        let (indices, values): (Vec<u32>, Vec<f32>) = merged.into_iter().unzip();
        Some(cut(SparseVector { indices, values }, self.max_active_dims))
    }

    /// The `{indices, values}` struct array of `vectors` (null entries: null rows).
    fn vector_array(
        &self,
        vectors: &[Option<SparseVector>],
        nullable: bool,
    ) -> Result<StructArray> {
        let mut indices = ListBuilder::new(UInt32Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::UInt32,
            false,
        )));
        let mut values = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Float32,
            false,
        )));
        for v in vectors {
            if let Some(v) = v {
                indices.values().append_slice(&v.indices);
                values.values().append_slice(&v.values);
            }
            // A null row's lists are empty (valid), the struct's null masks them.
            indices.append(true);
            values.append(true);
        }
        let nulls = nullable
            .then(|| arrow::buffer::NullBuffer::from_iter(vectors.iter().map(Option::is_some)));
        StructArray::try_new(
            Self::vector_fields(),
            vec![Arc::new(indices.finish()), Arc::new(values.finish())],
            nulls,
        )
        .map_err(|e| Error::Inference(e.to_string()))
    }

    /// The vector column and, with `top_tokens`, its tokens column.
    fn vector_columns(
        &self,
        vectors: &[Option<SparseVector>],
        nullable: bool,
    ) -> Result<Vec<ArrayRef>> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.vector_array(vectors, nullable)?)];
        if let Some(k) = self.top_tokens {
            let mut tokens = list_of_structs_builder(Self::token_fields());
            for v in vectors {
                let Some(v) = v else {
                    tokens.append(true); // no document vector: no tokens
                    continue;
                };
                let mut order: Vec<usize> = (0..v.indices.len()).collect();
                order.sort_by(|&a, &b| v.values[b].total_cmp(&v.values[a]).then(a.cmp(&b)));
                let sb = tokens.values();
                for &i in order.iter().take(k) {
                    sb.field_builder::<StringBuilder>(0)
                        .expect("token")
                        .append_value(self.tokenizer.id_to_token(v.indices[i]));
                    sb.field_builder::<Float32Builder>(1)
                        .expect("weight")
                        .append_value(v.values[i]);
                    sb.append(true);
                }
                tokens.append(true);
            }
            cols.push(Arc::new(tokens.finish()));
        }
        Ok(cols)
    }

    fn vector_fields() -> Fields {
        Fields::from(vec![
            Field::new(
                "indices",
                DataType::List(Arc::new(Field::new("item", DataType::UInt32, false))),
                false,
            ),
            Field::new(
                "values",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
                false,
            ),
        ])
    }

    fn token_fields() -> Fields {
        Fields::from(vec![
            Field::new("token", DataType::Utf8, false),
            Field::new("weight", DataType::Float32, false),
        ])
    }
}

impl Task for SparseTask {
    fn name(&self) -> &'static str {
        "sparse"
    }

    fn fields(&self) -> Vec<FieldRef> {
        let mut v: Vec<FieldRef> = Vec::new();
        if let Some(c) = &self.chunking {
            v.push(list_of_structs(&c.column, self.passage_fields()));
        }
        if self.chunking.as_ref().is_none_or(|c| c.document) {
            // A document vector is null for a text with no passages.
            v.push(Arc::new(
                self.vector_field(&self.column, self.chunking.is_some()),
            ));
            if self.top_tokens.is_some() {
                v.push(list_of_structs(
                    &format!("{}_tokens", self.column),
                    Self::token_fields(),
                ));
            }
        }
        v
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
            None => super::prompted_featurized(
                chunk,
                cache,
                &self.tokenizer,
                self.prompt.as_ref().map(|p| p.text.as_str()),
            ),
        }
    }

    fn combine(&self, mut parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        if self.chunking.is_none() {
            return match parts.len() {
                1 => Ok(parts.remove(0)),
                n => Err(format!("internal: {n} results for one record")),
            };
        }
        let mut all = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                TaskOutput::SparseChunks(c) => all.extend(c),
                other => return Err(format!("internal: sparse passage got {other:?}")),
            }
        }
        Ok(TaskOutput::SparseChunks(all))
    }

    fn empty_result(&self) -> Option<TaskOutput> {
        self.chunking
            .as_ref()
            .map(|_| TaskOutput::SparseChunks(Vec::new()))
    }

    fn accepts_graph_pooling(
        &self,
        pooling: &crate::model::precision::GraphPooling,
    ) -> std::result::Result<(), String> {
        let want = self.graph_pooling();
        if *pooling != want {
            return Err(format!(
                "the graph computes {pooling} but tasks.sparse asks for {want}; set tasks.sparse.pooling / activation to match, or make the variant again with `bertflow models optimize --pool` (it pools as the model directory says)"
            ));
        }
        Ok(())
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let Some(c) = &self.chunking else {
            return self.vectors(features, batch, outputs, self.max_active_dims);
        };
        // The document vector pools the passages' vectors before they are cut.
        let keep_uncut = c.document && self.max_active_dims.is_some();
        let cap = if keep_uncut {
            None
        } else {
            self.max_active_dims
        };
        let vectors = self.vectors(features, batch, outputs, cap)?;
        Ok(vectors
            .into_iter()
            .zip(features)
            .map(|(r, f)| {
                r.and_then(|o| match o {
                    TaskOutput::Sparse(v) => {
                        let (start, end) = Passages::span(f);
                        let (vector, uncut) = if keep_uncut {
                            (cut(v.clone(), self.max_active_dims), Some(v))
                        } else {
                            (v, None)
                        };
                        Ok(TaskOutput::SparseChunks(vec![SparsePassage {
                            index: f.part as u32,
                            start,
                            end,
                            vector,
                            uncut,
                        }]))
                    }
                    other => Err(format!("internal: sparse got {other:?}")),
                })
            })
            .collect())
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        let mut vectors: Vec<(&SparseVector, &SparseVector)> = Vec::new();
        for (a, b) in pairs {
            match (a, b) {
                (TaskOutput::Sparse(x), TaskOutput::Sparse(y)) => vectors.push((x, y)),
                (TaskOutput::SparseChunks(x), TaskOutput::SparseChunks(y)) => {
                    vectors.extend(x.iter().zip(y).map(|(p, q)| (&p.vector, &q.vector)))
                }
                _ => {}
            }
        }
        if vectors.is_empty() {
            return;
        }
        let cos: Vec<f64> = vectors.iter().map(|(x, y)| x.cosine(y)).collect();
        figures.min_cosine = cos.iter().copied().reduce(f64::min);
        figures.mean_cosine = Some(cos.iter().sum::<f64>() / cos.len() as f64);
        let overlap: f64 = vectors.iter().map(|(x, y)| x.top_overlap(y, 32)).sum();
        figures.top_overlap = Some(overlap / vectors.len() as f64);
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let Some(c) = &self.chunking else {
            let mut vectors = Vec::with_capacity(outputs.len());
            for o in outputs {
                let TaskOutput::Sparse(v) = o else {
                    return Err(Error::Inference(format!("internal: sparse got {o:?}")));
                };
                vectors.push(Some(v));
            }
            return self.vector_columns(&vectors, false);
        };
        let mut lengths = Vec::with_capacity(outputs.len());
        let (mut index, mut start, mut end, mut flat) = (vec![], vec![], vec![], vec![]);
        let mut docs = Vec::new();
        for o in outputs {
            let TaskOutput::SparseChunks(passages) = o else {
                return Err(Error::Inference(format!("internal: sparse got {o:?}")));
            };
            lengths.push(passages.len());
            if c.document {
                docs.push(self.document_vector(&passages));
            }
            for p in passages {
                index.push(p.index as i32);
                start.push(p.start as i64);
                end.push(p.end as i64);
                flat.push(Some(p.vector));
            }
        }
        let vectors = self.vector_array(&flat, false)?;
        let structs = StructArray::try_new(
            self.passage_fields(),
            vec![
                Arc::new(arrow::array::Int32Array::from(index)),
                Arc::new(arrow::array::Int64Array::from(start)),
                Arc::new(arrow::array::Int64Array::from(end)),
                Arc::new(vectors),
            ],
            None,
        )
        .map_err(|e| Error::Inference(e.to_string()))?;
        let list = arrow::array::ListArray::try_new(
            Arc::new(Field::new(
                "item",
                DataType::Struct(self.passage_fields()),
                false,
            )),
            arrow::buffer::OffsetBuffer::from_lengths(lengths),
            Arc::new(structs),
            None,
        )
        .map_err(|e| Error::Inference(e.to_string()))?;
        let mut cols: Vec<ArrayRef> = vec![Arc::new(list)];
        if c.document {
            cols.extend(self.vector_columns(&docs, true)?);
        }
        Ok(cols)
    }
}

impl crate::task::config::TaskSpec for SparseConfig {
    crate::task::config::task_spec_basics!("sparse");

    fn preflight(&self, dir: &ModelDir) -> Result<()> {
        check_settings(self)?;
        resolve_prompt(self, dir)?;
        if let Some(c) = &self.chunking {
            crate::task::passages::check("sparse", c, max_length(self, dir)?, &dir.dir)?;
        }
        Ok(())
    }

    fn passages_column(&self) -> Option<String> {
        self.chunking.as_ref().map(|c| c.column.clone())
    }

    fn load(&self, dir: &ModelDir, model: &OnnxModel) -> Result<Arc<dyn Task>> {
        Ok(Arc::new(SparseTask::new(self, dir, model)?))
    }
}

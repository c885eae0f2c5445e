//! Tasks: what a model's outputs mean. A task tokenizes records into model features, turns the
//! outputs of one batch into per-feature results, combines the results of a record's features,
//! and builds the Arrow columns of the output.

pub mod chunking;
pub mod config;
pub mod cross_encoder;
pub mod embed;
pub mod ner;
pub mod pairs;
pub mod passages;
pub mod prompt;
pub mod qa;
pub mod quality;
pub mod sentiment;
pub mod sparse;
pub mod zero_shot;

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::FieldRef;
use tokenizers::utils::parallelism::MaybeParallelIterator;

use crate::batch::{Feature, PaddedBatch};
use crate::error::Result;
use crate::model::tokenizer::TokenCache;
use crate::model::{ModelOutputs, OnnxModel};
use crate::record::{Chunk, RecordError};

pub use self::embed::EmbedTask;
pub use self::ner::{Entity, NerTask};
pub use self::qa::{Answer, QaTask};
pub use self::sentiment::SentimentTask;

/// The result of one task for one record (or one feature of it).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutput {
    Embedding(Vec<f32>),
    /// Scores of every label (after the classification function).
    Classes(Vec<f32>),
    Entities(Vec<Entity>),
    /// Candidate answers of one window of one question.
    AnswerWindow(qa::WindowAnswers),
    /// Final answers of every question of a record.
    Answers(Vec<Answer>),
    /// Passage embeddings of a record (one per feature, then all of the record in order).
    Chunks(Vec<embed::ChunkEmbedding>),
    /// Scores of a record against other texts (zero-shot labels, cross-encoder queries): one
    /// pair per feature, then all of the record's in output order.
    Scored(Vec<Scored>),
    /// A sparse (SPLADE) vector.
    Sparse(sparse::SparseVector),
    /// Sparse vectors of a record's passages (one per feature, then all of the record in order).
    SparseChunks(Vec<sparse::SparsePassage>),
}

/// A record's score against one other text (a zero-shot label, a cross-encoder query).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The label or query.
    pub name: std::sync::Arc<str>,
    pub score: f32,
    /// The pair's logits (before a record's pairs are combined), or a multi-logit model's
    /// scores per class.
    pub logits: Vec<f32>,
}

/// Model features of a chunk for one task, with the records that could not be featurized.
#[derive(Debug, Default)]
pub struct Featurized {
    pub features: Vec<Feature>,
    pub errors: Vec<RecordError>,
    /// Records whose input was cut (or split into windows) at the task's maximum length.
    pub truncated: usize,
}

pub trait Task: Send + Sync {
    /// Task name as used in the configuration (`embed`, `sentiment`, `ner`, `qa`).
    fn name(&self) -> &'static str;

    /// Output columns this task adds.
    fn fields(&self) -> Vec<FieldRef>;

    /// The tokenizer of the task's model.
    fn tokenizer(&self) -> &crate::model::TextTokenizer;

    /// Whether the task maps tokens back to the text (entity spans, answers, passages); a task
    /// that does not lets tokenization skip offset tracking (same token ids).
    fn needs_offsets(&self) -> bool {
        true
    }

    /// Padding token id for this task's tokenizer.
    fn pad_id(&self) -> u32 {
        self.tokenizer().pad_id
    }

    /// The model outputs post-processing reads; only these are fetched from the model.
    fn model_outputs(&self) -> Vec<String>;

    /// Tokenize the records of a chunk into features. Records whose text is `None` already
    /// failed and are skipped. `cache` shares single-text tokenization between tasks. The
    /// default reads each record's text alone (one feature per window); a task that reads a
    /// text pair (a question and its context) or cuts texts otherwise overrides it.
    fn featurize(&self, chunk: &Chunk, cache: &TokenCache) -> Featurized {
        single_text_featurized(chunk, cache, self.tokenizer())
    }

    /// Post-process one batch: one result per feature in `features` (the batch's rows, in order).
    /// An `Err(String)` fails that record alone; a returned `Error` fails the batch.
    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>>;

    /// Combine the results of a record's features (in feature order) into the record's result.
    fn combine(&self, mut parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        match parts.len() {
            1 => Ok(parts.remove(0)),
            n => Err(format!("internal: {n} results for one record")),
        }
    }

    /// Whether this task can read a graph that ends in `pooling` (an embedding variant made with
    /// `models optimize --pool`); `Err` says why not.
    fn accepts_graph_pooling(
        &self,
        pooling: &crate::model::precision::GraphPooling,
    ) -> std::result::Result<(), String> {
        Err(if pooling.is_sparse() {
            format!(
                "the graph ends in {pooling} (sparse vectors only): only tasks.sparse can use it"
            )
        } else {
            format!("the graph ends in {pooling} (sentence embeddings only): only tasks.embed can use it")
        })
    }

    /// The result of a record that has no features at all (an empty text cut into passages has
    /// none); `None`: such a record is an internal error.
    fn empty_result(&self) -> Option<TaskOutput> {
        None
    }

    /// Build this task's output columns from the results of the records written, in order.
    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>>;

    /// The quality guard's figures: this task's results with a precision variant scored against
    /// its fp32 results of the same records (pairs `(fp32, variant)`), with the measures of
    /// [`quality`].
    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures);
}

/// Build the task a configuration entry names, from its model directory and loaded session.
pub fn load(
    cfg: &dyn config::TaskSpec,
    dir: &crate::model::ModelDir,
    model: &OnnxModel,
) -> Result<Arc<dyn Task>> {
    cfg.load(dir, model)
}

/// A task with the model that serves it.
pub struct LoadedTask {
    pub task: Arc<dyn Task>,
    pub model: OnnxModel,
    /// The model's precision and, for a variant, its measured quality (`int8 (min cosine 0.99)`).
    pub precision: String,
}

/// A non-null `List<Struct{fields}>` column named `name` (entities, answers, ranked labels).
pub(crate) fn list_of_structs(name: &str, fields: arrow::datatypes::Fields) -> FieldRef {
    let item =
        arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Struct(fields), false);
    Arc::new(arrow::datatypes::Field::new(
        name,
        arrow::datatypes::DataType::List(Arc::new(item)),
        false,
    ))
}

/// A builder for a `List<Struct{fields}>` column whose items are not nullable.
pub(crate) fn list_of_structs_builder(
    fields: arrow::datatypes::Fields,
) -> arrow::array::ListBuilder<arrow::array::StructBuilder> {
    let item = arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Struct(fields.clone()),
        false,
    );
    arrow::array::ListBuilder::new(arrow::array::StructBuilder::from_fields(fields, 0))
        .with_field(Arc::new(item))
}

/// Softmax over `logits` with the maximum subtracted, in f32 (as transformers' pipelines do).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Index of the first maximum (numpy's `argmax`).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Features of a chunk for a task that reads each record's text alone (embed, sentiment, ner):
/// one feature per window, tokenization shared through `cache`.
pub(crate) fn single_text_featurized(
    chunk: &Chunk,
    cache: &TokenCache,
    tokenizer: &crate::model::TextTokenizer,
) -> Featurized {
    prompted_featurized(chunk, cache, tokenizer, None)
}

/// [`single_text_featurized`] with a prompt before every text ([`prompt`]): the prompted texts
/// are tokenized together (as sentence-transformers does), without character offsets.
pub(crate) fn prompted_featurized(
    chunk: &Chunk,
    cache: &TokenCache,
    tokenizer: &crate::model::TextTokenizer,
    prompt: Option<&str>,
) -> Featurized {
    let mut errors = Vec::new();
    let (features, truncated) = single_text_features(chunk, cache, tokenizer, prompt, &mut errors);
    Featurized {
        features,
        errors,
        truncated,
    }
}

/// Split a record's single-text tokenization into features, counting cut inputs.
fn single_text_features(
    chunk: &Chunk,
    cache: &TokenCache,
    tokenizer: &crate::model::TextTokenizer,
    prompt: Option<&str>,
    stage_errors: &mut Vec<RecordError>,
) -> (Vec<Feature>, usize) {
    let raw = match prompt {
        Some(p) => cache.raw_prompted(tokenizer, p, &chunk.texts, false),
        None => cache.raw(tokenizer, &chunk.texts),
    };
    // Truncation and special tokens per text, on the tokenizers library's thread pool (the raw
    // tokenization above already ran there); `TOKENIZERS_PARALLELISM=false` keeps it serial.
    let finished: Vec<Option<std::result::Result<crate::model::tokenizer::Tokenized, String>>> = (0
        ..chunk.texts.len())
        .into_maybe_par_iter()
        .map(|row| {
            chunk.texts[row]
                .as_ref()
                .map(|_| raw[row].clone().and_then(|e| tokenizer.finish(e)))
        })
        .collect();
    let mut features = Vec::with_capacity(chunk.texts.len());
    let mut truncated = 0;
    for (row, (text, done)) in chunk.texts.iter().zip(finished).enumerate() {
        let (Some(text), Some(done)) = (text, done) else {
            continue;
        };
        match done {
            Ok(t) => {
                truncated += t.truncated as usize;
                for (part, w) in t.windows.into_iter().enumerate() {
                    features.push(Feature {
                        row,
                        part,
                        encoding: w,
                        text: text.clone(),
                        question: None,
                    });
                }
            }
            Err(reason) => stage_errors.push(RecordError::new(
                row,
                crate::record::Stage::Tokenize,
                reason,
            )),
        }
    }
    (features, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(argmax(&p), 2);
        assert_eq!(argmax(&[0.5, 0.5]), 0);
        let big = softmax(&[1000.0, 1000.0]);
        assert_eq!(big, vec![0.5, 0.5]);
    }
}

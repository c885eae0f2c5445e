//! Configuration of the pair tasks: `tasks.zero_shot` and `tasks.cross_encoder`.

use serde::{Deserialize, Serialize};

crate::task::config::task_config! {
/// Zero-shot classification with an NLI model (transformers' `zero-shot-classification`
/// pipeline): any labels, no training. One model input per (record, label) pair.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotConfig {
    /// Model directory of a sequence-classification model trained on NLI: `model.onnx`,
    /// `tokenizer.json`, `config.json` whose `label2id` has an entailment label (a name starting
    /// with "entail").
    ///
    /// Type: path
    model,
    /// Numeric precision of the model (as for the other tasks); variants are judged by top-label
    /// agreement and score difference. See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// Candidate labels of every record. `labels` or `labels_column` is required.
    ///
    /// Default: `[]`
    #[serde(default)]
    pub labels: Vec<String>,
    /// Input column (or JSON field) with more labels per record, comma-separated as the pipeline
    /// reads a string of labels (`"billing, shipping"`); they follow `labels`. A null value, or
    /// a record left with no label, is an error of this task for that record.
    #[serde(default)]
    pub labels_column: Option<String>,
    /// The hypothesis each label becomes; `{}` (or `{0}`) stands for the label, `{{` and `}}`
    /// for braces.
    #[serde(default = "default_template")]
    pub hypothesis_template: String,
    /// `false`: scores over a record's labels sum to 1 (one label is true). `true`: each label
    /// is scored alone (entailment against contradiction).
    #[serde(default)]
    pub multi_label: bool,
    /// Write at most this many labels, best first.
    ///
    /// Default: every label
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Write only labels scoring at least this.
    ///
    /// Default: none
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Tokens per (text, hypothesis) pair; only the text is cut. Default: `model_max_length` of
    /// `tokenizer_config.json`, capped by the model's positions (512 when unknown).
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Output column: a list of `{label, score}`, best first.
    #[serde(default = "default_zero_shot_column")]
    pub column: String,
}
}

fn default_template() -> String {
    "This example is {}.".into()
}
fn default_zero_shot_column() -> String {
    "zero_shot".into()
}

/// The function applied to a cross-encoder's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// As sentence-transformers: the `activation_fn` of `config.json`'s `sentence_transformers`
    /// section, else sigmoid for one logit and identity for several.
    Auto,
    Sigmoid,
    Identity,
    Tanh,
    /// Softmax over the classes (sentence-transformers' `apply_softmax=True`); several logits only.
    Softmax,
}

crate::task::config::task_config! {
/// Relevance of every record to standing queries with a cross-encoder (sentence-transformers
/// `CrossEncoder.predict`; rerankers are cross-encoders). One model input per (query, record)
/// pair.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrossEncoderConfig {
    /// Model directory of a sequence-classification model trained on (query, text) pairs:
    /// `model.onnx`, `tokenizer.json`, `config.json` (its `sentence_transformers.activation_fn`
    /// is read).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model (as for the other tasks); variants are judged by
    /// best-query agreement and score difference. See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// Queries every record is scored against. `queries` or `query_column` is required.
    ///
    /// Default: `[]`
    #[serde(default)]
    pub queries: Vec<String>,
    /// Input column (or JSON field) with one more query per record (after `queries`). A null or
    /// empty value is an error of this task for that record.
    #[serde(default)]
    pub query_column: Option<String>,
    /// Function applied to the logits.
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Write only the queries whose score is at least this.
    ///
    /// Default: none
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Tokens per (query, text) pair; the longer of the two is cut first. Default:
    /// `model_max_length` of `tokenizer_config.json`, capped by the model's positions (512 when
    /// unknown).
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Output column: a list of `{query, score}` in query order (a model with several logits
    /// adds `label`, the best class, and `scores`, every class's score).
    #[serde(default = "default_cross_column")]
    pub column: String,
}
}

fn default_activation() -> Activation {
    Activation::Auto
}
fn default_cross_column() -> String {
    "cross_scores".into()
}

//! Configuration of `tasks.sparse` (SPLADE sparse embeddings).

use serde::{Deserialize, Serialize};

/// Pooling over tokens of a SPLADE model (sentence-transformers' `SpladePooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpladePoolingMode {
    /// The largest value per vocabulary entry (SPLADE v2 and later).
    Max,
    /// The sum over tokens (the first SPLADE).
    Sum,
}

/// The activation of a SPLADE model before pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpladeActivation {
    /// log(1 + relu(x)).
    Relu,
    /// log(1 + log(1 + relu(x))) (OpenSearch's SPLADE models).
    Log1pRelu,
}

crate::task::config::task_config! {
/// Sparse lexical embeddings for hybrid search (SPLADE), as sentence-transformers'
/// `SparseEncoder.encode`: a masked-language model's logits, activated and pooled over the
/// tokens of the attention mask, one weight per vocabulary entry, most of them zero.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparseConfig {
    /// Model directory of a masked-language model (`...ForMaskedLM` export whose `logits` are
    /// `[batch, sequence, vocabulary]`): `model.onnx`, `tokenizer.json`, `config.json`;
    /// optional `1_SpladePooling/config.json` and `sentence_bert_config.json`
    /// (sentence-transformers layout).
    ///
    /// Type: path
    model,
    /// Numeric precision of the model (as for the other tasks); variants are judged by the
    /// cosine of the sparse vectors. See [performance.md](performance.md).
    ///
    /// Default: fp32
    precision,
    /// `max` or `sum` over tokens. Default: `pooling_strategy` of
    /// `1_SpladePooling/config.json`, else `max`.
    ///
    /// Default: from model
    #[serde(default)]
    pub pooling: Option<SpladePoolingMode>,
    /// `relu` (log(1 + relu)) or `log1p_relu`. Default: `activation_function` of
    /// `1_SpladePooling/config.json`, else `relu`.
    ///
    /// Default: from model
    #[serde(default)]
    pub activation: Option<SpladeActivation>,
    /// Keep only the N largest weights of each vector (sentence-transformers'
    /// `max_active_dims`). Needed for a Postgres `sparsevec` index (at most 1,000).
    ///
    /// Default: every non-zero weight
    #[serde(default)]
    pub max_active_dims: Option<usize>,
    /// Tokens per input, special tokens included. Default: `max_seq_length` of
    /// `sentence_bert_config.json`, else `model_max_length`, capped by the model's positions.
    ///
    /// Default: from model
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Also write the N largest weights as tokens (`<column>_tokens`: a list of `{token,
    /// weight}`, largest first), to inspect what a vector holds.
    ///
    /// Default: none
    #[serde(default)]
    pub top_tokens: Option<usize>,
    /// Text put before every input, as `SparseEncoder.encode(prompt=...)`; `""`: none. With
    /// `chunking`, every passage gets it.
    ///
    /// Default: from `prompt_name`
    #[serde(default)]
    pub prompt: Option<String>,
    /// One of the model's prompts by name (`prompts` of `config_sentence_transformers.json`), as
    /// `SparseEncoder`'s `prompt_name`; an unknown name is refused, naming the model's prompts.
    ///
    /// Default: the model's `default_prompt_name`, else no prompt
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Output column: `{indices: [uint32], values: [float32]}`, the active vocabulary entries in
    /// ascending order and their weights. With `chunking`, it holds the document vector, and only
    /// when `chunking.document_embedding` is set.
    #[serde(default = "default_sparse_column")]
    pub column: String,
    /// Cut long texts into passages and write one sparse vector per passage, as
    /// `tasks.embed.chunking` does: a list column `chunking.column` of `{index, start, end,
    /// sparse}` (`start`/`end`: character offsets into the text). `document_embedding` also
    /// writes the document vector in `column`: the passages' vectors pooled as the model pools
    /// tokens (max or sum per vocabulary entry), then cut to `max_active_dims`.
    ///
    /// Default: none (texts are cut at max_length)
    #[serde(default)]
    pub chunking: Option<super::ChunkingConfig>,
}
}

fn default_sparse_column() -> String {
    "sparse".into()
}

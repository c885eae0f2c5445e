//! The micro-batcher: sort a window of tokenized inputs by length, cut batches by a token budget
//! and a batch size, and pad each batch only to its own longest sequence. Results are written
//! back by each input's index, which restores input order.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenizers::Encoding;

/// How records are grouped into windows and model batches.
///
/// Tokenization runs on its own thread and uses the tokenizers library's thread pool for a
/// window's texts; `RAYON_NUM_THREADS` sets that pool's size.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most sequences in one model call. When unset: 16 on CPU, 128 when the models run on the
    /// CUDA execution provider (each the fastest measured, docs/benchmarks.md).
    #[serde(default)]
    pub max_batch_size: Option<usize>,
    /// Most padded tokens (sequences × longest sequence) in one model call. A single sequence
    /// longer than this still runs, alone. When unset: 2048 on CPU (small batches keep activations
    /// in cache and peak memory low), 32768 on the CUDA execution provider.
    #[serde(default)]
    pub max_batch_tokens: Option<usize>,
    /// Records read, tokenized and sorted by length together; also the Parquet read batch size, and
    /// with a Kafka source the most records in one micro-batch (which also closes after
    /// `source.kafka.max_wait_ms`; with `exactly_once`, one transaction). Larger windows give less
    /// padding and use more memory. With a pair task (`zero_shot`, `cross_encoder`) it counts
    /// model inputs: a window holds `window_records / n` records when each record becomes `n`
    /// (label or query) pairs.
    #[serde(default = "default_window_records")]
    pub window_records: usize,
    /// Windows buffered between two stages. Bounds memory; 2 lets tokenization of the next window
    /// overlap inference of the current one. With a Kafka source, a full queue pauses the
    /// partitions (backpressure).
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
}

/// The batch limits a run uses: the configured ones, or the defaults of the execution provider
/// the models run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    /// Which provider's defaults filled in a limit that was not configured (`None` when both
    /// were configured).
    pub defaults_of: Option<&'static str>,
}

/// Fastest measured on CPU (docs/benchmarks.md, 2-16 threads): small batches keep activations in
/// cache and peak memory low.
pub const CPU_BATCH_DEFAULTS: (usize, usize) = (16, 2048);
/// Fastest measured on an H200 for MiniLM and BERT-base in a sweep of 32..256 sequences
/// (bench/results/gpu-h200): larger batches keep the GPU busy between kernel launches.
pub const CUDA_BATCH_DEFAULTS: (usize, usize) = (128, 32768);

impl BatchingConfig {
    /// The limits for models running on `provider` ("cuda" or "cpu"), configured values first.
    pub fn limits(&self, provider: &str) -> BatchLimits {
        let (name, (size, tokens)) = if provider == "cuda" {
            ("cuda", CUDA_BATCH_DEFAULTS)
        } else {
            ("cpu", CPU_BATCH_DEFAULTS)
        };
        BatchLimits {
            max_batch_size: self.max_batch_size.unwrap_or(size),
            max_batch_tokens: self.max_batch_tokens.unwrap_or(tokens),
            defaults_of: (self.max_batch_size.is_none() || self.max_batch_tokens.is_none())
                .then_some(name),
        }
    }
}

impl std::fmt::Display for BatchLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "at most {} sequences / {} tokens",
            self.max_batch_size, self.max_batch_tokens
        )?;
        if let Some(p) = self.defaults_of {
            write!(f, " ({p} defaults)")?;
        }
        Ok(())
    }
}

fn default_window_records() -> usize {
    2048
}
fn default_queue_depth() -> usize {
    2
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_size: None,
            max_batch_tokens: None,
            window_records: default_window_records(),
            queue_depth: default_queue_depth(),
        }
    }
}

/// One model input derived from a record. A record yields one feature for most tasks, several
/// for windows over long texts or several questions.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Index of the record inside its chunk.
    pub row: usize,
    /// Which part of the record this is (task-defined: window, question).
    pub part: usize,
    pub encoding: Encoding,
    /// The record's text (offsets in `encoding` are character offsets into it).
    pub text: Arc<str>,
    /// The question asked of the text (question answering).
    pub question: Option<Arc<str>>,
}

/// Cut `lengths` (one per feature) into batches. Returns feature indices per batch; features are
/// taken longest first so that each batch holds sequences of similar length.
///
/// A batch holds at most `max_batch_size` features and at most `max_batch_tokens` padded tokens
/// (features x longest length), except that a single feature longer than the budget still forms
/// a batch of its own.
pub fn plan(lengths: &[usize], max_batch_size: usize, max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep input order.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for idx in order {
        let len = lengths[idx].max(1);
        let new_longest = longest.max(len);
        let fits = current.len() < max_batch_size.max(1)
            && new_longest * (current.len() + 1) <= max_batch_tokens;
        if !current.is_empty() && !fits {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(idx);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Model inputs for one batch, padded to the batch's longest sequence (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedBatch {
    pub rows: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// Real (unpadded) tokens in the batch.
    pub real_tokens: usize,
}

impl PaddedBatch {
    /// Pad the given encodings on the right with `pad_id`.
    pub fn new<'a>(encodings: impl IntoIterator<Item = &'a Encoding>, pad_id: u32) -> Self {
        let encs: Vec<&Encoding> = encodings.into_iter().collect();
        let rows = encs.len();
        let seq_len = encs.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut input_ids = vec![pad_id as i64; rows * seq_len];
        let mut attention_mask = vec![0i64; rows * seq_len];
        let mut token_type_ids = vec![0i64; rows * seq_len];
        let mut real_tokens = 0;
        for (r, e) in encs.iter().enumerate() {
            let base = r * seq_len;
            for (i, &id) in e.get_ids().iter().enumerate() {
                input_ids[base + i] = id as i64;
            }
            for (i, &m) in e.get_attention_mask().iter().enumerate() {
                attention_mask[base + i] = m as i64;
                real_tokens += m as usize;
            }
            for (i, &t) in e.get_type_ids().iter().enumerate() {
                token_type_ids[base + i] = t as i64;
            }
        }
        PaddedBatch {
            rows,
            seq_len,
            input_ids,
            attention_mask,
            token_type_ids,
            real_tokens,
        }
    }

    /// Tokens the model processes, padding included.
    pub fn padded_tokens(&self) -> usize {
        self.rows * self.seq_len
    }

    /// Attention mask of row `r`.
    pub fn mask(&self, r: usize) -> &[i64] {
        &self.attention_mask[r * self.seq_len..(r + 1) * self.seq_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_and_budgets_hold() {
        let lengths = [5, 300, 7, 7, 120, 1, 512, 33, 2, 64];
        let batches = plan(&lengths, 3, 600);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            assert!(b.len() <= 3);
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(longest * b.len() <= 600 || b.len() == 1, "{b:?}");
        }
        // Longest first.
        assert_eq!(batches[0], vec![6]);
    }

    #[test]
    fn oversize_feature_gets_own_batch() {
        let batches = plan(&[10, 1000, 10], 8, 100);
        assert!(batches.contains(&vec![1]));
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 3);
    }

    #[test]
    fn similar_lengths_group_together() {
        let lengths = [2, 100, 3, 101, 2, 99];
        let batches = plan(&lengths, 3, 10_000);
        assert_eq!(batches, vec![vec![3, 1, 5], vec![2, 0, 4]]);
    }

    #[test]
    fn empty_plan() {
        assert!(plan(&[], 4, 100).is_empty());
    }
}

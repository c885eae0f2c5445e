//! Tokenizer loading with explicit padding and truncation (the `tokenizer.json` files of many
//! packaged models carry baked-in settings that must not leak into batching).

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// A tokenizer configured for one task: no padding (the batcher pads), truncation at `max_length`.
pub struct TextTokenizer {
    inner: Tokenizer,
    pub pad_id: u32,
    pub max_length: usize,
}

/// One tokenized input and whether it was cut to `max_length`.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub encoding: Encoding,
    pub truncated: bool,
}

impl TextTokenizer {
    pub fn load(path: &Path, max_length: usize) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("cannot load tokenizer: {e}")))?;
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                ["[PAD]", "<pad>", "<PAD>", "[pad]"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
            })
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| {
                Error::model(path, format!("cannot set truncation to {max_length}: {e}"))
            })?;
        Ok(TextTokenizer {
            inner,
            pad_id,
            max_length,
        })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenize texts (with special tokens). A text the tokenizer rejects yields an error string
    /// for that text alone.
    pub fn encode_all(&self, texts: &[&str]) -> Vec<std::result::Result<Tokenized, String>> {
        let wrap = |e: Encoding| {
            let truncated = !e.get_overflowing().is_empty();
            let mut e = e;
            // The overflow pieces are not used; free them early.
            e.get_overflowing_mut().clear();
            Tokenized {
                encoding: e,
                truncated,
            }
        };
        match self.inner.encode_batch(texts.to_vec(), true) {
            Ok(encs) => encs.into_iter().map(|e| Ok(wrap(e))).collect(),
            // Find the offending text(s) one by one.
            Err(_) => texts
                .iter()
                .map(|t| {
                    self.inner
                        .encode(*t, true)
                        .map(wrap)
                        .map_err(|e| format!("tokenizer failed: {e}"))
                })
                .collect(),
        }
    }
}

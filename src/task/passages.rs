//! Passages of long texts (`tasks.*.chunking`): a text is tokenized once (very long texts in
//! segments), cut into passages at word, sentence or paragraph boundaries
//! ([`crate::task::chunking`]) and each passage becomes one model input (`Feature::part` = its
//! index). Tasks that write one result per passage (embed, sparse) share this.

use crate::batch::Feature;
use crate::error::{Error, Result};
use crate::model::tokenizer::TokenCache;
use crate::model::TextTokenizer;
use crate::record::{Chunk, RecordError, Stage};
use crate::task::chunking::{self, Boundary};
use crate::task::config::ChunkingConfig;
use crate::task::Featurized;

/// Texts longer than this (bytes) are tokenized in segments for chunking.
pub const SEGMENT_BYTES: usize = 64 * 1024;

/// Tokenize a text (no special tokens, no truncation) in segments of about
/// `segment_bytes` cut at whitespace, joined into one encoding with offsets into the whole
/// text and distinct word ids: the same tokens as one call (the tokenizer splits words at
/// whitespace anyway), with memory bounded by a segment.
pub fn encode_segmented(
    tokenizer: &TextTokenizer,
    text: &str,
    segment_bytes: usize,
) -> std::result::Result<tokenizers::Encoding, String> {
    let (mut ids, mut types, mut tokens, mut words, mut offsets, mut special, mut attention) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut byte = 0;
    let mut char_base = 0;
    let mut word_base = 0u32;
    while byte < text.len() {
        let mut end = (byte + segment_bytes.max(1)).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if end < text.len() {
            // Cut after the last whitespace of the segment, if it has one.
            if let Some(ws) = text[byte..end].rfind(char::is_whitespace) {
                let w = byte + ws;
                end = w + text[w..].chars().next().map_or(1, char::len_utf8);
            }
        }
        let piece = &text[byte..end];
        let e = tokenizer.encode_raw(&[piece]).remove(0)?;
        let mut max_word = None;
        for (i, &id) in e.get_ids().iter().enumerate() {
            ids.push(id);
            types.push(e.get_type_ids()[i]);
            tokens.push(e.get_tokens()[i].clone());
            let w = e.get_word_ids()[i].map(|w| w + word_base);
            max_word = max_word.max(w);
            words.push(w);
            let (a, b) = e.get_offsets()[i];
            offsets.push((a + char_base, b + char_base));
            special.push(e.get_special_tokens_mask()[i]);
            attention.push(e.get_attention_mask()[i]);
        }
        if let Some(m) = max_word {
            word_base = m + 1;
        }
        char_base += piece.chars().count();
        byte = end;
    }
    Ok(tokenizers::Encoding::new(
        ids,
        types,
        tokens,
        words,
        offsets,
        special,
        attention,
        Vec::new(),
        Default::default(),
    ))
}

/// Tokens `[first, last)` of an encoding (no special tokens) as an encoding of their own.
pub(super) fn slice_encoding(
    e: &tokenizers::Encoding,
    first: usize,
    last: usize,
) -> tokenizers::Encoding {
    let r = first..last;
    tokenizers::Encoding::new(
        e.get_ids()[r.clone()].to_vec(),
        e.get_type_ids()[r.clone()].to_vec(),
        e.get_tokens()[r.clone()].to_vec(),
        e.get_word_ids()[r.clone()].to_vec(),
        e.get_offsets()[r.clone()].to_vec(),
        e.get_special_tokens_mask()[r.clone()].to_vec(),
        e.get_attention_mask()[r].to_vec(),
        Vec::new(),
        Default::default(),
    )
}

/// A passage (`piece`, starting at character `start` of its text) tokenized after the prompt, as
/// sentence-transformers tokenizes `prompt + passage`; offsets point into the text, the prompt's
/// tokens get the empty span at the passage's start (so that [`Passages::span`] is the
/// passage's).
fn prompted_piece(
    tokenizer: &TextTokenizer,
    prompt: &str,
    piece: &str,
    start: usize,
) -> std::result::Result<tokenizers::Encoding, String> {
    let prompt_chars = prompt.chars().count();
    let mut e = tokenizer
        .encode_raw(&[&format!("{prompt}{piece}")])
        .remove(0)?;
    for o in e.get_offsets_mut() {
        *o = if o.0 < prompt_chars {
            (start, start)
        } else {
            (o.0 - prompt_chars + start, o.1 - prompt_chars + start)
        };
    }
    Ok(e)
}

/// A task's `chunking`, resolved against its model and tokenizer.
#[derive(Debug, Clone)]
pub struct Passages {
    /// Tokens per passage without the special tokens.
    pub budget: usize,
    pub overlap: usize,
    pub boundary: Boundary,
    /// Passages are slices of the text's tokens (else each passage is tokenized alone).
    pub slices: bool,
    /// The task's prompt, put before every passage (each passage is then tokenized with it).
    pub prompt: Option<String>,
}

/// The checks of `tasks.<task>.chunking` that need the model's limit but no session: the passage
/// length against `max_length`, the overlap against the passage length. Returns `max_tokens`.
pub fn check(
    task: &str,
    c: &ChunkingConfig,
    max_length: usize,
    model: &std::path::Path,
) -> Result<usize> {
    let max_tokens = c.max_tokens.unwrap_or(max_length);
    if max_tokens > max_length {
        return Err(Error::config(format!(
            "tasks.{task}.chunking.max_tokens is {max_tokens}, above the model's limit of {max_length} tokens ({}); lower it (or leave it out to use the limit)",
            model.display()
        )));
    }
    if c.overlap >= max_tokens {
        return Err(Error::config(format!(
            "tasks.{task}.chunking.overlap is {} but must be below max_tokens ({max_tokens})",
            c.overlap
        )));
    }
    Ok(max_tokens)
}

impl Passages {
    /// `tasks.<task>.chunking` for a model cutting at `max_length` tokens; with a prompt, each
    /// passage leaves room for the prompt's tokens.
    pub fn new(
        task: &str,
        c: &ChunkingConfig,
        max_length: usize,
        model: &std::path::Path,
        tokenizer: &TextTokenizer,
        prompt: Option<&str>,
    ) -> Result<Passages> {
        let max_tokens = check(task, c, max_length, model)?;
        let added = tokenizer.added_tokens(false);
        let prompt_tokens = match prompt {
            Some(p) => tokenizer
                .encode_raw(&[p])
                .remove(0)
                .map_err(Error::config)?
                .len(),
            None => 0,
        };
        if max_tokens <= added + prompt_tokens {
            return Err(Error::config(format!(
                "tasks.{task}.chunking.max_tokens is {max_tokens}: it must exceed the {added} special tokens the model adds{}",
                if prompt_tokens > 0 { format!(" and the prompt's {prompt_tokens} tokens") } else { String::new() }
            )));
        }
        let budget = max_tokens - added - prompt_tokens;
        Ok(Passages {
            budget,
            overlap: c.overlap.min(budget - 1),
            boundary: c.boundary,
            slices: tokenizer.slices_exactly(),
            prompt: prompt.map(str::to_string),
        })
    }

    /// Passages of every record of a chunk as features (`part` = passage index), tokenized
    /// with `tokenizer` (the task's, which adds the model's special tokens to each passage).
    pub fn featurize(
        &self,
        tokenizer: &TextTokenizer,
        chunk: &Chunk,
        cache: &TokenCache,
    ) -> Featurized {
        let c = self;
        // A window with a long document tokenizes it in segments (below) and skips the shared
        // cache: tokenizing a whole multi-megabyte text at once holds several times its size.
        let has_long = chunk
            .texts
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.len() > SEGMENT_BYTES));
        let raw = if has_long {
            std::sync::Arc::new(
                chunk
                    .texts
                    .iter()
                    .map(|t| match t {
                        Some(t) => encode_segmented(tokenizer, t, SEGMENT_BYTES),
                        None => Err("no text".to_string()),
                    })
                    .collect(),
            )
        } else {
            cache.raw(tokenizer, &chunk.texts)
        };
        let mut out = Featurized::default();
        for (row, (text, enc)) in chunk.texts.iter().zip(raw.iter()).enumerate() {
            let Some(text) = text else { continue };
            let enc = match enc {
                Ok(e) => e,
                Err(reason) => {
                    out.errors
                        .push(RecordError::new(row, Stage::Tokenize, reason.clone()));
                    continue;
                }
            };
            let offsets = enc.get_offsets();
            let ranges = chunking::chunk(
                text,
                offsets,
                Some(enc.get_word_ids()),
                c.boundary,
                c.budget,
                c.overlap,
            );
            let first_feature = out.features.len();
            // Byte index of every char, for passages tokenized alone.
            let bytes: Vec<usize> = if c.slices && c.prompt.is_none() {
                Vec::new()
            } else {
                text.char_indices()
                    .map(|(b, _)| b)
                    .chain(std::iter::once(text.len()))
                    .collect()
            };
            for (i, r) in ranges.iter().enumerate() {
                let (start, end) = (offsets[r.first].0, offsets[r.last - 1].1);
                let piece = if let Some(prompt) = &c.prompt {
                    prompted_piece(tokenizer, prompt, &text[bytes[start]..bytes[end]], start)
                } else if c.slices {
                    Ok(slice_encoding(enc, r.first, r.last))
                } else {
                    let piece = &text[bytes[start]..bytes[end]];
                    tokenizer.encode_raw(&[piece]).remove(0).map(|mut e| {
                        for o in e.get_offsets_mut() {
                            o.0 += start;
                            o.1 += start;
                        }
                        e
                    })
                };
                match piece.and_then(|p| tokenizer.finish(p)) {
                    Ok(t) => out.features.push(Feature {
                        row,
                        part: i,
                        encoding: t.windows.into_iter().next().expect("one window"),
                        text: text.clone(),
                        question: None,
                    }),
                    Err(reason) => {
                        out.features.truncate(first_feature);
                        out.errors
                            .push(RecordError::new(row, Stage::Tokenize, reason));
                        break;
                    }
                }
            }
        }
        out
    }

    /// The passage a feature holds: its character span (without special tokens).
    pub fn span(feature: &Feature) -> (usize, usize) {
        let e = &feature.encoding;
        let mut it = e
            .get_offsets()
            .iter()
            .zip(e.get_special_tokens_mask())
            .filter(|(_, &m)| m == 0)
            .map(|(o, _)| *o);
        let first = it.next().unwrap_or((0, 0));
        let last = it.next_back().unwrap_or(first);
        (first.0, last.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::Truncation;

    #[test]
    fn segmented_tokenization_equals_one_call() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tasks/bert-sentiment/tokenizer.json");
        let t = TextTokenizer::load(
            &dir,
            Truncation {
                max_length: 512,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
            },
        )
        .unwrap();
        let text = "Ünïcödé façade, naïve café.\n\nThe quarterly report covers revenue! 東京は日本の首都です。 🙂🙂 don't stop  now   "
            .repeat(20);
        let whole = t.encode_raw(&[text.as_str()]).remove(0).unwrap();
        // Segments longer than any run without whitespace (33 bytes here).
        for seg in [40, 64, 333, 100_000] {
            let s = encode_segmented(&t, &text, seg).unwrap();
            assert_eq!(s.get_ids(), whole.get_ids(), "segment {seg}");
            assert_eq!(s.get_offsets(), whole.get_offsets(), "segment {seg}");
            // Word ids: the same grouping of tokens into words.
            let same = |w: &[Option<u32>], i: usize| w[i] == w[i - 1];
            for i in 1..whole.len() {
                assert_eq!(
                    same(s.get_word_ids(), i),
                    same(whole.get_word_ids(), i),
                    "segment {seg}, token {i}"
                );
            }
        }
    }
}

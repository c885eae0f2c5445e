//! Passages of long texts (`tasks.embed.chunking`): the segmented tokenization of very long
//! texts, token slices, the passage embeddings and the document embedding made of them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field};

use super::pooling::l2_normalize;
use crate::model::TextTokenizer;

/// Texts longer than this (bytes) are tokenized in segments for chunking.
pub const SEGMENT_BYTES: usize = 64 * 1024;

/// The embedding of one passage of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkEmbedding {
    /// Position of the passage in the text (0-based).
    pub index: u32,
    /// Character offsets into the text: the passage is `text[start:end]`.
    pub start: usize,
    pub end: usize,
    pub embedding: Vec<f32>,
}

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

/// The document embedding: mean of the passage embeddings, L2-normalised.
pub fn document_embedding(chunks: &[ChunkEmbedding]) -> Option<Vec<f32>> {
    let first = chunks.first()?;
    let mut acc = vec![0f32; first.embedding.len()];
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(&c.embedding) {
            *a += v;
        }
    }
    let n = chunks.len() as f32;
    for a in &mut acc {
        *a /= n;
    }
    l2_normalize(&mut acc);
    Some(acc)
}

/// Fields of one passage: `{index, start, end, embedding}`.
pub fn chunk_fields(dim: usize) -> arrow::datatypes::Fields {
    let vector = DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    );
    arrow::datatypes::Fields::from(vec![
        Field::new("index", DataType::Int32, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
        Field::new("embedding", vector, false),
    ])
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

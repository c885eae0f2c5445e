//! Tokenizer loading with explicit padding and truncation (the `tokenizer.json` files of many
//! packaged models carry baked-in settings that must not leak into batching), special-token
//! lookup, and a per-chunk cache that lets tasks with identical tokenization share it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokenizers::{
    Decoder, Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// How inputs are cut: at `max_length` tokens (special tokens included), with `stride` tokens of
/// overlap between consecutive windows when `windows` is on (otherwise the rest is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Truncation {
    pub max_length: usize,
    pub stride: usize,
    pub windows: bool,
    /// Truncate only the second sequence of a pair (question answering).
    pub only_second: bool,
    /// Truncate only the first sequence of a pair (zero-shot classification: the text, never
    /// the hypothesis).
    pub only_first: bool,
}

/// A tokenizer configured for one task: no padding (the batcher pads), truncation as configured.
pub struct TextTokenizer {
    inner: Tokenizer,
    pub pad_id: u32,
    pub truncation: Truncation,
    /// Identity of the tokenizer (without truncation), for sharing work between tasks.
    pub key: u64,
    /// The same tokenizer without truncation: produces the raw encodings that are shared.
    raw: Tokenizer,
    /// The WordPiece fast path, for BERT tokenizers (offset-free encodings only).
    fast: Option<super::wordpiece::FastWordPiece>,
    pub cls_id: Option<u32>,
    pub unk_id: Option<u32>,
    /// The model's continuing-subword prefix (`##` for WordPiece), when it has one.
    pub subword_prefix: Option<String>,
    /// Pads on the left (the question-answering pipeline then puts the context first).
    pub pads_left: bool,
}

/// One tokenized input: its first window, the following windows (when windowing is on), and
/// whether anything was cut off (no windows) or split (windows).
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub windows: Vec<Encoding>,
    pub truncated: bool,
}

/// Read `special_tokens_map.json` / `tokenizer_config.json` beside the tokenizer for a token.
fn special_token(dir: &Path, name: &str) -> Option<String> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match v.get(name) {
            Some(Value::String(s)) => return Some(s.clone()),
            Some(Value::Object(o)) => {
                if let Some(Value::String(s)) = o.get("content") {
                    return Some(s.clone());
                }
            }
            _ => {}
        }
    }
    None
}

/// `model_max_length` of `tokenizer_config.json`, when it is a real limit.
pub fn model_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let m = v.get("model_max_length")?.as_f64()?;
    (2.0..=1_000_000.0).contains(&m).then_some(m as usize)
}

impl TextTokenizer {
    pub fn load(path: &Path, truncation: Truncation) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("cannot load tokenizer: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let baked_padding = inner.get_padding().cloned();
        let pad_id = special_token(dir, "pad_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| baked_padding.as_ref().map(|p| p.pad_id))
            .or_else(|| {
                ["[PAD]", "<pad>", "<PAD>"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
            })
            .unwrap_or(0);
        let pads_left = baked_padding
            .as_ref()
            .is_some_and(|p| matches!(p.direction, tokenizers::PaddingDirection::Left))
            || tokenizer_config_str(dir, "padding_side").as_deref() == Some("left");
        let cls_id = special_token(dir, "cls_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| ["[CLS]", "<s>"].iter().find_map(|t| inner.token_to_id(t)));
        let unk_id = special_token(dir, "unk_token")
            .and_then(|t| inner.token_to_id(&t))
            .or_else(|| ["[UNK]", "<unk>"].iter().find_map(|t| inner.token_to_id(t)));
        let subword_prefix = subword_prefix(&inner);
        inner.with_padding(None);
        let mut raw = inner.clone();
        raw.with_truncation(None)
            .map_err(|e| Error::model(path, format!("cannot reset truncation: {e}")))?;
        // Post-processing (special tokens, offset trimming) happens once, per task, in `finish`.
        raw.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        raw.to_string(false).unwrap_or_default().hash(&mut h);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: truncation.max_length,
                strategy: if truncation.only_second && pads_left {
                    // Left-padding tokenizers get (context, question): cut the first sequence.
                    TruncationStrategy::OnlyFirst
                } else if truncation.only_second {
                    TruncationStrategy::OnlySecond
                } else if truncation.only_first {
                    TruncationStrategy::OnlyFirst
                } else {
                    TruncationStrategy::LongestFirst
                },
                stride: if truncation.windows {
                    truncation.stride
                } else {
                    0
                },
            }))
            .map_err(|e| {
                Error::model(
                    path,
                    format!("cannot truncate at {} tokens: {e}", truncation.max_length),
                )
            })?;
        let fast = super::wordpiece::FastWordPiece::for_tokenizer(&raw);
        Ok(TextTokenizer {
            inner,
            raw,
            fast,
            pad_id,
            truncation,
            key: h.finish(),
            cls_id,
            unk_id,
            subword_prefix,
            pads_left,
        })
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn max_length(&self) -> usize {
        self.truncation.max_length
    }

    /// Whether the tokens of a word-aligned piece of a text are the same as those of the whole
    /// text over that piece (WordPiece with its word-splitting pre-tokenizer): then a passage's
    /// tokens are a slice of the text's. Byte-level BPE and SentencePiece mark word starts
    /// with a leading space, which a passage's first word lacks when tokenized alone.
    pub fn slices_exactly(&self) -> bool {
        serde_json::to_value(self.inner.get_model())
            .ok()
            .and_then(|v| {
                v.get("type")
                    .and_then(Value::as_str)
                    .map(|t| t == "WordPiece")
            })
            .unwrap_or(false)
    }

    /// Special tokens the tokenizer adds to one text (`pair: false`) or a pair of texts.
    pub fn added_tokens(&self, pair: bool) -> usize {
        self.inner
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, pair))
            .unwrap_or(0)
    }

    /// Token string of an id (`##kel`, `Ġworld`).
    pub fn id_to_token(&self, id: u32) -> String {
        self.inner.id_to_token(id).unwrap_or_default()
    }

    /// Join tokens back into text with the tokenizer's decoder, as transformers'
    /// `convert_tokens_to_string` does (space-joined when there is no decoder).
    pub fn tokens_to_string(&self, tokens: Vec<String>) -> String {
        match self.inner.get_decoder() {
            Some(d) => d
                .decode(tokens.clone())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" "),
        }
    }

    fn wrap(&self, mut e: Encoding) -> Tokenized {
        let overflow = std::mem::take(e.get_overflowing_mut());
        let truncated = !overflow.is_empty();
        let mut windows = vec![e];
        if self.truncation.windows {
            windows.extend(overflow);
        }
        Tokenized { windows, truncated }
    }

    /// Tokenize single texts without special tokens or truncation (the part of tokenization
    /// that tasks with the same tokenizer can share). A text the tokenizer rejects yields an
    /// error for that text alone.
    pub fn encode_raw(&self, texts: &[&str]) -> Vec<std::result::Result<Encoding, String>> {
        match self.raw.encode_batch_char_offsets(texts.to_vec(), false) {
            Ok(encs) => encs.into_iter().map(Ok).collect(),
            Err(_) => texts
                .iter()
                .map(|t| {
                    self.raw
                        .encode_char_offsets(*t, false)
                        .map_err(|e| format!("tokenizer failed: {e}"))
                })
                .collect(),
        }
    }

    /// [`TextTokenizer::encode_raw`] without character offsets (every offset is zero): the
    /// same token ids, for tasks that never map tokens back to the text.
    /// BERT WordPiece tokenizers take [`FastWordPiece`](super::wordpiece::FastWordPiece) for the
    /// texts it covers (ASCII, no added token) and the tokenizers library for the rest.
    pub fn encode_raw_fast(&self, texts: &[&str]) -> Vec<std::result::Result<Encoding, String>> {
        let Some(fast) = &self.fast else {
            return self.encode_raw_library(texts);
        };
        // Large windows are cut into slices tokenized on every core (the tokenizers library's
        // own pool, as for the library's batches); small ones stay on this thread.
        let mut out: Vec<Option<std::result::Result<Encoding, String>>> =
            if texts.len() >= PARALLEL_TEXTS {
                use rayon::prelude::*;
                texts
                    .par_iter()
                    .with_min_len(PARALLEL_TEXTS / 4)
                    .map(|t| fast.encoding(t).map(Ok))
                    .collect()
            } else {
                texts.iter().map(|t| fast.encoding(t).map(Ok)).collect()
            };
        let rest: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !rest.is_empty() {
            let strs: Vec<&str> = rest.iter().map(|&i| texts[i]).collect();
            for (i, r) in rest.into_iter().zip(self.encode_raw_library(&strs)) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every text encoded"))
            .collect()
    }

    /// [`TextTokenizer::encode_raw_fast`] through the tokenizers library alone.
    pub fn encode_raw_library(&self, texts: &[&str]) -> Vec<std::result::Result<Encoding, String>> {
        match self.raw.encode_batch_fast(texts.to_vec(), false) {
            Ok(encs) => encs.into_iter().map(Ok).collect(),
            Err(_) => texts
                .iter()
                .map(|t| {
                    self.raw
                        .encode_fast(*t, false)
                        .map_err(|e| format!("tokenizer failed: {e}"))
                })
                .collect(),
        }
    }

    /// The identity of this tokenizer (equal for identical tokenizer files).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Truncate (or window) a raw encoding and add the special tokens, as `encode` would.
    pub fn finish(&self, raw: Encoding) -> std::result::Result<Tokenized, String> {
        self.inner
            .post_process(raw, None, true)
            .map(|e| self.wrap(e))
            .map_err(|e| format!("tokenizer failed: {e}"))
    }

    /// Join two raw encodings into a pair (truncated as configured, special tokens added), as
    /// encoding the two texts together would; a pair that cannot be cut to the maximum length
    /// (the sequence to cut is too short) is an error.
    pub fn finish_pair(
        &self,
        first: Encoding,
        second: Encoding,
    ) -> std::result::Result<Tokenized, String> {
        self.inner
            .post_process(first, Some(second), true)
            .map(|e| self.wrap(e))
            .map_err(|e| format!("tokenizer failed: {e}"))
    }

    /// Tokenize single texts (with special tokens, truncation and character offsets).
    pub fn encode_texts(&self, texts: &[&str]) -> Vec<std::result::Result<Tokenized, String>> {
        self.encode_raw(texts)
            .into_iter()
            .map(|r| r.and_then(|e| self.finish(e)))
            .collect()
    }

    /// Tokenize one pair of texts (with special tokens and character offsets).
    pub fn encode_pair(&self, a: &str, b: &str) -> std::result::Result<Tokenized, String> {
        self.inner
            .encode_char_offsets((a, b), true)
            .map(|e| self.wrap(e))
            .map_err(|e| format!("tokenizer failed: {e}"))
    }

    /// Tokenize pairs of texts (with special tokens, truncation and character offsets) in one
    /// parallel call; a pair the tokenizer rejects yields an error for that pair alone.
    pub fn encode_pairs(
        &self,
        pairs: &[(&str, &str)],
    ) -> Vec<std::result::Result<Tokenized, String>> {
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        match self.inner.encode_batch_char_offsets(inputs, true) {
            Ok(encs) => encs.into_iter().map(|e| Ok(self.wrap(e))).collect(),
            Err(_) => pairs.iter().map(|&(a, b)| self.encode_pair(a, b)).collect(),
        }
    }

    /// Character offsets of the tokens of `text`, without special tokens or truncation.
    pub fn plain_offsets(&self, text: &str) -> std::result::Result<Vec<(usize, usize)>, String> {
        self.raw
            .encode_char_offsets(text, false)
            .map(|e| e.get_offsets().to_vec())
            .map_err(|e| format!("tokenizer failed: {e}"))
    }
}

fn tokenizer_config_str(dir: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get(key)?.as_str().map(str::to_string)
}

fn subword_prefix(t: &Tokenizer) -> Option<String> {
    // The model's own JSON names its continuing-subword prefix (WordPiece, BPE).
    let v = serde_json::to_value(t.get_model()).ok()?;
    v.get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Windows of at least this many texts are tokenized on every core by the fast path.
const PARALLEL_TEXTS: usize = 256;

/// Per-chunk cache of raw single-text tokenizations, keyed by tokenizer identity: tasks whose
/// tokenizers are identical (whatever their truncation) tokenize a chunk once.
/// Raw encodings of a chunk's texts (an error string for texts that could not be tokenized).
pub type RawEncodings = Arc<Vec<std::result::Result<Encoding, String>>>;

#[derive(Default)]
pub struct TokenCache {
    map: RefCell<HashMap<u64, RawEncodings>>,
    hits: RefCell<usize>,
    /// Tokenizers (by key) whose tasks never map tokens back to the text: their tokenization
    /// skips offset tracking.
    without_offsets: std::collections::HashSet<u64>,
}

impl TokenCache {
    /// A cache that tokenizes without character offsets for the tokenizers in
    /// `without_offsets` (no task reading through them needs offsets).
    pub fn without_offsets(keys: std::collections::HashSet<u64>) -> TokenCache {
        TokenCache {
            without_offsets: keys,
            ..TokenCache::default()
        }
    }

    /// Raw tokenizations of `texts` (`None` entries yield an error and are not tokenized).
    pub fn raw(&self, tokenizer: &TextTokenizer, texts: &[Option<Arc<str>>]) -> RawEncodings {
        let fast = self.without_offsets.contains(&tokenizer.key);
        self.cached(tokenizer.key, tokenizer, texts, None, fast)
    }

    /// Raw tokenizations of `prompt` followed by each text (a task with a prompt), kept apart
    /// from the texts' own; with character offsets (into the prompted text) only when `offsets`.
    pub fn raw_prompted(
        &self,
        tokenizer: &TextTokenizer,
        prompt: &str,
        texts: &[Option<Arc<str>>],
        offsets: bool,
    ) -> RawEncodings {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (tokenizer.key, prompt, offsets).hash(&mut h);
        self.cached(h.finish(), tokenizer, texts, Some(prompt), !offsets)
    }

    fn cached(
        &self,
        key: u64,
        tokenizer: &TextTokenizer,
        texts: &[Option<Arc<str>>],
        prompt: Option<&str>,
        fast: bool,
    ) -> RawEncodings {
        if let Some(v) = self.map.borrow().get(&key) {
            *self.hits.borrow_mut() += 1;
            return v.clone();
        }
        let present: Vec<usize> = (0..texts.len()).filter(|&i| texts[i].is_some()).collect();
        let prompted: Vec<String> = match prompt {
            Some(p) => present
                .iter()
                .map(|&i| format!("{p}{}", texts[i].as_deref().unwrap_or_default()))
                .collect(),
            None => Vec::new(),
        };
        let strs: Vec<&str> = match prompt {
            Some(_) => prompted.iter().map(String::as_str).collect(),
            None => present
                .iter()
                .map(|&i| texts[i].as_deref().unwrap_or_default())
                .collect(),
        };
        let mut out: Vec<std::result::Result<Encoding, String>> = (0..texts.len())
            .map(|_| Err("no text".to_string()))
            .collect();
        let encoded = if fast {
            tokenizer.encode_raw_fast(&strs)
        } else {
            tokenizer.encode_raw(&strs)
        };
        for (i, r) in present.into_iter().zip(encoded) {
            out[i] = r;
        }
        let out = Arc::new(out);
        self.map.borrow_mut().insert(key, out.clone());
        out
    }

    /// How many times a task reused another task's tokenization.
    pub fn hits(&self) -> usize {
        *self.hits.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tasks")
            .join(name)
            .join("tokenizer.json")
    }

    #[test]
    fn shared_raw_encoding_equals_direct_encoding() {
        let text = "Alice Johnson founded Northwind Traders in Lisbon. ".repeat(12);
        for (name, windows) in [
            ("bert-ner", false),
            ("bert-ner", true),
            ("roberta-ner", false),
            ("roberta-ner", true),
        ] {
            let t = TextTokenizer::load(
                &fixture(name),
                Truncation {
                    max_length: 32,
                    stride: 8,
                    windows,
                    only_second: false,
                    only_first: false,
                },
            )
            .unwrap();
            let via_raw = t.encode_texts(&[&text]).remove(0).unwrap();
            let direct = t.inner().encode_char_offsets(text.as_str(), true).unwrap();
            assert_eq!(via_raw.windows[0].get_ids(), direct.get_ids());
            assert_eq!(via_raw.windows[0].get_offsets(), direct.get_offsets());
            assert!(via_raw.truncated);
            assert_eq!(via_raw.windows.len() > 1, windows);
        }
    }

    #[test]
    fn cache_is_shared_across_truncations_of_one_tokenizer() {
        let a = TextTokenizer::load(
            &fixture("bert-ner"),
            Truncation {
                max_length: 16,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
            },
        )
        .unwrap();
        let b = TextTokenizer::load(
            &fixture("bert-sentiment"),
            Truncation {
                max_length: 64,
                stride: 4,
                windows: true,
                only_second: false,
                only_first: false,
            },
        )
        .unwrap();
        let c = TextTokenizer::load(
            &fixture("roberta-ner"),
            Truncation {
                max_length: 64,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
            },
        )
        .unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        let cache = TokenCache::default();
        let texts = vec![Some(Arc::from("hello world")), None];
        let r1 = cache.raw(&a, &texts);
        let r2 = cache.raw(&b, &texts);
        assert!(Arc::ptr_eq(&r1, &r2));
        assert_eq!(cache.hits(), 1);
        assert!(r1[1].is_err());
        cache.raw(&c, &texts);
        assert_eq!(cache.hits(), 1);
    }

    #[test]
    fn special_ids_come_from_the_tokenizer() {
        let t = TextTokenizer::load(
            &fixture("roberta-qa"),
            Truncation {
                max_length: 64,
                stride: 16,
                windows: true,
                only_second: true,
                only_first: false,
            },
        )
        .unwrap();
        assert_eq!(t.cls_id, t.inner().token_to_id("<s>"));
        assert_eq!(Some(t.pad_id), t.inner().token_to_id("<pad>"));
        assert_eq!(t.subword_prefix, None);
        let b = TextTokenizer::load(
            &fixture("bert-qa"),
            Truncation {
                max_length: 64,
                stride: 16,
                windows: true,
                only_second: true,
                only_first: false,
            },
        )
        .unwrap();
        assert_eq!(b.subword_prefix.as_deref(), Some("##"));
        assert_eq!(b.cls_id, b.inner().token_to_id("[CLS]"));
    }

    #[test]
    fn tokenization_without_offsets_gives_the_same_ids() {
        let t = TextTokenizer::load(
            &fixture("bert-sentiment"),
            Truncation {
                max_length: 128,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
            },
        )
        .unwrap();
        let base = [
            "Ünïcödé façade, naïve café.",
            "東京は日本の首都です。 🙂🙂 don't stop  now",
            "",
            "a plain sentence with words",
            "[CLS] an added token, and a [MASK]",
            "Long-ish text: with punctuation!!! and UPPER case, tabs\tand\nnewlines.",
        ];
        // Enough texts for the parallel fast path too, the texts it leaves to the library
        // among them, in order.
        let texts: Vec<&str> = base
            .iter()
            .cycle()
            .take(6 * PARALLEL_TEXTS / 5)
            .copied()
            .collect();
        let with = t.encode_raw(&texts);
        let without = t.encode_raw_fast(&texts);
        for (a, b) in with.iter().zip(&without) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a.get_ids(), b.get_ids());
            assert_eq!(a.get_type_ids(), b.get_type_ids());
        }
        assert_eq!(with.len(), without.len());
        let owned: Vec<Option<Arc<str>>> = texts.iter().map(|s| Some(Arc::from(*s))).collect();
        let fast = TokenCache::without_offsets([t.key()].into()).raw(&t, &owned);
        let slow = TokenCache::default().raw(&t, &owned);
        for (a, b) in fast.iter().zip(slow.iter()) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            let (fa, fb) = (t.finish(a.clone()).unwrap(), t.finish(b.clone()).unwrap());
            assert_eq!(fa.windows[0].get_ids(), fb.windows[0].get_ids());
        }
    }
}

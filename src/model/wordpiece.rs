//! A fast path for BERT's WordPiece tokenization of ASCII texts, for tasks that never map tokens
//! back to the text (no offsets): the same token ids as the tokenizers library, computed without
//! its per-character alignment bookkeeping.
//!
//! It applies only to a tokenizer that is exactly `BertNormalizer` (with `clean_text`) +
//! `BertPreTokenizer` + `WordPiece`, and only to texts that are ASCII and hold no added token
//! (`[CLS]`, `[MASK]`, ...); every other text goes through the tokenizers library. On ASCII the
//! normalizer's steps reduce to: drop control characters (except tab, newline and carriage
//! return, which become spaces), lowercase when configured (accents and CJK handling change no
//! ASCII character). The pre-tokenizer splits on whitespace and isolates ASCII punctuation;
//! WordPiece takes the longest vocabulary match from the start of each word, continuing pieces
//! with the subword prefix, and a word with no full cover (or longer than
//! `max_input_chars_per_word`) becomes the unknown token.

use rustc_hash::FxHashMap;
use serde_json::Value;
use tokenizers::{Encoding, Tokenizer};

/// The WordPiece fast path of one tokenizer.
#[derive(Debug, Clone)]
pub struct FastWordPiece {
    lowercase: bool,
    /// Vocabulary entries for a word's first piece.
    first: FxHashMap<String, u32>,
    /// Continuing pieces, keyed without the subword prefix.
    cont: FxHashMap<String, u32>,
    unk: u32,
    max_chars: usize,
    /// Added tokens with ASCII content, lowercased: a text holding one (in any case) goes
    /// through the tokenizers library.
    added: Vec<Vec<u8>>,
    /// The first bytes (both cases) of `added`: the only places a match is looked for.
    added_starts: [bool; 128],
}

fn as_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl FastWordPiece {
    /// The fast path for `t`, when its pipeline is exactly the one this module computes.
    pub fn for_tokenizer(t: &Tokenizer) -> Option<FastWordPiece> {
        let json: Value = serde_json::from_str(&t.to_string(false).ok()?).ok()?;
        let norm = json.get("normalizer")?;
        if as_str(norm, "type")? != "BertNormalizer"
            || norm.get("clean_text")? != &Value::Bool(true)
        {
            return None;
        }
        let lowercase = norm.get("lowercase")?.as_bool()?;
        if as_str(json.get("pre_tokenizer")?, "type")? != "BertPreTokenizer" {
            return None;
        }
        let model = json.get("model")?;
        if as_str(model, "type")? != "WordPiece" {
            return None;
        }
        let prefix = as_str(model, "continuing_subword_prefix")?;
        let unk_token = as_str(model, "unk_token")?;
        let max_chars = model.get("max_input_chars_per_word")?.as_u64()? as usize;
        let vocab = model.get("vocab")?.as_object()?;
        let mut first = FxHashMap::default();
        let mut cont = FxHashMap::default();
        for (k, v) in vocab {
            let id = v.as_u64()? as u32;
            first.insert(k.clone(), id);
            if let Some(rest) = k.strip_prefix(prefix) {
                if !prefix.is_empty() {
                    cont.insert(rest.to_string(), id);
                }
            }
        }
        if prefix.is_empty() {
            cont = first.clone();
        }
        let unk = *first.get(unk_token)?;
        let mut added: Vec<Vec<u8>> = Vec::new();
        let mut added_starts = [false; 128];
        for a in json.get("added_tokens")?.as_array()? {
            let c = as_str(a, "content")?;
            // Content that is empty or not ASCII never occurs in a text this path takes.
            if c.is_empty() || !c.is_ascii() {
                continue;
            }
            let c = c.to_ascii_lowercase().into_bytes();
            added_starts[c[0] as usize] = true;
            added_starts[c[0].to_ascii_uppercase() as usize] = true;
            added.push(c);
        }
        Some(FastWordPiece {
            lowercase,
            first,
            cont,
            unk,
            max_chars,
            added,
            added_starts,
        })
    }

    /// The token ids of `text` (no special tokens), or `None` when the text is not for the fast
    /// path.
    pub fn ids(&self, text: &str) -> Option<Vec<u32>> {
        if !text.is_ascii() {
            return None;
        }
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        let mut word: Vec<u8> = Vec::with_capacity(32);
        let bytes = text.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            // An added token here (`[CLS]`, `[MASK]`): the library splits it off.
            if self.added_starts[b as usize] && self.added_at(&bytes[i..]) {
                return None;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    self.word(&word, &mut ids);
                    word.clear();
                }
                // Control characters are dropped (a word goes on across them).
                0..=0x1f | 0x7f => {}
                _ if b.is_ascii_punctuation() => {
                    self.word(&word, &mut ids);
                    word.clear();
                    self.word(&[b], &mut ids);
                }
                _ => word.push(if self.lowercase {
                    b.to_ascii_lowercase()
                } else {
                    b
                }),
            }
        }
        self.word(&word, &mut ids);
        Some(ids)
    }

    /// Whether an added token starts `rest` (ignoring case: a lowercasing normalizer matches
    /// either; for the others this only sends a few more texts to the library).
    fn added_at(&self, rest: &[u8]) -> bool {
        self.added
            .iter()
            .any(|a| rest.len() >= a.len() && rest[..a.len()].eq_ignore_ascii_case(a))
    }

    /// WordPiece of one word: the longest vocabulary match first.
    fn word(&self, w: &[u8], ids: &mut Vec<u32>) {
        if w.is_empty() {
            return;
        }
        let mark = ids.len();
        if w.len() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        // ASCII: every byte is a character boundary.
        let s = std::str::from_utf8(w).expect("ASCII");
        let mut start = 0;
        while start < s.len() {
            let map = if start == 0 { &self.first } else { &self.cont };
            let mut end = s.len();
            let mut found = None;
            while start < end {
                if let Some(&id) = map.get(&s[start..end]) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(mark);
                    ids.push(self.unk);
                    return;
                }
            }
        }
    }

    /// An encoding as the tokenizers library's `encode_fast` (no special tokens) gives it:
    /// ids, type ids 0, no word ids, zero offsets; token strings are left empty (no task that
    /// reads them takes this path).
    pub fn encoding(&self, text: &str) -> Option<Encoding> {
        let ids = self.ids(text)?;
        let n = ids.len();
        Some(Encoding::new(
            ids,
            vec![0; n],
            vec![String::new(); n],
            vec![None; n],
            vec![(0, 0); n],
            vec![0; n],
            vec![1; n],
            Vec::new(),
            Default::default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tokenizer(dir: &str) -> Tokenizer {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        Tokenizer::from_file(p.join("tokenizer.json")).unwrap()
    }

    fn check(t: &Tokenizer, fast: &FastWordPiece, text: &str) {
        let want = t.encode_fast(text, false).unwrap();
        match fast.ids(text) {
            Some(ids) => {
                assert_eq!(ids, want.get_ids(), "ids of {text:?}");
                let e = fast.encoding(text).unwrap();
                assert_eq!(e.get_word_ids(), want.get_word_ids(), "words of {text:?}");
                assert_eq!(e.get_type_ids(), want.get_type_ids());
                assert_eq!(e.get_attention_mask(), want.get_attention_mask());
                assert_eq!(e.get_special_tokens_mask(), want.get_special_tokens_mask());
                assert_eq!(e.get_offsets(), want.get_offsets());
            }
            None => assert!(
                !text.is_ascii()
                    || fast.added.iter().any(|a| text
                        .to_ascii_lowercase()
                        .contains(std::str::from_utf8(a).unwrap())),
                "{text:?} left the fast path"
            ),
        }
    }

    #[test]
    fn applies_to_bert_tokenizers_only() {
        let t = tokenizer("tests/fixtures/tasks/bert-sentiment");
        assert!(FastWordPiece::for_tokenizer(&t).is_some());
        let r = tokenizer("tests/fixtures/tasks/roberta-sentiment");
        assert!(FastWordPiece::for_tokenizer(&r).is_none());
    }

    #[test]
    fn only_texts_holding_an_added_token_leave_the_fast_path() {
        let t = tokenizer("tests/fixtures/tasks/bert-sentiment");
        let f = FastWordPiece::for_tokenizer(&t).unwrap();
        for text in ["x[MASK]y", "[cls] first", "ends with [SEP]", "Ünïcödé"] {
            assert!(f.ids(text).is_none(), "{text:?}");
        }
        for text in ["see [1] and [citation]", "[CL S]", "a [ b", "["] {
            assert!(f.ids(text).is_some(), "{text:?}");
            check(&t, &f, text);
        }
    }

    #[test]
    fn same_ids_as_the_tokenizers_library_on_hard_cases() {
        for dir in [
            "tests/fixtures/tasks/bert-sentiment",
            "tests/fixtures/tasks/distilbert-ner",
        ] {
            let t = tokenizer(dir);
            let f = FastWordPiece::for_tokenizer(&t).unwrap();
            for text in [
                "",
                "   ",
                "Hello, World!",
                "don't stop-me now...",
                "a\u{1}b\tc\u{7f}d\ne\u{b}f\u{c}g",
                "UPPER lower MiXeD 1234 3.14",
                "[CLS] a [cls] b",
                "x[MASK]y",
                &"a".repeat(101),
                &"ab".repeat(50),
                "unaffable unbelievable antidisestablishmentarianism",
                "#hash ## tag ##ing",
                "café naïve",
            ] {
                check(&t, &f, text);
            }
        }
    }

    #[test]
    fn same_ids_on_the_sample_with_minilms_vocabulary() {
        use arrow::array::AsArray;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("models/all-MiniLM-L6-v2");
        if !dir.join("tokenizer.json").is_file() {
            panic!("{} is missing: run `make setup`", dir.display());
        }
        let mut t = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        // Its file pads and truncates to 128; raw encodings do neither.
        t.with_padding(None);
        t.with_truncation(None).unwrap();
        let f = FastWordPiece::for_tokenizer(&t).unwrap();
        let file = std::fs::File::open(root.join("pipelines/sample/reviews.parquet")).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut fast = 0;
        for b in reader {
            let b = b.unwrap();
            let texts = b.column_by_name("text").unwrap().as_string::<i32>();
            for text in texts.iter().flatten() {
                check(&t, &f, text);
                fast += usize::from(f.ids(text).is_some());
            }
        }
        assert!(
            fast > 900,
            "{fast} of the sample's texts took the fast path"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]
        #[test]
        fn same_ids_as_the_tokenizers_library(text in "[ -~\t\n\r\u{0}-\u{1f}\u{7f}]{0,80}") {
            let t = tokenizer("tests/fixtures/tasks/bert-sentiment");
            let f = FastWordPiece::for_tokenizer(&t).unwrap();
            check(&t, &f, &text);
        }

        #[test]
        fn same_ids_on_word_like_text(text in "([a-zA-Z]{1,12}[ .,!?'-]{0,2}){0,20}") {
            let t = tokenizer("tests/fixtures/tasks/distilbert-ner");
            let f = FastWordPiece::for_tokenizer(&t).unwrap();
            check(&t, &f, &text);
        }
    }
}

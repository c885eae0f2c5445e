//! Cutting long texts into passages for the embed task (`tasks.embed.chunking`).
//!
//! Works on the text's one tokenization (tokens and their character offsets), so chunk offsets
//! are exact and nothing is tokenized again. A chunk is a run of tokens `[first, last)`:
//!
//! - it holds at most `budget` tokens (`max_tokens` less the model's special tokens);
//! - it starts and ends on word boundaries (Unicode UAX #29: a word is never cut; CJK ideographs
//!   and emoji are words of their own). The one exception is a single word longer than the
//!   budget, cut at token boundaries;
//! - `token` mode: windows as long as the budget allows; `sentence` mode: whole Unicode sentences
//!   packed together; `paragraph` mode: paragraphs (separated by blank lines) packed together,
//!   a paragraph too long split into sentences. A sentence too long falls back to token windows;
//! - consecutive chunks share at most `overlap` tokens (whole words in `token` mode, whole
//!   sentences or paragraphs otherwise);
//! - every token of the text is in at least one chunk; an empty or whitespace-only text has none.

use unicode_segmentation::UnicodeSegmentation;

/// How chunk boundaries are chosen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    /// Windows of up to `max_tokens` tokens that never cut a word.
    Token,
    /// Unicode sentences (UAX #29), packed up to `max_tokens`.
    Sentence,
    /// Paragraphs (separated by a blank line), packed up to `max_tokens`; long ones by sentences.
    Paragraph,
}

/// A chunk: tokens `[first, last)` of the text's tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    pub first: usize,
    pub last: usize,
}

/// Character index of every byte index that starts a char (and of the end).
fn char_index(text: &str) -> impl Fn(usize) -> usize + '_ {
    let starts: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    move |byte| starts.partition_point(|&b| b < byte)
}

/// Character positions where a word may begin or end (UAX #29 word boundaries).
fn word_boundaries(text: &str) -> Vec<bool> {
    let n = text.chars().count();
    let mut is = vec![false; n + 1];
    let ci = char_index(text);
    for (b, _) in text.split_word_bound_indices() {
        is[ci(b)] = true;
    }
    is[n] = true;
    is
}

/// Token boundaries where a chunk may start or end: before token `i` when the text has a word
/// boundary between token `i - 1` and token `i`, and (given the tokenizer's word of each token)
/// the two tokens are not pieces of one tokenizer word (a run of kana is one word to BERT's
/// tokenizer, several to UAX #29). Indices `0..=n`.
pub fn cut_points(
    text: &str,
    offsets: &[(usize, usize)],
    token_words: Option<&[Option<u32>]>,
) -> Vec<bool> {
    let n = offsets.len();
    let words = word_boundaries(text);
    let mut ok = vec![false; n + 1];
    ok[0] = true;
    ok[n] = true;
    for i in 1..n {
        let (prev_end, start) = (offsets[i - 1].1, offsets[i].0);
        // Whitespace (or anything) between the tokens, or a word boundary where they meet.
        let text_boundary = start > prev_end || words.get(start).copied().unwrap_or(true);
        let same_word = token_words.is_some_and(|w| w[i].is_some() && w[i] == w[i - 1]);
        ok[i] = text_boundary && !same_word;
    }
    ok
}

/// Token windows over `[from, to)`: each as long as `budget` allows and ending on a cut point,
/// the next starting at most `overlap` tokens before the previous end, on a cut point.
fn token_windows(
    cuts: &[bool],
    from: usize,
    to: usize,
    budget: usize,
    overlap: usize,
    out: &mut Vec<TokenRange>,
) {
    let mut a = from;
    let mut prev_end = from;
    while a < to {
        let limit = (a + budget).min(to);
        let b = if limit == to {
            to
        } else {
            // The last cut point in (a, limit]; a word longer than the budget is cut.
            (a + 1..=limit).rev().find(|&i| cuts[i]).unwrap_or(limit)
        };
        if b <= prev_end && a < prev_end {
            // The overlap left no room to go further: start where the last window ended.
            a = prev_end;
            continue;
        }
        prev_end = b;
        out.push(TokenRange { first: a, last: b });
        if b >= to {
            break;
        }
        // The earliest cut point in [b - overlap, b) after a: at most `overlap` shared tokens.
        let lo = b.saturating_sub(overlap).max(a + 1);
        a = (lo..b).find(|&i| cuts[i]).unwrap_or(b);
    }
}

/// Pack consecutive units (token ranges covering `[from, to)`) into chunks of at most `budget`
/// tokens; a unit larger than the budget becomes token windows. Consecutive chunks share the
/// trailing units of the previous chunk that fit in `overlap` tokens.
fn pack(
    units: &[TokenRange],
    cuts: &[bool],
    budget: usize,
    overlap: usize,
    out: &mut Vec<TokenRange>,
) {
    let mut i = 0;
    while i < units.len() {
        let u = units[i];
        if u.last - u.first > budget {
            token_windows(cuts, u.first, u.last, budget, overlap, out);
            i += 1;
            continue;
        }
        // Greedy: as many whole units as fit.
        let mut j = i + 1;
        while j < units.len() && units[j].last - u.first <= budget {
            j += 1;
        }
        out.push(TokenRange {
            first: u.first,
            last: units[j - 1].last,
        });
        if j >= units.len() {
            break;
        }
        // Overlap: start the next chunk with trailing units of this one, within `overlap`
        // tokens, keeping at least one new unit per chunk.
        let end = units[j - 1].last;
        let mut k = j;
        while k > i + 1 && end - units[k - 1].first <= overlap {
            k -= 1;
        }
        // The next chunk must still fit its first new unit with the carried ones.
        while k < j && units[j].last - units[k].first > budget {
            k += 1;
        }
        i = k;
    }
}

/// Unit ranges from character boundaries (sorted char positions where a unit starts): each
/// unit is the tokens whose start lies in `[b_k, b_{k+1})`. Empty units are dropped.
fn units_from_char_starts(offsets: &[(usize, usize)], starts: &[usize]) -> Vec<TokenRange> {
    let mut units = Vec::new();
    let mut t = 0;
    for w in 0..starts.len() {
        let end_char = starts.get(w + 1).copied().unwrap_or(usize::MAX);
        let first = t;
        while t < offsets.len() && offsets[t].0 < end_char {
            t += 1;
        }
        if t > first {
            units.push(TokenRange { first, last: t });
        }
    }
    units
}

/// Char positions where sentences start (UAX #29), within `[from, to)` chars of `text`.
fn sentence_starts(text: &str) -> Vec<usize> {
    let ci = char_index(text);
    text.split_sentence_bound_indices()
        .map(|(b, _)| ci(b))
        .collect()
}

/// Char positions where paragraphs start: after each run of line breaks holding an empty line.
fn paragraph_starts(text: &str) -> Vec<usize> {
    let chars: Vec<char> = text.chars().collect();
    let mut starts = vec![0];
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\n' {
            // A blank line: newline, optional spaces, newline.
            let mut j = i + 1;
            let mut newlines = 1;
            while j < chars.len() && chars[j].is_whitespace() {
                if chars[j] == '\n' {
                    newlines += 1;
                }
                j += 1;
            }
            if newlines >= 2 && j < chars.len() {
                starts.push(j);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    starts
}

/// The chunks of a text, given its tokens' character offsets (and, when known, the tokenizer
/// word each token belongs to). `budget` >= 1.
pub fn chunk(
    text: &str,
    offsets: &[(usize, usize)],
    token_words: Option<&[Option<u32>]>,
    mode: Boundary,
    budget: usize,
    overlap: usize,
) -> Vec<TokenRange> {
    let n = offsets.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let budget = budget.max(1);
    let overlap = overlap.min(budget - 1);
    let cuts = cut_points(text, offsets, token_words);
    match mode {
        Boundary::Token => token_windows(&cuts, 0, n, budget, overlap, &mut out),
        Boundary::Sentence => {
            let units = units_from_char_starts(offsets, &sentence_starts(text));
            pack(&units, &cuts, budget, overlap, &mut out);
        }
        Boundary::Paragraph => {
            let paragraphs = units_from_char_starts(offsets, &paragraph_starts(text));
            let sentences = units_from_char_starts(offsets, &sentence_starts(text));
            // A paragraph too long is replaced by its sentences (sentence starts also cut at
            // paragraph starts, so each sentence lies in one paragraph).
            let mut units = Vec::new();
            for p in paragraphs {
                if p.last - p.first <= budget {
                    units.push(p);
                } else {
                    units.extend(
                        sentences
                            .iter()
                            .filter(|s| s.first >= p.first && s.last <= p.last)
                            .copied(),
                    );
                    // Sentences that straddle the paragraph's edges (no sentence break at a
                    // blank line): cover the rest with one unit each side.
                    let covered: usize = units
                        .iter()
                        .filter(|u| u.first >= p.first && u.last <= p.last)
                        .map(|u| u.last - u.first)
                        .sum();
                    if covered < p.last - p.first {
                        units.retain(|u| !(u.first >= p.first && u.last <= p.last));
                        units.push(p);
                    }
                }
            }
            pack(&units, &cuts, budget, overlap, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace-separated words and punctuation as tokens, with char offsets (a stand-in for
    /// a tokenizer in these tests).
    fn toks(text: &str) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            if chars[i].is_alphanumeric() {
                let s = i;
                while i < chars.len() && chars[i].is_alphanumeric() {
                    i += 1;
                    // Words of more than 6 characters: a 6-character piece, then the rest.
                    if i - s == 6 && i < chars.len() && chars[i].is_alphanumeric() {
                        v.push((s, i));
                        let s2 = i;
                        while i < chars.len() && chars[i].is_alphanumeric() {
                            i += 1;
                        }
                        v.push((s2, i));
                        break;
                    }
                }
                if v.last().is_none_or(|&(_, e)| e != i) {
                    v.push((s, i));
                }
            } else {
                v.push((i, i + 1));
                i += 1;
            }
        }
        v
    }

    fn slice(text: &str, offsets: &[(usize, usize)], r: TokenRange) -> String {
        let (s, e) = (offsets[r.first].0, offsets[r.last - 1].1);
        text.chars().skip(s).take(e - s).collect()
    }

    fn check_cover(n: usize, chunks: &[TokenRange], budget: usize, overlap: usize) {
        assert_eq!(chunks.first().unwrap().first, 0);
        assert_eq!(chunks.last().unwrap().last, n);
        for c in chunks {
            assert!(c.last > c.first && c.last - c.first <= budget, "{c:?}");
        }
        for w in chunks.windows(2) {
            assert!(
                w[1].first <= w[0].last,
                "gap between {:?} and {:?}",
                w[0],
                w[1]
            );
            assert!(
                w[0].last - w[1].first <= overlap,
                "overlap {:?} {:?}",
                w[0],
                w[1]
            );
            assert!(
                w[1].first > w[0].first && w[1].last > w[0].last,
                "no progress"
            );
        }
    }

    #[test]
    fn token_windows_never_cut_words_and_cover_the_text() {
        let text =
            "Internationalization matters. Cats sleep a lot, dogs do too! 東京は大きい 🙂🙂 end";
        let off = toks(text);
        for budget in [3, 4, 5, 8, 100] {
            for overlap in [0, 1, 2] {
                let c = chunk(text, &off, None, Boundary::Token, budget, overlap);
                check_cover(off.len(), &c, budget, overlap.min(budget - 1));
                let cuts = cut_points(text, &off, None);
                for r in &c {
                    // Only a word longer than the budget may be cut.
                    if !cuts[r.first] || !cuts[r.last] {
                        assert!(budget < 2, "cut inside a word at {r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn subword_pieces_stay_together() {
        let text = "abcdefgh ij";
        let off = toks(text); // abcdef, gh, ij
        assert_eq!(off, vec![(0, 6), (6, 8), (9, 11)]);
        let cuts = cut_points(text, &off, None);
        assert_eq!(cuts, vec![true, false, true, true]);
        let c = chunk(text, &off, None, Boundary::Token, 2, 0);
        assert_eq!(
            c,
            vec![
                TokenRange { first: 0, last: 2 },
                TokenRange { first: 2, last: 3 }
            ]
        );
        // A word longer than the budget is cut at token boundaries.
        let c = chunk(text, &off, None, Boundary::Token, 1, 0);
        assert_eq!(c.len(), 3);
        // Tokens of one tokenizer word are not separated even where UAX #29 would allow it.
        let text = "しています";
        let off: Vec<(usize, usize)> = (0..5).map(|i| (i, i + 1)).collect();
        let words = [Some(0u32); 5];
        assert!(cut_points(text, &off, None)[2]);
        assert_eq!(
            cut_points(text, &off, Some(&words)),
            vec![true, false, false, false, false, true]
        );
    }

    #[test]
    fn sentences_are_packed_whole() {
        let text = "One two three. Four five. Six seven eight nine. Ten.";
        let off = toks(text);
        let c = chunk(text, &off, None, Boundary::Sentence, 7, 0);
        let got: Vec<String> = c.iter().map(|&r| slice(text, &off, r)).collect();
        assert_eq!(
            got,
            vec!["One two three. Four five.", "Six seven eight nine. Ten."]
        );
        // With overlap, the last sentence of a chunk starts the next one when it fits.
        let c = chunk(text, &off, None, Boundary::Sentence, 8, 3);
        let got: Vec<String> = c.iter().map(|&r| slice(text, &off, r)).collect();
        assert_eq!(
            got,
            vec![
                "One two three. Four five.",
                "Four five. Six seven eight nine.",
                // The last sentence (5 tokens) is longer than the overlap: not repeated.
                "Ten."
            ]
        );
        check_cover(off.len(), &c, 8, 3);
    }

    #[test]
    fn a_long_sentence_falls_back_to_token_windows() {
        let text = "Short one. This sentence has very many words in it indeed. End.";
        let off = toks(text);
        let c = chunk(text, &off, None, Boundary::Sentence, 4, 0);
        check_cover(off.len(), &c, 4, 0);
        let got: Vec<String> = c.iter().map(|&r| slice(text, &off, r)).collect();
        assert_eq!(got[0], "Short one.");
        assert_eq!(got.last().unwrap(), "End.");
    }

    #[test]
    fn paragraphs_then_sentences() {
        let text = "Para one. Still one.\n\nPara two is here.\n  \nThree. And more words here now.";
        let off = toks(text);
        let c = chunk(text, &off, None, Boundary::Paragraph, 12, 0);
        let got: Vec<String> = c.iter().map(|&r| slice(text, &off, r)).collect();
        assert_eq!(got[0], "Para one. Still one.\n\nPara two is here.");
        let c = chunk(text, &off, None, Boundary::Paragraph, 6, 0);
        let got: Vec<String> = c.iter().map(|&r| slice(text, &off, r)).collect();
        assert_eq!(
            got,
            vec![
                "Para one. Still one.",
                "Para two is here.",
                "Three.",
                "And more words here now."
            ]
        );
        check_cover(off.len(), &c, 6, 0);
    }

    #[test]
    fn empty_and_whitespace_texts_have_no_chunks() {
        assert!(chunk("", &[], None, Boundary::Token, 10, 2).is_empty());
        assert!(chunk("  \n\t ", &[], None, Boundary::Sentence, 10, 2).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 300,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
            )),
            ..Default::default()
        })]

        /// Any text, mode, budget and overlap: chunks cover every token, respect the budget and
        /// the overlap, progress, and cut a word only when it is longer than the budget.
        #[test]
        fn chunks_cover_and_respect_limits(
            text in "[a-zé東🙂 .!?\n]{0,200}",
            budget in 1usize..12,
            overlap in 0usize..6,
            mode in 0u8..3,
        ) {
            let off = toks(&text);
            let mode = [Boundary::Token, Boundary::Sentence, Boundary::Paragraph][mode as usize];
            let c = chunk(&text, &off, None, mode, budget, overlap);
            if off.is_empty() {
                proptest::prop_assert!(c.is_empty());
            } else {
                check_cover(off.len(), &c, budget, overlap.min(budget - 1));
                let cuts = cut_points(&text, &off, None);
                for r in &c {
                    for edge in [r.first, r.last] {
                        if !cuts[edge] {
                            // Inside a word: only when the word is longer than the budget.
                            let mut s = edge;
                            while !cuts[s] { s -= 1; }
                            let mut e = edge;
                            while !cuts[e] { e += 1; }
                            proptest::prop_assert!(e - s > budget, "word {s}..{e} cut at {edge}");
                        }
                    }
                }
            }
        }
    }
}

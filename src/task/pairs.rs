//! Pair tasks: a record's text read together with each of several other texts (zero-shot
//! hypotheses, cross-encoder queries), one model input per pair. The record's text is tokenized
//! once (shared with the other tasks through the chunk's token cache), each partner text once per
//! chunk (fixed partners once per task), and every pair is joined, cut and given its special
//! tokens exactly as encoding the two texts together would. The pairs then go through the same
//! length-sorted batcher as every other feature.

use std::collections::HashMap;
use std::sync::Arc;

use tokenizers::utils::parallelism::MaybeParallelIterator;
use tokenizers::Encoding;

use super::Featurized;
use crate::batch::Feature;
use crate::model::tokenizer::TokenCache;
use crate::model::TextTokenizer;
use crate::record::{Chunk, RecordError, Stage};

/// Which text of a pair comes first in the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// (text, partner): zero-shot classification's (premise, hypothesis).
    TextFirst,
    /// (partner, text): a cross-encoder's (query, document).
    PartnerFirst,
}

/// One text a record's text is paired with: the name written to the output (a label, a query)
/// and the text the model reads (the hypothesis made from the label, the query itself).
#[derive(Debug, Clone)]
pub struct Partner {
    pub name: Arc<str>,
    pub text: Arc<str>,
}

/// The partners of a pair task: fixed ones (tokenized once, at load) and, per record, the ones
/// a task reads from a column.
pub struct Partners {
    fixed: Vec<(Partner, Encoding)>,
    order: Order,
}

/// Messages of a pair task for records it cannot read.
pub struct Reasons {
    /// The record's text is empty (or only white space).
    pub empty_text: &'static str,
    /// The record has no partner at all.
    pub no_partner: &'static str,
}

impl Partners {
    /// Tokenize the fixed partners; a partner the tokenizer rejects is an error naming it.
    pub fn new(
        tokenizer: &TextTokenizer,
        fixed: Vec<Partner>,
        order: Order,
    ) -> std::result::Result<Self, String> {
        let texts: Vec<&str> = fixed.iter().map(|p| &*p.text).collect();
        let encoded = tokenizer.encode_raw_fast(&texts);
        let mut out = Vec::with_capacity(fixed.len());
        for (p, e) in fixed.into_iter().zip(encoded) {
            let e = e.map_err(|e| format!("'{}': {e}", p.text))?;
            out.push((p, e));
        }
        Ok(Partners { fixed: out, order })
    }

    pub fn fixed(&self) -> impl Iterator<Item = &Partner> {
        self.fixed.iter().map(|(p, _)| p)
    }

    /// Features of every (record, partner) pair of a chunk: part `k` of a record is its `k`-th
    /// partner (fixed ones first, then those `extra` gives for the record). `extra` returns the
    /// record's own partners or the reason the record fails.
    pub fn featurize(
        &self,
        chunk: &Chunk,
        cache: &TokenCache,
        tokenizer: &TextTokenizer,
        reasons: &Reasons,
        extra: impl Fn(usize) -> std::result::Result<Vec<Partner>, String>,
    ) -> Featurized {
        let mut out = Featurized::default();
        let raw = cache.raw(tokenizer, &chunk.texts);
        // The records to pair, with their own partners.
        let mut records: Vec<(usize, Vec<Partner>)> = Vec::new();
        for (row, text) in chunk.texts.iter().enumerate() {
            let Some(text) = text else { continue };
            let fail = |reason: String| RecordError::new(row, Stage::Tokenize, reason);
            if text.trim().is_empty() {
                out.errors.push(fail(reasons.empty_text.to_string()));
                continue;
            }
            let own = match extra(row) {
                Ok(own) => own,
                Err(reason) => {
                    out.errors.push(fail(reason));
                    continue;
                }
            };
            if self.fixed.is_empty() && own.is_empty() {
                out.errors.push(fail(reasons.no_partner.to_string()));
                continue;
            }
            if let Err(e) = &raw[row] {
                out.errors.push(fail(e.clone()));
                continue;
            }
            records.push((row, own));
        }
        // Every distinct per-record partner text of the chunk, tokenized once.
        let mut own_index: HashMap<Arc<str>, usize> = HashMap::new();
        let mut own_texts: Vec<Arc<str>> = Vec::new();
        for (_, own) in &records {
            for p in own {
                own_index.entry(p.text.clone()).or_insert_with(|| {
                    own_texts.push(p.text.clone());
                    own_texts.len() - 1
                });
            }
        }
        let own_strs: Vec<&str> = own_texts.iter().map(|t| &**t).collect();
        let own_raw = tokenizer.encode_raw_fast(&own_strs);
        // One job per pair: (record, part, partner, partner encoding).
        let mut jobs: Vec<(
            usize,
            usize,
            &Partner,
            std::result::Result<&Encoding, &String>,
        )> = Vec::new();
        for (row, own) in &records {
            for (k, (p, e)) in self.fixed.iter().enumerate() {
                jobs.push((*row, k, p, Ok(e)));
            }
            for (k, p) in own.iter().enumerate() {
                let e = own_raw[own_index[&p.text]].as_ref();
                jobs.push((*row, self.fixed.len() + k, p, e));
            }
        }
        let joined: Vec<std::result::Result<crate::model::tokenizer::Tokenized, String>> = jobs
            .iter()
            .collect::<Vec<_>>()
            .into_maybe_par_iter()
            .map(|(row, _, p, partner)| {
                let partner = (*partner).map_err(|e| format!("'{}': {e}", p.name))?;
                let text = raw[*row].as_ref().map_err(Clone::clone)?;
                let (a, b) = match self.order {
                    Order::TextFirst => (text.clone(), partner.clone()),
                    Order::PartnerFirst => (partner.clone(), text.clone()),
                };
                tokenizer.finish_pair(a, b).map_err(|e| {
                    format!(
                        "the text and '{}' cannot be cut to {} tokens ({e}); raise max_length or shorten it",
                        p.name,
                        tokenizer.max_length()
                    )
                })
            })
            .collect();
        let mut failed: HashMap<usize, String> = HashMap::new();
        let mut truncated = vec![false; chunk.len()];
        for ((row, part, p, _), t) in jobs.iter().zip(joined) {
            match t {
                Ok(t) => {
                    truncated[*row] |= t.truncated;
                    let mut windows = t.windows;
                    out.features.push(Feature {
                        row: *row,
                        part: *part,
                        encoding: windows.swap_remove(0),
                        text: chunk.texts[*row].clone().unwrap_or_else(|| Arc::from("")),
                        question: Some(p.name.clone()),
                    });
                }
                Err(e) => {
                    failed.entry(*row).or_insert(e);
                }
            }
        }
        out.truncated = records
            .iter()
            .filter(|(row, _)| truncated[*row] && !failed.contains_key(row))
            .count();
        if !failed.is_empty() {
            out.features.retain(|f| !failed.contains_key(&f.row));
            let mut rows: Vec<(usize, String)> = failed.into_iter().collect();
            rows.sort();
            out.errors.extend(
                rows.into_iter()
                    .map(|(row, reason)| RecordError::new(row, Stage::Tokenize, reason)),
            );
        }
        out
    }
}

/// The partners a record's column value names: comma-separated, trimmed, empty items dropped
/// (as transformers' zero-shot pipeline reads a string of labels). `None`: the value is null or
/// not text.
pub fn split_names(
    value: Option<&Arc<str>>,
    role: &str,
) -> std::result::Result<Vec<Arc<str>>, String> {
    let Some(v) = value else {
        return Err(format!(
            "the {role} column is null or not text for this record"
        ));
    };
    Ok(v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Arc::from)
        .collect())
}

/// The pair-score results of a quality comparison (fp32, variant), for
/// [`quality::ranked_scores`](super::quality::ranked_scores).
pub fn scored_pairs<'a>(
    pairs: &'a [(&'a super::TaskOutput, &'a super::TaskOutput)],
) -> impl Iterator<Item = (&'a [super::Scored], &'a [super::Scored])> {
    pairs.iter().filter_map(|(a, b)| match (a, b) {
        (super::TaskOutput::Scored(x), super::TaskOutput::Scored(y)) => Some((&x[..], &y[..])),
        _ => None,
    })
}

/// The [`TaskSpec`](crate::task::config::TaskSpec) of a pair task: its fixed partners (labels,
/// queries) and the column with more of them per record (`role` names them to the source),
/// checked by the task's `check_settings`, loaded as `$task`.
macro_rules! pair_task_spec {
    ($config:ty, $task:ident, $kind:literal, $fixed:ident, $column:ident, $role:literal) => {
        impl crate::task::config::TaskSpec for $config {
            crate::task::config::task_spec_basics!($kind);

            fn preflight(&self, _dir: &crate::model::ModelDir) -> crate::error::Result<()> {
                check_settings(self)
            }

            fn inputs_per_record(&self) -> usize {
                self.$fixed.len() + usize::from(self.$column.is_some())
            }

            fn text_columns(&self) -> Vec<crate::record::TextColumnRequest> {
                crate::task::pairs::column_request(
                    &self.$column,
                    $role,
                    concat!("tasks.", $kind, ".", stringify!($column)),
                )
            }

            fn load(
                &self,
                dir: &crate::model::ModelDir,
                model: &crate::model::OnnxModel,
            ) -> crate::error::Result<std::sync::Arc<dyn crate::task::Task>> {
                Ok(std::sync::Arc::new($task::new(self, dir, model)?))
            }
        }
    };
}
pub(crate) use pair_task_spec;

/// The column a pair task reads its per-record partners from, as a source is asked for it.
pub fn column_request(
    column: &Option<String>,
    role: &'static str,
    key: &str,
) -> Vec<crate::record::TextColumnRequest> {
    column
        .iter()
        .map(|name| crate::record::TextColumnRequest {
            name: name.clone(),
            role,
            key: key.to_string(),
        })
        .collect()
}

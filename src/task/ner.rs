//! Token classification ("NER"), as transformers' TokenClassificationPipeline: softmax per
//! token, special tokens skipped, sub-words detected from the tokenizer's continuing-subword
//! prefix (or from spaces when the tokenizer has none), word-level aggregation (`first`,
//! `average`, `max`), B-/I- grouping into entity groups with the mean score, ignored labels, and
//! the overlap resolution of transformers for windows over long texts. Offsets are character
//! offsets into the original text.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};

use super::{argmax, list_of_structs, list_of_structs_builder, softmax, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::{default_max_length, Labels};
use crate::model::tokenizer::Truncation;
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::task::config::{Aggregation, NerConfig};
use crate::task::quality;

/// One entity (or, with aggregation `none`, one token) found in a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// Entity type (`PER`); with aggregation `none`, the token's label (`B-PER`).
    pub entity_group: String,
    pub score: f32,
    pub word: String,
    /// Character offsets into the text (end exclusive).
    pub start: usize,
    pub end: usize,
}

pub struct NerTask {
    tokenizer: TextTokenizer,
    labels: Labels,
    aggregation: Aggregation,
    ignore: Vec<String>,
    column: String,
    output: String,
}

/// A token with its scores, before aggregation.
struct PreEntity {
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    is_subword: bool,
}

/// A labelled token or word, before grouping.
struct Tagged {
    label: String,
    score: f32,
    word: String,
    start: usize,
    end: usize,
}

pub fn entity_fields() -> Fields {
    Fields::from(vec![
        Field::new("entity_group", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("word", DataType::Utf8, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ])
}

fn split_tag(label: &str) -> (bool, &str) {
    // (is_begin, tag); a label without B-/I- counts as inside.
    if let Some(t) = label.strip_prefix("B-") {
        (true, t)
    } else if let Some(t) = label.strip_prefix("I-") {
        (false, t)
    } else {
        (false, label)
    }
}

impl NerTask {
    pub fn new(cfg: &NerConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        let labels = Labels::from_model(dir);
        if !labels.from_config {
            tracing::warn!(
                model = %dir.dir.display(),
                "config.json has no id2label; labels are named LABEL_0, LABEL_1, ... as transformers does"
            );
        }
        let output = if model.output_names.iter().any(|n| n == "logits") {
            "logits".to_string()
        } else {
            model
                .output_names
                .first()
                .cloned()
                .ok_or_else(|| Error::model(&dir.onnx, "the graph has no outputs"))?
        };
        if model.output_rank(&output).is_some_and(|r| r != 3) {
            return Err(Error::model(
                &dir.dir,
                format!(
                    "output '{output}' is not [batch, sequence, labels]; is this a token-classification model? (sequence classification is the `sentiment` task)"
                ),
            ));
        }
        if let (Some(w), true) = (model.output_last_dim(&output), labels.from_config) {
            if w != labels.len() {
                return Err(Error::model(
                    &dir.dir,
                    format!(
                        "config.json id2label has {} labels but the model outputs {w} scores per token; is this a token-classification model?",
                        labels.len()
                    ),
                ));
            }
        }
        let (max_length, stride) = windows(cfg, dir)?;
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length,
                stride,
                windows: stride > 0,
                only_second: false,
                only_first: false,
            },
        )?;
        let room = max_length.saturating_sub(tokenizer.added_tokens(false));
        if stride > 0 && stride >= room {
            return Err(Error::config(format!(
                "tasks.ner.stride ({stride}) must be less than the {room} text tokens of a window (max_length {max_length} minus special tokens)"
            )));
        }
        Ok(NerTask {
            tokenizer,
            labels,
            aggregation: cfg.aggregation,
            ignore: cfg.ignore_labels.clone(),
            column: cfg.column.clone(),
            output,
        })
    }

    /// Tokens of one window with their scores (special tokens skipped).
    fn pre_entities(&self, f: &Feature, probs: &[Vec<f32>]) -> Vec<PreEntity> {
        let enc = &f.encoding;
        let chars: Vec<(usize, char)> = f.text.char_indices().collect();
        let char_slice = |s: usize, e: usize| -> String {
            let s = s.min(chars.len());
            let e = e.min(chars.len()).max(s);
            let from = chars.get(s).map(|c| c.0).unwrap_or(f.text.len());
            let to = chars.get(e).map(|c| c.0).unwrap_or(f.text.len());
            f.text[from..to].to_string()
        };
        let mut out = Vec::new();
        for (idx, token_scores) in probs.iter().enumerate() {
            if enc.get_special_tokens_mask()[idx] == 1 {
                continue;
            }
            let id = enc.get_ids()[idx];
            let mut word = self.tokenizer.id_to_token(id);
            let (start, end) = enc.get_offsets()[idx];
            let word_ref = char_slice(start, end);
            let mut is_subword = match &self.tokenizer.subword_prefix {
                Some(_) => word.chars().count() != word_ref.chars().count(),
                None => start > 0 && !char_slice(start - 1, start + 1).contains(' '),
            };
            if Some(id) == self.tokenizer.unk_id {
                word = word_ref;
                is_subword = false;
            }
            out.push(PreEntity {
                word,
                scores: token_scores.clone(),
                start,
                end,
                is_subword,
            });
        }
        out
    }

    fn aggregate_word(&self, group: &[PreEntity]) -> Tagged {
        let word = self
            .tokenizer
            .tokens_to_string(group.iter().map(|e| e.word.clone()).collect());
        let (label, score) = match self.aggregation {
            Aggregation::First => {
                let s = &group[0].scores;
                let i = argmax(s);
                (i, s[i])
            }
            Aggregation::Max => {
                // First token whose best score is the highest.
                let mut best = 0;
                let mut best_max = f32::NEG_INFINITY;
                for (k, e) in group.iter().enumerate() {
                    let m = e.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if m > best_max {
                        best_max = m;
                        best = k;
                    }
                }
                let s = &group[best].scores;
                let i = argmax(s);
                (i, s[i])
            }
            _ => {
                let n = group[0].scores.len();
                let mut avg = vec![0f32; n];
                for e in group {
                    for (a, &v) in avg.iter_mut().zip(&e.scores) {
                        *a += v;
                    }
                }
                for a in &mut avg {
                    *a /= group.len() as f32;
                }
                let i = argmax(&avg);
                (i, avg[i])
            }
        };
        Tagged {
            label: self.labels.name(label),
            score,
            word,
            start: group[0].start,
            end: group[group.len() - 1].end,
        }
    }

    fn group(&self, tagged: Vec<Tagged>) -> Vec<Entity> {
        let mut groups: Vec<Entity> = Vec::new();
        let mut current: Vec<Tagged> = Vec::new();
        let flush = |current: &mut Vec<Tagged>, groups: &mut Vec<Entity>| {
            if current.is_empty() {
                return;
            }
            let tag = current[0]
                .label
                .split_once('-')
                .map(|(_, t)| t.to_string())
                .unwrap_or_else(|| current[0].label.clone());
            let score = current.iter().map(|t| t.score).sum::<f32>() / current.len() as f32;
            let word = self
                .tokenizer
                .tokens_to_string(current.iter().map(|t| t.word.clone()).collect());
            groups.push(Entity {
                entity_group: tag,
                score,
                word,
                start: current[0].start,
                end: current[current.len() - 1].end,
            });
            current.clear();
        };
        for t in tagged {
            if let Some(last) = current.last() {
                let (begin, tag) = split_tag(&t.label);
                let (_, last_tag) = split_tag(&last.label);
                if tag != last_tag || begin {
                    flush(&mut current, &mut groups);
                }
            }
            current.push(t);
        }
        flush(&mut current, &mut groups);
        groups
    }

    /// Entities of one window.
    pub fn window_entities(&self, f: &Feature, probs: &[Vec<f32>]) -> Vec<Entity> {
        let pre = self.pre_entities(f, probs);
        let entities: Vec<Entity> = match self.aggregation {
            Aggregation::None | Aggregation::Simple => {
                let tagged: Vec<Tagged> = pre
                    .into_iter()
                    .map(|p| {
                        let i = argmax(&p.scores);
                        Tagged {
                            label: self.labels.name(i),
                            score: p.scores[i],
                            word: p.word,
                            start: p.start,
                            end: p.end,
                        }
                    })
                    .collect();
                if self.aggregation == Aggregation::None {
                    tagged
                        .into_iter()
                        .map(|t| Entity {
                            entity_group: t.label,
                            score: t.score,
                            word: t.word,
                            start: t.start,
                            end: t.end,
                        })
                        .collect()
                } else {
                    self.group(tagged)
                }
            }
            _ => {
                let mut words = Vec::new();
                let mut group: Vec<PreEntity> = Vec::new();
                for p in pre {
                    if !group.is_empty() && !p.is_subword {
                        words.push(self.aggregate_word(&group));
                        group.clear();
                    }
                    group.push(p);
                }
                if !group.is_empty() {
                    words.push(self.aggregate_word(&group));
                }
                self.group(words)
            }
        };
        entities
            .into_iter()
            .filter(|e| !self.ignore.contains(&e.entity_group))
            .collect()
    }
}

/// transformers' resolution of entities found in overlapping windows: sorted by start, an
/// entity starting inside the previous one replaces it when longer, or as long with a higher
/// score.
pub fn resolve_overlaps(mut entities: Vec<Entity>) -> Vec<Entity> {
    if entities.is_empty() {
        return entities;
    }
    entities.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    let mut prev = entities[0].clone();
    for e in entities {
        if prev.start <= e.start && e.start < prev.end {
            let cur_len = e.end - e.start;
            let prev_len = prev.end - prev.start;
            if cur_len > prev_len || (cur_len == prev_len && e.score > prev.score) {
                prev = e;
            }
        } else {
            out.push(prev);
            prev = e;
        }
    }
    out.push(prev);
    out
}

/// The window length and stride over a model folder: the configured ones, else the model's
/// length and a quarter of it.
fn windows(cfg: &NerConfig, dir: &ModelDir) -> Result<(usize, usize)> {
    let max_length = cfg.max_length.unwrap_or_else(|| default_max_length(dir));
    let stride = cfg.stride.unwrap_or(max_length / 4);
    if stride > 0 && stride + 4 >= max_length {
        return Err(Error::config(format!(
            "tasks.ner.stride ({stride}) must be well below the window length ({max_length})"
        )));
    }
    Ok((max_length, stride))
}

impl Task for NerTask {
    fn name(&self) -> &'static str {
        "ner"
    }

    fn fields(&self) -> Vec<FieldRef> {
        vec![list_of_structs(&self.column, entity_fields())]
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn model_outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (shape, data) = outputs.f32(&self.output)?;
        if shape.len() != 3 || shape[0] != features.len() || shape[1] != batch.seq_len {
            return Err(Error::Inference(format!(
                "output '{}' has shape {shape:?}, expected [{}, {}, labels]; is this a token-classification model?",
                self.output,
                features.len(),
                batch.seq_len
            )));
        }
        let (seq, width) = (shape[1], shape[2]);
        Ok(features
            .iter()
            .enumerate()
            .map(|(r, f)| {
                let n = f.encoding.len();
                let probs: Vec<Vec<f32>> = (0..n)
                    .map(|t| {
                        let base = (r * seq + t) * width;
                        softmax(&data[base..base + width])
                    })
                    .collect();
                Ok(TaskOutput::Entities(self.window_entities(f, &probs)))
            })
            .collect())
    }

    fn combine(&self, parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        let windows = parts.len();
        let mut all = Vec::new();
        for p in parts {
            match p {
                TaskOutput::Entities(e) => all.extend(e),
                other => return Err(format!("internal: ner got {other:?}")),
            }
        }
        Ok(TaskOutput::Entities(if windows > 1 {
            resolve_overlaps(all)
        } else {
            all
        }))
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        let key = |e: &Entity| (e.entity_group.clone(), e.start, e.end);
        quality::set_f1(
            figures,
            pairs.iter().filter_map(|(a, b)| match (a, b) {
                (TaskOutput::Entities(x), TaskOutput::Entities(y)) => {
                    Some((x.iter().map(key).collect(), y.iter().map(key).collect()))
                }
                _ => None,
            }),
        );
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let mut list = list_of_structs_builder(entity_fields());
        for o in outputs {
            let TaskOutput::Entities(es) = o else {
                return Err(Error::Inference("internal: ner got another output".into()));
            };
            let sb = list.values();
            for e in es {
                sb.field_builder::<StringBuilder>(0)
                    .expect("entity_group")
                    .append_value(&e.entity_group);
                sb.field_builder::<Float32Builder>(1)
                    .expect("score")
                    .append_value(e.score);
                sb.field_builder::<StringBuilder>(2)
                    .expect("word")
                    .append_value(&e.word);
                sb.field_builder::<Int64Builder>(3)
                    .expect("start")
                    .append_value(e.start as i64);
                sb.field_builder::<Int64Builder>(4)
                    .expect("end")
                    .append_value(e.end as i64);
                sb.append(true);
            }
            list.append(true);
        }
        Ok(vec![Arc::new(list.finish())])
    }
}

impl crate::task::config::TaskSpec for NerConfig {
    crate::task::config::task_spec_basics!("ner");

    fn preflight(&self, dir: &ModelDir) -> Result<()> {
        windows(self, dir).map(|_| ())
    }

    fn load(&self, dir: &ModelDir, model: &OnnxModel) -> Result<std::sync::Arc<dyn Task>> {
        Ok(std::sync::Arc::new(NerTask::new(self, dir, model)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: usize, end: usize, score: f32) -> Entity {
        Entity {
            entity_group: "X".into(),
            score,
            word: String::new(),
            start,
            end,
        }
    }

    #[test]
    fn overlap_keeps_longer_then_higher_score() {
        let out = resolve_overlaps(vec![
            e(0, 5, 0.5),
            e(2, 9, 0.1),
            e(20, 25, 0.3),
            e(20, 25, 0.9),
        ]);
        assert_eq!(out, vec![e(2, 9, 0.1), e(20, 25, 0.9)]);
    }

    #[test]
    fn tags() {
        assert_eq!(split_tag("B-PER"), (true, "PER"));
        assert_eq!(split_tag("I-LOC"), (false, "LOC"));
        assert_eq!(split_tag("O"), (false, "O"));
    }
}

//! Zero-shot classification, as transformers 4.53's ZeroShotClassificationPipeline: each
//! candidate label becomes a hypothesis (`hypothesis_template` with the label in place of `{}`),
//! the NLI model reads every (text, hypothesis) pair with only the text cut at the maximum length,
//! and the label's score is its entailment logit softmaxed over the record's labels (one label
//! fits), or with `multi_label` (or a single label) each label's entailment logit softmaxed
//! against its contradiction logit (index 0, or the last when entailment is 0, as the pipeline
//! takes it). The entailment index is the first `label2id` entry whose name starts with
//! "entail" (case-insensitive). Labels are written best first.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use serde_json::Value;

use super::pairs::{split_names, Order, Partner, Partners, Reasons};
use super::{list_of_structs, list_of_structs_builder, Featurized, Scored, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::default_max_length;
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::Chunk;
use crate::task::config::ZeroShotConfig;
use crate::task::quality;

/// Put `label` into a Python `str.format` template with one positional argument: `{}` or `{0}`
/// (any number of `{0}`, one `{}`), `{{` / `}}` for braces. `Err` says what is wrong.
pub fn format_template(template: &str, label: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(template.len() + label.len());
    let mut chars = template.chars().peekable();
    let (mut auto, mut manual) = (0usize, 0usize);
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => field.push(ch),
                        None => return Err("a '{' is not closed (write '{{' for a brace)".into()),
                    }
                }
                match field.as_str() {
                    "" => auto += 1,
                    "0" => manual += 1,
                    other => {
                        return Err(format!(
                            "'{{{other}}}' is not a placeholder: use {{}} for the label"
                        ))
                    }
                }
                out.push_str(label);
            }
            '}' => return Err("a single '}' (write '}}' for a brace)".into()),
            c => out.push(c),
        }
    }
    if auto > 1 {
        return Err("more than one {} (use {0} to repeat the label)".into());
    }
    if auto > 0 && manual > 0 {
        return Err("both {} and {0}: use one kind".into());
    }
    if auto + manual == 0 {
        return Err("it has no {} where the label goes".into());
    }
    Ok(out)
}

/// The entailment index of an NLI model: the first `label2id` name starting with "entail".
fn entailment_id(config: Option<&Value>) -> Option<usize> {
    config?
        .get("label2id")?
        .as_object()?
        .iter()
        .find(|(name, _)| name.to_lowercase().starts_with("entail"))
        .and_then(|(_, id)| id.as_u64())
        .map(|id| id as usize)
}

pub struct ZeroShotTask {
    tokenizer: TextTokenizer,
    partners: Partners,
    labels_column: Option<String>,
    template: String,
    multi_label: bool,
    entailment: usize,
    top_k: Option<usize>,
    threshold: Option<f32>,
    column: String,
    output: String,
}

impl ZeroShotTask {
    pub fn new(cfg: &ZeroShotConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        let entailment = entailment_id(dir.config.as_ref()).ok_or_else(|| {
            Error::model(
                &dir.dir,
                "config.json's label2id has no entailment label (a name starting with \"entail\"); tasks.zero_shot needs a model trained on NLI, or a label2id naming its entailment class",
            )
        })?;
        let output = if model.output_names.iter().any(|n| n == "logits") {
            "logits".to_string()
        } else {
            return Err(Error::model(
                &dir.onnx,
                format!(
                    "the graph has no 'logits' output (outputs: {}); tasks.zero_shot needs a sequence-classification model",
                    model.output_names.join(", ")
                ),
            ));
        };
        if model.output_rank(&output).is_some_and(|r| r != 2) {
            return Err(Error::model(
                &dir.dir,
                "output 'logits' is not [batch, labels]; tasks.zero_shot needs a sequence-classification (NLI) model",
            ));
        }
        if let Some(w) = model.output_last_dim(&output) {
            if entailment >= w || w < 2 {
                return Err(Error::model(
                    &dir.dir,
                    format!("the entailment label is index {entailment} but the model outputs {w} logits; tasks.zero_shot needs an NLI model (entailment and contradiction at least)"),
                ));
            }
        }
        check_settings(cfg)?;
        let max_length = cfg.max_length.unwrap_or_else(|| default_max_length(dir));
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: true,
            },
        )?;
        let mut fixed = Vec::with_capacity(cfg.labels.len());
        for label in &cfg.labels {
            let text = format_template(&cfg.hypothesis_template, label)
                .map_err(|e| Error::config(format!("tasks.zero_shot.hypothesis_template: {e}")))?;
            fixed.push(Partner {
                name: Arc::from(label.as_str()),
                text: Arc::from(text),
            });
        }
        let partners = Partners::new(&tokenizer, fixed, Order::TextFirst)
            .map_err(|e| Error::config(format!("tasks.zero_shot.labels: {e}")))?;
        // A hypothesis must leave room for the text.
        for p in partners.fixed() {
            let n = tokenizer
                .plain_offsets(&p.text)
                .map_err(Error::config)?
                .len();
            if n + tokenizer.added_tokens(true) >= max_length {
                return Err(Error::config(format!(
                    "tasks.zero_shot.labels: the hypothesis '{}' takes {n} tokens and leaves no room for the text in max_length {max_length}",
                    p.text
                )));
            }
        }
        Ok(ZeroShotTask {
            tokenizer,
            partners,
            labels_column: cfg.labels_column.clone(),
            template: cfg.hypothesis_template.clone(),
            multi_label: cfg.multi_label,
            entailment,
            top_k: cfg.top_k,
            threshold: cfg.threshold,
            column: cfg.column.clone(),
            output,
        })
    }

    /// Scores of one record's labels from their pairs' logits.
    fn scores(&self, pairs: &[Scored]) -> Vec<f32> {
        let e = self.entailment;
        if self.multi_label || pairs.len() == 1 {
            pairs
                .iter()
                .map(|p| {
                    let c = if e == 0 { p.logits.len() - 1 } else { 0 };
                    super::softmax(&[p.logits[c], p.logits[e]])[1]
                })
                .collect()
        } else {
            let entail: Vec<f32> = pairs.iter().map(|p| p.logits[e]).collect();
            super::softmax(&entail)
        }
    }
}

/// Checks of the settings that need no model.
pub(crate) fn check_settings(cfg: &ZeroShotConfig) -> Result<()> {
    if cfg.labels.is_empty() && cfg.labels_column.is_none() {
        return Err(Error::config(
            "tasks.zero_shot has no labels: give `labels: [...]` or `labels_column`",
        ));
    }
    for (i, l) in cfg.labels.iter().enumerate() {
        if l.trim().is_empty() {
            return Err(Error::config(format!(
                "tasks.zero_shot.labels[{i}] is empty"
            )));
        }
    }
    format_template(&cfg.hypothesis_template, "label")
        .map_err(|e| Error::config(format!("tasks.zero_shot.hypothesis_template: {e}")))?;
    if cfg.top_k == Some(0) {
        return Err(Error::config(
            "tasks.zero_shot.top_k is 0: give at least 1, or leave it out for every label",
        ));
    }
    Ok(())
}

fn label_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

impl Task for ZeroShotTask {
    fn name(&self) -> &'static str {
        "zero_shot"
    }

    fn fields(&self) -> Vec<FieldRef> {
        vec![list_of_structs(&self.column, label_fields())]
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn needs_offsets(&self) -> bool {
        false
    }

    fn model_outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn featurize(&self, chunk: &Chunk, cache: &TokenCache) -> Featurized {
        let column = self.labels_column.as_deref().map(|c| chunk.column(c));
        self.partners.featurize(
            chunk,
            cache,
            &self.tokenizer,
            &Reasons {
                empty_text: "zero-shot classification needs a text: the text is empty",
                no_partner: "no candidate label for this record (the labels column is empty)",
            },
            |row| {
                let Some(values) = column else {
                    return Ok(Vec::new());
                };
                let names = split_names(values.and_then(|v| v.get(row)?.as_ref()), "labels")?;
                names
                    .into_iter()
                    .map(|name| {
                        let text = format_template(&self.template, &name)
                            .map_err(|e| format!("hypothesis_template: {e}"))?;
                        Ok(Partner {
                            name,
                            text: Arc::from(text),
                        })
                    })
                    .collect()
            },
        )
    }

    fn postprocess(
        &self,
        features: &[&Feature],
        _batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (shape, data) = outputs.f32(&self.output)?;
        if shape.len() != 2 || shape[0] != features.len() || shape[1] <= self.entailment {
            return Err(Error::Inference(format!(
                "output '{}' has shape {shape:?}, expected [{}, labels > {}]",
                self.output,
                features.len(),
                self.entailment
            )));
        }
        let width = shape[1];
        Ok(features
            .iter()
            .enumerate()
            .map(|(r, f)| {
                let logits = &data[r * width..(r + 1) * width];
                if logits.iter().any(|x| !x.is_finite()) {
                    return Err("the model produced non-finite logits".to_string());
                }
                Ok(TaskOutput::Scored(vec![Scored {
                    name: f.question.clone().unwrap_or_else(|| Arc::from("")),
                    score: 0.0,
                    logits: logits.to_vec(),
                }]))
            })
            .collect())
    }

    fn combine(&self, parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        let mut pairs: Vec<Scored> = Vec::with_capacity(parts.len());
        for p in parts {
            let TaskOutput::Scored(s) = p else {
                return Err("internal: zero_shot got another output".into());
            };
            pairs.extend(s);
        }
        if pairs.is_empty() {
            return Err("internal: no label scored".into());
        }
        let scores = self.scores(&pairs);
        // Best first; equal scores in reverse label order, as reversing numpy's argsort does.
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        order.reverse();
        let mut out: Vec<Scored> = order
            .into_iter()
            .map(|i| Scored {
                name: pairs[i].name.clone(),
                score: scores[i],
                logits: Vec::new(),
            })
            .collect();
        if let Some(t) = self.threshold {
            out.retain(|s| s.score >= t);
        }
        if let Some(k) = self.top_k {
            out.truncate(k);
        }
        Ok(TaskOutput::Scored(out))
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        quality::ranked_scores(figures, super::pairs::scored_pairs(pairs));
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let mut list = list_of_structs_builder(label_fields());
        for o in outputs {
            let TaskOutput::Scored(labels) = o else {
                return Err(Error::Inference(
                    "internal: zero_shot got another output".into(),
                ));
            };
            let sb = list.values();
            for l in labels {
                sb.field_builder::<StringBuilder>(0)
                    .expect("label")
                    .append_value(&*l.name);
                sb.field_builder::<Float32Builder>(1)
                    .expect("score")
                    .append_value(l.score);
                sb.append(true);
            }
            list.append(true);
        }
        Ok(vec![Arc::new(list.finish())])
    }
}

super::pairs::pair_task_spec!(
    ZeroShotConfig,
    ZeroShotTask,
    "zero_shot",
    labels,
    labels_column,
    "labels"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_format_as_python_does() {
        let f = |t: &str| format_template(t, "sports");
        assert_eq!(f("This example is {}.").unwrap(), "This example is sports.");
        assert_eq!(f("{0}: is it {0}?").unwrap(), "sports: is it sports?");
        assert_eq!(f("{{literal}} {}").unwrap(), "{literal} sports");
        assert!(f("no placeholder").unwrap_err().contains("no {}"));
        assert!(f("{} and {}").is_err());
        assert!(f("{label}").is_err());
        assert!(f("{} {0}").is_err());
        assert!(f("open { brace").is_err());
        assert!(f("close } brace {}").is_err());
    }

    #[test]
    fn entailment_index_from_label2id() {
        let c = json!({"label2id": {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}});
        assert_eq!(entailment_id(Some(&c)), Some(2));
        let c = json!({"label2id": {"entailment": 0, "not_entailment": 1}});
        assert_eq!(entailment_id(Some(&c)), Some(0));
        let c = json!({"label2id": {"positive": 0, "negative": 1}});
        assert_eq!(entailment_id(Some(&c)), None);
        assert_eq!(entailment_id(None), None);
    }
}

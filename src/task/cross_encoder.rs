//! Cross-encoder scores, as sentence-transformers' `CrossEncoder.predict`: every (query, text)
//! pair read together, both cut longest-first at the maximum length, and the logits put through
//! the model's activation: the one `config.json` names (`sentence_transformers.activation_fn`),
//! else sigmoid for a one-logit model and identity otherwise. Scores are written in query order.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Builder, ListBuilder, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use serde_json::Value;

use super::pairs::{Order, Partner, Partners, Reasons};
use super::{list_of_structs, Featurized, Scored, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::{default_max_length, Labels};
use crate::model::tokenizer::{TokenCache, Truncation};
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::record::Chunk;
use crate::task::config::{Activation, CrossEncoderConfig};
use crate::task::quality;

/// The activation sentence-transformers picks for a model's `config.json` and logit count.
pub fn activation_for(
    config: Option<&Value>,
    width: usize,
) -> std::result::Result<Activation, String> {
    let path = config.and_then(|c| {
        c.get("sentence_transformers")
            .and_then(|s| s.get("activation_fn"))
            .or_else(|| c.get("sbert_ce_default_activation_function"))
            .and_then(Value::as_str)
    });
    match path {
        Some(p) => match p.rsplit('.').next().unwrap_or(p) {
            "Sigmoid" => Ok(Activation::Sigmoid),
            "Identity" => Ok(Activation::Identity),
            "Tanh" => Ok(Activation::Tanh),
            "Softmax" => Ok(Activation::Softmax),
            _ => Err(format!(
                "config.json names the activation '{p}', which bertflow does not know; set tasks.cross_encoder.activation (sigmoid, identity, tanh or softmax)"
            )),
        },
        None if width == 1 => Ok(Activation::Sigmoid),
        None => Ok(Activation::Identity),
    }
}

fn apply(activation: Activation, logits: &[f32]) -> Vec<f32> {
    match activation {
        Activation::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        Activation::Tanh => logits.iter().map(|x| x.tanh()).collect(),
        Activation::Softmax => super::softmax(logits),
        Activation::Identity | Activation::Auto => logits.to_vec(),
    }
}

pub struct CrossEncoderTask {
    tokenizer: TextTokenizer,
    partners: Partners,
    query_column: Option<String>,
    activation: Activation,
    /// Class names of a model with several logits (`None`: one score per pair).
    classes: Option<Labels>,
    threshold: Option<f32>,
    column: String,
    output: String,
}

pub(crate) fn check_settings(cfg: &CrossEncoderConfig) -> Result<()> {
    if cfg.queries.is_empty() && cfg.query_column.is_none() {
        return Err(Error::config(
            "tasks.cross_encoder has no queries: give `queries: [...]` or `query_column`",
        ));
    }
    for (i, q) in cfg.queries.iter().enumerate() {
        if q.trim().is_empty() {
            return Err(Error::config(format!(
                "tasks.cross_encoder.queries[{i}] is empty"
            )));
        }
    }
    Ok(())
}

impl CrossEncoderTask {
    pub fn new(cfg: &CrossEncoderConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        check_settings(cfg)?;
        if !model.output_names.iter().any(|n| n == "logits") {
            return Err(Error::model(
                &dir.onnx,
                format!(
                    "the graph has no 'logits' output (outputs: {}); tasks.cross_encoder needs a sequence-classification model",
                    model.output_names.join(", ")
                ),
            ));
        }
        let output = "logits".to_string();
        if model.output_rank(&output).is_some_and(|r| r != 2) {
            return Err(Error::model(
                &dir.dir,
                "output 'logits' is not [batch, labels]; tasks.cross_encoder needs a sequence-classification model",
            ));
        }
        let labels = Labels::from_model(dir);
        let width = model
            .output_last_dim(&output)
            .unwrap_or_else(|| labels.len().max(1));
        let activation = match cfg.activation {
            Activation::Auto => {
                activation_for(dir.config.as_ref(), width).map_err(|e| Error::model(&dir.dir, e))?
            }
            a => a,
        };
        if activation == Activation::Softmax && width == 1 {
            return Err(Error::config(
                "tasks.cross_encoder.activation: softmax over one logit is always 1; use sigmoid or identity",
            ));
        }
        let max_length = cfg.max_length.unwrap_or_else(|| default_max_length(dir));
        let tokenizer = TextTokenizer::load(
            &dir.tokenizer,
            Truncation {
                max_length,
                stride: 0,
                windows: false,
                only_second: false,
                only_first: false,
            },
        )?;
        let fixed = cfg
            .queries
            .iter()
            .map(|q| Partner {
                name: Arc::from(q.as_str()),
                text: Arc::from(q.as_str()),
            })
            .collect();
        let partners = Partners::new(&tokenizer, fixed, Order::PartnerFirst)
            .map_err(|e| Error::config(format!("tasks.cross_encoder.queries: {e}")))?;
        Ok(CrossEncoderTask {
            tokenizer,
            partners,
            query_column: cfg.query_column.clone(),
            activation,
            classes: (width > 1).then_some(labels),
            threshold: cfg.threshold,
            column: cfg.column.clone(),
            output,
        })
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    fn item_fields(&self) -> Fields {
        let mut f = vec![
            Field::new("query", DataType::Utf8, false),
            Field::new("score", DataType::Float32, false),
        ];
        if self.classes.is_some() {
            f.push(Field::new("label", DataType::Utf8, false));
            f.push(Field::new(
                "scores",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
                false,
            ));
        }
        Fields::from(f)
    }
}

impl Task for CrossEncoderTask {
    fn name(&self) -> &'static str {
        "cross_encoder"
    }

    fn fields(&self) -> Vec<FieldRef> {
        vec![list_of_structs(&self.column, self.item_fields())]
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
        let column = self.query_column.as_deref().map(|c| chunk.column(c));
        self.partners.featurize(
            chunk,
            cache,
            &self.tokenizer,
            &Reasons {
                empty_text: "a cross-encoder needs a text to score: the text is empty",
                no_partner: "no query for this record",
            },
            |row| {
                let Some(values) = column else {
                    return Ok(Vec::new());
                };
                match values.and_then(|v| v.get(row)?.clone()) {
                    None => Err("the query column is null or not text for this record".into()),
                    Some(q) if q.trim().is_empty() => {
                        Err("the query of this record is empty".into())
                    }
                    Some(q) => Ok(vec![Partner {
                        name: q.clone(),
                        text: q,
                    }]),
                }
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
        if shape.len() != 2 || shape[0] != features.len() {
            return Err(Error::Inference(format!(
                "output '{}' has shape {shape:?}, expected [{}, labels]",
                self.output,
                features.len()
            )));
        }
        let width = shape[1];
        Ok(features
            .iter()
            .enumerate()
            .map(|(r, f)| {
                let scores = apply(self.activation, &data[r * width..(r + 1) * width]);
                if scores.iter().any(|x| !x.is_finite()) {
                    return Err("the model produced non-finite scores".to_string());
                }
                let best = super::argmax(&scores);
                Ok(TaskOutput::Scored(vec![Scored {
                    name: f.question.clone().unwrap_or_else(|| Arc::from("")),
                    score: scores[best],
                    logits: if width > 1 { scores } else { Vec::new() },
                }]))
            })
            .collect())
    }

    fn combine(&self, parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let TaskOutput::Scored(s) = p else {
                return Err("internal: cross_encoder got another output".into());
            };
            out.extend(s);
        }
        if let Some(t) = self.threshold {
            out.retain(|s| s.score >= t);
        }
        Ok(TaskOutput::Scored(out))
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        quality::ranked_scores(figures, super::pairs::scored_pairs(pairs));
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let fields = self.item_fields();
        let mut builders: Vec<Box<dyn arrow::array::ArrayBuilder>> = vec![
            Box::new(StringBuilder::new()),
            Box::new(Float32Builder::new()),
        ];
        if self.classes.is_some() {
            builders.push(Box::new(StringBuilder::new()));
            builders.push(Box::new(
                ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
                    "item",
                    DataType::Float32,
                    false,
                ))),
            ));
        }
        let item = Field::new("item", DataType::Struct(fields.clone()), false);
        let mut list =
            ListBuilder::new(StructBuilder::new(fields, builders)).with_field(Arc::new(item));
        for o in outputs {
            let TaskOutput::Scored(scores) = o else {
                return Err(Error::Inference(
                    "internal: cross_encoder got another output".into(),
                ));
            };
            let sb = list.values();
            for s in scores {
                sb.field_builder::<StringBuilder>(0)
                    .expect("query")
                    .append_value(&*s.name);
                sb.field_builder::<Float32Builder>(1)
                    .expect("score")
                    .append_value(s.score);
                if let Some(classes) = &self.classes {
                    sb.field_builder::<StringBuilder>(2)
                        .expect("label")
                        .append_value(classes.name(super::argmax(&s.logits)));
                    let l = sb
                        .field_builder::<ListBuilder<Float32Builder>>(3)
                        .expect("scores");
                    l.values().append_slice(&s.logits);
                    l.append(true);
                }
                sb.append(true);
            }
            list.append(true);
        }
        Ok(vec![Arc::new(list.finish())])
    }
}

super::pairs::pair_task_spec!(
    CrossEncoderConfig,
    CrossEncoderTask,
    "cross_encoder",
    queries,
    query_column,
    "query"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn activation_follows_sentence_transformers() {
        let st = |p: &str| json!({"sentence_transformers": {"activation_fn": p}});
        assert_eq!(
            activation_for(Some(&st("torch.nn.modules.activation.Sigmoid")), 1),
            Ok(Activation::Sigmoid)
        );
        assert_eq!(
            activation_for(Some(&st("torch.nn.modules.linear.Identity")), 1),
            Ok(Activation::Identity)
        );
        assert_eq!(
            activation_for(
                Some(
                    &json!({"sbert_ce_default_activation_function": "torch.nn.modules.activation.Tanh"})
                ),
                1
            ),
            Ok(Activation::Tanh)
        );
        assert_eq!(activation_for(Some(&json!({})), 1), Ok(Activation::Sigmoid));
        assert_eq!(activation_for(None, 3), Ok(Activation::Identity));
        assert!(activation_for(Some(&st("my.module.Custom")), 1)
            .unwrap_err()
            .contains("tasks.cross_encoder.activation"));
    }

    #[test]
    fn activations() {
        assert_eq!(apply(Activation::Sigmoid, &[0.0]), vec![0.5]);
        assert_eq!(apply(Activation::Identity, &[1.5, -2.0]), vec![1.5, -2.0]);
        assert_eq!(apply(Activation::Softmax, &[0.0, 0.0]), vec![0.5, 0.5]);
        assert!((apply(Activation::Tanh, &[1.0])[0] - 1f32.tanh()).abs() < 1e-7);
    }
}

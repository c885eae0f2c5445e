//! Sequence classification ("sentiment"), as transformers' TextClassificationPipeline: the
//! classification function is chosen from the model config (regression -> none; multi-label or a
//! single label -> sigmoid; otherwise softmax with the maximum subtracted), logits in f32, the
//! label of the first maximum.

use std::sync::Arc;

use arrow::array::Float32Builder;
use arrow::array::{
    ArrayRef, Float32Array, ListBuilder, StringArray, StringBuilder, StructBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use serde_json::Value;

use super::{argmax, softmax, Task, TaskOutput};
use crate::batch::{Feature, PaddedBatch};
use crate::error::{Error, Result};
use crate::model::labels::{default_max_length, Labels};
use crate::model::tokenizer::Truncation;
use crate::model::{ModelDir, ModelOutputs, OnnxModel, TextTokenizer};
use crate::task::config::{ClassFunction, SentimentConfig, TopK};
use crate::task::quality;

pub struct SentimentTask {
    tokenizer: TextTokenizer,
    labels: Labels,
    function: ClassFunction,
    /// Number of ranked label scores to write (`None`: only label and score).
    ranked: Option<usize>,
    prefix: String,
    output: String,
}

/// The function transformers applies for a config.
pub fn function_for(config: Option<&Value>, num_labels: usize) -> ClassFunction {
    let problem = config
        .and_then(|c| c.get("problem_type"))
        .and_then(Value::as_str);
    match problem {
        Some("regression") => ClassFunction::None,
        Some("multi_label_classification") => ClassFunction::Sigmoid,
        _ if num_labels == 1 => ClassFunction::Sigmoid,
        Some("single_label_classification") => ClassFunction::Softmax,
        _ if num_labels > 1 => ClassFunction::Softmax,
        _ => ClassFunction::None,
    }
}

/// Apply a classification function to one row of logits.
pub fn apply(function: ClassFunction, logits: &[f32]) -> Vec<f32> {
    match function {
        ClassFunction::Softmax => softmax(logits),
        ClassFunction::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
        ClassFunction::None | ClassFunction::Auto => logits.to_vec(),
    }
}

fn score_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
    ])
}

impl SentimentTask {
    pub fn new(cfg: &SentimentConfig, dir: &ModelDir, model: &OnnxModel) -> Result<Self> {
        let labels = Labels::from_model(dir);
        let width = model.output_last_dim("logits");
        if !labels.from_config {
            tracing::warn!(
                model = %dir.dir.display(),
                "config.json has no id2label; labels are named LABEL_0, LABEL_1, ... as transformers does"
            );
        }
        if let Some(w) = width {
            if labels.from_config && labels.len() != w {
                return Err(Error::model(
                    &dir.dir,
                    format!(
                        "config.json id2label has {} labels but the model outputs {w} logits; is this a sequence-classification model?",
                        labels.len()
                    ),
                ));
            }
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
        if model.output_rank(&output).is_some_and(|r| r != 2) {
            return Err(Error::model(
                &dir.dir,
                format!(
                    "output '{output}' is not [batch, labels]; is this a sequence-classification model? (token classification is the `ner` task)"
                ),
            ));
        }
        let num_labels = width.unwrap_or(labels.len().max(2));
        let function = match cfg.function {
            ClassFunction::Auto => function_for(dir.config.as_ref(), num_labels),
            f => f,
        };
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
        let ranked = match &cfg.top_k {
            TopK::Count(1) => None,
            TopK::Count(k) => Some(*k),
            TopK::All(_) => Some(usize::MAX),
        };
        Ok(SentimentTask {
            tokenizer,
            labels,
            function,
            ranked,
            prefix: cfg.column_prefix.clone(),
            output,
        })
    }

    pub fn function(&self) -> ClassFunction {
        self.function
    }
}

impl Task for SentimentTask {
    fn name(&self) -> &'static str {
        "sentiment"
    }

    fn fields(&self) -> Vec<FieldRef> {
        let mut v = vec![
            Arc::new(Field::new(
                format!("{}_label", self.prefix),
                DataType::Utf8,
                false,
            )),
            Arc::new(Field::new(
                format!("{}_score", self.prefix),
                DataType::Float32,
                false,
            )),
        ];
        if self.ranked.is_some() {
            let item = Field::new("item", DataType::Struct(score_struct_fields()), false);
            v.push(Arc::new(Field::new(
                format!("{}_scores", self.prefix),
                DataType::List(Arc::new(item)),
                false,
            )));
        }
        v
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

    fn postprocess(
        &self,
        features: &[&Feature],
        _batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>> {
        let (shape, data) = outputs.f32(&self.output)?;
        if shape.len() != 2 || shape[0] != features.len() {
            return Err(Error::Inference(format!(
                "output '{}' has shape {shape:?}, expected [{}, labels]; is this a sequence-classification model?",
                self.output,
                features.len()
            )));
        }
        let width = shape[1];
        Ok((0..features.len())
            .map(|r| {
                let scores = apply(self.function, &data[r * width..(r + 1) * width]);
                if scores.iter().any(|x| x.is_nan()) {
                    Err("the model produced NaN scores".to_string())
                } else {
                    Ok(TaskOutput::Classes(scores))
                }
            })
            .collect())
    }

    fn quality(&self, pairs: &[(&TaskOutput, &TaskOutput)], figures: &mut quality::Figures) {
        quality::label_agreement(
            figures,
            pairs.iter().filter_map(|(a, b)| match (a, b) {
                (TaskOutput::Classes(x), TaskOutput::Classes(y)) => Some((&x[..], &y[..])),
                _ => None,
            }),
        );
    }

    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>> {
        let mut labels = Vec::with_capacity(outputs.len());
        let mut scores = Vec::with_capacity(outputs.len());
        let mut ranked = ListBuilder::new(StructBuilder::new(
            score_struct_fields(),
            vec![
                Box::new(StringBuilder::new()),
                Box::new(Float32Builder::new()),
            ],
        ))
        .with_field(Arc::new(Field::new(
            "item",
            DataType::Struct(score_struct_fields()),
            false,
        )));
        for o in outputs {
            let TaskOutput::Classes(s) = o else {
                return Err(Error::Inference(
                    "internal: sentiment got another output".into(),
                ));
            };
            let best = argmax(&s);
            labels.push(self.labels.name(best));
            scores.push(s[best]);
            if let Some(k) = self.ranked {
                let mut order: Vec<usize> = (0..s.len()).collect();
                // Stable: equal scores keep label order, as Python's sort does.
                order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
                let sb = ranked.values();
                for &i in order.iter().take(k) {
                    sb.field_builder::<StringBuilder>(0)
                        .expect("label builder")
                        .append_value(self.labels.name(i));
                    sb.field_builder::<Float32Builder>(1)
                        .expect("score builder")
                        .append_value(s[i]);
                    sb.append(true);
                }
                ranked.append(true);
            }
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(labels)),
            Arc::new(Float32Array::from(scores)),
        ];
        if self.ranked.is_some() {
            cols.push(Arc::new(ranked.finish()));
        }
        Ok(cols)
    }
}

impl crate::task::config::TaskSpec for SentimentConfig {
    crate::task::config::task_spec_basics!("sentiment");

    fn load(&self, dir: &ModelDir, model: &OnnxModel) -> Result<std::sync::Arc<dyn Task>> {
        Ok(std::sync::Arc::new(SentimentTask::new(self, dir, model)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn function_follows_transformers() {
        assert_eq!(
            function_for(Some(&json!({"problem_type": "regression"})), 1),
            ClassFunction::None
        );
        assert_eq!(
            function_for(
                Some(&json!({"problem_type": "multi_label_classification"})),
                4
            ),
            ClassFunction::Sigmoid
        );
        assert_eq!(function_for(Some(&json!({})), 1), ClassFunction::Sigmoid);
        assert_eq!(function_for(None, 3), ClassFunction::Softmax);
    }

    #[test]
    fn sigmoid_and_softmax() {
        let s = apply(ClassFunction::Sigmoid, &[0.0]);
        assert!((s[0] - 0.5).abs() < 1e-7);
        let s = apply(ClassFunction::Softmax, &[0.0, 0.0]);
        assert_eq!(s, vec![0.5, 0.5]);
        assert_eq!(apply(ClassFunction::None, &[2.5]), vec![2.5]);
    }
}

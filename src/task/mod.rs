//! Tasks: what a model's outputs mean. A task tokenizes records into model features, turns the
//! outputs of one batch into per-feature results, combines the results of a record's features,
//! and builds the Arrow columns of the output.

pub mod embed;

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::FieldRef;

use crate::batch::{Feature, PaddedBatch};
use crate::error::Result;
use crate::model::{ModelOutputs, OnnxModel};
use crate::record::RecordError;

pub use self::embed::EmbedTask;

/// The result of one task for one record (or one feature of it).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutput {
    Embedding(Vec<f32>),
}

/// Model features of a chunk for one task, with the records that could not be featurized.
#[derive(Debug, Default)]
pub struct Featurized {
    pub features: Vec<Feature>,
    pub errors: Vec<RecordError>,
    /// Records whose input was cut to the task's maximum length.
    pub truncated: usize,
}

pub trait Task: Send + Sync {
    /// Task name as used in the configuration (`embed`, ...).
    fn name(&self) -> &'static str;

    /// Output columns this task adds.
    fn fields(&self) -> Vec<FieldRef>;

    /// Padding token id for this task's tokenizer.
    fn pad_id(&self) -> u32;

    /// Tokenize the records of a chunk. `texts[i]` is `None` for records that already failed.
    fn featurize(&self, texts: &[Option<String>]) -> Featurized;

    /// Post-process one batch: one result per feature in `features` (the batch's rows, in order).
    /// An `Err(String)` fails that record alone; a returned `Error` fails the batch.
    fn postprocess(
        &self,
        features: &[&Feature],
        batch: &PaddedBatch,
        outputs: &ModelOutputs<'_, '_>,
    ) -> Result<Vec<std::result::Result<TaskOutput, String>>>;

    /// Combine the results of a record's features (in feature order) into the record's result.
    fn combine(&self, mut parts: Vec<TaskOutput>) -> std::result::Result<TaskOutput, String> {
        match parts.len() {
            1 => Ok(parts.remove(0)),
            n => Err(format!("internal: {n} results for one record")),
        }
    }

    /// Build this task's output columns from the results of the records written, in order.
    fn columns(&self, outputs: Vec<TaskOutput>) -> Result<Vec<ArrayRef>>;
}

/// A task with the model that serves it.
pub struct LoadedTask {
    pub task: Arc<dyn Task>,
    pub model: OnnxModel,
}

//! `bertflow models ranges`: each dimension's range (minimum, maximum) of a model's embeddings
//! over calibration texts, for `tasks.embed.output: int8 / uint8` (sentence-transformers'
//! `quantize_embeddings` ranges from `calibration_embeddings`). The embeddings are bertflow's
//! own, made with the embed task's defaults and the given `dimensions`.

use std::path::Path;
use std::sync::Arc;

use super::guard;
use crate::error::{Error, Result};
use crate::model::{ModelDir, OnnxModel, OrtRuntime};
use crate::task::embed::output::Ranges;
use crate::task::TaskOutput;

/// The ranges of the embeddings of `calibration` (the bundled sample when `None`), and how many
/// texts they come from.
pub fn embedding_ranges(
    rt: &Arc<OrtRuntime>,
    dir: &Path,
    calibration: Option<&Path>,
    dimensions: Option<usize>,
    normalize_dimensions: bool,
) -> Result<(Ranges, usize)> {
    let md = ModelDir::open(dir)?;
    let mut model = OnnxModel::load(rt, &md.onnx)?;
    let cfg: crate::task::config::EmbedConfig = serde_json::from_value(serde_json::json!({
        "model": dir,
        "dimensions": dimensions,
        "normalize_dimensions": normalize_dimensions,
    }))
    .map_err(|e| Error::Runtime(format!("internal: embed defaults: {e}")))?;
    let task = crate::task::load(&cfg, &md, &model)?;
    let samples = match calibration {
        Some(p) => guard::read(p)?,
        None => guard::bundled(),
    };
    let results = guard::run_task(task.as_ref(), &mut model, &samples)?;
    let mut ranges: Option<Ranges> = None;
    let mut n = 0;
    for r in results.into_iter().flatten() {
        let TaskOutput::Embedding(v) = r else {
            continue;
        };
        n += 1;
        match &mut ranges {
            None => {
                ranges = Some(Ranges {
                    min: v.clone(),
                    max: v,
                })
            }
            Some(r) => {
                for (i, x) in v.into_iter().enumerate() {
                    r.min[i] = r.min[i].min(x);
                    r.max[i] = r.max[i].max(x);
                }
            }
        }
    }
    let ranges = ranges.ok_or_else(|| {
        Error::config("no calibration text gave an embedding: give texts with content")
    })?;
    Ok((ranges, n))
}

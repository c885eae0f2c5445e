//! The start-up checks `bertflow validate` and `bertflow run` share: everything that needs
//! neither the data nor a model session. The pipeline file's own checks run when it loads; here
//! the task models' folders must exist (an optional task's may be missing: it is skipped) and
//! each task's settings must fit what its folder says (lengths), and a local input must exist.
//! What remains for `run` is what only the data, the network or a model session can tell.

use crate::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::model::hub::HubRef;
use crate::model::ModelDir;

/// Run the shared start-up checks; returns a note for each optional task whose model is missing.
pub fn preflight(cfg: &PipelineConfig) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    for tc in cfg.tasks.all() {
        let kind = tc.kind();
        let model = tc.model();
        // An hf: reference is resolved (downloaded or found in the cache) when the task loads.
        if HubRef::parse(&model.to_string_lossy()).is_some() {
            continue;
        }
        if !model.exists() {
            if tc.optional() {
                notes.push(format!(
                    "{kind}: model {} not found; the task is skipped (it is marked optional)",
                    model.display()
                ));
                continue;
            }
            return Err(Error::config(format!(
                "tasks.{kind}.model: {} is not a directory (a relative path is read from the working directory, {}); run `make setup` for the bundled models or `bertflow models pull hf:ORG/NAME`, or mark the task `optional: true` to skip it when its model is missing",
                model.display(),
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "unknown".into())
            )));
        }
        let dir = ModelDir::open(model)?;
        tc.preflight(&dir)?;
    }
    cfg.source.spec().preflight()?;
    Ok(notes)
}

//! `bertflow._bertflow`: the bertflow engine for Python. Arrow batches cross in both directions
//! through the Arrow C data interface (no copy of texts or vectors); the interpreter lock is
//! released while the pipeline works. The Python side (`python/bertflow/`) shapes the API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::pyarrow::{FromPyArrow, ToPyArrow};
use bertflow::config::load::{env_overrides, Override};
use bertflow::connector::python::{BatchOutput, ErrorMode};
use bertflow::pipeline::{Engine, HostOptions, Summary};
use bertflow::{PipelineConfig, Shutdown};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_yaml::{Mapping, Value};

create_exception!(
    _bertflow,
    BertflowError,
    PyRuntimeError,
    "A bertflow run failed."
);
create_exception!(
    _bertflow,
    ConfigError,
    PyValueError,
    "The pipeline or the call's options are wrong (the message says which key or column)."
);

fn py_err(e: bertflow::Error) -> PyErr {
    match e {
        bertflow::Error::Config(m) => ConfigError::new_err(m),
        other => BertflowError::new_err(other.to_string()),
    }
}

/// Batches in flight between Python and the pipeline, each way.
const QUEUE: usize = 2;

/// How often a wait for the pipeline looks at the interpreter's signals.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The YAML of a pipeline for Python: a missing `source` or `sink` becomes the Python
/// connector's, and relative model folders that exist become absolute (workers on other
/// directories load the same models).
fn for_python(text: &str) -> Result<String, String> {
    let mut tree: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Value::Mapping(map) = &mut tree else {
        return Err("the pipeline must be a mapping with a `tasks` key".into());
    };
    for key in ["source", "sink"] {
        let k = Value::String(key.into());
        if map.get(&k).is_none_or(|v| v.is_null()) {
            let mut inner = Mapping::new();
            inner.insert(
                Value::String("python".into()),
                Value::Mapping(Mapping::new()),
            );
            map.insert(k, Value::Mapping(inner));
        }
    }
    let cwd = std::env::current_dir().ok();
    let absolute = |m: &mut Mapping| {
        let k = Value::String("model".into());
        if let (Some(Value::String(p)), Some(cwd)) = (m.get(&k), &cwd) {
            let path = PathBuf::from(p);
            if !p.starts_with("hf:") && path.is_relative() && cwd.join(&path).exists() {
                let abs = cwd.join(&path).to_string_lossy().into_owned();
                m.insert(k, Value::String(abs));
            }
        }
    };
    if let Some(Value::Mapping(tasks)) = map.get_mut(Value::String("tasks".into())) {
        for (_, t) in tasks.iter_mut() {
            match t {
                Value::Mapping(m) => absolute(m),
                Value::Sequence(s) => s.iter_mut().for_each(|v| {
                    if let Value::Mapping(m) = v {
                        absolute(m)
                    }
                }),
                _ => {}
            }
        }
    }
    serde_yaml::to_string(&tree).map_err(|e| e.to_string())
}

/// A pipeline with its models loaded, shared by the runs started from it.
#[pyclass(name = "_Engine", module = "bertflow._bertflow", frozen)]
struct PyEngine {
    engine: Arc<Mutex<Engine>>,
    /// The effective pipeline (overrides applied), as YAML.
    yaml: String,
}

fn options(
    text_col: Option<String>,
    id_col: Option<String>,
    passthrough: Option<Vec<String>>,
    errors: &str,
    portable: bool,
    label: Option<String>,
) -> PyResult<HostOptions> {
    let errors = match errors {
        "separate" => ErrorMode::Separate,
        "column" => ErrorMode::Column,
        other => {
            return Err(ConfigError::new_err(format!(
                "errors='{other}': use 'separate' or 'column'"
            )))
        }
    };
    Ok(HostOptions {
        text_column: text_col,
        id_column: id_col,
        passthrough,
        errors,
        portable,
        label: label.unwrap_or_else(|| "input".into()),
    })
}

impl PyEngine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl PyEngine {
    /// Load a pipeline: `text` (YAML or JSON) named `file` in messages, `overrides` as
    /// `(key.path, value as YAML)`, the `BERTFLOW__*` environment first when `env`. `ort_lib`:
    /// the library of an installed onnxruntime wheel, used unless `runtime.ort_lib` or
    /// `ORT_DYLIB_PATH` names one.
    #[new]
    #[pyo3(signature = (text, file, overrides, env, ort_lib=None))]
    fn new(
        py: Python<'_>,
        text: &str,
        file: &str,
        overrides: Vec<(String, String)>,
        env: bool,
        ort_lib: Option<PathBuf>,
    ) -> PyResult<Self> {
        let text = for_python(text).map_err(|e| ConfigError::new_err(format!("{file}: {e}")))?;
        let mut all: Vec<Override> = if env { env_overrides() } else { Vec::new() };
        all.extend(overrides.iter().map(|(k, v)| Override::set(k, v)));
        let cfg = PipelineConfig::from_sources(&text, file, &all).map_err(py_err)?;
        let explicit = cfg.runtime.ort_lib.is_some()
            || std::env::var_os(bertflow::model::runtime::ORT_DYLIB_ENV)
                .is_some_and(|v| !v.is_empty());
        let lib = if explicit { None } else { ort_lib };
        let engine = py
            .detach(|| Engine::load(&cfg, lib.as_deref()))
            .map_err(py_err)?;
        // JSON, which is YAML too, keeps the connectors as keys (`source: {parquet: ...}`).
        let yaml = serde_json::to_string_pretty(engine.config())
            .map_err(|e| BertflowError::new_err(e.to_string()))?;
        Ok(PyEngine {
            engine: Arc::new(Mutex::new(engine)),
            yaml,
        })
    }

    /// The effective pipeline as YAML (what a worker loads to run the same pipeline).
    #[getter]
    fn yaml(&self) -> String {
        self.yaml.clone()
    }

    /// `{"tasks": [(name, precision)], "provider": ..., "skipped": [...]}`.
    fn describe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // A run in progress holds the engine: wait for it without the interpreter lock.
        let (tasks, provider, skipped) = py.detach(|| {
            let e = self.lock();
            (e.tasks(), e.provider().to_string(), e.skipped.clone())
        });
        let d = PyDict::new(py);
        d.set_item("tasks", tasks)?;
        d.set_item("provider", provider)?;
        d.set_item("skipped", skipped)?;
        Ok(d)
    }

    /// The schemas (results, errors) of a run over input of schema `input`.
    #[pyo3(signature = (input, text_col=None, id_col=None, passthrough=None, errors="separate", portable=false))]
    #[allow(clippy::too_many_arguments)]
    fn schemas<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        text_col: Option<String>,
        id_col: Option<String>,
        passthrough: Option<Vec<String>>,
        errors: &str,
        portable: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let schema = Schema::from_pyarrow_bound(input)?;
        let opts = options(text_col, id_col, passthrough, errors, portable, None)?;
        let s = py
            .detach(|| self.lock().schemas(&schema, &opts))
            .map_err(py_err)?;
        Ok((s.results.to_pyarrow(py)?, s.errors.to_pyarrow(py)?))
    }

    /// Start a run over the batches of the Python iterator `batches` (pyarrow RecordBatches of
    /// schema `input`): an iterator of `(results, errors)` RecordBatch pairs, one per chunk, in
    /// input order.
    #[pyo3(signature = (input, batches, text_col=None, id_col=None, passthrough=None, errors="separate", portable=false, label=None))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        batches: Bound<'_, PyAny>,
        text_col: Option<String>,
        id_col: Option<String>,
        passthrough: Option<Vec<String>>,
        errors: &str,
        portable: bool,
        label: Option<String>,
    ) -> PyResult<PyRun> {
        let schema = Schema::from_pyarrow_bound(input)?;
        let opts = options(text_col, id_col, passthrough, errors, portable, label)?;
        // Column problems are the caller's: say so before any thread starts.
        py.detach(|| self.lock().schemas(&schema, &opts))
            .map_err(py_err)?;
        let batches = batches.try_iter()?.into_any().unbind();
        let (in_tx, in_rx) = bounded::<RecordBatch>(QUEUE);
        let (out_tx, out_rx) = bounded::<BatchOutput>(QUEUE);
        let stop = Shutdown::new();
        let engine = self.engine.clone();
        let run_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bertflow-run".into())
            .spawn(move || {
                let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                e.run(&schema, &opts, in_rx, out_tx, &run_stop)
            })
            .map_err(|e| BertflowError::new_err(format!("cannot start a run: {e}")))?;
        Ok(PyRun {
            st: RunState {
                batches: Some(batches),
                input: Some(in_tx),
                pending: None,
                output: Some(out_rx),
                handle: Some(handle),
                summary: None,
            },
            stop,
        })
    }
}

struct RunState {
    /// The caller's batches, until they end.
    batches: Option<Py<PyAny>>,
    input: Option<Sender<RecordBatch>>,
    /// A batch taken from the caller, not yet queued.
    pending: Option<RecordBatch>,
    output: Option<Receiver<BatchOutput>>,
    handle: Option<JoinHandle<bertflow::Result<Summary>>>,
    summary: Option<Summary>,
}

/// One run: an iterator of `(results, errors)` RecordBatch pairs.
#[pyclass(name = "_Run", module = "bertflow._bertflow")]
struct PyRun {
    st: RunState,
    stop: Shutdown,
}

enum Step {
    Out(BatchOutput),
    Sent,
    /// Nothing yet: a moment to see whether the user interrupted (Ctrl-C).
    Tick,
    /// The pipeline ended (its output channel closed).
    Ended,
}

impl RunState {
    /// End the run: stop the pipeline and let go of both channels.
    fn abandon(&mut self, stop: &Shutdown) {
        stop.trigger();
        self.input = None;
        self.pending = None;
        self.output = None;
        self.batches = None;
    }

    /// The run's own result, once its output ended.
    fn join(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(h) = self.handle.take() else {
            return Ok(());
        };
        match py.detach(|| h.join()) {
            Ok(Ok(summary)) => {
                self.summary = Some(summary);
                Ok(())
            }
            Ok(Err(e)) => Err(py_err(e)),
            Err(_) => Err(BertflowError::new_err("the pipeline thread panicked")),
        }
    }
}

#[pymethods]
impl PyRun {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let st = &mut self.st;
        loop {
            let Some(output) = st.output.clone() else {
                st.join(py)?;
                return Err(PyStopIteration::new_err(()));
            };
            // Results ready come first: memory stays bounded by the queues.
            if let Ok(out) = output.try_recv() {
                return Ok((out.results.to_pyarrow(py)?, out.errors.to_pyarrow(py)?));
            }
            // Take the caller's next batch while there is room for it.
            if st.pending.is_none() {
                if let Some(it) = st.batches.as_ref().map(|b| b.clone_ref(py)) {
                    match it.bind(py).call_method0("__next__") {
                        Ok(obj) => match RecordBatch::from_pyarrow_bound(&obj) {
                            Ok(b) => st.pending = Some(b),
                            Err(e) => {
                                st.abandon(&self.stop);
                                let what = obj
                                    .get_type()
                                    .name()
                                    .map(|n| n.to_string())
                                    .unwrap_or_default();
                                return Err(PyTypeError::new_err(format!(
                                    "input batch is not a valid Arrow record batch ({what}): {e}"
                                )));
                            }
                        },
                        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                            // The input ended: the pipeline drains and closes its output.
                            st.batches = None;
                            st.input = None;
                        }
                        Err(e) => {
                            st.abandon(&self.stop);
                            return Err(e);
                        }
                    }
                }
            }
            let pending = st.pending.take();
            let input = st.input.clone();
            let (step, back) = py.detach(|| match (pending, input) {
                (Some(batch), Some(tx)) => {
                    let mut sel = crossbeam_channel::Select::new();
                    let send = sel.send(&tx);
                    sel.recv(&output);
                    let Ok(op) = sel.select_timeout(TICK) else {
                        return (Step::Tick, Some(batch));
                    };
                    if op.index() == send {
                        // An error: the pipeline stopped reading (it failed); its output says
                        // why.
                        let _ = op.send(&tx, batch);
                        (Step::Sent, None)
                    } else {
                        // Output came first: the batch waits for the next call.
                        match op.recv(&output) {
                            Ok(out) => (Step::Out(out), Some(batch)),
                            Err(_) => (Step::Ended, Some(batch)),
                        }
                    }
                }
                (p, _) => match output.recv_timeout(TICK) {
                    Ok(out) => (Step::Out(out), p),
                    Err(RecvTimeoutError::Timeout) => (Step::Tick, p),
                    Err(RecvTimeoutError::Disconnected) => (Step::Ended, p),
                },
            });
            if back.is_some() {
                st.pending = back;
            }
            match step {
                Step::Sent => continue,
                Step::Tick => {
                    // Ctrl-C (KeyboardInterrupt) stops the run rather than waiting for it.
                    if let Err(e) = py.check_signals() {
                        st.abandon(&self.stop);
                        return Err(e);
                    }
                }
                Step::Out(out) => {
                    return Ok((out.results.to_pyarrow(py)?, out.errors.to_pyarrow(py)?));
                }
                Step::Ended => {
                    st.output = None;
                    st.input = None;
                    st.batches = None;
                    st.pending = None;
                    st.join(py)?;
                    return Err(PyStopIteration::new_err(()));
                }
            }
        }
    }

    /// Stop the run now (the rest of the input is not read).
    fn close(&mut self) {
        self.st.abandon(&self.stop);
    }

    /// What the run did, once it ended: records, written, errors, seconds and the per-stage
    /// times; `None` before.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(s) = &self.st.summary else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("records", s.records)?;
        d.set_item("written", s.written)?;
        d.set_item("errors", s.errors)?;
        d.set_item("task_errors", s.task_errors)?;
        d.set_item("truncated", s.truncated)?;
        d.set_item("batches", s.batches)?;
        d.set_item("seconds", s.elapsed.as_secs_f64())?;
        d.set_item("tokenize_seconds", s.tokenize_time.as_secs_f64())?;
        d.set_item("model_seconds", s.model_time.as_secs_f64())?;
        d.set_item("postprocess_seconds", s.postprocess_time.as_secs_f64())?;
        d.set_item("tasks", s.tasks.clone())?;
        d.set_item("provider", s.provider.clone())?;
        Ok(Some(d))
    }
}

impl Drop for PyRun {
    fn drop(&mut self) {
        // A caller that stops reading (a generator closed, a Spark task cancelled) stops the
        // pipeline; the thread ends within about one model batch and frees the engine.
        self.st.abandon(&self.stop);
    }
}

/// Download a model from the Hugging Face hub (`hf:org/name[@revision]`) into the local cache
/// (`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` as the command line); returns its folder.
#[pyfunction]
#[pyo3(signature = (reference, onnx_file=None))]
fn pull(py: Python<'_>, reference: &str, onnx_file: Option<String>) -> PyResult<String> {
    let r = bertflow::model::hub::HubRef::parse(reference)
        .ok_or_else(|| {
            ConfigError::new_err(format!(
                "'{reference}' is not an hf:<org>/<repo>[@revision] reference"
            ))
        })?
        .map_err(py_err)?;
    let dir = py
        .detach(|| bertflow::model::hub::pull(&r, onnx_file.as_deref()))
        .map_err(py_err)?;
    Ok(dir.to_string_lossy().into_owned())
}

#[pymodule]
fn _bertflow(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyRun>()?;
    m.add_function(wrap_pyfunction!(pull, m)?)?;
    m.add("BertflowError", m.py().get_type::<BertflowError>())?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ORT_VERSION", bertflow::model::runtime::ORT_VERSION)?;
    Ok(())
}

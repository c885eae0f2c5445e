//! One ONNX Runtime inference session for one model, with its execution provider.

use std::path::Path;
use std::sync::Arc;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{
    HasSelectedOutputs, IoBinding, OutputSelector, RunOptions, Session, SessionOutputs,
};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::precision::Precision;
use super::runtime::{OrtRuntime, ProviderInfo};
use crate::batch::PaddedBatch;
use crate::error::{Error, Result};
use crate::model::config::{ExecutionProvider, GraphOptimization};

/// Which token-level inputs the graph takes, by their names in the graph.
#[derive(Debug, Clone)]
struct InputLayout {
    input_ids: String,
    attention_mask: Option<String>,
    token_type_ids: Option<String>,
    int32: bool,
}

/// One input or output of a graph.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
}

/// An ONNX model ready to run padded batches.
pub struct OnnxModel {
    session: Session,
    layout: InputLayout,
    pub provider: ProviderInfo,
    pub output_names: Vec<String>,
    binding: Option<Bound>,
    overlap: bool,
    /// Set when only some outputs are read: their names and the run options selecting them.
    fetch: Option<(Vec<String>, RunOptions<HasSelectedOutputs>)>,
}

/// I/O binding of a session: inputs written into host buffers from `inputs` (pinned on CUDA),
/// every output bound to host memory described by `outputs`.
struct Bound {
    binding: IoBinding,
    inputs: Allocator,
    outputs: MemoryInfo<'static>,
    output_names: Vec<String>,
    /// `pinned` or `host`.
    memory: &'static str,
}

impl Bound {
    fn new(session: &Session, cuda: bool, device_id: i32) -> ort::Result<Bound> {
        let (inputs, output_info, memory) = if cuda {
            (
                Allocator::new(
                    session,
                    MemoryInfo::new(
                        AllocationDevice::CUDA_PINNED,
                        device_id,
                        AllocatorType::Device,
                        MemoryType::CPUInput,
                    )?,
                )?,
                MemoryInfo::new(
                    AllocationDevice::CUDA_PINNED,
                    device_id,
                    AllocatorType::Device,
                    MemoryType::CPUOutput,
                )?,
                "pinned",
            )
        } else {
            (
                Allocator::default(),
                MemoryInfo::new(
                    AllocationDevice::CPU,
                    0,
                    AllocatorType::Device,
                    MemoryType::CPUOutput,
                )?,
                "host",
            )
        };
        let mut bound = Bound {
            binding: session.create_binding()?,
            inputs,
            outputs: output_info,
            output_names: session
                .outputs()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
            memory,
        };
        bound.bind_outputs()?;
        Ok(bound)
    }

    /// Bind every output to host memory, unallocated: ONNX Runtime allocates each run's outputs
    /// (of that run's shapes) from the memory's arena. Done before every run, because a bound
    /// output keeps the previous run's shape otherwise.
    fn bind_outputs(&mut self) -> ort::Result<()> {
        for name in &self.output_names {
            self.binding.bind_output_to_device(name, &self.outputs)?;
        }
        Ok(())
    }

    /// Bind one input of `shape` holding `data` (converted to int32 when the graph wants it).
    fn bind(&mut self, name: &str, shape: [i64; 2], data: &[i64], int32: bool) -> Result<()> {
        let err = |e: ort::Error| Error::Inference(format!("cannot bind input '{name}': {e}"));
        if int32 {
            let mut t = Tensor::<i32>::new(&self.inputs, shape).map_err(err)?;
            let (_, buf) = t.extract_tensor_mut();
            for (d, &s) in buf.iter_mut().zip(data) {
                *d = s as i32;
            }
            self.binding.bind_input(name, &t).map_err(err)
        } else {
            let mut t = Tensor::<i64>::new(&self.inputs, shape).map_err(err)?;
            t.extract_tensor_mut().1.copy_from_slice(data);
            self.binding.bind_input(name, &t).map_err(err)
        }
    }
}

/// The outputs of one model call, read by the task's post-processing: ONNX Runtime's own
/// buffers, or a copy taken to post-process them on another thread.
pub struct ModelOutputs<'a, 's> {
    outputs: Outputs<'a, 's>,
}

enum Outputs<'a, 's> {
    Session(&'a SessionOutputs<'s>),
    Owned(&'a OwnedOutputs),
}

/// A copy of a model call's float32 outputs (name, shape, data); an output of another type
/// holds why it cannot be read.
#[derive(Debug, Clone, Default)]
pub struct OwnedOutputs {
    values: Vec<(String, OwnedValue)>,
}

/// One copied output: shape and data, or why it could not be read as float32.
type OwnedValue = std::result::Result<(Vec<usize>, Vec<f32>), String>;

impl OwnedOutputs {
    /// Read these outputs as a model call's.
    pub fn view(&self) -> ModelOutputs<'_, '_> {
        ModelOutputs {
            outputs: Outputs::Owned(self),
        }
    }
}

fn not_f32(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Inference(format!(
        "output '{name}' is not a float32 tensor ({e}); export the model with float32 outputs"
    ))
}

impl ModelOutputs<'_, '_> {
    /// A float32 output by name: its shape and data (row-major).
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, &[f32])> {
        let missing = || Error::Inference(format!("the model has no output '{name}'"));
        match &self.outputs {
            Outputs::Session(outputs) => {
                let value = outputs.get(name).ok_or_else(missing)?;
                let (shape, data) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| not_f32(name, e))?;
                Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), data))
            }
            Outputs::Owned(owned) => {
                let (_, value) = owned
                    .values
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(missing)?;
                match value {
                    Ok((shape, data)) => Ok((shape.clone(), data.as_slice())),
                    Err(e) => Err(not_f32(name, e)),
                }
            }
        }
    }

    /// Copy the outputs named `names`.
    fn to_owned(&self, names: &[String]) -> OwnedOutputs {
        OwnedOutputs {
            values: names
                .iter()
                .map(|n| {
                    let v = match self.f32(n) {
                        Ok((shape, data)) => Ok((shape, data.to_vec())),
                        Err(e) => Err(e.to_string()),
                    };
                    (n.clone(), v)
                })
                .collect(),
        }
    }
}

/// The OpenVINO execution provider for `precision`: the inference precision is always named
/// (`bf16` for a bf16 variant, else `f32`), since OpenVINO's CPU plugin otherwise picks bf16 by
/// itself on CPUs with AMX, which would run an fp32 pipeline unguarded at bf16.
fn openvino_provider(
    cfg: &crate::model::config::RuntimeConfig,
    precision: Precision,
) -> ort::ep::OpenVINO {
    use ort::ep::ArbitrarilyConfigurableExecutionProvider;
    let hint = if precision == Precision::Bf16 {
        "bf16"
    } else {
        "f32"
    };
    // The device's name without an index or list (`GPU.0` -> GPU) keys its properties.
    let device = cfg
        .openvino_device
        .split(['.', ':', ','])
        .next()
        .unwrap_or("CPU")
        .to_string();
    let mut load_config = serde_json::Map::new();
    load_config.insert(
        device,
        serde_json::json!({ "INFERENCE_PRECISION_HINT": hint }),
    );
    let load_config = serde_json::Value::Object(load_config);
    let mut ep = ort::ep::OpenVINO::default()
        .with_device_type(&cfg.openvino_device)
        .with_arbitrary_config("load_config", load_config.to_string());
    if cfg.intra_op_threads > 0 {
        ep = ep.with_num_threads(cfg.intra_op_threads);
    }
    ep
}

/// The graph optimisations ONNX Runtime applies for `accel`: OpenVINO compiles and optimises
/// the graph itself, and ONNX Runtime's passes would only undo what it relies on (constant
/// folding turns a variant's float16-stored weights, which OpenVINO keeps compressed, back into
/// float32 copies), so they are off there.
fn graph_optimization(
    accel: Option<ExecutionProvider>,
    configured: GraphOptimization,
) -> GraphOptimization {
    if accel == Some(ExecutionProvider::Openvino) {
        GraphOptimization::Disable
    } else {
        configured
    }
}

fn opt_level(g: GraphOptimization) -> GraphOptimizationLevel {
    match g {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::All,
    }
}

impl OnnxModel {
    /// Create a session for `onnx`, honouring the runtime's provider and fallback policy.
    pub fn load(rt: &Arc<OrtRuntime>, onnx: &Path) -> Result<Self> {
        Self::load_as(rt, onnx, Precision::Fp32)
    }

    /// Create a session for a graph of `precision` (a bf16 variant turns on ONNX Runtime's bf16
    /// matrix products).
    pub fn load_as(rt: &Arc<OrtRuntime>, onnx: &Path, precision: Precision) -> Result<Self> {
        let accel = match rt.config.execution_provider {
            ExecutionProvider::Cpu => None,
            ExecutionProvider::Cuda => Some(("cuda", "CUDA", "The CUDA execution provider needs the onnxruntime-gpu build (libonnxruntime_providers_cuda.so beside libonnxruntime.so), CUDA 13 and cuDNN 9.")),
            ExecutionProvider::Openvino => Some(("openvino", "OpenVINO", "The OpenVINO execution provider needs the onnxruntime-openvino build (libonnxruntime_providers_openvino.so and OpenVINO's libraries beside libonnxruntime.so: `make setup` puts them in runtime/onnxruntime-openvino/, found when runtime.execution_provider is openvino and no other library is named).")),
        };
        let (session, provider) = match accel {
            Some((name, wanted, needs)) => match Self::build(rt, onnx, Some(rt.config.execution_provider), precision) {
                Ok(s) => (
                    s,
                    ProviderInfo {
                        name,
                        wanted,
                        fallback_reason: None,
                    },
                ),
                Err(e) if rt.fallback_to_cpu() => {
                    let reason = e.to_string();
                    tracing::warn!(
                        model = %onnx.display(),
                        "{wanted} execution provider unavailable ({reason}); running on CPU because runtime.fallback is 'cpu'"
                    );
                    (
                        Self::build(rt, onnx, None, precision)?,
                        ProviderInfo {
                            name: "cpu",
                            wanted,
                            fallback_reason: Some(reason),
                        },
                    )
                }
                Err(e) => {
                    return Err(Error::Runtime(format!(
                        "{e}\n{needs} Set runtime.execution_provider: cpu, or runtime.fallback: cpu to run on CPU when {wanted} is unavailable."
                    )))
                }
            },
            None => (
                Self::build(rt, onnx, None, precision)?,
                ProviderInfo {
                    name: "cpu",
                    wanted: "cpu",
                    fallback_reason: None,
                },
            ),
        };
        let layout = Self::layout(&session, onnx)?;
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let cuda = provider.name == "cuda";
        let bind = rt.config.io_binding.enabled(cuda);
        let overlap = rt.config.overlap_postprocess.enabled(cuda);
        let binding = if bind {
            match Bound::new(&session, cuda, rt.config.device_id) {
                Ok(b) => {
                    tracing::debug!(model = %onnx.display(), memory = b.memory, "I/O binding");
                    Some(b)
                }
                Err(e) => {
                    tracing::warn!(
                        model = %onnx.display(),
                        "I/O binding unavailable ({e}); running without it"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(OnnxModel {
            session,
            layout,
            provider,
            output_names,
            binding,
            overlap,
            fetch: None,
        })
    }

    fn build(
        rt: &Arc<OrtRuntime>,
        onnx: &Path,
        accel: Option<ExecutionProvider>,
        precision: Precision,
    ) -> Result<Session> {
        let cfg = &rt.config;
        let err = |e: ort::Error| Error::model(onnx, format!("cannot create a session: {e}"));
        let mut b = Session::builder(&rt.environment).map_err(err)?;
        match accel {
            Some(ExecutionProvider::Cuda) => {
                let ep = ort::ep::CUDA::default()
                    .with_device_id(cfg.device_id)
                    .with_tf32(cfg.cuda_tf32)
                    .build()
                    .error_on_failure();
                b = b.with_execution_providers([ep]).map_err(|e| {
                    Error::Runtime(format!(
                        "cannot register the CUDA execution provider (device {}): {e}",
                        cfg.device_id
                    ))
                })?;
            }
            Some(ExecutionProvider::Openvino) => {
                let ep = openvino_provider(cfg, precision).build().error_on_failure();
                b = b.with_execution_providers([ep]).map_err(|e| {
                    Error::Runtime(format!(
                        "cannot register the OpenVINO execution provider (device {}): {e}",
                        cfg.openvino_device
                    ))
                })?;
            }
            _ => {}
        }
        b = b
            .with_optimization_level(opt_level(graph_optimization(
                accel,
                cfg.graph_optimization_level,
            )))
            .map_err(|e| err(e.into()))?;
        if cfg.intra_op_threads > 0 {
            b = b
                .with_intra_threads(cfg.intra_op_threads)
                .map_err(|e| err(e.into()))?;
        }
        if !cfg.intra_op_spinning {
            b = b.with_intra_op_spinning(false).map_err(|e| err(e.into()))?;
        }
        if precision == Precision::Bf16 && accel.is_none() {
            b = b
                .with_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
                .map_err(|e| err(e.into()))?;
        }
        if cfg.inter_op_threads > 0 {
            b = b
                .with_inter_threads(cfg.inter_op_threads)
                .map_err(|e| err(e.into()))?;
        }
        b.commit_from_file(onnx).map_err(|e| {
            Error::model(
                onnx,
                format!(
                    "cannot load the ONNX graph: {e}; check that the file is a complete ONNX model"
                ),
            )
        })
    }

    fn layout(session: &Session, onnx: &Path) -> Result<InputLayout> {
        let mut input_ids = None;
        let mut attention_mask = None;
        let mut token_type_ids = None;
        let mut int32 = false;
        for input in session.inputs() {
            let name = input.name().to_string();
            let ty = match input.dtype() {
                ValueType::Tensor { ty, .. } => *ty,
                other => {
                    return Err(Error::model(
                        onnx,
                        format!("input '{name}' is {other:?}, expected an integer tensor"),
                    ))
                }
            };
            match ty {
                TensorElementType::Int64 => {}
                TensorElementType::Int32 => int32 = true,
                other => {
                    return Err(Error::model(
                        onnx,
                        format!(
                            "input '{name}' has element type {other:?}, expected int64 or int32"
                        ),
                    ))
                }
            }
            match name.as_str() {
                "input_ids" => input_ids = Some(name),
                "attention_mask" => attention_mask = Some(name),
                "token_type_ids" => token_type_ids = Some(name),
                _ => {
                    return Err(Error::model(
                        onnx,
                        format!(
                            "unsupported model input '{name}'; supported inputs are input_ids, attention_mask and token_type_ids"
                        ),
                    ))
                }
            }
        }
        let input_ids =
            input_ids.ok_or_else(|| Error::model(onnx, "the graph has no 'input_ids' input"))?;
        Ok(InputLayout {
            input_ids,
            attention_mask,
            token_type_ids,
            int32,
        })
    }

    /// The static size of the last dimension of output `name`, when the graph fixes it.
    pub fn output_last_dim(&self, name: &str) -> Option<usize> {
        let o = self.session.outputs().iter().find(|o| o.name() == name)?;
        match o.dtype() {
            ValueType::Tensor { shape, .. } => {
                shape.last().copied().filter(|&d| d > 0).map(|d| d as usize)
            }
            _ => None,
        }
    }

    /// Inputs and outputs of the graph: name, element type and shape (`-1` for dynamic axes).
    pub fn io(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        fn info(name: &str, t: &ValueType) -> TensorInfo {
            match t {
                ValueType::Tensor { ty, shape, .. } => TensorInfo {
                    name: name.to_string(),
                    dtype: format!("{ty:?}").to_lowercase(),
                    shape: shape.iter().copied().collect(),
                },
                other => TensorInfo {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                    shape: Vec::new(),
                },
            }
        }
        (
            self.session
                .inputs()
                .iter()
                .map(|i| info(i.name(), i.dtype()))
                .collect(),
            self.session
                .outputs()
                .iter()
                .map(|o| info(o.name(), o.dtype()))
                .collect(),
        )
    }

    /// Number of dimensions of output `name`, when the graph declares it.
    pub fn output_rank(&self, name: &str) -> Option<usize> {
        let o = self.session.outputs().iter().find(|o| o.name() == name)?;
        match o.dtype() {
            ValueType::Tensor { shape, .. } => Some(shape.len()),
            _ => None,
        }
    }

    /// Whether the graph takes `token_type_ids` (BERT does; DistilBERT and RoBERTa do not).
    pub fn takes_token_type_ids(&self) -> bool {
        self.layout.token_type_ids.is_some()
    }

    /// Fetch only the outputs `names` from now on (a graph may compute more than a task reads,
    /// e.g. token embeddings beside a pooled embedding): the others are neither copied back from
    /// the device nor kept.
    pub fn fetch_only(&mut self, names: &[String]) -> Result<()> {
        if let Some(n) = names.iter().find(|n| !self.output_names.contains(n)) {
            return Err(Error::Inference(format!("the model has no output '{n}'")));
        }
        if self.output_names.iter().all(|o| names.contains(o)) {
            return Ok(()); // every output is read
        }
        let selector = names
            .iter()
            .fold(OutputSelector::no_default(), |s, n| s.with(n.clone()));
        let options = RunOptions::new()
            .map_err(|e| Error::Runtime(format!("cannot create run options: {e}")))?
            .with_outputs(selector);
        if let Some(b) = self.binding.as_mut() {
            b.binding.clear_outputs();
            b.output_names = names.to_vec();
            b.bind_outputs()
                .map_err(|e| Error::Inference(format!("cannot bind the outputs: {e}")))?;
        }
        self.fetch = Some((names.to_vec(), options));
        Ok(())
    }

    /// Run one padded batch and copy its float32 outputs, to post-process them elsewhere.
    pub fn run_owned(&mut self, batch: &PaddedBatch) -> Result<OwnedOutputs> {
        let names = match &self.fetch {
            Some((names, _)) => names.clone(),
            None => self.output_names.clone(),
        };
        self.run(batch, |o| Ok(o.to_owned(&names)))
    }

    /// Whether a batch's post-processing runs on another thread while this model runs the next
    /// batch (`runtime.overlap_postprocess`).
    pub fn overlaps_postprocess(&self) -> bool {
        self.overlap
    }

    /// The host memory the session's inputs and outputs are bound to (`pinned`, `host`), or
    /// `None` when it runs without I/O binding.
    pub fn io_binding(&self) -> Option<&'static str> {
        self.binding.as_ref().map(|b| b.memory)
    }

    /// Run one padded batch and hand its outputs to `f`.
    pub fn run<R>(
        &mut self,
        batch: &PaddedBatch,
        f: impl FnOnce(&ModelOutputs<'_, '_>) -> Result<R>,
    ) -> Result<R> {
        let shape = [batch.rows as i64, batch.seq_len as i64];
        // With I/O binding; a binding failure is retried as a plain run below.
        let mut bound_err = None;
        if let Some(b) = self.binding.as_mut() {
            let bound = run_bound(&mut self.session, b, &self.layout, batch, shape);
            match bound {
                Ok(outputs) => {
                    return f(&ModelOutputs {
                        outputs: Outputs::Session(&outputs),
                    })
                }
                Err(e) => bound_err = Some(e),
            }
        }
        let mut inputs: Vec<(String, ort::value::DynValue)> = Vec::with_capacity(3);
        let mut push = |name: &str, data: &[i64]| -> Result<()> {
            let value = if self.layout.int32 {
                let v: Vec<i32> = data.iter().map(|&x| x as i32).collect();
                Tensor::from_array((shape, v)).map(|t| t.into_dyn())
            } else {
                Tensor::from_array((shape, data.to_vec())).map(|t| t.into_dyn())
            }
            .map_err(|e| Error::Inference(format!("cannot build input '{name}': {e}")))?;
            inputs.push((name.to_string(), value));
            Ok(())
        };
        push(&self.layout.input_ids.clone(), &batch.input_ids)?;
        if let Some(n) = self.layout.attention_mask.clone() {
            push(&n, &batch.attention_mask)?;
        }
        if let Some(n) = self.layout.token_type_ids.clone() {
            push(&n, &batch.token_type_ids)?;
        }
        let outputs = match &self.fetch {
            Some((_, options)) => self.session.run_with_options(inputs, options),
            None => self.session.run(inputs),
        }
        .map_err(|e| Error::Inference(e.to_string()))?;
        if let Some(e) = bound_err {
            // The batch runs without binding: the binding, not the input, is what failed.
            tracing::warn!(
                error = %e,
                "I/O binding failed where a plain run succeeds; this model runs without it from now on"
            );
            self.binding = None;
        }
        f(&ModelOutputs {
            outputs: Outputs::Session(&outputs),
        })
    }
}

/// One batch through a session with I/O binding: bind the inputs and outputs, run.
fn run_bound<'a>(
    session: &'a mut Session,
    b: &'a mut Bound,
    l: &InputLayout,
    batch: &PaddedBatch,
    shape: [i64; 2],
) -> Result<SessionOutputs<'a>> {
    b.bind(&l.input_ids, shape, &batch.input_ids, l.int32)?;
    if let Some(n) = &l.attention_mask {
        b.bind(n, shape, &batch.attention_mask, l.int32)?;
    }
    if let Some(n) = &l.token_type_ids {
        b.bind(n, shape, &batch.token_type_ids, l.int32)?;
    }
    b.bind_outputs()
        .map_err(|e| Error::Inference(format!("cannot bind the outputs: {e}")))?;
    session
        .run_binding(&b.binding)
        .map_err(|e| Error::Inference(e.to_string()))
}

#[cfg(test)]
mod graph_optimization_tests {
    use super::graph_optimization;
    use crate::model::config::{ExecutionProvider, GraphOptimization};

    #[test]
    fn openvino_sessions_skip_onnx_runtime_passes_and_others_keep_the_configured_level() {
        for g in [GraphOptimization::Basic, GraphOptimization::All] {
            assert_eq!(
                graph_optimization(Some(ExecutionProvider::Openvino), g),
                GraphOptimization::Disable
            );
            assert_eq!(graph_optimization(None, g), g);
            assert_eq!(graph_optimization(Some(ExecutionProvider::Cuda), g), g);
        }
    }
}

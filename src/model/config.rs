//! `runtime`: the ONNX Runtime library, execution provider and session settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
    /// ONNX Runtime's OpenVINO execution provider (the `onnxruntime-openvino` library): bf16
    /// inference on CPUs with AMX-BF16 or AVX512-BF16 (`precision: bf16`).
    Openvino,
}

impl ExecutionProvider {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Openvino => "openvino",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Fail when the requested execution provider cannot be used.
    None,
    /// Run on CPU, with a warning and a note in the summary, when CUDA cannot be used.
    Cpu,
}

/// A GPU technique's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// On when the session runs on CUDA, off on CPU.
    Auto,
    /// Always (on CPU it gains nothing; for checks).
    On,
    Off,
}

impl Switch {
    /// Whether it applies to a session that runs on CUDA (`cuda`) or on CPU.
    pub fn enabled(self, cuda: bool) -> bool {
        match self {
            Switch::Auto => cuda,
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    All,
}

/// ONNX Runtime: the library, the execution provider and session settings.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Where the models run. `cuda` needs the `onnxruntime-gpu` library (1.31, CUDA 13, cuDNN 9);
    /// `openvino` the `onnxruntime-openvino` library (1.24, found in `runtime/onnxruntime-openvino/`
    /// after `make setup`), which runs `precision: bf16` variants on CPUs with AMX-BF16 or
    /// AVX512-BF16 ([performance.md](performance.md)).
    #[serde(default = "default_ep")]
    pub execution_provider: ExecutionProvider,
    /// OpenVINO only: the device (`CPU`, tested; `GPU`, `GPU.0`, `NPU`, `AUTO:GPU,CPU` as
    /// OpenVINO names them, untested here).
    ///
    /// Default: `CPU`
    #[serde(default = "default_openvino_device")]
    pub openvino_device: String,
    /// What to do when `cuda` (or `openvino`) cannot be used: `none` stops with an error saying
    /// why; `cpu` runs on CPU, logs a warning and the summary says `cpu (fallback: CUDA
    /// unavailable)`.
    #[serde(default = "default_fallback")]
    pub fallback: Fallback,
    /// CUDA device ordinal.
    ///
    /// Default: 0
    #[serde(default)]
    pub device_id: i32,
    /// CUDA only: let fp32 matrix products use TensorFloat-32 on the tensor cores (Ampere and
    /// later): faster fp32 models, with products rounded to a 10-bit mantissa, so embeddings are
    /// no longer equal to torch's fp32 (which leaves TF32 off) to 1e-6. Off keeps fp32 exact; an
    /// fp16 variant (`models optimize --precision fp16`) is the measured way to trade precision
    /// for speed.
    ///
    /// Default: false
    #[serde(default)]
    pub cuda_tf32: bool,
    /// Threads inside one operator; 0 lets ONNX Runtime choose (one per physical core).
    ///
    /// Default: 0
    #[serde(default)]
    pub intra_op_threads: usize,
    /// Whether ONNX Runtime's intra-op threads spin while waiting for work (ONNX Runtime's
    /// default). Spinning saves the wake-up between operators but burns the cores while idle:
    /// turn it off where other busy processes share them (measurements in benchmarks.md).
    ///
    /// Default: true
    #[serde(default = "default_true")]
    pub intra_op_spinning: bool,
    /// Threads across independent operators; 0 lets ONNX Runtime choose.
    ///
    /// Default: 0
    #[serde(default)]
    pub inter_op_threads: usize,
    /// ONNX Runtime graph optimisations (CPU and CUDA providers; with OpenVINO they are off,
    /// since OpenVINO optimises the graph as it compiles it).
    #[serde(default = "default_graph_opt")]
    pub graph_optimization_level: GraphOptimization,
    /// I/O binding: each batch's inputs are written into page-locked (pinned) host memory from
    /// the CUDA provider's pinned arena, which the GPU reads by DMA, and outputs are bound to
    /// pinned host memory, so ONNX Runtime copies results straight into memory bertflow reads
    /// (blocks are reused between batches). `auto` binds on CUDA only; when binding cannot be set
    /// up, or a bound run fails where a plain run of the same batch succeeds, the model runs
    /// plainly from then on and a warning says why.
    #[serde(default = "default_switch")]
    pub io_binding: Switch,
    /// Post-process each batch (pooling, label scores, entity grouping, answer spans) on a
    /// second thread while the model runs the next batch, from a copy of the batch's outputs.
    /// `auto` overlaps on CUDA, where the model call mostly waits for the GPU; on CPU the model
    /// already keeps every core busy.
    #[serde(default = "default_switch")]
    pub overlap_postprocess: Switch,
    /// `libonnxruntime.so` to load. Search order when unset: `--ort-lib`, this key,
    /// `$ORT_DYLIB_PATH`, next to the executable and `../lib`, `./runtime/onnxruntime/`, the source
    /// tree's `runtime/onnxruntime/` (with `execution_provider: openvino`: `../lib/openvino/` next
    /// to the executable and `runtime/onnxruntime-openvino/` instead).
    ///
    /// Type: path
    #[serde(default)]
    pub ort_lib: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_ep() -> ExecutionProvider {
    ExecutionProvider::Cpu
}
fn default_openvino_device() -> String {
    "CPU".into()
}
fn default_fallback() -> Fallback {
    Fallback::None
}
fn default_switch() -> Switch {
    Switch::Auto
}
fn default_graph_opt() -> GraphOptimization {
    GraphOptimization::All
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            execution_provider: default_ep(),
            openvino_device: default_openvino_device(),
            fallback: default_fallback(),
            device_id: 0,
            cuda_tf32: false,
            intra_op_threads: 0,
            intra_op_spinning: true,
            inter_op_threads: 0,
            graph_optimization_level: default_graph_opt(),
            io_binding: default_switch(),
            overlap_postprocess: default_switch(),
            ort_lib: None,
        }
    }
}

//! Locating and loading the ONNX Runtime shared library, and choosing the execution provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::model::config::{ExecutionProvider, Fallback, RuntimeConfig};

/// Environment variable naming the ONNX Runtime library (the same one `ort` reads).
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Where the set-up script puts the library, relative to the project or working directory.
pub const SETUP_DIR: &str = "runtime/onnxruntime";

/// Where the set-up script puts the `onnxruntime-openvino` library with OpenVINO's.
pub const SETUP_DIR_OPENVINO: &str = "runtime/onnxruntime-openvino";

/// The `onnxruntime-openvino` release bertflow is tested with (its PyPI wheel).
pub const ORT_OPENVINO_VERSION: &str = "1.24.1";

#[cfg(target_os = "linux")]
const LIB_NAME: &str = "libonnxruntime.so";
#[cfg(target_os = "macos")]
const LIB_NAME: &str = "libonnxruntime.dylib";
#[cfg(target_os = "windows")]
const LIB_NAME: &str = "onnxruntime.dll";

/// The execution provider a session really runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub name: &'static str,
    /// The provider configured (`CUDA`, `OpenVINO`) when `fallback_reason` is set.
    pub wanted: &'static str,
    /// Set when the configured provider could not be used and `fallback: cpu` applied.
    pub fallback_reason: Option<String>,
}

impl std::fmt::Display for ProviderInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fallback_reason {
            None => f.write_str(self.name),
            Some(_) => write!(f, "{} (fallback: {} unavailable)", self.name, self.wanted),
        }
    }
}

/// The loaded ONNX Runtime library and its environment, shared by every session.
pub struct OrtRuntime {
    pub library: PathBuf,
    pub environment: ort::environment::Environment,
    pub config: RuntimeConfig,
}

static RUNTIME: OnceLock<Arc<OrtRuntime>> = OnceLock::new();

/// Candidate library paths, in search order, with where each came from.
pub fn candidates(cli: Option<&Path>, cfg: &RuntimeConfig) -> Vec<(PathBuf, &'static str)> {
    let mut v = Vec::new();
    if let Some(p) = cli {
        v.push((p.to_path_buf(), "--ort-lib"));
    }
    if let Some(p) = &cfg.ort_lib {
        v.push((p.clone(), "runtime.ort_lib"));
    }
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV) {
        if !p.is_empty() {
            v.push((PathBuf::from(p), ORT_DYLIB_ENV));
        }
    }
    let openvino = cfg.execution_provider == ExecutionProvider::Openvino;
    let setup = if openvino {
        SETUP_DIR_OPENVINO
    } else {
        SETUP_DIR
    };
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if openvino {
                v.push((
                    dir.join("../lib/openvino").join(LIB_NAME),
                    "../lib/openvino next to the executable",
                ));
            } else {
                v.push((dir.join(LIB_NAME), "next to the executable"));
                v.push((
                    dir.join("../lib").join(LIB_NAME),
                    "../lib next to the executable",
                ));
            }
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        v.push((
            cwd.join(setup).join(LIB_NAME),
            "set-up folder (working directory)",
        ));
    }
    v.push((
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(setup)
            .join(LIB_NAME),
        "set-up folder (source tree)",
    ));
    v
}

/// Find the library: the first explicit setting wins (and must exist); otherwise the first
/// default location that exists.
pub fn locate(cli: Option<&Path>, cfg: &RuntimeConfig) -> Result<PathBuf> {
    let all = candidates(cli, cfg);
    for (path, origin) in &all {
        let explicit = matches!(*origin, "--ort-lib" | "runtime.ort_lib" | ORT_DYLIB_ENV);
        if path.is_file() {
            return Ok(path.clone());
        }
        if explicit {
            return Err(Error::Runtime(format!(
                "ONNX Runtime library not found at {} (from {origin}); point it at libonnxruntime.so {}",
                path.display(),
                HOW_TO_GET
            )));
        }
    }
    let looked: Vec<String> = all
        .iter()
        .map(|(p, o)| format!("  {} ({o})", p.display()))
        .collect();
    Err(Error::Runtime(format!(
        "ONNX Runtime library not found. Looked in:\n{}\nRun `make setup` in the bertflow source tree, or pass --ort-lib / set {ORT_DYLIB_ENV} {}",
        looked.join("\n"),
        HOW_TO_GET
    )))
}

/// The ONNX Runtime release bertflow is built and tested against (its PyPI wheel).
pub const ORT_VERSION: &str = "1.31.1";

const HOW_TO_GET: &str = "(e.g. `pip download --no-deps onnxruntime==1.31.1` and take onnxruntime/capi/libonnxruntime.so* from the wheel; for execution_provider openvino, every library in onnxruntime/capi/ of `onnxruntime-openvino==1.24.1`)";

impl OrtRuntime {
    /// Load the library once per process. Later calls return the same runtime.
    pub fn init(cli: Option<&Path>, cfg: &RuntimeConfig) -> Result<Arc<OrtRuntime>> {
        if let Some(rt) = RUNTIME.get() {
            return Ok(rt.clone());
        }
        let library = locate(cli, cfg)?;
        let builder = ort::init_from(&library).map_err(|e| {
            Error::Runtime(format!(
                "cannot load ONNX Runtime from {}: {e}; use a library of version >= 1.24 {}",
                library.display(),
                HOW_TO_GET
            ))
        })?;
        let environment = builder
            .with_name("bertflow")
            .with_telemetry(false)
            .build()
            .map_err(|e| {
                Error::Runtime(format!(
                    "cannot create the ONNX Runtime environment from {}: {e}",
                    library.display()
                ))
            })?;
        let rt = Arc::new(OrtRuntime {
            library,
            environment,
            config: cfg.clone(),
        });
        let _ = RUNTIME.set(rt.clone());
        Ok(RUNTIME.get().cloned().unwrap_or(rt))
    }

    /// Whether the configured provider is CUDA.
    pub fn wants_cuda(&self) -> bool {
        self.config.execution_provider == ExecutionProvider::Cuda
    }

    /// Whether the configured provider is OpenVINO.
    pub fn wants_openvino(&self) -> bool {
        self.config.execution_provider == ExecutionProvider::Openvino
    }

    pub fn fallback_to_cpu(&self) -> bool {
        self.config.fallback == Fallback::Cpu
    }
}

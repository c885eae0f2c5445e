//! Models: the ONNX Runtime library and environment ([`runtime`]), inference sessions with their
//! execution providers ([`session`]), and tokenizers ([`tokenizer`]).

pub mod config;
pub mod files;
pub mod hub;
pub mod inspect;
pub mod labels;
pub mod modules;
pub mod precision;
pub mod runtime;
pub mod session;
pub mod tokenizer;
pub mod wordpiece;

pub use files::ModelDir;
pub use precision::Precision;
pub use runtime::{OrtRuntime, ProviderInfo};
pub use session::{ModelOutputs, OnnxModel};
pub use tokenizer::TextTokenizer;

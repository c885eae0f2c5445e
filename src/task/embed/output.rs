//! How embeddings are written: Matryoshka truncation (`dimensions`) and the element type
//! (`output`), with sentence-transformers' semantics: `truncate_dim` cuts the vector after the
//! model's own normalisation (and `normalize_embeddings` normalises again after it), and
//! `quantize_embeddings` packs `binary` / `ubinary` as one bit per dimension (`> 0`, first
//! dimension in the highest bit, the last byte padded with zeros; `binary` stores each byte minus
//! 128 as int8).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int8Array, UInt8Array,
};
use arrow::datatypes::{DataType, Field};

pub use crate::record::{EMBEDDING_DIMENSIONS_KEY, EMBEDDING_TYPE_KEY};
pub use crate::task::config::EmbeddingOutput;

use crate::error::{Error, Result};

impl EmbeddingOutput {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingOutput::Float32 => "float32",
            EmbeddingOutput::Float16 => "float16",
            EmbeddingOutput::Binary => "binary",
            EmbeddingOutput::Ubinary => "ubinary",
            EmbeddingOutput::Int8 => "int8",
            EmbeddingOutput::Uint8 => "uint8",
        }
    }

    /// Whether this type needs per-dimension ranges.
    pub fn scalar(self) -> bool {
        matches!(self, EmbeddingOutput::Int8 | EmbeddingOutput::Uint8)
    }

    /// Values per embedding of `dim` dimensions.
    pub fn width(self, dim: usize) -> usize {
        match self {
            EmbeddingOutput::Float32
            | EmbeddingOutput::Float16
            | EmbeddingOutput::Int8
            | EmbeddingOutput::Uint8 => dim,
            EmbeddingOutput::Binary | EmbeddingOutput::Ubinary => dim.div_ceil(8),
        }
    }

    fn item_type(self) -> DataType {
        match self {
            EmbeddingOutput::Float32 => DataType::Float32,
            EmbeddingOutput::Float16 => DataType::Float16,
            EmbeddingOutput::Binary | EmbeddingOutput::Int8 => DataType::Int8,
            EmbeddingOutput::Ubinary | EmbeddingOutput::Uint8 => DataType::UInt8,
        }
    }

    /// The column type of embeddings of `dim` dimensions.
    pub fn data_type(self, dim: usize) -> DataType {
        DataType::FixedSizeList(
            Arc::new(Field::new("item", self.item_type(), false)),
            self.width(dim) as i32,
        )
    }

    /// The output field, with metadata telling sinks the element type and dimensions.
    pub fn field(self, name: &str, dim: usize, nullable: bool) -> Field {
        let f = Field::new(name, self.data_type(dim), nullable);
        if self == EmbeddingOutput::Float32 {
            return f;
        }
        f.with_metadata(std::collections::HashMap::from([
            (EMBEDDING_TYPE_KEY.to_string(), self.name().to_string()),
            (EMBEDDING_DIMENSIONS_KEY.to_string(), dim.to_string()),
        ]))
    }

    /// Build the column from `flat` float vectors of `dim` dimensions each (`nulls`: rows
    /// without an embedding, their values ignored; `ranges`: for int8 / uint8).
    pub fn column(
        self,
        dim: usize,
        flat: &[f32],
        nulls: Option<arrow::buffer::NullBuffer>,
        ranges: Option<&Ranges>,
    ) -> Result<FixedSizeListArray> {
        let buckets = || -> Result<Vec<u8>> {
            let r = ranges.ok_or_else(|| {
                Error::Inference(format!("internal: {} output without ranges", self.name()))
            })?;
            Ok(r.buckets(flat))
        };
        let values: ArrayRef = match self {
            EmbeddingOutput::Float32 => Arc::new(Float32Array::from(flat.to_vec())),
            EmbeddingOutput::Float16 => Arc::new(Float16Array::from(
                flat.iter()
                    .map(|&x| half::f16::from_f32(x))
                    .collect::<Vec<_>>(),
            )),
            EmbeddingOutput::Ubinary => Arc::new(UInt8Array::from(pack_bits(flat, dim))),
            EmbeddingOutput::Binary => Arc::new(Int8Array::from(
                pack_bits(flat, dim)
                    .into_iter()
                    .map(|b| (b as i16 - 128) as i8)
                    .collect::<Vec<_>>(),
            )),
            EmbeddingOutput::Uint8 => Arc::new(UInt8Array::from(buckets()?)),
            EmbeddingOutput::Int8 => Arc::new(Int8Array::from(
                buckets()?
                    .into_iter()
                    .map(|b| (b as i16 - 128) as i8)
                    .collect::<Vec<_>>(),
            )),
        };
        let item = Arc::new(Field::new("item", self.item_type(), false));
        FixedSizeListArray::try_new(item, self.width(dim) as i32, values, nulls)
            .map_err(|e| Error::Inference(e.to_string()))
    }
}

/// Per-dimension ranges of int8 / uint8 output: `{"min": [...], "max": [...]}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ranges {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl Ranges {
    /// Read a ranges file for embeddings of `dim` dimensions.
    pub fn read(path: &std::path::Path, dim: usize) -> Result<Ranges> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "tasks.embed.output_ranges: cannot read {}: {e}",
                path.display()
            ))
        })?;
        let r: Ranges = serde_json::from_str(&text).map_err(|e| {
            Error::config(format!(
                "tasks.embed.output_ranges: {} is not {{\"min\": [...], \"max\": [...]}}: {e}",
                path.display()
            ))
        })?;
        if r.min.len() != dim || r.max.len() != dim {
            return Err(Error::config(format!(
                "tasks.embed.output_ranges: {} holds {} / {} values, but the embeddings written have {dim} dimensions (make it again with `bertflow models ranges` and the same dimensions)",
                path.display(),
                r.min.len(),
                r.max.len()
            )));
        }
        Ok(r)
    }

    /// The bucket (0..=255) of every value, as `quantize_embeddings`: `floor((x - min) / step)`
    /// clipped, with `step = (max - min) / 255` (1 where max equals min), in float32.
    pub fn buckets(&self, flat: &[f32]) -> Vec<u8> {
        let dim = self.min.len().max(1);
        let steps: Vec<f32> = self
            .min
            .iter()
            .zip(&self.max)
            .map(|(lo, hi)| {
                let s = (hi - lo) / 255.0;
                if s == 0.0 {
                    1.0
                } else {
                    s
                }
            })
            .collect();
        flat.iter()
            .enumerate()
            .map(|(i, &x)| {
                let d = i % dim;
                ((x - self.min[d]) / steps[d]).floor().clamp(0.0, 255.0) as u8
            })
            .collect()
    }
}

/// numpy's `packbits(v > 0)` per vector of `dim` values: bit 7 of byte 0 is dimension 0.
pub fn pack_bits(flat: &[f32], dim: usize) -> Vec<u8> {
    let bytes = dim.div_ceil(8);
    let mut out = Vec::with_capacity(flat.len() / dim.max(1) * bytes);
    for v in flat.chunks(dim.max(1)) {
        for byte in v.chunks(8) {
            let mut b = 0u8;
            for (i, &x) in byte.iter().enumerate() {
                if x > 0.0 {
                    b |= 0x80 >> i;
                }
            }
            out.push(b);
        }
    }
    out
}

/// Matryoshka truncation as sentence-transformers applies it: keep the first `dimensions`
/// values, then L2-normalise again when `normalize` (its `normalize_embeddings=True`).
pub fn truncate(v: &mut Vec<f32>, dimensions: Option<usize>, normalize: bool) {
    if let Some(d) = dimensions {
        v.truncate(d);
        if normalize {
            super::l2_normalize(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_as_numpy_packbits() {
        // 10 dimensions: two bytes, the second padded with zeros.
        let v = [1.0, -1.0, 0.0, 2.0, 0.5, -0.1, -3.0, 0.1, 0.2, -0.2];
        assert_eq!(pack_bits(&v, 10), vec![0b1001_1001, 0b1000_0000]);
        let col = EmbeddingOutput::Binary.column(10, &v, None, None).unwrap();
        let bytes = col.value(0);
        let bytes = bytes.as_any().downcast_ref::<Int8Array>().unwrap();
        assert_eq!(
            bytes.values().to_vec(),
            vec![(0b1001_1001i16 - 128) as i8, 0]
        );
        assert_eq!(EmbeddingOutput::Ubinary.width(384), 48);
        assert_eq!(EmbeddingOutput::Float16.width(384), 384);
    }

    #[test]
    fn every_output_type_encodes_as_json_numbers() {
        // The Kafka JSON output and Postgres jsonb columns encode these columns as JSON.
        let v = [0.5f32, -0.25, 1.0, -1.0];
        let r = Ranges {
            min: vec![-1.0; 4],
            max: vec![1.0; 4],
        };
        for t in [
            EmbeddingOutput::Float32,
            EmbeddingOutput::Float16,
            EmbeddingOutput::Binary,
            EmbeddingOutput::Ubinary,
            EmbeddingOutput::Int8,
            EmbeddingOutput::Uint8,
        ] {
            let col = t.column(4, &v, None, Some(&r)).unwrap();
            let schema = Arc::new(arrow::datatypes::Schema::new(vec![t.field("e", 4, false)]));
            let batch = arrow::array::RecordBatch::try_new(schema, vec![Arc::new(col)]).unwrap();
            let rows = crate::connector::json_rows(&batch).unwrap();
            let json: serde_json::Value = serde_json::from_slice(&rows[0]).unwrap();
            let values = json["e"].as_array().unwrap();
            assert_eq!(values.len(), t.width(4), "{}", t.name());
            assert!(values.iter().all(|x| x.is_number()), "{}: {json}", t.name());
        }
    }

    #[test]
    fn scalar_buckets_as_quantize_embeddings() {
        let r = Ranges {
            min: vec![-1.0, 0.0],
            max: vec![1.0, 0.0],
        };
        // Step 2/255 for the first dimension (in float32 the maximum lands at 254.99998, bucket
        // 254, as numpy's float32 arithmetic gives too); a constant dimension gets step 1.
        assert_eq!(
            r.buckets(&[-1.0, 0.0, 1.0, 5.0, 0.0, -3.0]),
            vec![0, 0, 254, 5, 127, 0]
        );
    }

    #[test]
    fn truncation_keeps_the_first_dimensions_and_renormalises_on_request() {
        let mut v = vec![3.0, 4.0, 12.0];
        truncate(&mut v, Some(2), false);
        assert_eq!(v, vec![3.0, 4.0]);
        truncate(&mut v, Some(2), true);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        let mut w = vec![1.0, 2.0];
        truncate(&mut w, None, true);
        assert_eq!(w, vec![1.0, 2.0]);
    }
}

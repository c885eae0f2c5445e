//! Passage embeddings of long texts (`tasks.embed.chunking`, cut by [`crate::task::passages`])
//! and the document embedding made of them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field};

use super::pooling::l2_normalize;

/// The embedding of one passage of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkEmbedding {
    /// Position of the passage in the text (0-based).
    pub index: u32,
    /// Character offsets into the text: the passage is `text[start:end]`.
    pub start: usize,
    pub end: usize,
    pub embedding: Vec<f32>,
}

/// The document embedding: mean of the passage embeddings, L2-normalised.
pub fn document_embedding(chunks: &[ChunkEmbedding]) -> Option<Vec<f32>> {
    let first = chunks.first()?;
    let mut acc = vec![0f32; first.embedding.len()];
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(&c.embedding) {
            *a += v;
        }
    }
    let n = chunks.len() as f32;
    for a in &mut acc {
        *a /= n;
    }
    l2_normalize(&mut acc);
    Some(acc)
}

/// Fields of one passage: `{index, start, end, embedding}`.
pub fn chunk_fields(dim: usize) -> arrow::datatypes::Fields {
    let vector = DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    );
    arrow::datatypes::Fields::from(vec![
        Field::new("index", DataType::Int32, false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
        Field::new("embedding", vector, false),
    ])
}

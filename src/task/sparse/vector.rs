//! Sparse vectors: active vocabulary entries and their weights, compared and cut to their
//! largest weights.

/// A sparse vector: active vocabulary entries in ascending order and their weights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// The sparse vector of one passage of a text.
#[derive(Debug, Clone, PartialEq)]
pub struct SparsePassage {
    /// Position of the passage in the text (0-based).
    pub index: u32,
    /// Character offsets into the text: the passage is `text[start:end]`.
    pub start: usize,
    pub end: usize,
    pub vector: SparseVector,
    /// The vector before `max_active_dims`, kept when a document vector is pooled from the
    /// passages' (it is cut once pooled).
    pub uncut: Option<SparseVector>,
}

impl SparseVector {
    /// The indices of the `k` largest weights (ties: the lower index).
    fn top(&self, k: usize) -> Vec<u32> {
        let mut order: Vec<usize> = (0..self.indices.len()).collect();
        order.sort_by(|&a, &b| self.values[b].total_cmp(&self.values[a]).then(a.cmp(&b)));
        order.into_iter().take(k).map(|i| self.indices[i]).collect()
    }

    /// The share of this vector's `k` largest entries that are among `other`'s `k` largest (1
    /// when this one has none).
    pub fn top_overlap(&self, other: &SparseVector, k: usize) -> f64 {
        let mine = self.top(k);
        if mine.is_empty() {
            return 1.0;
        }
        let theirs: std::collections::HashSet<u32> = other.top(k).into_iter().collect();
        mine.iter().filter(|i| theirs.contains(i)).count() as f64 / mine.len() as f64
    }

    /// Cosine similarity of two sparse vectors (1 when both are empty).
    pub fn cosine(&self, other: &SparseVector) -> f64 {
        let (mut i, mut j, mut dot) = (0, 0, 0f64);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    dot += self.values[i] as f64 * other.values[j] as f64;
                    i += 1;
                    j += 1;
                }
            }
        }
        let na: f64 = self.values.iter().map(|v| (*v as f64).powi(2)).sum();
        let nb: f64 = other.values.iter().map(|v| (*v as f64).powi(2)).sum();
        if na == 0.0 && nb == 0.0 {
            return 1.0;
        }
        dot / (na.sqrt() * nb.sqrt()).max(1e-30)
    }
}

/// A vector cut to its `cap` largest weights (ties: the lower index), in index order.
pub(super) fn cut(v: SparseVector, cap: Option<usize>) -> SparseVector {
    let Some(k) = cap.filter(|&k| v.indices.len() > k) else {
        return v;
    };
    let mut active: Vec<usize> = (0..v.indices.len()).collect();
    active.select_nth_unstable_by(k - 1, |&a, &b| {
        v.values[b].total_cmp(&v.values[a]).then(a.cmp(&b))
    });
    active.truncate(k);
    active.sort_unstable();
    SparseVector {
        indices: active.iter().map(|&i| v.indices[i]).collect(),
        values: active.iter().map(|&i| v.values[i]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_cosine() {
        let a = SparseVector {
            indices: vec![1, 5],
            values: vec![1.0, 1.0],
        };
        let b = SparseVector {
            indices: vec![5, 9],
            values: vec![1.0, 1.0],
        };
        assert!((a.cosine(&b) - 0.5).abs() < 1e-12);
        assert!((a.cosine(&a) - 1.0).abs() < 1e-12);
        assert_eq!(
            SparseVector::default().cosine(&SparseVector::default()),
            1.0
        );
    }
}

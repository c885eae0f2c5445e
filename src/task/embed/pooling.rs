//! Pooling of token embeddings into one sentence embedding, and its L2 normalisation, exactly as
//! sentence-transformers' `Pooling` and `Normalize` modules compute them.

pub use crate::model::modules::{pools_from_st_config, Pool};

/// Pool one sequence's token embeddings (`seq x hidden`, row-major) over its mask.
pub fn pool(tokens: &[f32], mask: &[i64], hidden: usize, mode: Pool, out: &mut Vec<f32>) {
    let seq = mask.len();
    let count = mask.iter().filter(|&&m| m != 0).count();
    let row = |t: usize| &tokens[t * hidden..(t + 1) * hidden];
    match mode {
        // The first token the mask keeps (sentence-transformers' argmax over the mask): the
        // first one, unless a prompt is left out of the pooling.
        Pool::Cls => out.extend_from_slice(row(mask.iter().position(|&m| m != 0).unwrap_or(0))),
        Pool::LastToken => {
            let last = (0..seq).rev().find(|&t| mask[t] != 0).unwrap_or(0);
            out.extend_from_slice(row(last));
        }
        Pool::Max => {
            // Masked positions count as -1e9, as in sentence-transformers.
            let mut acc = vec![f32::NEG_INFINITY; hidden];
            for (t, &m) in mask.iter().enumerate() {
                let r = row(t);
                let masked = m == 0;
                for (a, &v) in acc.iter_mut().zip(r) {
                    let v = if masked { -1e9 } else { v };
                    if v > *a {
                        *a = v;
                    }
                }
            }
            out.extend_from_slice(&acc);
        }
        Pool::Mean | Pool::MeanSqrtLen => {
            let mut acc = vec![0f32; hidden];
            for (t, &m) in mask.iter().enumerate() {
                if m != 0 {
                    for (a, &v) in acc.iter_mut().zip(row(t)) {
                        *a += v;
                    }
                }
            }
            let denom = if mode == Pool::Mean {
                (count as f32).max(1e-9)
            } else {
                (count as f32).max(1e-9).sqrt()
            };
            out.extend(acc.into_iter().map(|a| a / denom));
        }
    }
}

/// L2-normalise in place (eps 1e-12, as `torch.nn.functional.normalize`).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    for x in v {
        *x /= norm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn mean_pooling_ignores_padding() {
        // 3 tokens x 2 hidden, last one padding.
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = Vec::new();
        pool(&tokens, &[1, 1, 0], 2, Pool::Mean, &mut out);
        assert_eq!(out, vec![2.0, 3.0]);
    }

    #[test]
    fn max_cls_last_pooling() {
        let tokens = [1.0, 5.0, 3.0, 4.0, 100.0, 100.0];
        let mask = [1, 1, 0];
        let mut out = Vec::new();
        pool(&tokens, &mask, 2, Pool::Max, &mut out);
        assert_eq!(out, vec![3.0, 5.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::Cls, &mut out);
        assert_eq!(out, vec![1.0, 5.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::LastToken, &mut out);
        assert_eq!(out, vec![3.0, 4.0]);
        out.clear();
        pool(&tokens, &mask, 2, Pool::MeanSqrtLen, &mut out);
        let s = 2f32.sqrt();
        assert!((out[0] - 4.0 / s).abs() < 1e-6 && (out[1] - 9.0 / s).abs() < 1e-6);
    }

    #[test]
    fn both_pooling_config_formats() {
        let old =
            serde_json::json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true});
        assert_eq!(
            pools_from_st_config(&old).unwrap(),
            vec![Pool::Cls, Pool::Mean]
        );
        let new = serde_json::json!({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": false});
        assert_eq!(pools_from_st_config(&new).unwrap(), vec![Pool::Mean]);
        let list = serde_json::json!({"pooling_mode": ["mean_sqrt_len_tokens", "cls"]});
        assert_eq!(
            pools_from_st_config(&list).unwrap(),
            vec![Pool::MeanSqrtLen, Pool::Cls]
        );
        let e =
            pools_from_st_config(&serde_json::json!({"pooling_mode": "weightedmean"})).unwrap_err();
        assert!(e.contains("weighted-mean"), "{e}");
        let e =
            pools_from_st_config(&serde_json::json!({"pooling_mode": "attention"})).unwrap_err();
        assert!(e.contains("'attention'"), "{e}");
    }

    #[test]
    fn cls_takes_the_first_token_the_mask_keeps() {
        let tokens = [1.0, 5.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = Vec::new();
        pool(&tokens, &[0, 1, 1], 2, Pool::Cls, &mut out);
        assert_eq!(out, vec![3.0, 4.0]);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn st_pooling_config() {
        let v: Value =
            serde_json::json!({"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true});
        assert_eq!(pools_from_st_config(&v).unwrap(), vec![Pool::Mean]);
        let v: Value =
            serde_json::json!({"pooling_mode_cls_token": true, "pooling_mode_max_tokens": true});
        assert_eq!(
            pools_from_st_config(&v).unwrap(),
            vec![Pool::Cls, Pool::Max]
        );
        let v: Value = serde_json::json!({"pooling_mode_weightedmean_tokens": true});
        assert!(pools_from_st_config(&v).is_err());
    }
}

//! The figures the quality guard judges a precision variant by: each task scores its variant's
//! results against the fp32 results of the same records ([`Task::quality`](super::Task::quality))
//! with the measures here (embedding cosine, label agreement, entity F1, answer exact match).

use std::collections::HashSet;
use std::hash::Hash;

use crate::model::precision::Quality;

/// One figure set per compared task, filled by the measures below.
pub type Figures = Quality;

/// Cosine similarity in f64; two zero vectors are identical.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// Lowest and mean cosine of vector pairs (fp32, variant).
pub fn cosines<'a>(q: &mut Figures, pairs: impl IntoIterator<Item = (&'a [f32], &'a [f32])>) {
    let cos: Vec<f64> = pairs.into_iter().map(|(a, b)| cosine(a, b)).collect();
    if !cos.is_empty() {
        q.min_cosine = cos.iter().copied().reduce(f64::min);
        q.mean_cosine = Some(cos.iter().sum::<f64>() / cos.len() as f64);
    }
}

/// Share of score vectors whose top label (first maximum) is the same.
pub fn label_agreement<'a>(
    q: &mut Figures,
    pairs: impl IntoIterator<Item = (&'a [f32], &'a [f32])>,
) {
    let (mut same, mut n) = (0usize, 0usize);
    for (a, b) in pairs {
        n += 1;
        same += usize::from(super::argmax(a) == super::argmax(b));
    }
    if n > 0 {
        q.label_agreement = Some(same as f64 / n as f64);
    }
}

/// F1 of the variant's items (entities as type and span) against fp32's, over all records;
/// 1.0 when neither found any.
pub fn set_f1<K: Eq + Hash>(q: &mut Figures, pairs: impl IntoIterator<Item = (Vec<K>, Vec<K>)>) {
    let (mut tp, mut n_ref, mut n_got) = (0usize, 0usize, 0usize);
    for (want, got) in pairs {
        let want: HashSet<K> = want.into_iter().collect();
        let got: HashSet<K> = got.into_iter().collect();
        tp += want.intersection(&got).count();
        n_ref += want.len();
        n_got += got.len();
    }
    q.entity_f1 = Some(if n_ref + n_got > 0 {
        2.0 * tp as f64 / (n_ref + n_got) as f64
    } else {
        1.0
    });
}

/// Pair scores (zero-shot labels, cross-encoder queries): the share of records whose best-scored
/// name is fp32's, and the largest difference of a name's score from its fp32 score.
pub fn ranked_scores<'a>(
    q: &mut Figures,
    pairs: impl IntoIterator<Item = (&'a [super::Scored], &'a [super::Scored])>,
) {
    let best = |v: &[super::Scored]| {
        v.iter()
            .reduce(|a, b| if b.score > a.score { b } else { a })
            .map(|s| s.name.clone())
    };
    let (mut same, mut n, mut diff) = (0usize, 0usize, 0f64);
    for (want, got) in pairs {
        n += 1;
        same += usize::from(best(want) == best(got));
        for w in want {
            if let Some(g) = got.iter().find(|g| g.name == w.name) {
                diff = diff.max((w.score as f64 - g.score as f64).abs());
            }
        }
    }
    if n > 0 {
        q.label_agreement = Some(same as f64 / n as f64);
        q.max_score_diff = Some(diff);
    }
}

/// Share of items (answers, in order) equal to fp32's.
pub fn exact_match<T: PartialEq>(q: &mut Figures, pairs: impl IntoIterator<Item = (T, T)>) {
    let (mut exact, mut asked) = (0usize, 0usize);
    for (a, b) in pairs {
        asked += 1;
        exact += usize::from(a == b);
    }
    if asked > 0 {
        q.exact_match = Some(exact as f64 / asked as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_score_the_variant_against_fp32() {
        let mut q = Figures::default();
        cosines(
            &mut q,
            [
                (&[1.0f32, 0.0][..], &[1.0f32, 0.0][..]),
                (&[0.0, 1.0][..], &[1.0, 1.0][..]),
            ],
        );
        assert!((q.min_cosine.unwrap() - 0.5f64.sqrt()).abs() < 1e-9);
        assert!((q.mean_cosine.unwrap() - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-9);

        let mut q = Figures::default();
        label_agreement(
            &mut q,
            [
                (&[0.9f32, 0.1][..], &[0.6f32, 0.4][..]),
                (&[0.2, 0.8][..], &[0.6, 0.4][..]),
            ],
        );
        assert_eq!(q.label_agreement, Some(0.5));

        let mut q = Figures::default();
        set_f1(
            &mut q,
            [(
                vec![("PER", 0, 5), ("LOC", 10, 16)],
                vec![("PER", 0, 5), ("ORG", 10, 16)],
            )],
        );
        assert_eq!(q.entity_f1, Some(0.5));
        let mut q = Figures::default();
        set_f1::<(&str, usize, usize)>(&mut q, [(vec![], vec![])]);
        assert_eq!(q.entity_f1, Some(1.0));

        let mut q = Figures::default();
        exact_match(
            &mut q,
            [
                (("Paris", 3), ("Paris", 3)),
                (("1889", 20), ("in 1889", 17)),
            ],
        );
        assert_eq!(q.exact_match, Some(0.5));

        let s = |name: &str, score: f32| crate::task::Scored {
            name: name.into(),
            score,
            logits: vec![],
        };
        let mut q = Figures::default();
        let a = [s("billing", 0.7), s("login", 0.3)];
        let b = [s("login", 0.55), s("billing", 0.45)];
        let c = [s("billing", 0.69), s("login", 0.31)];
        ranked_scores(&mut q, [(&a[..], &b[..]), (&a[..], &c[..])]);
        assert_eq!(q.label_agreement, Some(0.5));
        assert!((q.max_score_diff.unwrap() - 0.25).abs() < 1e-6);
    }
}

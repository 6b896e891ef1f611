//! Small statistics over benchmark rounds: medians and percentiles of plain samples.

/// The median of `xs` (mean of the middle two for an even count); 0 for none.
pub fn median(xs: &[f64]) -> f64 {
    percentile(xs, 50.0)
}

/// The `p`th percentile of `xs` by linear interpolation between closest ranks; 0 for none.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let cases: [(&[f64], f64, f64); 6] = [
            (&[], 50.0, 0.0),
            (&[3.0], 99.0, 3.0),
            (&[3.0, 1.0, 2.0], 50.0, 2.0),
            (&[4.0, 1.0, 2.0, 3.0], 50.0, 2.5),
            (&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0, 5.0),
            (&[1.0, 2.0, 3.0, 4.0, 5.0], 0.0, 1.0),
        ];
        for (xs, p, want) in cases {
            assert_eq!(percentile(xs, p), want, "{xs:?} p{p}");
        }
        assert_eq!(median(&[5.0, 1.0, 9.0]), 5.0);
    }
}

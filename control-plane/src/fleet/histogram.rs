//! Latency histograms with fixed buckets: checking what a node sent, merging across nodes, and
//! reading percentiles off the merged counts.
//!
//! Percentiles are never averaged across nodes: counts are added bucket by bucket (which is
//! exact when the nodes share bounds) and the percentile is read from the sum.

use std::time::Duration;

use gw_proto::v1 as pb;

/// Most buckets accepted from a node; the data plane uses about a dozen.
pub const MAX_BUCKETS: usize = 64;
/// Largest bucket bound accepted, in seconds. Anything above a day is not a latency.
const MAX_BOUND_SECONDS: f64 = 86_400.0;

/// A validated histogram: finite ascending upper bounds, then one count per bucket plus the
/// last, unbounded bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
}

/// Why a node's histogram was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// More than [`MAX_BUCKETS`] bounds.
    #[error("more than {MAX_BUCKETS} buckets")]
    TooManyBuckets,
    /// `counts` is not one longer than `upper_bounds_seconds`.
    #[error("{counts} counts for {bounds} bounds; there must be one more count than bounds")]
    CountMismatch {
        /// Bounds sent.
        bounds: usize,
        /// Counts sent.
        counts: usize,
    },
    /// A bound is negative, not finite, above a day, or not above the one before it.
    #[error("upper bounds must be ascending seconds between 0 and {MAX_BOUND_SECONDS}")]
    BadBounds,
}

impl TryFrom<pb::LatencyHistogram> for Histogram {
    type Error = HistogramError;

    fn try_from(h: pb::LatencyHistogram) -> Result<Self, Self::Error> {
        let pb::LatencyHistogram {
            upper_bounds_seconds: bounds,
            counts,
        } = h;
        if bounds.len() > MAX_BUCKETS {
            return Err(HistogramError::TooManyBuckets);
        }
        if counts.len() != bounds.len() + 1 {
            return Err(HistogramError::CountMismatch {
                bounds: bounds.len(),
                counts: counts.len(),
            });
        }
        let in_range = |b: &f64| b.is_finite() && (0.0..=MAX_BOUND_SECONDS).contains(b);
        if !bounds.iter().all(in_range) || !bounds.windows(2).all(|w| w[0] < w[1]) {
            return Err(HistogramError::BadBounds);
        }
        Ok(Self { bounds, counts })
    }
}

impl From<&Histogram> for pb::LatencyHistogram {
    fn from(h: &Histogram) -> Self {
        pb::LatencyHistogram {
            upper_bounds_seconds: h.bounds.clone(),
            counts: h.counts.clone(),
        }
    }
}

impl Histogram {
    /// Requests counted, over every bucket.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, c| sum.saturating_add(*c))
    }

    /// Adds `other`'s counts bucket by bucket. Fails, changing nothing, if the bounds differ:
    /// counts of different buckets cannot be added without inventing a distribution.
    pub fn add(&mut self, other: &Histogram) -> Result<(), BoundsDiffer> {
        if self.bounds != other.bounds {
            return Err(BoundsDiffer);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        Ok(())
    }

    /// The `percent`th percentile (1 to 100), or `None` when nothing was counted.
    ///
    /// No interpolation: the answer is the upper bound of the bucket in which the cumulative
    /// count first reaches the rank `ceil(total * percent / 100)`, so it is never below the
    /// true value. A rank in the last, unbounded bucket answers the largest finite bound (the
    /// histogram cannot say more); with no bounds at all that is zero.
    pub fn percentile(&self, percent: u8) -> Option<Duration> {
        let total = u128::from(self.total());
        if total == 0 {
            return None;
        }
        let percent = u128::from(percent.clamp(1, 100));
        let rank = (total * percent).div_ceil(100).max(1);
        let mut cumulative = 0u128;
        let bucket = self.counts.iter().position(|c| {
            cumulative += u128::from(*c);
            cumulative >= rank
        })?;
        let bound = self
            .bounds
            .get(bucket)
            .or(self.bounds.last())
            .copied()
            .unwrap_or(0.0);
        // Bounds were checked to be finite and at most a day, so this cannot fail.
        Duration::try_from_secs_f64(bound).ok()
    }
}

/// Two histograms with different bucket bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("histogram bounds differ")]
pub struct BoundsDiffer;

/// Merges the histograms of several nodes. The first one sets the bounds; a node whose bounds
/// differ (another build) is left out and logged, since its counts cannot be added.
pub fn merge<'a>(
    histograms: impl IntoIterator<Item = (&'a str, &'a Histogram)>,
) -> Option<Histogram> {
    let mut merged: Option<Histogram> = None;
    for (node, h) in histograms {
        match &mut merged {
            None => merged = Some(h.clone()),
            Some(m) => {
                if m.add(h).is_err() {
                    tracing::warn!(
                        node,
                        "latency histogram has other bucket bounds than the rest; left out of the merge"
                    );
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 5] = [0.005, 0.01, 0.05, 0.1, 0.5];

    fn hist(counts: [u64; 6]) -> Histogram {
        Histogram::try_from(pb::LatencyHistogram {
            upper_bounds_seconds: BOUNDS.to_vec(),
            counts: counts.to_vec(),
        })
        .unwrap()
    }

    fn ms(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    #[test]
    fn percentiles_are_bucket_upper_bounds() {
        // (counts, p50, p90, p99)
        let cases = [
            ([0, 0, 0, 0, 0, 0], None, None, None),
            ([10, 0, 0, 0, 0, 0], ms(5), ms(5), ms(5)),
            ([50, 40, 9, 1, 0, 0], ms(5), ms(10), ms(50)),
            // Rank 50 of 100 is the 50th request: still in the first bucket.
            ([50, 50, 0, 0, 0, 0], ms(5), ms(10), ms(10)),
            ([1, 0, 0, 0, 0, 0], ms(5), ms(5), ms(5)),
            // The unbounded bucket answers the largest finite bound.
            ([0, 0, 0, 0, 0, 3], ms(500), ms(500), ms(500)),
            ([98, 0, 0, 0, 1, 1], ms(5), ms(5), ms(500)),
        ];
        for (counts, p50, p90, p99) in cases {
            let h = hist(counts);
            assert_eq!(
                (h.percentile(50), h.percentile(90), h.percentile(99)),
                (p50, p90, p99),
                "{counts:?}"
            );
        }
    }

    #[test]
    fn merge_adds_counts_and_reads_percentiles_from_the_sum() {
        // Node a: 60 fast requests; node b: 40 slow ones. Averaging the nodes' medians would
        // give something in between; the merged median is a's bucket, p90 and p99 are b's.
        let a = hist([60, 0, 0, 0, 0, 0]);
        let b = hist([0, 0, 0, 0, 40, 0]);
        let m = merge([("a", &a), ("b", &b)]).unwrap();
        assert_eq!(m, hist([60, 0, 0, 0, 40, 0]));
        assert_eq!(m.total(), 100);
        assert_eq!(
            (m.percentile(50), m.percentile(90), m.percentile(99)),
            (ms(5), ms(500), ms(500))
        );
        assert_eq!(merge([]), None);
    }

    #[test]
    fn merge_leaves_out_other_bounds() {
        let a = hist([1, 2, 3, 4, 5, 6]);
        let other = Histogram::try_from(pb::LatencyHistogram {
            upper_bounds_seconds: vec![1.0],
            counts: vec![100, 100],
        })
        .unwrap();
        let m = merge([("a", &a), ("other", &other), ("a2", &a)]).unwrap();
        assert_eq!(m, hist([2, 4, 6, 8, 10, 12]));
    }

    #[test]
    fn rejects_malformed_histograms() {
        let bad = [
            (vec![0.1, 0.2], vec![1, 2], "count mismatch"),
            (vec![0.2, 0.1], vec![1, 2, 3], "descending"),
            (vec![0.1, 0.1], vec![1, 2, 3], "repeated"),
            (vec![f64::NAN], vec![1, 2], "NaN"),
            (vec![f64::INFINITY], vec![1, 2], "infinite"),
            (vec![-1.0], vec![1, 2], "negative"),
            (vec![1e9], vec![1, 2], "absurd"),
            (
                vec![1.0; MAX_BUCKETS + 1],
                vec![0; MAX_BUCKETS + 2],
                "too many",
            ),
        ];
        for (upper_bounds_seconds, counts, what) in bad {
            let h = pb::LatencyHistogram {
                upper_bounds_seconds,
                counts,
            };
            assert!(Histogram::try_from(h).is_err(), "{what}");
        }
        // Counts that would overflow saturate instead of wrapping.
        let mut big = hist([u64::MAX, 0, 0, 0, 0, 0]);
        big.add(&hist([1, 0, 0, 0, 0, 0])).unwrap();
        assert_eq!(big.total(), u64::MAX);
        assert_eq!(big.percentile(99), ms(5));
    }
}

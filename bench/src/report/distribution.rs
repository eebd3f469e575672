//! A latency distribution taken from an `hdrhistogram`, as its percentile points.

use serde::{Deserialize, Serialize};

/// Percentile points per halving of the distance to 100% (HdrHistogram's own percentile output
/// uses 5): for a million values, some 150 points from 0% to the maximum.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// A latency distribution, kept as the points of its percentile curve (HdrHistogram's
/// "percentile distribution": percentiles at 0%, 50%, 75%, 87.5%... ever closer to 100%, so
/// that the tail is as finely drawn as the body) and its headline percentiles.
///
/// ```
/// use shardflow_bench::report::Distribution;
///
/// let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
/// for ns in 1..=1_000u64 {
///     hist.record(ns * 1_000).unwrap(); // 1 µs to 1 ms
/// }
/// let d = Distribution::from_histogram("lone record", &hist, 1_000.0, "µs");
/// assert_eq!(d.count, 1_000);
/// // To the histogram's precision: 3 significant digits.
/// assert!((d.p50 - 500.0).abs() <= 0.5, "{}", d.p50);
/// assert!((d.max - 1_000.0).abs() <= 1.0, "{}", d.max);
/// assert_eq!(d.points.first().unwrap().0, 0.0); // percentile 0...
/// assert_eq!(d.points.last().unwrap().0, 100.0); // ...to 100
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// What was measured, e.g. `"lone record, P=2"`.
    pub name: String,
    /// The unit of the values, e.g. `"µs"`.
    pub unit: String,
    /// The percentile curve: `(percentile in 0..=100, value)`, percentiles increasing.
    pub points: Vec<(f64, f64)>,
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
    /// The 99.99th percentile.
    pub p9999: f64,
    /// The largest value recorded.
    pub max: f64,
    /// How many values were recorded.
    pub count: u64,
}

impl Distribution {
    /// The distribution of the values recorded in `histogram`, each divided by `unit_divisor`
    /// (e.g. 1,000 for a histogram of nanoseconds reported in `"µs"`). Each value is the
    /// highest one the histogram cannot tell apart from the true one, so within its precision
    /// (0.1% for 3 significant digits). An empty histogram gives no points and zeros.
    ///
    /// Panics if `unit_divisor` is not positive.
    pub fn from_histogram(
        name: &str,
        histogram: &hdrhistogram::Histogram<u64>,
        unit_divisor: f64,
        unit: &str,
    ) -> Distribution {
        assert!(
            unit_divisor > 0.0 && unit_divisor.is_finite(),
            "distribution {name:?}: unit divisor {unit_divisor}"
        );
        let scaled = |v: u64| v as f64 / unit_divisor;
        let count = histogram.len();
        let (points, p50, p99, p999, p9999, max) = if count == 0 {
            (Vec::new(), 0.0, 0.0, 0.0, 0.0, 0.0)
        } else {
            let points = histogram
                .iter_quantiles(TICKS_PER_HALF_DISTANCE)
                .map(|v| {
                    (
                        v.quantile_iterated_to() * 100.0,
                        scaled(v.value_iterated_to()),
                    )
                })
                .collect();
            let at = |q: f64| scaled(histogram.value_at_quantile(q));
            (
                points,
                at(0.5),
                at(0.99),
                at(0.999),
                at(0.9999),
                scaled(histogram.max()),
            )
        };
        Distribution {
            name: name.to_string(),
            unit: unit.to_string(),
            points,
            p50,
            p99,
            p999,
            p9999,
            max,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: seeded, so that a failure can be re-run.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The value at quantile `q` of sorted `values`, by its definition: the smallest value
    /// that at least a fraction `q` of all values do not exceed.
    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    /// Whether the histogram's `reported` value stands for `exact` at 3 significant digits:
    /// it is the top of the bucket holding `exact`, no wider than 1/1024 of the value.
    fn within_precision(reported: f64, exact: u64, unit_divisor: f64) -> bool {
        let exact = exact as f64 / unit_divisor;
        reported >= exact && reported - exact <= exact / 1024.0 + 1.0 / unit_divisor
    }

    #[test]
    fn percentiles_match_a_sort_of_the_values() {
        for seed in [1u64, 0x5eed, 0xdead_beef, 42] {
            let mut state = seed;
            let mut values = Vec::new();
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            for _ in 0..50_000 {
                // Log-uniform from 1 µs to ~1 s, in ns, with a heavier tail.
                let r = next(&mut state);
                let exponent = (r % 20) as u32;
                let v = 1_000 + (next(&mut state) % 1_000) * (1u64 << exponent);
                values.push(v);
                hist.record(v).unwrap();
            }
            values.sort_unstable();
            let d = Distribution::from_histogram("random", &hist, 1_000.0, "µs");
            assert_eq!(d.count, values.len() as u64);
            for (reported, q) in [
                (d.p50, 0.5),
                (d.p99, 0.99),
                (d.p999, 0.999),
                (d.p9999, 0.9999),
            ] {
                let exact = exact_quantile(&values, q);
                assert!(
                    within_precision(reported, exact, 1_000.0),
                    "seed {seed:#x}: quantile {q}: histogram says {reported} µs, sort says {exact} ns"
                );
            }
            let exact_max = *values.last().unwrap();
            assert!(
                within_precision(d.max, exact_max, 1_000.0),
                "seed {seed:#x}: max {} µs against {exact_max} ns",
                d.max
            );

            // Every point of the curve is a true percentile of the values, increasing.
            assert!(
                d.points.len() > 50,
                "seed {seed:#x}: {} points",
                d.points.len()
            );
            assert_eq!(d.points[0].0, 0.0);
            assert_eq!(d.points.last().unwrap().0, 100.0);
            for pair in d.points.windows(2) {
                assert!(pair[0].0 < pair[1].0, "seed {seed:#x}: {pair:?}");
                assert!(pair[0].1 <= pair[1].1, "seed {seed:#x}: {pair:?}");
            }
            for &(percentile, value) in &d.points {
                // The curve's value is that of the bucket holding the percentile's rank; ranks
                // are compared with a little slack for the float arithmetic of the ticks.
                let q = percentile / 100.0;
                let lo = exact_quantile(&values, (q - 1e-9).max(0.0));
                let hi = exact_quantile(&values, (q + 1e-9).min(1.0));
                assert!(
                    within_precision(value, lo, 1_000.0) || within_precision(value, hi, 1_000.0),
                    "seed {seed:#x}: at {percentile}%: {value} µs, sort says {lo}..{hi} ns"
                );
            }
        }
    }

    #[test]
    fn values_are_divided_by_the_unit_divisor() {
        let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in [100u64, 200, 300, 400] {
            hist.record(v).unwrap();
        }
        let ns = Distribution::from_histogram("ns", &hist, 1.0, "ns");
        let us = Distribution::from_histogram("us", &hist, 1_000.0, "µs");
        assert_eq!((ns.p50, ns.max), (200.0, 400.0));
        assert_eq!((us.p50, us.max), (0.2, 0.4));
        assert_eq!(us.unit, "µs");
        assert_eq!(ns.points.len(), us.points.len());
        for (a, b) in ns.points.iter().zip(&us.points) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1 / 1_000.0, b.1);
        }
    }

    #[test]
    fn an_empty_histogram_gives_an_empty_distribution() {
        let hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let d = Distribution::from_histogram("nothing", &hist, 1.0, "ns");
        assert_eq!(d.count, 0);
        assert!(d.points.is_empty());
        assert_eq!((d.p50, d.p99, d.max), (0.0, 0.0, 0.0));
    }
}

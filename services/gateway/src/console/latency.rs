//! Latency histograms of fixed size: four buckets to each power of two of
//! microseconds (each bucket within about ±10% of the values it holds),
//! from 1 µs to about 19 hours. Adding a value and merging two histograms
//! cost the same whatever the number of calls, and so does a quantile.

/// Powers of two covered (2^37 µs is about 38 hours).
const OCTAVES: usize = 37;
/// Buckets per power of two.
const SUB: usize = 4;
const BUCKETS: usize = OCTAVES * SUB;

/// A histogram of latencies in microseconds.
#[derive(Clone)]
pub struct Latencies {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

/// The bucket of `micros`.
fn bucket(micros: u64) -> usize {
    let v = micros.max(1);
    let octave = 63 - v.leading_zeros() as usize;
    // The two bits below the highest one.
    let sub = if octave >= 2 {
        (v >> (octave - 2)) & 3
    } else {
        (v << (2 - octave)) & 3
    } as usize;
    (octave * SUB + sub).min(BUCKETS - 1)
}

/// The middle of bucket `i`, in microseconds.
fn middle(i: usize) -> f64 {
    let (octave, sub) = (i / SUB, i % SUB);
    let low = (1u64 << octave) as f64 * (1.0 + sub as f64 / SUB as f64);
    let width = (1u64 << octave) as f64 / SUB as f64;
    low + width / 2.0
}

impl Latencies {
    /// Counts one latency.
    pub fn add(&mut self, micros: u64) {
        let slot = &mut self.counts[bucket(micros)];
        *slot = slot.saturating_add(1);
        self.total += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Latencies) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
    }

    /// The `q` quantile (0 to 1), in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.counts.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return middle(i) / 1000.0;
            }
        }
        middle(BUCKETS - 1) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_width() {
        let mut l = Latencies::default();
        for us in 1..=10_000u64 {
            l.add(us);
        }
        for (q, exact_ms) in [(0.5, 5.0), (0.99, 9.9)] {
            let got = l.quantile_ms(q);
            assert!(
                (got - exact_ms).abs() / exact_ms < 0.13,
                "q{q}: {got} vs {exact_ms}"
            );
        }
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it() {
        for v in [1u64, 2, 3, 5, 7, 100, 1_000, 123_456, 1 << 36] {
            let i = bucket(v);
            let m = middle(i);
            assert!(
                (m - v as f64).abs() / (v as f64) <= 0.15,
                "{v} → bucket {i} middle {m}"
            );
        }
        assert_eq!(bucket(0), bucket(1));
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn merged_histograms_count_both() {
        let (mut a, mut b) = (Latencies::default(), Latencies::default());
        a.add(1_000);
        b.add(100_000);
        b.add(100_000);
        a.merge(&b);
        assert_eq!(a.total, 3);
        assert!(a.quantile_ms(0.9) > 90.0);
        assert!(a.quantile_ms(0.2) < 1.2);
    }
}

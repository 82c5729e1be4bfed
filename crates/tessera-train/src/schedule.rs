//! Learning-rate schedule.

/// Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to `peak · floor` at
/// `total` steps (and flat after). `step` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmupCosine {
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
    /// Final LR as a fraction of `peak`.
    pub floor: f64,
}

impl WarmupCosine {
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let p = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let min = self.peak * self.floor;
        min + (self.peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine {
            peak: 1e-3,
            warmup: 10,
            total: 110,
            floor: 0.1,
        };
        assert!((s.lr(0) - 1e-4).abs() < 1e-12);
        assert!((s.lr(9) - 1e-3).abs() < 1e-12);
        assert!((s.lr(10) - 1e-3).abs() < 1e-12);
        assert!((s.lr(60) - 0.55e-3).abs() < 1e-9);
        assert!((s.lr(110) - 1e-4).abs() < 1e-12);
        assert!((s.lr(500) - 1e-4).abs() < 1e-12);
        for i in 10..110 {
            assert!(s.lr(i + 1) <= s.lr(i));
        }
    }
}

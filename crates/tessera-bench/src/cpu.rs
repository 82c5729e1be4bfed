//! What the machine can do in theory, detected at run time (the machine behind a kind changes
//! between sessions, so nothing is assumed at build time).

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Cpu {
    pub model: String,
    pub threads: usize,
    pub mhz: f64,
    pub simd: &'static str,
    /// fp32 FLOPs per cycle per core assumed for the peak: 2 FMA pipes × lanes × 2.
    pub flops_per_cycle: f64,
    pub peak_gflops: f64,
}

impl Cpu {
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        };
        let model = field("model name").unwrap_or_else(|| "unknown".into());
        let mhz = field("cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (simd, lanes) = simd_lanes();
        // Zen 4 runs AVX-512 as two 256-bit halves, so 8 lanes/pipe is the honest default for AMD.
        let lanes = if simd == "avx512f" && model.contains("AMD") {
            8.0
        } else {
            lanes
        };
        let flops_per_cycle = 2.0 * lanes * 2.0;
        let peak_gflops = threads as f64 * mhz / 1e3 * flops_per_cycle;
        Self {
            model,
            threads,
            mhz,
            simd,
            flops_per_cycle,
            peak_gflops,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "cpu: {} | {} threads @ {:.0} MHz | {} | assumed peak {:.1} GFLOP/s fp32 \
             (threads × GHz × {} FLOP/cycle: 2 FMA pipes × lanes × 2)",
            self.model, self.threads, self.mhz, self.simd, self.peak_gflops, self.flops_per_cycle
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn simd_lanes() -> (&'static str, f64) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        ("avx512f", 16.0)
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        ("avx2+fma", 8.0)
    } else {
        ("sse2", 4.0)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn simd_lanes() -> (&'static str, f64) {
    ("neon", 4.0)
}

//! The benchmark suites. Each returns rows; none asserts anything (correctness lives in tests).

use anyhow::Result;
use candle_core::{Device, Tensor};

use crate::{cpu::Cpu, median_ms, Row};

/// fp32 matmul throughput for a square 1024³ product and the DiT's own shapes
/// (tokens × hidden → 4·hidden MLP at the reference config: 2·1024 tokens, hidden 256).
pub fn gemm(cpu: &Cpu, runs: usize) -> Result<Vec<Row>> {
    let shapes = [
        (1024, 1024, 1024, "square 1024³"),
        (2048, 256, 1024, "DiT MLP in (2048×256·256×1024)"),
        (2048, 256, 768, "DiT qkv (2048×256·256×768)"),
    ];
    let mut rows = Vec::new();
    for (m, k, n, what) in shapes {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?;
        let ms = median_ms(runs, || {
            a.matmul(&b)?;
            Ok(())
        })?;
        let gflops = 2.0 * (m * k * n) as f64 / (ms * 1e6);
        rows.push(Row {
            suite: "gemm",
            name: format!("candle matmul {what}"),
            median_ms: ms,
            throughput: gflops,
            unit: "GFLOP/s",
            note: format!("{:.0}% of assumed peak", 100.0 * gflops / cpu.peak_gflops),
        });
    }
    Ok(rows)
}

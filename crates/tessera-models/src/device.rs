//! Where models run: `cpu` or `cuda[:N]`, as the command line names it.
//!
//! The CPU is the default everywhere, so every test and every default command runs on a machine
//! without a GPU; `cuda` needs a binary built with the `cuda` feature (README, "GPU").

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device `{0}`: use cpu, cuda or cuda:N (N = the GPU's ordinal, 0 first)")]
    Unknown(String),
    #[error(
        "--device {0}: this binary was built without CUDA; build one with \
         `cargo build --release --features tessera-cli/cuda` (README, \"GPU\")"
    )]
    NotBuilt(DeviceSpec),
    #[error("--device {spec}: the GPU could not be opened ({reason}); is the NVIDIA driver installed and the GPU visible (nvidia-smi)?")]
    Open { spec: DeviceSpec, reason: String },
}

impl DeviceSpec {
    /// Opens the device; a GPU without CUDA support compiled in is refused by name.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !cfg!(feature = "cuda") => Err(DeviceError::NotBuilt(self)),
            // The first line: candle appends a backtrace under RUST_BACKTRACE.
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| DeviceError::Open {
                spec: self,
                reason: e.to_string().lines().next().unwrap_or_default().into(),
            }),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown(s.to_string());
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(unknown),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("CUDA", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>(), Ok(d));
            assert_eq!(d.to_string().parse::<DeviceSpec>(), Ok(d));
        }
        for bad in ["metal", "cuda:", "cuda:x", "cuda:-1", ""] {
            assert_eq!(
                bad.parse::<DeviceSpec>(),
                Err(DeviceError::Unknown(bad.to_string()))
            );
        }
    }

    #[test]
    fn cpu_opens_and_a_gpu_without_cuda_is_refused_by_name() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if !cfg!(feature = "cuda") {
            let err = DeviceSpec::Cuda(1).open().unwrap_err();
            assert_eq!(err, DeviceError::NotBuilt(DeviceSpec::Cuda(1)));
            assert!(err.to_string().contains("--features tessera-cli/cuda"));
        }
    }
}

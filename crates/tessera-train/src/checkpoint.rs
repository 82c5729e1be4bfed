//! Atomic checkpoints: `DIR/step-NNNNNNNN/` written as `….tmp` then renamed, then the `latest`
//! pointer file replaced by rename. A crash at any point leaves the previous checkpoint intact
//! and `latest` naming a complete one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{io_err, Result, TrainError};

/// Saves tensors (`files`: file stem → tensors) and `meta` (as `state.json`) as checkpoint
/// `step` under `dir`, points `latest` at it and keeps only the newest `keep` checkpoints.
pub fn save(
    dir: &Path,
    step: usize,
    files: &[(&str, &HashMap<String, Tensor>)],
    meta: &serde_json::Value,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = format!("step-{step:08}");
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    for (stem, tensors) in files {
        let p = tmp.join(format!("{stem}.safetensors"));
        crate::save_safetensors(tensors, &p)?;
    }
    let meta_path = tmp.join("state.json");
    let text = serde_json::to_string_pretty(meta).map_err(|source| TrainError::Json {
        path: meta_path.clone(),
        source,
    })?;
    std::fs::write(&meta_path, text).map_err(io_err(&meta_path))?;
    let fin = dir.join(&name);
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(io_err(&fin))?;
    }
    std::fs::rename(&tmp, &fin).map_err(io_err(&fin))?;
    let latest_tmp = dir.join("latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(io_err(&latest_tmp))?;
    std::fs::rename(&latest_tmp, dir.join("latest")).map_err(io_err(dir.join("latest")))?;
    // Prune old complete checkpoints (never the one just written).
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        })
        .collect();
    all.sort();
    if all.len() > keep.max(1) {
        for old in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(old).map_err(io_err(old))?;
        }
    }
    Ok(fin)
}

/// Where a run starts: the checkpoint to resume from (`resume`), or `None` for a fresh run.
/// A fresh run into a folder that already holds checkpoints is refused: its saves would be
/// pruned against the old run's higher step numbers (losing the new ones) and its log would
/// overwrite the old one.
pub fn run_start(dir: &Path, resume: bool) -> Result<Option<PathBuf>> {
    if resume {
        return latest(dir)?
            .map(Some)
            .ok_or_else(|| TrainError::NoCheckpoint(dir.to_path_buf()));
    }
    let held = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("step-")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err(dir)(e)),
    };
    if held {
        return Err(TrainError::RunExists(dir.to_path_buf()));
    }
    Ok(None)
}

/// The checkpoint `latest` points at, if any.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    let p = dir.join("latest");
    if !p.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    let ck = dir.join(name.trim());
    if !ck.join("state.json").exists() {
        return Err(TrainError::CheckpointMismatch {
            path: ck,
            what: "`latest` points at an incomplete checkpoint".into(),
        });
    }
    Ok(Some(ck))
}

/// Loads `stem.safetensors` of a checkpoint.
pub fn load_tensors(ck: &Path, stem: &str) -> Result<HashMap<String, Tensor>> {
    let p = ck.join(format!("{stem}.safetensors"));
    if !p.exists() {
        return Err(TrainError::CheckpointMismatch {
            path: ck.to_path_buf(),
            what: format!("missing {stem}.safetensors"),
        });
    }
    Ok(candle_core::safetensors::load(&p, &Device::Cpu)?)
}

pub fn load_meta(ck: &Path) -> Result<serde_json::Value> {
    let p = ck.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json { path: p, source })
}

/// Sets each var of `vars` (named `prefix` + the tensor's name) from `tensors`, read from
/// `source`, insisting on every name and shape: resuming a run or starting from an export.
pub fn set_vars(
    vars: &[(String, candle_core::Var)],
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    for (n, v) in vars {
        let Some(name) = n.strip_prefix(prefix) else {
            continue;
        };
        let t = tensors
            .get(name)
            .ok_or_else(|| TrainError::CheckpointMismatch {
                path: source.to_path_buf(),
                what: format!("`{name}` missing (written for a model of another config?)"),
            })?;
        if t.shape() != v.shape() {
            return Err(TrainError::CheckpointMismatch {
                path: source.to_path_buf(),
                what: format!(
                    "`{name}` has shape {:?}, the config needs {:?}",
                    t.dims(),
                    v.dims()
                ),
            });
        }
        v.set(&t.to_dtype(candle_core::DType::F32)?.to_device(v.device())?)?;
    }
    Ok(())
}

/// [`set_vars`] from the safetensors file `path`: `--init-from` starts a run from an export.
pub fn init_vars_from(
    vars: &[(String, candle_core::Var)],
    prefix: &str,
    path: &Path,
) -> Result<()> {
    set_vars(
        vars,
        prefix,
        &candle_core::safetensors::load(path, &Device::Cpu)?,
        path,
    )
}

/// Why a resume is refused: each option whose value differs between the checkpoint's run
/// (`saved`) and this one (`given`), as "`name` VALUE in the checkpoint, VALUE now". Paths
/// spelled differently that name the same file (relative against absolute) are the same
/// option. `None` when every option matches.
pub fn changed_options<T: serde::Serialize>(saved: &T, given: &T) -> Option<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(saved), serde_json::to_value(given))
    else {
        return Some("the options could not be compared".into());
    };
    let same_file = |x: &serde_json::Value, y: &serde_json::Value| match (x.as_str(), y.as_str()) {
        (Some(x), Some(y)) => matches!(
            (std::fs::canonicalize(x), std::fs::canonicalize(y)),
            (Ok(x), Ok(y)) if x == y
        ),
        _ => false,
    };
    let changed: Vec<String> = a
        .iter()
        .filter_map(|(k, x)| {
            let y = b.get(k).unwrap_or(&serde_json::Value::Null);
            (x != y && !same_file(x, y)).then(|| format!("`{k}` {x} in the checkpoint, {y} now"))
        })
        .collect();
    (!changed.is_empty()).then(|| changed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_prunes_and_points_latest() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io_err("tmp"))?;
        let t: HashMap<String, Tensor> =
            [("a".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu)?)].into();
        for s in [10, 20, 30] {
            save(
                dir.path(),
                s,
                &[("model", &t)],
                &serde_json::json!({"step": s}),
                2,
            )?;
        }
        let ck = latest(dir.path())?.unwrap();
        assert!(ck.ends_with("step-00000030"));
        assert_eq!(load_meta(&ck)?["step"], 30);
        assert!(!dir.path().join("step-00000010").exists());
        assert!(dir.path().join("step-00000020").exists());
        assert_eq!(
            load_tensors(&ck, "model")?["a"].to_vec1::<f32>()?,
            vec![1.0, 2.0]
        );
        Ok(())
    }
}

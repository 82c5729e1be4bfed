//! JSONL metrics log: one JSON object per line, flushed per line so a kill loses nothing.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::{io_err, Result};

pub struct JsonlLog {
    path: PathBuf,
    file: std::fs::File,
}

impl JsonlLog {
    /// Opens `path` for appending. `keep_until`: drop existing lines whose `"step"` is greater
    /// (a resumed run rewinds the log to its checkpoint, so the curve has no duplicates);
    /// `None` starts an empty log.
    pub fn open(path: &Path, keep_until: Option<usize>) -> Result<Self> {
        let kept: Vec<String> = match (keep_until, path.exists()) {
            (Some(last), true) => {
                let f = std::fs::File::open(path).map_err(io_err(path))?;
                std::io::BufReader::new(f)
                    .lines()
                    .map_while(|l| l.ok())
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s as usize <= last)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let tmp = path.with_extension("jsonl.tmp");
        let mut body = kept.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        std::fs::write(&tmp, body).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write(&mut self, record: &serde_json::Value) -> Result<()> {
        let line = format!("{record}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(io_err(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_truncates_to_checkpoint_step() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io_err("tmp"))?;
        let p = dir.path().join("log.jsonl");
        let mut log = JsonlLog::open(&p, None)?;
        for s in 1..=5 {
            log.write(&serde_json::json!({"step": s}))?;
        }
        drop(log);
        let mut log = JsonlLog::open(&p, Some(3))?;
        log.write(&serde_json::json!({"step": 4}))?;
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        let steps: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        Ok(())
    }
}

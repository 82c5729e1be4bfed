//! Output review: before a generated file is published, an external command of the operator's
//! choosing looks at it (an NSFW classifier, a face matcher, a human queue…). Tessera ships no
//! visual classifier; this is where one plugs in.
//!
//! The contract: the command runs through `sh -c` with the file as its last argument and the
//! prompt in `TESSERA_PROMPT`; exit status 0 publishes the file, anything else withholds it,
//! with the first line the command printed as the reason. A command that cannot be run
//! withholds the file too: a review that did not happen is not a pass.

use std::path::Path;
use std::process::{Command, Stdio};

/// Why a file was withheld.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the output review refused the video: {reason}")]
    Rejected { reason: String },
    #[error("the output review command could not run ({detail}); the video is withheld — fix the command given to --review-command")]
    Failed { detail: String },
}

/// Runs `command` on `file`; `Ok` means publish.
pub fn review(command: &str, file: &Path, prompt: &str) -> Result<(), ReviewError> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} \"$1\""))
        .arg("tessera-review")
        .arg(file)
        .env("TESSERA_PROMPT", prompt)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ReviewError::Failed {
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    // `sh` reports a missing program as 127 and an unexecutable one as 126.
    if matches!(out.status.code(), Some(126 | 127)) {
        return Err(ReviewError::Failed {
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let first = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
    };
    Err(ReviewError::Rejected {
        reason: first(&out.stdout)
            .or_else(|| first(&out.stderr))
            .unwrap_or_else(|| format!("no reason given ({})", out.status)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decides_and_the_reason_is_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a video.mp4");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(review("test -f", &file, "p"), Ok(()));
        assert_eq!(
            review("echo \"no $TESSERA_PROMPT here\"; false", &file, "balls"),
            Err(ReviewError::Rejected {
                reason: "no balls here".into()
            })
        );
        assert!(matches!(
            review("exit 3 #", &file, "p"),
            Err(ReviewError::Rejected { reason }) if reason.contains("exit status: 3")
        ));
        assert!(matches!(
            review("/nonexistent/reviewer", &file, "p"),
            Err(ReviewError::Failed { .. })
        ));
    }
}

//! What a queued job will run, stored as JSON in its row: everything the pipeline needs except
//! the model, with input files named relative to the server's data folder so the folder can move.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_pipeline::{GenerateRequest, Mode, RequestError, RequestSpec, Sampling};

/// Where a job's known frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Text to video.
    Text,
    /// The image (a file in the data folder) is the first frame.
    Image { image: PathBuf },
    /// The clip plays seamlessly on repeat.
    Loop,
    /// New frames after the end of `video`.
    Extend { video: PathBuf },
    /// `video` noised to `strength` and denoised under the prompt (SDEdit): edits and remixes.
    Edit { video: PathBuf, strength: f64 },
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub prompt: String,
    pub negative: String,
    /// Length (added length for an extension); `None` keeps the input's (edit).
    pub seconds: Option<f64>,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub seed: u64,
    /// Overrides of the model's sampling defaults.
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
    pub source: Source,
}

impl Job {
    /// The pipeline request writing `output`, with inputs resolved under `data`.
    pub fn spec(&self, data: &Path, sampling: &Sampling, output: &Path) -> RequestSpec {
        let mut sampling = sampling.clone();
        if let Some(s) = self.steps {
            sampling.steps = s;
        }
        if let Some(c) = self.cfg {
            sampling.cfg = c;
        }
        let mode = match &self.source {
            Source::Text => Mode::Text,
            Source::Image { image } => Mode::Image {
                image: data.join(image),
            },
            Source::Loop => Mode::Loop,
            Source::Extend { video } => Mode::Extend {
                input: data.join(video),
                backward: false,
            },
            Source::Edit { video, strength } => Mode::Edit {
                input: data.join(video),
                strength: *strength,
            },
        };
        RequestSpec {
            negative: self.negative.clone(),
            seconds: self.seconds,
            width: self.width,
            height: self.height,
            fps: self.fps,
            sampling,
            seed: self.seed,
            mode,
            ..RequestSpec::text(&self.prompt, output)
        }
    }

    /// Runs every check the pipeline would, so a job that cannot run is refused when it is
    /// submitted instead of failing in the queue.
    pub fn validate(
        &self,
        data: &Path,
        sampling: &Sampling,
        output: &Path,
    ) -> Result<GenerateRequest, RequestError> {
        GenerateRequest::new(self.spec(data, sampling, output))
    }

    #[cfg(test)]
    pub fn text_for_tests(prompt: &str) -> Self {
        Job {
            prompt: prompt.into(),
            negative: String::new(),
            seconds: Some(1.0),
            width: 64,
            height: 64,
            fps: 16.0,
            seed: 0,
            steps: None,
            cfg: None,
            source: Source::Text,
        }
    }
}

//! VBench-style evaluation of videos against their prompts, grounded in the shapes world.
//!
//! Pipeline per clip (every clip is first resampled to the analysis size and rate, 64×64 at
//! 16 fps by default, so pixel thresholds mean the same for any input):
//! 1. **Expected scene**: the prompt is parsed by the world's own caption grammar
//!    ([`tessera_world::caption::parse_prompt`]) — the one that writes the training captions —
//!    into objects with colour, shape, size, motion, direction and place ([`scene::ExpectedScene`]).
//!    Words it cannot place are reported and the rest is scored.
//! 2. **Observed scene**: pixels are labelled with the nearest world palette colour within a
//!    tolerance, connected regions become objects ([`segment`]), named by rotation-invariant
//!    geometry (hole, elongation, solidity, central symmetry, compactness; 98.9% of fully
//!    visible world sightings right, see `tests/validation.rs`), linked across frames by colour
//!    and predicted centre ([`track`]), and summarised with heading, size and shape
//!    ([`scene::ObservedObject`]). Bounces, unexplained jerks and disappearances are detected
//!    ([`metrics::ObservedEvent`]).
//! 3. **Metrics** ([`metrics::ClipScores`]; all in [0, 1], 1 best, unless a unit is given):
//!    - `object_count`: 1 − |seen − asked| / asked (plurals without a number: at least two);
//!    - `colour`, `shape`: fraction of the prompt's objects matched (jointly, by colour, shape,
//!      heading and size) to a seen object with that colour / shape;
//!    - `direction`: fraction of objects with a stated heading whose initial motion relative to
//!      the backdrop is within ~30° of it ("falls": goes down; "stays still": does not move);
//!      the initial motion is measured over up to five frames from the first whole sighting
//!      (wall contact allowed) and cut at the first bounce, since captions state the heading at
//!      the start; an object asked for but never seen counts as a miss;
//!    - `position`: fraction of objects with a stated place ("in the top right") whose matched
//!      object is first seen in that cell of the captions' 3×3 grid (chance ~1/9);
//!    - `subject_consistency`: per object, shape agreement over frames × (1 − CV of area);
//!    - `background_consistency`: histogram intersection of each frame's backdrop colours with
//!      the first frame's;
//!    - `backdrop`: fraction of the backdrop colours the prompt names (plain: one; gradient or
//!      floor: top and bottom) that the clip shows — the median colour of the top/bottom 15 % of
//!      rows, compared with the world's own rendering of each candidate colour (chance: 1/4).
//!      Large areas survive a blurry decoder, so this one measures prompt following even when
//!      objects are not recognisable;
//!    - `flicker`: 1 − L/20, L (`flicker_level`, RGB8 levels) the mean absolute difference of
//!      backdrop pixels between consecutive frames after the best pan shift;
//!    - `smoothness`: mean exp(−r), r the error (pixels of a 64-px frame) of predicting each
//!      object position by cubic interpolation from the two frames either side;
//!    - `dynamic_degree`: fraction of transitions where ≥ 0.2% of pixels change clearly;
//!    - `physics`: per moving object, the fraction of frames whose acceleration is its steady
//!      one or a bounce at contact (walls: no speed gained); halved when the steady acceleration
//!      is not zero-or-downward (downward for "falls");
//!    - `permanence`: fraction of disappearances explained by occlusion or leaving the frame and
//!      ending on the predicted path (1 when nothing disappears);
//!    - `mean_speed` in frame widths per second;
//!    - VAE reconstruction: [`reconstruction`] gives PSNR (dB) and SSIM of two videos;
//!    - FVD-style: [`frechet::frechet_distance`] between Gaussian fits of the fixed,
//!      hand-designed clip features of [`features::clip_features`] (reference vs evaluated).
//! 4. **Reports**: [`eval_videos`] (a folder or list of files + `captions.jsonl`) and
//!    [`eval_clips`] / [`eval_clips_with`] (in-memory clips) write `report.json` and
//!    `report.html` (metrics table, a strip of frames per prompt with its scores) and return a
//!    [`Report`] whose [`Report::summary_table`] the CLI prints.

mod error;
pub mod features;
pub mod frechet;
pub mod metrics;
pub mod report;
pub mod scene;
pub mod segment;
pub mod track;

pub use error::{EvalError, Result};
pub use report::{
    eval_clips, eval_clips_with, eval_videos, EvalOptions, Report, VideoSource, CAPTION_METRICS,
};

use tessera_media::Video;

/// Reconstruction quality of `decoded` against `original` (same size and frame count):
/// `(PSNR in dB, mean SSIM in [-1, 1])`, for judging the VAE.
pub fn reconstruction(original: &Video, decoded: &Video) -> Result<(f64, f64)> {
    if original.width != decoded.width
        || original.height != decoded.height
        || original.frames.len() != decoded.frames.len()
    {
        return Err(EvalError::ShapeMismatch {
            a_width: original.width,
            a_height: original.height,
            a_frames: original.frames.len(),
            b_width: decoded.width,
            b_height: decoded.height,
            b_frames: decoded.frames.len(),
        });
    }
    let media = |source| EvalError::Media {
        name: "reconstruction".to_string(),
        source,
    };
    let psnr = tessera_media::psnr(original, decoded).map_err(media)?;
    let ssim = tessera_media::ssim(original, decoded).map_err(media)?;
    Ok((psnr, ssim))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(value: u8, frames: usize) -> Video {
        Video {
            width: 16,
            height: 16,
            fps: 16.0,
            frames: (0..frames).map(|_| vec![value; 16 * 16 * 3]).collect(),
        }
    }

    #[test]
    fn reconstruction_of_identical_and_shifted_videos() {
        let a = video(100, 3);
        let (psnr, ssim) = reconstruction(&a, &a).expect("same shape");
        assert!(psnr > 90.0 && (ssim - 1.0).abs() < 1e-9, "{psnr} {ssim}");
        // A uniform error of 10 levels: PSNR = 20 log10(255 / 10) = 28.13 dB.
        let (psnr, _) = reconstruction(&a, &video(110, 3)).expect("same shape");
        assert!((psnr - 28.13).abs() < 0.01, "{psnr}");
        assert!(matches!(
            reconstruction(&a, &video(100, 2)),
            Err(EvalError::ShapeMismatch {
                a_frames: 3,
                b_frames: 2,
                ..
            })
        ));
    }
}

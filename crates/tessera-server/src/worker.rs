//! The worker thread: owns the model, takes the oldest queued job, runs the pipeline with its
//! progress written to the store, and makes the thumbnail and spritesheet from frames it saw on
//! the way to the writer (no second decode).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tessera_media::Video;
use tessera_pipeline::{generate, FrameHook, Model, PipelineError, Progress};

use crate::store::Record;
use crate::{now, Server};

/// Frames a spritesheet shows.
const SPRITES: usize = 16;
const SPRITE_COLUMNS: usize = 4;

pub fn spawn(server: Arc<Server>, model: Model) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("tessera-worker".into())
        .spawn(move || {
            while !server.stopping() {
                match server.expire(now()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("{n} expired video(s) deleted"),
                    Err(e) => tracing::error!("deleting expired videos: {e}"),
                }
                match server.store.claim_next() {
                    Ok(Some(job)) => run(&server, &model, job),
                    Ok(None) => server.wait(Duration::from_millis(500)),
                    Err(e) => {
                        tracing::error!("reading the queue: {e}");
                        server.wait(Duration::from_secs(1));
                    }
                }
            }
        })
        .expect("spawning a thread")
}

fn run(server: &Server, model: &Model, job: Record) {
    let id = job.id.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    *server.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((id.clone(), cancel.clone()));
    let result = render(server, model, &job, &cancel);
    *server.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let config = &server.config;
    let at = now();
    let event = match &result {
        Ok(_) => Some("video.completed"),
        Err(PipelineError::Cancelled) => None,
        Err(_) => Some("video.failed"),
    };
    let outcome = match result {
        Ok(notes) => server.store.complete(&id, at, &notes),
        Err(PipelineError::Cancelled) if server.stopping() => {
            tracing::info!("{id}: interrupted by shutdown; queued again");
            server.store.requeue(&id)
        }
        Err(PipelineError::Cancelled) => Ok(()),
        Err(e @ PipelineError::Review(tessera_safety::ReviewError::Rejected { .. })) => server
            .store
            .fail(&id, at, "moderation_blocked", &e.to_string()),
        Err(e) => {
            tracing::warn!("{id} failed: {e}");
            server
                .store
                .fail(&id, at, "generation_failed", &e.to_string())
        }
    };
    if let Err(e) = outcome {
        tracing::error!("{id}: recording the result: {e}");
    }
    if let (Some(hook), Some(kind)) = (&config.webhook, event) {
        hook.deliver(kind, &id, at);
    }
    // Deleted while it ran: whatever was written goes too.
    if !matches!(server.store.get(&id), Ok(Some(_))) {
        for variant in ["video", "thumbnail", "spritesheet"] {
            let _ = std::fs::remove_file(config.asset(&id, variant));
        }
    }
}

/// Runs one job; returns the pipeline's notes.
fn render(
    server: &Server,
    model: &Model,
    job: &Record,
    cancel: &AtomicBool,
) -> Result<Vec<String>, PipelineError> {
    let config = &server.config;
    let output = config.asset(&job.id, "video");
    let mut req = job.job.validate(&config.data, &server.sampling, &output)?;
    req.signing_key = config.signing_key.clone();
    req.review = config.review_command.clone();
    let mut previews = Previews::default();
    let mut shown = 0;
    let summary = generate(model, &req, &mut previews, &mut |p| {
        // Denoising is most of the time; the last tenth is decoding and writing.
        let pct = match *p {
            Progress::Step {
                window,
                windows,
                evaluation,
                evaluations,
            } => 90 * (window * evaluations + evaluation) / (windows * evaluations).max(1),
            Progress::Frames { written, total } => 90 + 9 * written / total.max(1),
        } as u32;
        if pct != shown {
            shown = pct;
            if let Err(e) = server.store.set_progress(&job.id, pct) {
                tracing::warn!("{}: progress: {e}", job.id);
            }
        }
        if cancel.load(Ordering::SeqCst) || server.stopping() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    previews.write(
        config.asset(&job.id, "thumbnail"),
        config.asset(&job.id, "spritesheet"),
    )?;
    let mut notes = job.notes.clone();
    notes.extend(summary.notes);
    Ok(notes)
}

/// Keeps an evenly spaced subset of the frames going to the writer, between [`SPRITES`] and
/// twice that many whatever the length: when the buffer fills, every other frame is dropped and
/// the stride doubles.
#[derive(Default)]
struct Previews {
    stride: usize,
    frames: Vec<Vec<u8>>,
    width: u32,
    height: u32,
}

impl FrameHook for Previews {
    fn frame(
        &mut self,
        index: usize,
        width: u32,
        height: u32,
        rgb: &mut [u8],
    ) -> tessera_pipeline::Result<()> {
        self.stride = self.stride.max(1);
        (self.width, self.height) = (width, height);
        if index.is_multiple_of(self.stride) {
            self.frames.push(rgb.to_vec());
        }
        if self.frames.len() == 2 * SPRITES {
            self.frames = self.frames.drain(..).step_by(2).collect();
            self.stride *= 2;
        }
        Ok(())
    }
}

impl Previews {
    /// The middle kept frame as the thumbnail; up to [`SPRITES`] of them in a grid.
    fn write(
        &self,
        thumbnail: impl AsRef<Path>,
        sheet: impl AsRef<Path>,
    ) -> tessera_media::Result<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        let n = self.frames.len();
        if n == 0 {
            return Ok(());
        }
        let mut thumb = Video::new(self.width, self.height, 1.0);
        thumb.frames.push(self.frames[n / 2].clone());
        tessera_media::write_video(thumbnail, &thumb)?;

        let picks: Vec<&Vec<u8>> = (0..n.min(SPRITES))
            .map(|i| &self.frames[i * n / n.min(SPRITES)])
            .collect();
        let cols = picks.len().min(SPRITE_COLUMNS);
        let rows = picks.len().div_ceil(cols);
        let sheet_w = cols * w;
        let mut pixels = vec![0u8; rows * h * sheet_w * 3];
        for (i, frame) in picks.iter().enumerate() {
            let (x0, y0) = ((i % cols) * w, (i / cols) * h);
            for y in 0..h {
                let dst = ((y0 + y) * sheet_w + x0) * 3;
                pixels[dst..dst + w * 3].copy_from_slice(&frame[y * w * 3..(y + 1) * w * 3]);
            }
        }
        let mut grid = Video::new(sheet_w as u32, (rows * h) as u32, 1.0);
        grid.frames.push(pixels);
        tessera_media::write_video(sheet, &grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_keep_an_even_bounded_subset_in_order() {
        for total in [1usize, 9, 33, 65, 961] {
            let mut p = Previews::default();
            for i in 0..total {
                let mut px = vec![(i % 256) as u8; 3];
                p.frame(i, 1, 1, &mut px).unwrap();
            }
            let kept: Vec<usize> = p.frames.iter().map(|f| f[0] as usize).collect();
            assert!(
                kept.len() <= 2 * SPRITES && !kept.is_empty(),
                "{total}: {kept:?}"
            );
            assert_eq!(kept[0], 0);
            // Evenly spaced by the final stride.
            for w in kept.windows(2) {
                assert_eq!(
                    (w[1] + 256 - w[0]) % 256,
                    p.stride % 256,
                    "{total}: {kept:?}"
                );
            }
            // The kept frames span the clip: the last is within one stride of the end.
            assert!(
                total - 1 - (kept.len() - 1) * p.stride < p.stride,
                "{total}"
            );
        }
    }

    #[test]
    fn spritesheet_is_a_grid_of_the_kept_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Previews::default();
        for i in 0..6u8 {
            let mut px = vec![i * 40; 2 * 2 * 3];
            p.frame(i as usize, 2, 2, &mut px).unwrap();
        }
        let (t, s) = (dir.path().join("t.png"), dir.path().join("s.png"));
        p.write(&t, &s).unwrap();
        let thumb = tessera_media::read_video(&t).unwrap();
        assert_eq!((thumb.width, thumb.height), (2, 2));
        assert_eq!(thumb.frames[0][0], 3 * 40);
        let sheet = tessera_media::read_video(&s).unwrap();
        // 6 frames in 4 columns: 2 rows, the last two cells black.
        assert_eq!((sheet.width, sheet.height), (8, 4));
        let px = |x: usize, y: usize| sheet.frames[0][(y * 8 + x) * 3];
        assert_eq!(
            [px(0, 0), px(2, 0), px(6, 1), px(0, 2), px(2, 3), px(4, 2)],
            [0, 40, 120, 160, 200, 0]
        );
    }
}

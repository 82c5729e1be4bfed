//! Does one word of the prompt change the video? Generates a prompt and, on the same seeds,
//! copies of it with one word swapped, and prints how much of each video moved: the mean
//! absolute pixel change and the fraction of pixels that changed by more than 40 levels (a
//! different colour, not noise). A model that binds the word moves about the object's share of
//! the frame; one that ignores it moves almost nothing. Beside them, the text encoder's side:
//! the largest relative change of any token's state, so a word the encoder already loses is
//! told apart from one the DiT does not read. Prompts are used as written (no extension),
//! sampling is the model's own.
//!
//! ```text
//! cargo run --release -p tessera-pipeline --example word_swap -- MODEL_DIR SEEDS "PROMPT" WORD=OTHER...
//! cargo run --release -p tessera-pipeline --example word_swap -- models/tessera-shapes-tiny 2 \
//!     "A plain slate backdrop stands above a checkered sky floor. A large red circle in the center stays still." \
//!     red=blue red=green circle=square slate=olive
//! ```

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{Device, Tensor};
use tessera_pipeline::{
    generate, FrameHook, GenerateRequest, Model, RequestSpec, Result as PipelineResult,
};

/// Every frame the pipeline writes, as RGB bytes.
#[derive(Default)]
struct Frames(Vec<Vec<u8>>);

impl FrameHook for Frames {
    fn frame(&mut self, _: usize, _: u32, _: u32, rgb: &mut [u8]) -> PipelineResult<()> {
        self.0.push(rgb.to_vec());
        Ok(())
    }
}

fn video(
    m: &Model,
    prompt: &str,
    seed: u64,
    out: &Path,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let req = GenerateRequest::new(RequestSpec {
        sampling: m.sampling.clone(),
        seed,
        extend_prompt: false,
        ..RequestSpec::text(prompt, out)
    })?;
    let mut frames = Frames::default();
    generate(m, &req, &mut frames, &mut |_| ControlFlow::Continue(()))?;
    Ok(frames.0.concat())
}

/// Largest `|a_i − b_i| / |a_i|` over the token positions `i` of two encoded prompts.
fn token_change(m: &Model, a: &str, b: &str) -> Result<f32, Box<dyn std::error::Error>> {
    let e = m.text.encode(&[a, b])?;
    let norm = |t: &Tensor| t.sqr()?.sum_keepdim(2)?.sqrt();
    let (sa, sb) = (e.states.narrow(0, 0, 1)?, e.states.narrow(0, 1, 1)?);
    let rel = (norm(&(&sa - &sb)?)? / norm(&sa)?.clamp(1e-12f32, f32::MAX)?)?;
    Ok(rel.max_all()?.to_scalar::<f32>()?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: word_swap MODEL_DIR SEEDS \"PROMPT\" WORD=OTHER...";
    let [dir, seeds, prompt, swaps @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let seeds: u64 = seeds.parse()?;
    let m = Model::load(Path::new(dir), &Device::Cpu)?;
    let tmp = tempfile::tempdir()?;
    let out = |name: &str| tmp.path().join(format!("{name}.mp4"));
    let base: Vec<Vec<u8>> = (0..seeds)
        .map(|s| video(&m, prompt, s, &out("base")))
        .collect::<Result<_, _>>()?;
    println!(
        "{:<20} {:>12} {:>14} {:>16}",
        "swap", "mean |Δ|", "pixels > 40", "text Δ (token)"
    );
    for swap in swaps {
        let (word, other) = swap.split_once('=').ok_or(usage)?;
        // Whole words only, punctuation kept: `left.` swaps to `right.`, `leftmost` stays.
        let swapped = prompt
            .split(' ')
            .map(|w| match w.strip_prefix(word) {
                Some(rest) if rest.chars().all(|c| c.is_ascii_punctuation()) => {
                    format!("{other}{rest}")
                }
                _ => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        if swapped == *prompt {
            return Err(format!("`{word}` is not a word of the prompt").into());
        }
        let (mut sum, mut moved, mut values, mut pixels) = (0u64, 0usize, 0usize, 0usize);
        for (s, a) in base.iter().enumerate() {
            let b = video(&m, &swapped, s as u64, &out("swap"))?;
            for (pa, pb) in a.chunks(3).zip(b.chunks(3)) {
                let d: Vec<u8> = pa.iter().zip(pb).map(|(x, y)| x.abs_diff(*y)).collect();
                sum += d.iter().map(|&x| u64::from(x)).sum::<u64>();
                moved += usize::from(d.iter().any(|&x| x > 40));
            }
            values += a.len();
            pixels += a.len() / 3;
        }
        println!(
            "{:<20} {:>12.2} {:>13.1}% {:>16.2}",
            swap,
            sum as f64 / values as f64,
            100.0 * moved as f64 / pixels as f64,
            token_change(&m, prompt, &swapped)?
        );
    }
    Ok(())
}

//! Stage 0 of DiT training: teach the text encoder what the latents look like before the DiT
//! learns to listen to it.
//!
//! On the shapes world a caption's first sentence (the backdrop) linearly explains 98 % of the
//! per-channel latent means of held-out clips, but the pooled state of a random encoder explains
//! 39 %: the colour words are a few of ~60 tokens and their role (backdrop or floor) is lost in
//! the mean. A DiT would have to learn to dig that out through cross-attention, and at CPU scale
//! it never did (TRAINING.md). So the encoder first regresses a coarse summary of each item's
//! latent from its pooled state through a throw-away linear readout; the DiT then trains on that
//! encoder (frozen by default), whose states already say what the picture should be.

use candle_core::{DType, Tensor, Var};
use candle_nn::{Module, VarMap};
use rand::Rng;

use tessera_models::dit::masked_mean;
use tessera_models::layers::Linear;
use tessera_models::text::SmallTextEncoder;

use crate::dit::{pick_caption, DitTrainOptions};
use crate::latents::LatentSet;
use crate::optim::{AdamW, AdamWParams};
use crate::rng::step_rng;
use crate::{Result, TrainError};

/// Captions per alignment step: the encoder is small, so a large batch is cheap and steadies the
/// regression.
const BATCH: usize = 16;
/// Peak learning rate (constant after a short warmup): a 2-layer encoder and a linear readout.
const LR: f64 = 1e-3;
const WARMUP: usize = 50;
/// Every `HELD_OUT`-th item is kept out of the alignment to report an honest R².
const HELD_OUT: usize = 10;

/// What alignment achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignReport {
    pub steps: usize,
    /// Fraction of the held-out items' summary variance the readout explains from their dense
    /// captions.
    pub r2: f64,
    pub final_loss: f64,
}

/// A latent's coarse summary `(2·g²·C)`: its first frame and the mean of the others, each
/// averaged over a `g × g` grid of cells; the second half is masked out (`mask` 0) for one-frame
/// items. The first latent frame is kept apart because a causal VAE encodes it alone, with its
/// own statistics. `g = 2` (quadrants) mostly says what the backdrop is; finer grids also say
/// where the objects are.
pub fn latent_summary(latent: &Tensor, grid: usize) -> Result<(Tensor, Tensor)> {
    let (c, t, h, w) = latent.dims4()?;
    if grid == 0 || h % grid != 0 || w % grid != 0 {
        return Err(TrainError::Data(format!(
            "latent {h}×{w} cannot be split into a {grid}×{grid} grid; use a grid side that \
             divides the latent size (frame size / 8)"
        )));
    }
    let cells = |x: &Tensor| -> candle_core::Result<Tensor> {
        // (C, h, w) → (C, g, h/g, g, w/g) → mean over the inner extents → (C·g²)
        x.reshape((c, grid, h / grid, grid, w / grid))?
            .mean(4)?
            .mean(2)?
            .flatten_all()
    };
    let first = cells(&latent.narrow(1, 0, 1)?.squeeze(1)?)?;
    let (rest, keep) = if t > 1 {
        (cells(&latent.narrow(1, 1, t - 1)?.mean(1)?)?, 1f32)
    } else {
        (first.zeros_like()?, 0f32)
    };
    let dev = latent.device();
    let n = grid * grid * c;
    let mask = Tensor::cat(
        &[
            Tensor::ones(n, DType::F32, dev)?,
            Tensor::full(keep, n, dev)?,
        ],
        0,
    )?;
    Ok((Tensor::cat(&[first, rest], 0)?, mask))
}

/// Trains `text` (whose parameters are `vars`) for `steps` to predict [`latent_summary`] of each
/// item from its pooled state, with captions drawn as the DiT will see them (`opts`' dropout and
/// alternative wording). `on_step(step, loss)` follows progress. Deterministic in `opts.seed`.
pub fn align_text(
    text: &SmallTextEncoder,
    vars: &[(String, Var)],
    set: &LatentSet,
    opts: &DitTrainOptions,
    steps: usize,
    mut on_step: impl FnMut(usize, f64),
) -> Result<AlignReport> {
    // Where the encoder lives (a second `open` of a GPU would be another device to candle).
    let dev = vars
        .first()
        .map_or(candle_core::Device::Cpu, |(_, v)| v.device().clone());
    let (train, held): (Vec<usize>, Vec<usize>) =
        (0..set.items.len()).partition(|i| i % HELD_OUT != 0);
    if train.is_empty() || held.is_empty() {
        return Err(TrainError::Data(format!(
            "text alignment needs at least 2 items (one held out), got {}",
            set.items.len()
        )));
    }
    let (targets, masks): (Vec<Tensor>, Vec<Tensor>) = set
        .items
        .iter()
        .map(|it| latent_summary(&it.latent, opts.text_align_grid))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let out_dim = targets[0].dim(0)?;
    let dim = text.config().dim;
    let vm = VarMap::new();
    let readout = {
        let vb = crate::dit::seeded_builder(&vm, opts.seed ^ 0xA11C, &dev);
        Linear::load(dim, out_dim, vb.pp("readout"))?
    };
    let mut named: Vec<(String, Var)> = vars.to_vec();
    // Sorted by name: the gradient norm sums in this order, so it must not follow a HashMap's.
    named.extend(crate::dit::named_vars(&vm, "")?);
    let mut opt = AdamW::new(
        named,
        AdamWParams {
            weight_decay: 0.0,
            ..AdamWParams::default()
        },
    )?;
    let predict = |captions: &[&str]| -> Result<Tensor> {
        let (ids, mask) = text.tokenizer().batch(captions, &dev)?;
        let states = text.forward_ids(&ids, &mask)?;
        Ok(readout.forward(&masked_mean(&states, Some(&mask))?)?)
    };
    let stack = |of: &[Tensor], idx: &[usize]| -> Result<Tensor> {
        let parts: Vec<Tensor> = idx.iter().map(|&i| of[i].clone()).collect();
        Ok(Tensor::stack(&parts, 0)?.to_device(&dev)?)
    };
    let mut final_loss = f64::NAN;
    for step in 0..steps {
        let mut rng = step_rng(opts.seed, step as u64, 0xA11C);
        let idx: Vec<usize> = (0..BATCH)
            .map(|_| train[rng.random_range(0..train.len())])
            .collect();
        let captions: Vec<&str> = idx
            .iter()
            .map(|&i| pick_caption(set, i, opts, &mut rng))
            .collect();
        let (target, mask) = (stack(&targets, &idx)?, stack(&masks, &idx)?);
        let err = ((predict(&captions)? - target)?.sqr()? * &mask)?;
        let loss = (err.sum_all()? / mask.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64)?;
        final_loss = loss.to_scalar::<f32>()? as f64;
        if !final_loss.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                value: final_loss,
            });
        }
        on_step(step + 1, final_loss);
        let grads = loss.backward()?;
        let lr = LR * ((step + 1) as f64 / WARMUP as f64).min(1.0);
        let gnorm = opt.grad_norm(&grads)?;
        opt.step(&grads, lr, if gnorm > 1.0 { 1.0 / gnorm } else { 1.0 })?;
    }
    // Held-out R² on the dense captions.
    let captions: Vec<&str> = held
        .iter()
        .map(|&i| set.items[i].caption.as_str())
        .collect();
    let (target, mask) = (stack(&targets, &held)?, stack(&masks, &held)?);
    let pred = predict(&captions)?;
    let n = mask.sum_keepdim(0)?.clamp(1.0, f64::MAX)?;
    let mean = (target.broadcast_mul(&mask)?.sum_keepdim(0)? / &n)?;
    let ss = |x: Tensor| -> candle_core::Result<f64> {
        Ok(x.sqr()?
            .broadcast_mul(&mask)?
            .sum_all()?
            .to_scalar::<f32>()? as f64)
    };
    let resid = ss((&pred - &target)?)?;
    let total = ss(target.broadcast_sub(&mean)?)?;
    Ok(AlignReport {
        steps,
        r2: 1.0 - resid / total.max(1e-12),
        final_loss,
    })
}

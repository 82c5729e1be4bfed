use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use tessera_media::{center_crop, psnr, read_video, ssim, write_video};
use tessera_models::device::DeviceSpec;
use tessera_models::vae::{tensor_to_video, video_to_tensor, AutoencoderKLWan, Config};
use tessera_pipeline::Model;

#[derive(Subcommand)]
pub enum VaeCommand {
    /// Encode then decode a video and report PSNR/SSIM against the input.
    Roundtrip(RoundtripArgs),
}

#[derive(Args)]
pub struct RoundtripArgs {
    /// Input video (MP4, GIF, PNG, frame folder, or anything ffmpeg reads).
    input: PathBuf,
    /// Output video (.mp4, .gif, .png).
    #[arg(short, long)]
    output: PathBuf,
    /// VAE folder (config.json + model.safetensors) or a model folder with a vae/ inside;
    /// the default model's VAE when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the VAE runs: cpu, or cuda / cuda:N in a CUDA build (README, "GPU").
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

/// A VAE folder, or the `vae/` of a model folder.
fn load_vae(dir: &Path, device: &Device) -> Result<AutoencoderKLWan> {
    let dir = if dir.join("vae").is_dir() {
        dir.join("vae")
    } else {
        dir.to_path_buf()
    };
    let cfg = Config::from_diffusers_json(&dir.join("config.json"))?;
    let weights = tessera_models::find_weights(&dir)
        .with_context(|| format!("no model.safetensors in {}", dir.display()))?;
    Ok(AutoencoderKLWan::load(
        &cfg,
        &[weights],
        DType::F32,
        device,
    )?)
}

pub fn run(cmd: VaeCommand) -> Result<()> {
    let VaeCommand::Roundtrip(a) = cmd;
    tessera_pipeline::check_output(&a.output)?;
    let vae = load_vae(
        &a.model.unwrap_or_else(Model::default_dir),
        &a.device.open()?,
    )?;
    let mut video = read_video(&a.input)?;
    if video.frames.is_empty() {
        bail!("{} has no frames", a.input.display());
    }
    // The VAE takes tf·k+1 frames and sides divisible by its spatial factor: drop the tail,
    // crop the borders.
    let (tf, sf) = (
        vae.config().temporal_factor(),
        vae.config().spatial_factor() as u32,
    );
    let (t, w, h) = (
        (video.frames.len() - 1) / tf * tf + 1,
        video.width / sf * sf,
        video.height / sf * sf,
    );
    if w == 0 || h == 0 {
        bail!(
            "{}x{} is smaller than {sf}x{sf}, the VAE's minimum",
            video.width,
            video.height
        );
    }
    if t != video.frames.len() || w != video.width || h != video.height {
        eprintln!(
            "note: using {t} of {} frames at {w}x{h} (the VAE takes {tf}k+1 frames, sides divisible by {sf})",
            video.frames.len()
        );
        video.frames.truncate(t);
        video = center_crop(&video, w, h)?;
    }
    let start = std::time::Instant::now();
    let x = video_to_tensor(&video, vae.device())?;
    let z = vae.encode_latents(&x)?;
    let out = tensor_to_video(&vae.decode_latents(&z)?, video.fps)?;
    let secs = start.elapsed().as_secs_f64();
    write_video(&a.output, &out)?;
    let (p, s) = (psnr(&video, &out)?, ssim(&video, &out)?);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"input": a.input, "output": a.output, "frames": t, "width": w,
                "height": h, "psnr_db": p, "ssim": s, "seconds": secs, "latent": z.dims()})
        );
    } else {
        println!(
            "PSNR {p:.2} dB  SSIM {s:.4}  ({t} frames {w}x{h}, latent {:?}, {secs:.2} s)",
            z.dims()
        );
    }
    Ok(())
}

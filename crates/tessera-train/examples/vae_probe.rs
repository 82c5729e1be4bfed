//! Where a VAE loses: PSNR of `val` clips (33×64×64) by frame group (the first frame, which the
//! causal VAE encodes alone; frames 1–4; the rest) and region (above the floor's horizon, the
//! floor, the objects' boxes grown by a pixel: where their shape is), per clip and from the MSE
//! over all clips, plus a contact sheet (originals left,
//! reconstructions right, every 6th frame), then the one-frame path alone (`val` images, what
//! image→video keeps as its first frame) and the posterior's noise against the latent's spread:
//! `vae_probe MODEL_VAE_DIR [CLIPS] [SHEET.png]`.
use candle_core::{DType, Device, Tensor};
use tessera_models::vae::{video_to_tensor, AutoencoderKLWan, Config};
use tessera_train::data::WorldSource;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(
        args.first()
            .ok_or("usage: vae_probe MODEL_VAE_DIR [CLIPS] [SHEET.png]")?,
    );
    let n: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let sheet_path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "vae_probe.png".into());
    let cfg: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let w = tessera_models::find_weights(&dir).ok_or("no VAE weights in that folder")?;
    let vae = AutoencoderKLWan::load(&cfg, &[w], DType::F32, &Device::Cpu)?;
    let src = WorldSource::new(64, 0, tessera_world::Split::Val);
    let psnr = |m: f64| 10.0 * (4.0 / m).log10();
    let line = |mse: [f64; 8]| {
        let names = [
            "all",
            "f0",
            "f1-4",
            "f5+",
            "sky",
            "floor",
            "objects",
            "objects-f0",
        ];
        let parts: Vec<String> = (0..8)
            .map(|k| format!("{} {:.2}", names[k], psnr(mse[k])))
            .collect();
        parts.join(" ")
    };
    let mut tot = [0f64; 8];
    let (cols, side) = (6usize, 64usize);
    let mut sheet =
        tessera_media::Video::new((cols * side * 2) as u32, (n as usize * side) as u32, 1.0);
    let mut img = vec![0u8; cols * side * 2 * n as usize * side * 3];
    for i in 0..n {
        let clip = src.world_clip(i, 33)?;
        let v = &clip.video;
        let x = video_to_tensor(v, &Device::Cpu)?;
        let post = vae.encode_chunked(&x)?;
        let y = vae.decode(&post.mean)?.clamp(-1f32, 1f32)?;
        let out = tessera_models::vae::tensor_to_video(&y, v.fps)?;
        for c in 0..cols * 2 {
            let f = if c < cols {
                &v.frames[c * 6]
            } else {
                &out.frames[(c - cols) * 6]
            };
            for r in 0..side {
                let dst = ((i as usize * side + r) * cols * 2 * side + c * side) * 3;
                img[dst..dst + side * 3].copy_from_slice(&f[r * side * 3..(r + 1) * side * 3]);
            }
        }
        let e = (y - &x)?.sqr()?; // (1,3,T,H,W)
        let m = |t: &Tensor| -> f64 { t.mean_all().unwrap().to_scalar::<f32>().unwrap() as f64 };
        let f0 = m(&e.narrow(2, 0, 1)?);
        let f14 = m(&e.narrow(2, 1, 4)?);
        let rest = m(&e.narrow(2, 5, 28)?);
        // The world's horizon sits at 0.7 of the height (row 44.8 of 64): above it, the floor.
        let sky = m(&e.narrow(3, 0, 44)?);
        let floor = m(&e.narrow(3, 45, 19)?);
        let all = m(&e);
        let boxes: Vec<f32> = tessera_train::data::object_boxes(&clip)
            .concat()
            .into_iter()
            .map(f32::from)
            .collect();
        let boxes = Tensor::from_vec(boxes, (1, 1, 33, side, side), &Device::Cpu)?;
        let in_boxes = |e: &Tensor, b: &Tensor| -> Result<f64, candle_core::Error> {
            let inside = b.sum_all()?.to_scalar::<f32>()? as f64 * 3.0;
            let err = e.broadcast_mul(b)?.sum_all()?.to_scalar::<f32>()? as f64;
            Ok(err / inside.max(1.0))
        };
        let objects = in_boxes(&e, &boxes)?;
        let objects_f0 = in_boxes(&e.narrow(2, 0, 1)?, &boxes.narrow(2, 0, 1)?)?;
        let per_clip = [all, f0, f14, rest, sky, floor, objects, objects_f0];
        for (k, val) in per_clip.iter().enumerate() {
            tot[k] += val / n as f64;
        }
        println!("clip {i}: {}", line(per_clip));
    }
    sheet.frames.push(img);
    tessera_media::write_video(&sheet_path, &sheet)?;
    println!("mean-MSE: {}", line(tot));
    let (mut img_mse, mut noise, mut spread) = (0f64, 0f64, 0f64);
    for i in 0..n {
        let x = video_to_tensor(&src.clip(i, 1)?, &Device::Cpu)?;
        let post = vae.encode(&x)?;
        let y = vae.decode(&post.mean)?.clamp(-1f32, 1f32)?;
        let s = |t: Tensor| -> Result<f64, candle_core::Error> {
            Ok(t.to_scalar::<f32>()? as f64 / n as f64)
        };
        img_mse += s((y - &x)?.sqr()?.mean_all()?)?;
        noise += s((&post.logvar * 0.5)?.exp()?.mean_all()?)?;
        let m = &post.mean;
        spread += s(m
            .broadcast_sub(&m.mean_keepdim(3)?.mean_keepdim(4)?)?
            .sqr()?
            .mean_all()?
            .sqrt()?)?;
    }
    println!(
        "images (1 frame): {:.2} dB; posterior std {noise:.4} vs spatial spread of the mean {spread:.4}",
        psnr(img_mse)
    );
    Ok(())
}

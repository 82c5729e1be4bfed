//! Prints captions of a few clips and writes a contact sheet PNG: `world_peek N OUT.png`.
use tessera_world::{generate_clip, SampleOptions, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let out = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/tmp/world_peek.png".into());
    let split: Split = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(Split::Train);
    let opts = SampleOptions {
        split,
        ..Default::default()
    };
    let cols = 11usize;
    let (w, h) = (opts.width as usize, opts.height as usize);
    let mut sheet = tessera_media::Video::new((w * cols) as u32, (h * n as usize) as u32, 1.0);
    let mut img = vec![0u8; w * cols * h * n as usize * 3];
    for i in 0..n {
        let clip = generate_clip(&opts, i)?;
        println!(
            "[{i}] {}\n    short: {}\n    events: {:?}",
            clip.caption,
            clip.short_caption,
            clip.events()
                .iter()
                .map(|e| (e.frame, e.object, e.kind))
                .collect::<Vec<_>>()
        );
        for c in 0..cols {
            let f = &clip.video.frames[c * 3];
            for y in 0..h {
                let dst = ((i as usize * h + y) * w * cols + c * w) * 3;
                img[dst..dst + w * 3].copy_from_slice(&f[y * w * 3..(y + 1) * w * 3]);
            }
        }
    }
    sheet.frames.push(img);
    tessera_media::write_video(&out, &sheet)?;
    Ok(())
}

//! `tessera detect FILE…`: was this made by Tessera? Reports the invisible watermark (survives
//! re-encoding) and the provenance manifest (survives only byte-exact copies, and says whether
//! the picture data was changed since).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tessera_safety::{Detection, Verified, Watermark, SEARCH_THRESHOLD, THRESHOLD};

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Videos or images to check (MP4, GIF, PNG, JPEG, a frame folder).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object per file instead of sentences.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    file: PathBuf,
    /// The file's width and height.
    size: [u32; 2],
    watermark: Detection,
    /// The manifest, if the file carries one.
    provenance: Option<serde_json::Value>,
    /// Whether the picture data is what the manifest was bound to.
    provenance_intact: Option<bool>,
    /// The manifest's signature: who signed, and whether it holds for this file (the
    /// signature is valid and the hash it covers is this file's).
    signature: Option<Verified>,
}

pub fn run(a: DetectArgs) -> Result<()> {
    for file in &a.files {
        let video = tessera_media::read_video(file)
            .with_context(|| format!("reading {}", file.display()))?;
        let watermark = Watermark::default().find(video.width, video.height, &video.frames);
        let provenance = tessera_media::read_provenance(file)
            .with_context(|| format!("reading the provenance of {}", file.display()))?;
        let manifest = provenance.as_ref().map(|p| {
            serde_json::from_slice(&p.manifest).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&p.manifest).into_owned())
            })
        });
        let signature = provenance
            .as_ref()
            .zip(manifest.as_ref())
            .and_then(|(p, m)| {
                tessera_safety::verify(m).map(|mut v| {
                    // A valid signature over another file's hash vouches for that file, not this.
                    v.valid &= p.intact && m["content_sha256"].as_str() == Some(p.sha256.as_str());
                    v
                })
            });
        let report = Report {
            file: file.clone(),
            size: [video.width, video.height],
            watermark,
            provenance_intact: provenance.as_ref().map(|p| p.intact),
            provenance: manifest,
            signature,
        };
        if a.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print(&report);
        }
    }
    Ok(())
}

fn print(r: &Report) {
    let w = &r.watermark;
    let verdict = if w.detected {
        "Tessera watermark found"
    } else {
        "no Tessera watermark"
    };
    let [width, height] = w.size;
    let [dx, dy] = w.offset;
    let (threshold, at) = if w.size != r.size {
        (SEARCH_THRESHOLD, format!(", resampled to {width}x{height}"))
    } else if w.offset != [0, 0] {
        (SEARCH_THRESHOLD, format!(", a crop from ({dx}, {dy})"))
    } else {
        (THRESHOLD, String::new())
    };
    println!(
        "{}: {verdict} (score {:.1}, threshold {threshold}{at}; {} frames)",
        r.file.display(),
        w.score,
        w.frames
    );
    match (&r.provenance, r.provenance_intact) {
        (Some(m), Some(intact)) => {
            let generation = m["assertions"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["label"] == "tessera.generation"))
                .map(|x| &x["data"]);
            if let Some(g) = generation {
                println!(
                    "  provenance: made by {} (model {}, seed {}) from {:?}",
                    m["claim_generator"].as_str().unwrap_or("?"),
                    g["model"].as_str().unwrap_or("?"),
                    g["seed"],
                    g["prompt"].as_str().unwrap_or("")
                );
            }
            println!(
                "  the picture data is {} since",
                if intact { "unchanged" } else { "CHANGED" }
            );
            match &r.signature {
                Some(s) if s.valid => println!("  signed by key {}", s.public_key),
                Some(s) => println!(
                    "  signature does NOT hold (claims key {}): the manifest was altered or moved, or the picture data changed",
                    s.public_key
                ),
                None => println!("  unsigned"),
            }
        }
        _ => println!(
            "  no provenance manifest (not an MP4, PNG or GIF from Tessera, or re-encoded)"
        ),
    }
}

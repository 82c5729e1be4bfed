//! Dataset latents for DiT training: every clip is encoded once with the frozen VAE and cached as
//! safetensors, then grouped into buckets of one latent shape `(T', h, w)` so that images and
//! clips of several durations and sizes train together (a batch never mixes shapes).
//!
//! The cache file name is a hash of everything the latents depend on (data description, VAE
//! config and VAE weights), so a second run, a resumed run or another run pointed at the same
//! cache folder reuses it, and a changed VAE or dataset can never be served stale latents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use tessera_media::Video;
use tessera_models::vae::{video_to_tensor, AutoencoderKLWan};
use tessera_world::{generate_clip, SampleOptions, Selection, Split};

use crate::{io_err, Result, TrainError};

/// How many items of one duration to take: `frames` video frames (`4k+1`; 1 = an image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    pub frames: usize,
    /// World: clips generated for this bucket. Folder: at most this many videos go into it.
    pub count: usize,
}

/// One training item: a normalised latent and its captions.
#[derive(Debug, Clone)]
pub struct LatentItem {
    /// `(C, T', h, w)` f32, normalised by the VAE's latent statistics.
    pub latent: Tensor,
    pub caption: String,
    /// A second wording (the world's short caption), drawn sometimes so terse prompts work.
    pub alt_caption: Option<String>,
}

/// Items plus their shape buckets.
#[derive(Debug, Clone)]
pub struct LatentSet {
    pub items: Vec<LatentItem>,
    /// `(T', h, w)` → indices into `items`, in a fixed order.
    pub buckets: Vec<((usize, usize, usize), Vec<usize>)>,
}

impl LatentSet {
    pub fn new(items: Vec<LatentItem>) -> Result<Self> {
        let mut map: BTreeMap<(usize, usize, usize), Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            let (_, t, h, w) = it.latent.dims4()?;
            map.entry((t, h, w)).or_default().push(i);
        }
        if items.is_empty() {
            return Err(TrainError::Data(
                "no training items: check --data and the bucket frame counts".into(),
            ));
        }
        Ok(Self {
            items,
            buckets: map.into_iter().collect(),
        })
    }

    /// Every caption (and alternative wording), for building the tokenizer vocabulary.
    pub fn captions(&self) -> Vec<&str> {
        self.items
            .iter()
            .flat_map(|i| std::iter::once(i.caption.as_str()).chain(i.alt_caption.as_deref()))
            .collect()
    }
}

/// Where clips come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataSpec {
    /// Shapes world clips of `split`, generated in memory; bucket `b` uses clip indices
    /// `b·10⁶ ..` so images and videos are different scenes.
    World {
        seed: u64,
        split: Split,
        size: u32,
        fps: f64,
        buckets: Vec<BucketSpec>,
        /// Each clip's left-right mirror instead of the clip ([`tessera_world::Clip::mirrored`]),
        /// a separate cache from the plain clips'.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        mirror: bool,
        /// Only the scenes with this many objects ([`Selection`]), each bucket's first `count`
        /// of them from its start index on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        objects: Option<usize>,
        /// Only the scenes whose every object moves with a heading ([`Selection`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        heading: bool,
    },
    /// A folder of videos with `captions.jsonl` (`{"video": "...", "caption": "..."}`), each
    /// video fitted to `size`×`size` at `fps` and put in the longest bucket it is long enough
    /// for (its first frames).
    Folder {
        dir: PathBuf,
        size: u32,
        fps: f64,
        buckets: Vec<BucketSpec>,
    },
}

/// FNV-1a 64: a stable content hash for cache keys (not for security).
pub(crate) fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The clips of `spec` as `(video, caption, alt caption)`, in a fixed order.
fn clips(spec: &DataSpec) -> Result<Vec<(Video, String, Option<String>)>> {
    match spec {
        DataSpec::World {
            seed,
            split,
            size,
            fps,
            buckets,
            mirror,
            objects,
            heading,
        } => {
            let mut out = Vec::new();
            for (b, bucket) in buckets.iter().enumerate() {
                let opts = SampleOptions {
                    count: bucket.count,
                    width: *size,
                    height: *size,
                    frames: bucket.frames as u32,
                    fps: *fps,
                    seed: *seed,
                    split: *split,
                };
                let selection = Selection {
                    start: b as u64 * 1_000_000,
                    objects: *objects,
                    heading: *heading,
                };
                for i in selection.indices(&opts)? {
                    let mut clip = generate_clip(&opts, i)?;
                    if *mirror {
                        clip = clip.mirrored()?;
                    }
                    out.push((clip.video, clip.caption, Some(clip.short_caption)));
                }
            }
            Ok(out)
        }
        DataSpec::Folder {
            dir,
            size,
            fps,
            buckets,
        } => {
            let path = dir.join("captions.jsonl");
            let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            let mut lengths: Vec<BucketSpec> = buckets.clone();
            lengths.sort_by_key(|b| std::cmp::Reverse(b.frames));
            let mut taken = vec![0usize; lengths.len()];
            let mut out = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                #[derive(Deserialize)]
                struct Rec {
                    video: String,
                    caption: String,
                    #[serde(default)]
                    short_caption: Option<String>,
                }
                let rec: Rec = serde_json::from_str(line).map_err(|source| TrainError::Json {
                    path: path.with_extension(format!("jsonl (line {})", n + 1)),
                    source,
                })?;
                let v = tessera_media::read_video(dir.join(&rec.video))?;
                let v = tessera_media::fit(&v, *size, *size, *fps)?;
                let Some(k) = lengths
                    .iter()
                    .enumerate()
                    .position(|(k, b)| b.frames <= v.frames.len() && taken[k] < b.count)
                else {
                    continue;
                };
                taken[k] += 1;
                let mut clip = Video::new(v.width, v.height, v.fps);
                clip.frames = v.frames[..lengths[k].frames].to_vec();
                out.push((clip, rec.caption, rec.short_caption));
            }
            Ok(out)
        }
    }
}

/// A latent cache file written by [`load_or_encode`] (`latents-<key>.safetensors` with its
/// captions in the sibling `.json`), for tools that probe a model on its training latents.
pub fn read_cache(path: &Path) -> Result<LatentSet> {
    let jpath = path.with_extension("json");
    let text = std::fs::read_to_string(&jpath).map_err(io_err(&jpath))?;
    let caps: Vec<(String, Option<String>)> =
        serde_json::from_str(&text).map_err(|source| TrainError::Json {
            path: jpath.clone(),
            source,
        })?;
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let items = caps
        .into_iter()
        .enumerate()
        .map(|(i, (caption, alt_caption))| {
            let latent = tensors
                .get(&format!("latent.{i:06}"))
                .ok_or_else(|| TrainError::CheckpointMismatch {
                    path: path.to_path_buf(),
                    what: format!("latent cache lacks item {i}; delete the file to re-encode"),
                })?
                .to_dtype(DType::F32)?;
            Ok(LatentItem {
                latent,
                caption,
                alt_caption,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    LatentSet::new(items)
}

/// Latents of `spec` encoded with `vae`, from the cache in `cache_dir` when present.
/// `vae_id` identifies the VAE weights (a content hash). `progress(done, total)` reports encoding.
pub fn load_or_encode(
    spec: &DataSpec,
    vae: &AutoencoderKLWan,
    vae_id: u64,
    cache_dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<(LatentSet, PathBuf)> {
    let desc = serde_json::json!({"data": spec, "vae": vae.config(), "vae_weights": vae_id});
    let key = fnv1a(desc.to_string().as_bytes(), FNV_OFFSET);
    let stem = cache_dir.join(format!("latents-{key:016x}"));
    let (tpath, jpath) = (
        stem.with_extension("safetensors"),
        stem.with_extension("json"),
    );
    if tpath.exists() && jpath.exists() {
        return Ok((read_cache(&tpath)?, tpath));
    }
    let clips = clips(spec)?;
    let dev = vae.device();
    let mut items = Vec::with_capacity(clips.len());
    for (i, (video, caption, alt)) in clips.iter().enumerate() {
        let x = video_to_tensor(video, dev)?;
        // Detached: a VAE built on trainable vars would otherwise drag its whole encoder graph
        // into every DiT backward pass. On the CPU, as a set read from the cache is.
        let z = vae
            .encode_latents(&x)?
            .squeeze(0)?
            .detach()
            .to_device(&Device::Cpu)?; // (C, T', h, w)
        items.push(LatentItem {
            latent: z,
            caption: caption.clone(),
            alt_caption: alt.clone(),
        });
        progress(i + 1, clips.len());
    }
    std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let tensors: std::collections::HashMap<String, Tensor> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (format!("latent.{i:06}"), it.latent.clone()))
        .collect();
    let caps: Vec<(&str, Option<&str>)> = items
        .iter()
        .map(|i| (i.caption.as_str(), i.alt_caption.as_deref()))
        .collect();
    let json = serde_json::to_string(&caps).map_err(|source| TrainError::Json {
        path: jpath.clone(),
        source,
    })?;
    // Captions first: the safetensors file appearing (by rename) is what marks the cache done.
    let jtmp = stem.with_extension("json.tmp");
    std::fs::write(&jtmp, json).map_err(io_err(&jtmp))?;
    std::fs::rename(&jtmp, &jpath).map_err(io_err(&jpath))?;
    let ttmp = stem.with_extension("safetensors.tmp");
    crate::save_safetensors(&tensors, &ttmp)?;
    std::fs::rename(&ttmp, &tpath).map_err(io_err(&tpath))?;
    Ok((LatentSet::new(items)?, tpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_group_by_shape() -> Result<()> {
        let dev = Device::Cpu;
        let item = |t: usize, h: usize| -> Result<LatentItem> {
            Ok(LatentItem {
                latent: Tensor::zeros((4, t, h, 2), DType::F32, &dev)?,
                caption: format!("{t}x{h}"),
                alt_caption: None,
            })
        };
        let set = LatentSet::new(vec![item(3, 2)?, item(1, 2)?, item(3, 2)?, item(3, 4)?])?;
        let shapes: Vec<_> = set.buckets.iter().map(|(s, i)| (*s, i.clone())).collect();
        assert_eq!(
            shapes,
            vec![
                ((1, 2, 2), vec![1]),
                ((3, 2, 2), vec![0, 2]),
                ((3, 4, 2), vec![3])
            ]
        );
        assert!(matches!(LatentSet::new(vec![]), Err(TrainError::Data(_))));
        Ok(())
    }

    /// `objects` (and `heading`) keep each bucket's first scenes the world's [`Selection`]
    /// keeps, from the bucket's start index on, rendered as the world renders them (mirrored
    /// too); a count no scene has is the world's error.
    #[test]
    fn world_objects_are_the_selections_scenes() -> Result<()> {
        let buckets = vec![
            BucketSpec {
                frames: 5,
                count: 3,
            },
            BucketSpec {
                frames: 1,
                count: 2,
            },
        ];
        let spec = |objects, mirror, heading| DataSpec::World {
            seed: 3,
            split: Split::Train,
            size: 32,
            fps: 8.0,
            buckets: buckets.clone(),
            mirror,
            objects,
            heading,
        };
        let opts = |b: &BucketSpec| SampleOptions {
            count: b.count,
            width: 32,
            height: 32,
            frames: b.frames as u32,
            fps: 8.0,
            seed: 3,
            split: Split::Train,
        };
        for (mirror, heading) in [(false, false), (true, false), (true, true)] {
            let got = clips(&spec(Some(1), mirror, heading))?;
            let mut want = Vec::new();
            for (b, bucket) in buckets.iter().enumerate() {
                let selection = Selection {
                    start: b as u64 * 1_000_000,
                    objects: Some(1),
                    heading,
                };
                let indices = selection.indices(&opts(bucket))?;
                assert_eq!(indices.len(), bucket.count);
                for i in indices {
                    let clip = generate_clip(&opts(bucket), i)?;
                    assert_eq!(clip.objects.len(), 1);
                    want.push(if mirror { clip.mirrored()? } else { clip });
                }
            }
            assert_eq!(got.len(), want.len());
            for ((video, caption, _), clip) in got.iter().zip(&want) {
                assert_eq!((video, caption), (&clip.video, &clip.caption));
            }
        }
        // Without `objects` the indices run on from each bucket's start, whatever the scene.
        let all = clips(&spec(None, false, false))?;
        assert_eq!(all[1].1, generate_clip(&opts(&buckets[0]), 1)?.caption);
        assert!(matches!(
            clips(&spec(Some(9), false, false)),
            Err(TrainError::World(tessera_world::WorldError::Objects {
                objects: 9
            }))
        ));
        Ok(())
    }
}

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_eval::{eval_clips, eval_clips_with, eval_videos, EvalOptions, Report, VideoSource};
use tessera_models::device::DeviceSpec;
use tessera_models::vae::{tensor_to_video, video_to_tensor};
use tessera_pipeline::{generate, GenerateRequest, Mode, Model, NoHook, RequestSpec, Sampling};
use tessera_world::{generate_clip, SampleOptions, Split};

use super::world::SceneArgs;

/// `tessera eval --model DIR …` generates from held-out captions and scores them;
/// `tessera eval videos DIR --captions F …` scores any folder of videos.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score a folder of videos against their captions (any generator's output).
    Videos(VideosArgs),
}

#[derive(Args)]
pub struct VideosArgs {
    /// Folder the captions file's `video` paths are relative to.
    dir: PathBuf,
    /// `captions.jsonl` with `{"video", "caption"}` lines.
    #[arg(long)]
    captions: PathBuf,
    /// Report folder (report.json, report.html).
    #[arg(long, short)]
    out: PathBuf,
    /// Real clips (a shapes-world folder) for the FVD-style distance.
    #[arg(long)]
    reference: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model folder; the default model when omitted.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where the model runs: cpu, or cuda / cuda:N in a CUDA build (README, "GPU").
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Held-out split whose captions prompt the model.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Number of prompts.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Seed of the held-out clips and of generation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image → video: give each held-out clip's first frame as the image, so the scores say
    /// whether the model animates a given scene as its caption says (direction above all;
    /// the frame already fixes colour, shape and place).
    #[arg(long)]
    first_frame: bool,
    /// Frames of each generated clip (4k+1); 1 scores text→image: a still shows colour, shape
    /// and place in a tenth of a clip's time, and nothing of motion.
    #[arg(long, default_value_t = 33, conflicts_with = "prompts")]
    frames: u32,
    /// Held-out scenes only of a kind: `--objects 1` scores the one-object prompts people
    /// mostly write, without the binding of words to several objects; `--heading` scores
    /// direction on every clip.
    #[command(flatten)]
    scenes: SceneArgs,
    #[command(flatten)]
    sampling: super::generate::SamplingArgs,
    /// Score your own prompts instead of held-out captions: a text file, one prompt per line
    /// (blank lines and `#` comments skipped). Each is expanded as `generate` expands it, and
    /// clips are scored against the caption it expanded to.
    #[arg(long, conflicts_with_all = ["split", "count", "first_frame", "objects", "heading"])]
    prompts: Option<PathBuf>,
    /// With --prompts: seeds per prompt (0..N), so a score says how often a prompt works.
    #[arg(long, default_value_t = 4, requires = "prompts")]
    seeds: u64,
    /// Report folder (report.json, report.html, the generated clips).
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(&report.summary)?);
    } else {
        print!("{}", report.summary_table());
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(EvalCommand::Videos(a)) = args.command {
        let opts = EvalOptions {
            reference_dir: a.reference,
            ..EvalOptions::default()
        };
        let report = eval_videos(&VideoSource::Dir(a.dir), &a.captions, &a.out, &opts)?;
        return print(&report, a.json);
    }
    let a = args.model;
    let out = a.out.context("--out REPORT_DIR is required")?;
    let dir = a.model.unwrap_or_else(Model::default_dir);
    let device = a.device.open()?;
    if let Some(file) = &a.prompts {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the prompts file {}", file.display()))?;
        let prompts: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if prompts.is_empty() {
            bail!(
                "{} has no prompts; write one per line (# starts a comment)",
                file.display()
            );
        }
        let model = Model::load(&dir, &device)?;
        let sampling = a.sampling.over(model.sampling.clone());
        let bar = super::progress(prompts.len() as u64 * a.seeds, "clips", a.json);
        let report = eval_prompts(&model, &prompts, a.seeds, &sampling, &out, &mut || {
            bar.inc(1)
        })?;
        bar.finish_and_clear();
        return print(&report, a.json);
    }
    let model = Model::load(&dir, &device)?;
    let settings = Prompted {
        split: a.split,
        count: a.count,
        seed: a.seed,
        first_frame: a.first_frame,
        frames: a.frames,
        scenes: a.scenes.clone(),
        sampling: a.sampling.over(model.sampling.clone()),
    };
    let bar = super::progress(a.count as u64, "prompts", a.json);
    let (report, ceiling) = eval_model(&model, &settings, &out, true, &mut || bar.inc(1))?;
    bar.finish_and_clear();
    if let Some(ceiling) = ceiling {
        eprintln!(
            "VAE ceiling (the same prompts' real clips through the model's VAE; report in {}):\n{}",
            out.join("vae_ceiling").display(),
            ceiling.summary_table()
        );
    }
    print(&report, a.json)
}

/// A request (text → video, or `mode`) for one clip of the world's size, length and rate.
fn clip_request(
    world: &SampleOptions,
    prompt: &str,
    sampling: &Sampling,
    seed: u64,
    output: &Path,
    extend_prompt: bool,
    mode: Mode,
) -> Result<GenerateRequest> {
    Ok(GenerateRequest::new(RequestSpec {
        frames: Some(world.frames as usize),
        width: world.width,
        height: world.height,
        fps: world.fps,
        sampling: sampling.clone(),
        seed,
        extend_prompt,
        // Scores measure the model, and stay comparable with reports made before the mark.
        watermark: false,
        mode,
        ..RequestSpec::text(prompt, output)
    })?)
}

/// `out/settings.json`: what made a report.
fn write_settings(out: &Path, settings: &serde_json::Value) -> Result<()> {
    tessera_eval::report::write_atomic(
        &out.join("settings.json"),
        (serde_json::to_string_pretty(settings)? + "\n").as_bytes(),
    )?;
    Ok(())
}

/// Generates `seeds` clips of each user prompt (expanded as `generate` does) and scores each
/// against the caption its prompt expanded to; `out/settings.json` records what made them.
pub fn eval_prompts(
    model: &Model,
    prompts: &[&str],
    seeds: u64,
    sampling: &Sampling,
    out: &Path,
    done_one: &mut dyn FnMut(),
) -> Result<Report> {
    std::fs::create_dir_all(out.join("videos"))?;
    let settings = serde_json::json!({
        "model": model.name,
        "prompts": prompts,
        "seeds": seeds,
        "sampling": sampling,
    });
    write_settings(out, &settings)?;
    let world = SampleOptions::default();
    let mut clips = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        for seed in 0..seeds {
            let output = out.join("videos").join(format!("{i:03}-seed{seed}.mp4"));
            let req = clip_request(&world, prompt, sampling, seed, &output, true, Mode::Text)?;
            let summary = generate(model, &req, &mut NoHook, &mut |_| ControlFlow::Continue(()))?;
            clips.push((
                tessera_media::read_video(&output)?,
                summary.prompt_used.text,
            ));
            done_one();
        }
    }
    Ok(eval_clips(&clips, out)?)
}

/// How a model is prompted for evaluation: `count` held-out captions of `split` (of the scenes
/// `scenes` names), `frames` long, with each clip's first frame as the image when `first_frame`.
pub struct Prompted {
    pub split: Split,
    pub count: usize,
    pub seed: u64,
    pub first_frame: bool,
    pub frames: u32,
    pub scenes: SceneArgs,
    pub sampling: Sampling,
}

impl Prompted {
    /// `tessera eval`'s defaults for `model`: the first `count` `test` captions, seed 0, the
    /// model's sampling.
    pub fn held_out(count: usize, model: &Model) -> Self {
        Self {
            split: Split::Test,
            count,
            seed: 0,
            first_frame: false,
            frames: SampleOptions::default().frames,
            scenes: SceneArgs::default(),
            sampling: model.sampling.clone(),
        }
    }
}

/// Generates from held-out captions and scores the clips (report in `out`); with `ceiling`
/// also scores the real clips through the model's VAE, the best any DiT could do with it.
/// `out/settings.json` records the model and sampling settings, so a report says what made it.
pub fn eval_model(
    model: &Model,
    a: &Prompted,
    out: &Path,
    ceiling: bool,
    done_one: &mut dyn FnMut(),
) -> Result<(Report, Option<Report>)> {
    if a.first_frame && a.frames == 1 {
        bail!("--first-frame animates a given frame, so it needs --frames above 1 (e.g. 33)");
    }
    std::fs::create_dir_all(out.join("videos"))?;
    let settings = serde_json::json!({
        "model": model.name,
        "split": a.split,
        "count": a.count,
        "seed": a.seed,
        "first_frame": a.first_frame,
        "frames": a.frames,
        "objects": a.scenes.objects,
        "heading": a.scenes.heading,
        "sampling": a.sampling,
    });
    write_settings(out, &settings)?;
    if a.first_frame {
        std::fs::create_dir_all(out.join("first_frames"))?;
    }
    let world = SampleOptions {
        count: a.count,
        seed: a.seed,
        split: a.split,
        frames: a.frames,
        ..SampleOptions::default()
    };
    let indices = a.scenes.selection(0).indices(&world)?;
    let mut clips = Vec::with_capacity(a.count);
    let mut reference = Vec::with_capacity(a.count);
    let mut recon = Vec::with_capacity(a.count);
    let mut through_vae = Vec::with_capacity(a.count);
    for (i, &index) in indices.iter().enumerate() {
        let clip = generate_clip(&world, index)?;
        let output = out.join("videos").join(format!("{i:04}.mp4"));
        let seed = a.seed + i as u64;
        let mode = if a.first_frame {
            let image = out.join("first_frames").join(format!("{i:04}.png"));
            let mut frame = tessera_media::Video::new(clip.video.width, clip.video.height, 1.0);
            frame.frames.push(clip.video.frames[0].clone());
            tessera_media::write_video(&image, &frame)?;
            Mode::Image { image }
        } else {
            Mode::Text
        };
        let req = clip_request(
            &world,
            &clip.caption,
            &a.sampling,
            seed,
            &output,
            false,
            mode,
        )?;
        generate(model, &req, &mut NoHook, &mut |_| ControlFlow::Continue(()))?;
        clips.push((tessera_media::read_video(&output)?, clip.caption));
        // The model's VAE on the real clip: how much of any shortfall is the autoencoder's.
        let x = video_to_tensor(&clip.video, &model.device)?;
        let decoded = model.vae.decode_latents(&model.vae.encode_latents(&x)?)?;
        let decoded = tensor_to_video(&decoded, clip.video.fps)?;
        recon.push(tessera_eval::reconstruction(&clip.video, &decoded)?);
        through_vae.push((decoded, clips[i].1.clone()));
        reference.push(clip.video);
        done_one();
    }
    let opts = EvalOptions {
        vae_reconstruction: recon,
        ..EvalOptions::default()
    };
    let report = eval_clips_with(&clips, &reference, out, &opts)?;
    let ceiling = if ceiling {
        Some(eval_clips(&through_vae, &out.join("vae_ceiling"))?)
    } else {
        None
    };
    Ok((report, ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `first_frame`, each held-out clip's first frame is written beside the report and
    /// given as the image: the generated clip starts from it instead of from noise alone.
    #[test]
    fn first_frame_eval_animates_each_held_out_clips_first_frame() {
        let model = Model::random_tiny(3).unwrap();
        let out = tempfile::tempdir().unwrap();
        let prompted = |first_frame| Prompted {
            split: Split::Test,
            count: 1,
            seed: 2,
            first_frame,
            frames: 33,
            scenes: SceneArgs::default(),
            sampling: Sampling {
                steps: 2,
                ..Sampling::default()
            },
        };
        let text_dir = out.path().join("text");
        eval_model(&model, &prompted(false), &text_dir, false, &mut || {}).unwrap();
        assert!(!text_dir.join("first_frames").exists());
        let image_dir = out.path().join("image");
        let (report, _) =
            eval_model(&model, &prompted(true), &image_dir, false, &mut || {}).unwrap();
        assert_eq!(report.clips.len() + report.errors.len(), 1);

        let world = SampleOptions {
            seed: 2,
            split: Split::Test,
            ..SampleOptions::default()
        };
        let real = generate_clip(&world, 0).unwrap().video;
        let png = tessera_media::read_video(image_dir.join("first_frames/0000.png")).unwrap();
        assert_eq!(
            png.frames,
            vec![real.frames[0].clone()],
            "the frame is stored losslessly"
        );
        let settings: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(image_dir.join("settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["first_frame"], true);
        let mode = |dir: &Path| {
            let p = tessera_media::read_provenance(dir.join("videos/0000.mp4"))
                .unwrap()
                .expect("a generated clip carries its manifest");
            let m: serde_json::Value = serde_json::from_slice(&p.manifest).unwrap();
            m["assertions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["label"] == "tessera.generation")
                .and_then(|a| a["data"]["mode"].as_str().map(str::to_string))
        };
        assert_eq!(mode(&text_dir).as_deref(), Some("text"));
        assert_eq!(mode(&image_dir).as_deref(), Some("image"));
    }

    /// `objects` and `heading` pick the held-out scenes of that kind, in the world's order.
    #[test]
    fn an_object_count_prompts_with_those_scenes_alone() {
        let model = Model::random_tiny(3).unwrap();
        let out = tempfile::tempdir().unwrap();
        let prompted = Prompted {
            split: Split::Test,
            count: 2,
            seed: 0,
            first_frame: false,
            frames: 33,
            scenes: SceneArgs {
                objects: Some(1),
                heading: true,
            },
            sampling: Sampling {
                steps: 1,
                ..Sampling::default()
            },
        };
        let (report, _) = eval_model(&model, &prompted, out.path(), false, &mut || {}).unwrap();
        let world = SampleOptions {
            split: Split::Test,
            ..SampleOptions::default()
        };
        let one_object: Vec<String> = (0..)
            .map(|i| generate_clip(&world, i).unwrap())
            .filter(|c| c.scene.object_count() == 1)
            .filter(|c| c.scene.objects[0].motion.direction().is_some())
            .take(2)
            .map(|c| c.caption)
            .collect();
        assert_eq!(report.clips.len() + report.errors.len(), 2);
        for clip in &report.clips {
            let i: usize = clip.name["clip_".len()..].parse().unwrap();
            assert_eq!(clip.caption, one_object[i], "{}", clip.name);
        }
        let settings: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (&settings["objects"], &settings["heading"]),
            (&1.into(), &true.into())
        );
    }

    /// `frames: 1` scores stills of the world's one-frame held-out scenes, with nothing of
    /// motion; a given first frame with nothing after it is refused.
    #[test]
    fn a_one_frame_eval_scores_stills_of_held_out_scenes() {
        let model = Model::random_tiny(3).unwrap();
        let out = tempfile::tempdir().unwrap();
        let prompted = |first_frame| Prompted {
            split: Split::Test,
            count: 2,
            seed: 1,
            first_frame,
            frames: 1,
            scenes: SceneArgs::default(),
            sampling: Sampling {
                steps: 1,
                ..Sampling::default()
            },
        };
        let (report, _) =
            eval_model(&model, &prompted(false), out.path(), false, &mut || {}).unwrap();
        assert_eq!(report.clips.len(), 2, "{:?}", report.errors);
        let world = SampleOptions {
            seed: 1,
            split: Split::Test,
            frames: 1,
            ..SampleOptions::default()
        };
        for clip in &report.clips {
            let i: usize = clip.name["clip_".len()..].parse().unwrap();
            assert_eq!(
                clip.caption,
                generate_clip(&world, i as u64).unwrap().caption
            );
            assert_eq!(
                clip.scores.direction, None,
                "a still has no motion to score"
            );
            let video = tessera_media::read_video(out.path().join(format!("videos/{i:04}.mp4")));
            assert_eq!(video.unwrap().frames.len(), 1);
        }
        let settings: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["frames"], 1);
        let err = eval_model(&model, &prompted(true), out.path(), false, &mut || {}).unwrap_err();
        assert!(err.to_string().contains("--frames"), "{err}");
    }

    /// Each prompt is generated once per seed and scored against the caption it expanded to.
    #[test]
    fn user_prompts_are_expanded_generated_per_seed_and_scored() {
        let model = Model::random_tiny(3).unwrap();
        let out = tempfile::tempdir().unwrap();
        let sampling = Sampling {
            steps: 2,
            ..Sampling::default()
        };
        let mut done = 0;
        let report = eval_prompts(
            &model,
            &["a red ball bounces", "two blue squares"],
            2,
            &sampling,
            out.path(),
            &mut || done += 1,
        )
        .unwrap();
        assert_eq!(done, 4);
        assert_eq!(report.clips.len() + report.errors.len(), 4);
        let captions: Vec<&str> = report.clips.iter().map(|c| c.caption.as_str()).collect();
        assert!(captions[0].contains("red circle"), "{captions:?}");
        assert!(captions[3].contains("blue squares"), "{captions:?}");
        assert!(
            captions[3].starts_with("Two") || captions[3].contains(". Two "),
            "{captions:?}"
        );
        assert_ne!(
            captions[0], captions[1],
            "each seed expands the prompt its own way"
        );
        assert!(out.path().join("videos/001-seed1.mp4").is_file());
        let settings: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join("settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["seeds"], 2);
        assert_eq!(settings["sampling"]["steps"], 2);
    }
}

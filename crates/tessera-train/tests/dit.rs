//! DiT trainer end to end on a micro config: exact resume, overfitting a handful of world clips,
//! masked sampling, NaN handling, export round trip. `cargo test --release -p tessera-train --test dit`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tessera_diffusion::{KnownFrames, SamplerKind};
use tessera_models::dit::{Config as DitConfig, Dit};
use tessera_models::text::{SmallEncoderConfig, SmallTextEncoder, WordTokenizer};
use tessera_train::dit::{
    export_dit, load_trained, sample_latents, train_dit, DitEvent, DitTrainOptions, SampleSettings,
    TOKENIZER_FILE,
};
use tessera_train::latents::BucketSpec;
use tessera_train::{checkpoint, TrainError};

/// Tiny models run fastest on one thread, and candle's spinning worker pool stalls badly when
/// the machine is busy; set before any tensor op (the pool starts on first use).
fn single_thread() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("CANDLE_NUM_THREADS", "1"));
}

/// Micro DiT, random tiny VAE, 32×32 world clips of 9 frames (3 latent frames) plus images.
fn micro(out: &Path) -> DitTrainOptions {
    single_thread();
    DitTrainOptions {
        config: "micro".into(),
        size: 32,
        buckets: vec![
            BucketSpec {
                frames: 9,
                count: 4,
            },
            BucketSpec {
                frames: 1,
                count: 4,
            },
        ],
        steps: 8,
        batch: 2,
        grad_accum: 2,
        lr: 1e-3,
        warmup: 2,
        text_layers: 1,
        text_max_len: 64,
        checkpoint_every: 4,
        sample_every: 0,
        text_align_steps: 0,
        ..DitTrainOptions::tiny(out.to_path_buf())
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("diff")
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Stopping at k and resuming to 2k gives the same losses and weights as 2k straight.
#[test]
fn resume_continues_the_same_curve() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cache = tmp.path().join("latents");
    let opts_a = DitTrainOptions {
        latent_cache: Some(cache.clone()),
        ..micro(&a)
    };
    let sa = train_dit(&opts_a, |_| ControlFlow::Continue(())).expect("straight run");
    assert_eq!(sa.step, 8);

    let opts_b = DitTrainOptions {
        latent_cache: Some(cache.clone()),
        ..micro(&b)
    };
    let mut encoded = 0;
    let sb = train_dit(&opts_b, |e| match e {
        DitEvent::Encoding { .. } => {
            encoded += 1;
            ControlFlow::Continue(())
        }
        DitEvent::Step(r) if r.step == 3 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .expect("interrupted run");
    assert_eq!(sb.step, 3, "stopped where asked");
    assert_eq!(encoded, 0, "the second run reuses the cached latents");
    let resumed = DitTrainOptions {
        resume: true,
        ..opts_b.clone()
    };
    train_dit(&resumed, |_| ControlFlow::Continue(())).expect("resumed run");

    let (la, lb) = (log_lines(&a), log_lines(&b));
    assert_eq!(la.len(), 8);
    assert_eq!(lb.len(), 8, "resumed log has no duplicate steps");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x["loss"], y["loss"], "step {}", x["step"]);
        assert_eq!(x["grad_norm"], y["grad_norm"], "step {}", x["step"]);
    }
    // Both buckets (3 latent frames and images) were trained on.
    let frames: std::collections::BTreeSet<u64> = la
        .iter()
        .map(|l| l["latent_frames"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(frames.into_iter().collect::<Vec<_>>(), vec![1, 3]);

    for part in ["model", "ema", "optim"] {
        let ta = checkpoint::load_tensors(
            &checkpoint::latest(&a.join("checkpoints")).unwrap().unwrap(),
            part,
        )
        .unwrap();
        let tb = checkpoint::load_tensors(
            &checkpoint::latest(&b.join("checkpoints")).unwrap().unwrap(),
            part,
        )
        .unwrap();
        assert_eq!(ta.len(), tb.len());
        for (k, v) in &ta {
            assert_eq!(max_diff(v, &tb[k]), 0.0, "{part} {k}");
        }
    }
    // Changing the recipe on resume is refused.
    let changed = DitTrainOptions {
        lr: 5e-4,
        ..resumed.clone()
    };
    match train_dit(&changed, |_| ControlFlow::Continue(())) {
        Err(TrainError::CheckpointMismatch { what, .. }) => {
            assert!(
                what.starts_with("`lr` 0.001 in the checkpoint, 0.0005 now"),
                "{what}"
            )
        }
        other => panic!("expected a mismatch naming `lr`, got {other:?}"),
    }
    // A checkpoint written before `device` existed resumes (on the CPU).
    let ck = checkpoint::latest(&b.join("checkpoints")).unwrap().unwrap();
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("state.json")).unwrap()).unwrap();
    assert!(state["options"]["device"].is_string());
    state["options"].as_object_mut().unwrap().remove("device");
    std::fs::write(ck.join("state.json"), state.to_string()).unwrap();
    // The same folder spelled another way is the same run.
    let longer = DitTrainOptions {
        steps: 9,
        out: b.join("..").join(b.file_name().unwrap()),
        ..resumed
    };
    let s = train_dit(&longer, |_| ControlFlow::Continue(())).expect("old checkpoint resumes");
    assert_eq!(s.step, 9);
}

/// A huge learning rate blows the weights up; training stops with `NonFinite` and the last good
/// checkpoint stays loadable.
#[test]
fn nan_loss_stops_and_keeps_last_good_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = DitTrainOptions {
        lr: 1e30,
        warmup: 0,
        max_grad_norm: f64::INFINITY,
        checkpoint_every: 1,
        steps: 20,
        ..micro(tmp.path())
    };
    let err = train_dit(&opts, |_| ControlFlow::Continue(())).expect_err("diverges");
    let TrainError::NonFinite { step, .. } = err else {
        panic!("unexpected {err}")
    };
    assert!(step >= 1, "first step starts from finite weights");
    let ck = checkpoint::latest(&tmp.path().join("checkpoints"))
        .expect("latest")
        .expect("a checkpoint was kept");
    assert!(
        ck.ends_with(format!("step-{step:08}")),
        "{ck:?} vs failing step {step}"
    );
    assert!(err_msg_mentions_resume(step));
}

fn err_msg_mentions_resume(step: usize) -> bool {
    TrainError::NonFinite {
        step,
        value: f64::NAN,
    }
    .to_string()
    .contains("last good checkpoint")
}

/// Relative squared error `|a − b|² / |b|²`.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let num = (a - b)
        .and_then(|d| d.sqr())
        .and_then(|d| d.sum_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("num");
    let den = b
        .sqr()
        .and_then(|d| d.sum_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("den");
    f64::from(num / den)
}

/// A micro model trained here on three world clips regenerates each clip's latents from its
/// caption (an untrained one does not), and masked sampling returns known frames unchanged.
#[test]
fn overfits_a_handful_of_clips_and_keeps_known_frames() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = DitTrainOptions {
        buckets: vec![BucketSpec {
            frames: 9,
            count: 3,
        }],
        steps: 1500,
        batch: 3,
        grad_accum: 1,
        lr: 3e-3,
        warmup: 50,
        lr_floor: 0.05,
        caption_dropout: 0.0,
        alt_caption_prob: 0.0,
        ema_decay: 0.99,
        checkpoint_every: 1500,
        ..micro(tmp.path())
    };
    let start = std::time::Instant::now();
    let summary = train_dit(&opts, |_| ControlFlow::Continue(())).expect("train");
    println!(
        "overfit training: {:.1} s, final loss {:?}",
        start.elapsed().as_secs_f64(),
        summary.last.map(|l| l.loss)
    );

    // Training latents and captions, from the cache the run wrote.
    let tensors = candle_core::safetensors::load(&summary.latents, &Device::Cpu).expect("cache");
    let caps: Vec<(String, Option<String>)> = serde_json::from_str(
        &std::fs::read_to_string(summary.latents.with_extension("json")).expect("captions"),
    )
    .expect("json");
    let x0 = Tensor::stack(
        &(0..caps.len())
            .map(|i| tensors[&format!("latent.{i:06}")].clone())
            .collect::<Vec<_>>(),
        0,
    )
    .expect("stack"); // (3, 16, 3, 4, 4)
    let prompts: Vec<&str> = caps.iter().map(|c| c.0.as_str()).collect();
    let settings = SampleSettings {
        sampler: SamplerKind::Euler,
        steps: 20,
        cfg: 1.0,
        shift: 1.0,
        seed: 11,
    };
    let grid = (3, 4, 4);

    let trained = load_trained(tmp.path(), true).expect("load");
    let z = sample_latents(&trained.dit, &trained.text, &prompts, grid, settings, None)
        .expect("sample");
    let err = rel_err(&z, &x0);

    let fresh = load_trained(tmp.path(), false).expect("load raw");
    let untrained = {
        // Same architecture, zero-initialised head: predicts v = 0, so the sample stays noise.
        let vm = candle_nn::VarMap::new();
        let dit = Dit::new(
            &trained.dit_config,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .expect("dit");
        sample_latents(&dit, &fresh.text, &prompts, grid, settings, None).expect("sample")
    };
    let base = rel_err(&untrained, &x0);
    println!("relative latent error: trained {err:.4}, untrained {base:.4}");
    assert!(
        err < 0.35,
        "trained model should reproduce its clips: {err}"
    );
    assert!(
        base > 1.0,
        "an untrained model must fail this check: {base}"
    );

    // Image→video: frame 0 known.
    let known = KnownFrames::new(x0.clone(), vec![true, false, false]).expect("known");
    let z = sample_latents(
        &trained.dit,
        &trained.text,
        &prompts,
        grid,
        settings,
        Some(&known),
    )
    .expect("sample");
    let f0 = |t: &Tensor| t.narrow(2, 0, 1).expect("frame 0");
    assert_eq!(
        max_diff(&f0(&z), &f0(&x0)),
        0.0,
        "known frame comes back bit for bit"
    );
    let rest = |t: &Tensor| t.narrow(2, 1, 2).expect("frames 1..");
    let cond_err = rel_err(&rest(&z), &rest(&x0));
    println!("image→video relative error on generated frames: {cond_err:.4}");
    assert!(cond_err < 0.35, "{cond_err}");
}

/// The exported folders load with the models' own loaders and reproduce the EMA checkpoint.
#[test]
fn export_round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let opts = DitTrainOptions {
        steps: 2,
        ..micro(&tmp.path().join("run"))
    };
    train_dit(&opts, |_| ControlFlow::Continue(())).expect("train");
    let model = tmp.path().join("model");
    export_dit(&opts.out, &model).expect("export");
    let trained = load_trained(&opts.out, true).expect("load");

    let dev = Device::Cpu;
    let cfg: DitConfig =
        serde_json::from_str(&std::fs::read_to_string(model.join("dit/config.json")).expect("cfg"))
            .expect("json");
    assert_eq!(cfg, trained.dit_config);
    let dit = Dit::load(&cfg, &[model.join("dit/model.safetensors")], &dev).expect("strict load");
    let tcfg: SmallEncoderConfig = serde_json::from_str(
        &std::fs::read_to_string(model.join("text/config.json")).expect("cfg"),
    )
    .expect("json");
    let mut tok: WordTokenizer = serde_json::from_str(
        &std::fs::read_to_string(model.join("text").join(TOKENIZER_FILE)).expect("tok"),
    )
    .expect("json");
    tok.reindex();
    let weights = candle_core::safetensors::load(model.join("text/model.safetensors"), &dev)
        .expect("text weights");
    assert!(weights.values().all(|t| t.dtype() == DType::F16));
    // Exported weights are ordinary files, not the private temp file safetensors writes through.
    #[cfg(unix)]
    for part in ["dit", "text"] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(model.join(part).join("model.safetensors")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "{part}");
    }
    let text = SmallTextEncoder::new(
        &tcfg,
        tok,
        VarBuilder::from_tensors(weights, DType::F32, &dev),
    )
    .expect("text");

    let settings = SampleSettings {
        sampler: SamplerKind::Euler,
        steps: 4,
        cfg: 3.0,
        shift: 1.0,
        seed: 1,
    };
    let prompts = ["a red circle moves to the left"];
    let a = sample_latents(
        &trained.dit,
        &trained.text,
        &prompts,
        (3, 4, 4),
        settings,
        None,
    )
    .expect("a");
    let b = sample_latents(&dit, &text, &prompts, (3, 4, 4), settings, None).expect("b");
    let d = max_diff(&a, &b);
    assert!(d < 2e-2, "fp16 export changed samples by {d}");

    // Fine-tuning from the export starts from its DiT and text encoder (a vanishing lr keeps
    // them through one step) and skips alignment; `realign_text` builds and aligns a new
    // encoder from the seed instead.
    let tune = DitTrainOptions {
        steps: 1,
        lr: 1e-12,
        init_from: Some(model.clone()),
        text_align_steps: 3,
        out: tmp.path().join("tune"),
        ..opts.clone()
    };
    let tuned = |o: &DitTrainOptions| {
        let mut aligned = None;
        train_dit(o, |e| {
            if let DitEvent::TextAligned(r) = e {
                aligned = Some(r.steps);
            }
            ControlFlow::Continue(())
        })
        .expect("fine-tune");
        let ck = checkpoint::latest(&o.out.join("checkpoints"))
            .expect("ck")
            .expect("a checkpoint");
        (
            aligned,
            checkpoint::load_tensors(&ck, "model").expect("model"),
        )
    };
    let moved = |part: &str, weights: &HashMap<String, Tensor>| {
        let exported =
            candle_core::safetensors::load(model.join(part).join("model.safetensors"), &dev)
                .expect("exported");
        exported
            .iter()
            .map(|(name, w)| {
                max_diff(
                    &w.to_dtype(DType::F32).expect("f32"),
                    &weights[&format!("{part}.{name}")],
                )
            })
            .fold(0f32, f32::max)
    };
    let (aligned, kept) = tuned(&tune);
    assert_eq!(aligned, None, "the folder's encoder needs no alignment");
    assert!(moved("dit", &kept) < 1e-6);
    assert!(moved("text", &kept) < 1e-6);
    // The folder's encoder is kept on resume too, even where the run's recipe would build
    // another (here a deeper one).
    let deeper_text = DitTrainOptions {
        text_layers: opts.text_layers + 1,
        checkpoint_every: 1,
        out: tmp.path().join("resumed"),
        ..tune.clone()
    };
    tuned(&deeper_text);
    let (_, resumed) = tuned(&DitTrainOptions {
        steps: 2,
        resume: true,
        ..deeper_text.clone()
    });
    assert!(moved("text", &resumed) < 1e-6);
    // Its export counts the folder's steps and this run's: the model's whole training.
    let again = tmp.path().join("again");
    export_dit(&deeper_text.out, &again).expect("export the fine-tune");
    for part in ["dit", "text"] {
        let steps = |dir: &std::path::Path| {
            let text = std::fs::read_to_string(dir.join(part).join("config.json")).expect("cfg");
            serde_json::from_str::<serde_json::Value>(&text).expect("json")["_trained_steps"]
                .as_u64()
                .expect("_trained_steps")
        };
        assert_eq!(steps(&model), opts.steps as u64, "{part}");
        assert_eq!(steps(&again), opts.steps as u64 + 2, "{part}");
    }
    // Another seed, so the new encoder cannot equal the folder's seeded one by construction.
    let realign = DitTrainOptions {
        realign_text: true,
        seed: 7,
        out: tmp.path().join("realign"),
        ..tune.clone()
    };
    let (aligned, fresh) = tuned(&realign);
    assert_eq!(aligned, Some(3));
    assert!(moved("dit", &fresh) < 1e-6);
    assert!(
        moved("text", &fresh) > 1e-2,
        "a new encoder, not the folder's"
    );
    // A run with the absolute position path grows it onto the folder's DiT, silent at first;
    // any other difference of config is refused.
    let with_pos = DitConfig {
        abs_pos_embed: true,
        ..tessera_train::dit::dit_config_by_name("micro").expect("micro")
    };
    let cfg_path = tmp.path().join("micro-pos.json");
    std::fs::write(&cfg_path, serde_json::to_string(&with_pos).expect("json")).expect("write");
    let grow = DitTrainOptions {
        config: cfg_path.display().to_string(),
        out: tmp.path().join("grow"),
        ..tune.clone()
    };
    let (_, grown) = tuned(&grow);
    assert!(moved("dit", &grown) < 1e-6);
    assert!(
        max_diff(
            &grown["dit.pos_embedder.weight"],
            &grown["dit.pos_embedder.weight"].zeros_like().expect("z")
        ) < 1e-9
    );
    // Another patch size keeps everything but the patch embedding and the head.
    let repatched = DitConfig {
        patch_size: [1, 4, 4],
        ..tessera_train::dit::dit_config_by_name("micro").expect("micro")
    };
    std::fs::write(&cfg_path, serde_json::to_string(&repatched).expect("json")).expect("write");
    let (_, repatch) = tuned(&DitTrainOptions {
        out: tmp.path().join("repatch"),
        ..grow.clone()
    });
    let exported =
        candle_core::safetensors::load(model.join("dit").join("model.safetensors"), &dev)
            .expect("exported");
    let (mut kept, mut fresh) = (0, 0);
    for (name, w) in &exported {
        let mine = &repatch[&format!("dit.{name}")];
        if name.starts_with("patch_embedding.") || name.starts_with("proj_out.") {
            fresh += usize::from(name.ends_with("weight") && w.dims() != mine.dims());
        } else {
            assert!(
                max_diff(&w.to_dtype(DType::F32).expect("f32"), mine) < 1e-6,
                "{name}"
            );
            kept += 1;
        }
    }
    assert_eq!(
        fresh, 2,
        "the patch embedding and the head take the new patch's shapes"
    );
    assert!(kept > 10, "only {kept} tensors kept");
    let deeper = DitConfig {
        num_layers: with_pos.num_layers + 1,
        ..with_pos
    };
    std::fs::write(&cfg_path, serde_json::to_string(&deeper).expect("json")).expect("write");
    let err = train_dit(
        &DitTrainOptions {
            out: tmp.path().join("deeper"),
            ..grow
        },
        |_| ControlFlow::Continue(()),
    )
    .expect_err("another depth");
    assert!(
        err.to_string().contains("beyond adding abs_pos_embed"),
        "{err}"
    );
    let bad = DitTrainOptions {
        init_from: Some(tmp.path().join("nowhere")),
        out: tmp.path().join("bad"),
        ..tune
    };
    let err = train_dit(&bad, |_| ControlFlow::Continue(())).expect_err("no model there");
    assert!(err.to_string().contains("--init-from"), "{err}");
}

/// A dataset folder (`captions.jsonl` + MP4s, here written by the shapes world) trains, fills
/// the buckets it is long enough for, and writes sample clips next to its reconstructions.
#[test]
fn trains_on_a_folder_dataset_and_writes_samples() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let world = tessera_world::SampleOptions {
        count: 3,
        width: 32,
        height: 32,
        frames: 9,
        fps: 16.0,
        seed: 4,
        split: tessera_world::Split::Train,
    };
    tessera_world::sample_dataset(&world, &Default::default(), &data, |_| {}).expect("dataset");
    let opts = DitTrainOptions {
        data: Some(data),
        buckets: vec![
            BucketSpec {
                frames: 9,
                count: 2,
            },
            BucketSpec {
                frames: 5,
                count: 5,
            },
        ],
        steps: 2,
        sample_every: 2,
        sample_prompts: 1,
        sample_steps: 2,
        ..micro(&tmp.path().join("run"))
    };
    let mut buckets = Vec::new();
    let mut samples = Vec::new();
    train_dit(&opts, |e| {
        match e {
            DitEvent::Latents { buckets: b, .. } => buckets = b.clone(),
            DitEvent::Samples { paths, .. } => samples.extend(paths.iter().cloned()),
            _ => {}
        }
        ControlFlow::Continue(())
    })
    .expect("train");
    // Two 9-frame clips fill that bucket; the third is cut to 5 frames (2 latent frames).
    assert_eq!(buckets, vec![((2, 4, 4), 1), ((3, 4, 4), 2)]);
    assert_eq!(samples.len(), 1);
    let gif = tessera_media::read_video(&samples[0]).expect("sample GIF reads back");
    assert_eq!((gif.width, gif.height, gif.frames.len()), (32, 32, 9));
}

/// `object_weight` reweights the first batch's loss (the same draws, another number), and run
/// options saved before it existed load with it off.
#[test]
fn object_weight_reweights_the_loss_and_old_options_load() {
    let first_loss = |w: f64| {
        let tmp = tempfile::tempdir().unwrap();
        let opts = DitTrainOptions {
            steps: 1,
            object_weight: w,
            ..micro(tmp.path())
        };
        train_dit(&opts, |_| ControlFlow::Continue(())).expect("one step");
        log_lines(tmp.path())[0]["loss"].as_f64().expect("loss")
    };
    let (plain, again, weighted) = (first_loss(0.0), first_loss(0.0), first_loss(4.0));
    assert_eq!(plain, again);
    assert!(
        weighted.is_finite() && (weighted - plain).abs() > 1e-4 * plain,
        "{plain} vs {weighted}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut old = serde_json::to_value(micro(tmp.path())).unwrap();
    old.as_object_mut().unwrap().remove("object_weight");
    let back: DitTrainOptions = serde_json::from_value(old).unwrap();
    assert_eq!(back.object_weight, 0.0);
    let bad = DitTrainOptions {
        object_weight: f64::INFINITY,
        ..micro(tmp.path())
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("object_weight"));
}

#[test]
fn mirror_trains_on_each_clip_and_its_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = DitTrainOptions {
        steps: 1,
        mirror: true,
        ..micro(tmp.path())
    };
    let mut items = 0;
    train_dit(&opts, |e| {
        if let DitEvent::Latents { items: n, .. } = e {
            items = *n;
        }
        ControlFlow::Continue(())
    })
    .expect("one step");
    assert_eq!(items, 16, "8 clips and their 8 mirrors");

    // Two caches: the plain clips' (shared with runs without --mirror) and the mirrors'.
    let mut caches: Vec<_> = std::fs::read_dir(tmp.path().join("latents"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    caches.sort();
    assert_eq!(caches.len(), 2);
    let sets: Vec<_> = caches
        .iter()
        .map(|p| tessera_train::latents::read_cache(p).unwrap())
        .collect();
    let (a, b) = (&sets[0].items, &sets[1].items);
    let pairs: Vec<(&str, &str)> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.caption.as_str(), y.caption.as_str()))
        .collect();
    let sided = pairs.iter().filter(|(x, y)| x != y).count();
    assert!(sided > 0, "{pairs:?}");
    for (x, y) in pairs {
        assert_eq!(x.split(' ').count(), y.split(' ').count(), "{x} / {y}");
    }

    let plain = DitTrainOptions {
        data: Some(tmp.path().to_path_buf()),
        ..opts
    };
    assert!(plain
        .validate()
        .unwrap_err()
        .to_string()
        .contains("--mirror"));
    let mut old = serde_json::to_value(micro(tmp.path())).unwrap();
    old.as_object_mut().unwrap().remove("mirror");
    let back: DitTrainOptions = serde_json::from_value(old).unwrap();
    assert!(!back.mirror);
}

#[test]
fn a_preset_takes_its_channels_from_the_vae_and_a_config_file_must_match() {
    let z8 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/candidates/vae-s4-t2-z8");
    let tmp = tempfile::tempdir().unwrap();
    let opts = DitTrainOptions {
        steps: 1,
        vae_dir: Some(z8.clone()),
        ..micro(&tmp.path().join("run"))
    };
    train_dit(&opts, |_| ControlFlow::Continue(())).expect("micro preset on an 8-channel VAE");
    let trained = load_trained(&opts.out, true).expect("load");
    assert_eq!(
        (
            trained.dit_config.in_channels,
            trained.dit_config.out_channels
        ),
        (8, 8)
    );

    // A config file says exactly what to build: a mismatch is named, not patched.
    let file = tmp.path().join("dit16.json");
    let micro16 = tessera_train::dit::dit_config_by_name("micro").unwrap();
    std::fs::write(&file, serde_json::to_string(&micro16).unwrap()).unwrap();
    let from_file = DitTrainOptions {
        config: file.to_string_lossy().into_owned(),
        vae_dir: Some(z8),
        ..micro(&tmp.path().join("run16"))
    };
    let r = train_dit(&from_file, |_| ControlFlow::Continue(()));
    let Err(TrainError::Options(msg)) = r else {
        panic!("a 16-channel config trained on an 8-channel VAE: {r:?}");
    };
    assert!(
        msg.contains("in_channels 16") && msg.contains("set both to 8"),
        "{msg}"
    );
}

//! DiT against diffusers' `WanTransformer3DModel` and the umT5 encoder against transformers'
//! `UMT5EncoderModel` (fixtures from `fixtures/gen/dit_fixtures.py`), checkpoint-mismatch errors,
//! and the tiny config's CPU speed.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tessera_models::attention::AttentionImpl;
use tessera_models::dit::{Config, Dit, DitError};
use tessera_models::text::{TextEncoder, UmT5Encoder};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/dit")
        .join(name)
}

fn fixture_config() -> Config {
    let json = std::fs::read_to_string(fixture("wan_tiny_config.json")).expect("fixture config");
    serde_json::from_str(&json).expect("diffusers config parses as dit::Config")
}

/// Sets the variables of `vm` whose names pass `pick` to N(0, std²) draws.
fn randomise(vm: &VarMap, pick: impl Fn(&str) -> bool, std: f32) {
    for (name, var) in vm.data().lock().expect("varmap").iter() {
        if pick(name) {
            let r = Tensor::randn(0f32, std, var.shape(), &Device::Cpu).expect("randn");
            var.set(&r).expect("same shape");
        }
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("same shapes")
}

#[test]
fn matches_diffusers_for_every_timestep_kind_and_attention_path() {
    let dev = Device::Cpu;
    let cfg = fixture_config();
    let mut model = Dit::load(&cfg, &[fixture("wan_tiny_weights.safetensors")], &dev)
        .expect("fixture weights load strictly");
    let io = candle_core::safetensors::load(fixture("wan_tiny_io.safetensors"), &dev)
        .expect("fixture io");
    let get = |k: &str| io.get(k).unwrap_or_else(|| panic!("fixture lacks {k}"));
    for imp in [AttentionImpl::Tiled, AttentionImpl::Naive] {
        model.set_attention_impl(imp);
        for kind in ["sample", "frame", "token"] {
            let out = model
                .forward(get("latents"), get(&format!("t_{kind}")), get("text"), None)
                .expect("forward");
            let err = max_abs_diff(&out, get(&format!("out_{kind}")));
            println!("parity {imp:?} timesteps per {kind}: max abs err {err:.3e}");
            assert!(err <= 1e-4, "{imp:?} per-{kind}: {err}");
        }
    }
}

#[test]
fn mismatched_checkpoints_name_the_tensor() {
    let dev = Device::Cpu;
    let weights = [fixture("wan_tiny_weights.safetensors")];

    let mut cfg = fixture_config();
    cfg.ffn_dim = 128;
    match Dit::load(&cfg, &weights, &dev) {
        Err(DitError::CheckpointShape { name, got, want }) => {
            assert_eq!(name, "blocks.0.ffn.net.0.proj.weight");
            assert_eq!((got, want), (vec![96, 64], vec![128, 64]));
        }
        other => panic!("expected a shape error, got {:?}", other.map(|_| ())),
    }

    let mut cfg = fixture_config();
    cfg.num_layers = 3;
    match Dit::load(&cfg, &weights, &dev) {
        Err(DitError::CheckpointMissing { name, .. }) => assert!(name.starts_with("blocks.2.")),
        other => panic!("expected a missing tensor, got {:?}", other.map(|_| ())),
    }

    let mut cfg = fixture_config();
    cfg.num_layers = 1;
    match Dit::load(&cfg, &weights, &dev) {
        Err(DitError::CheckpointUnused(names)) => {
            assert!(
                names.iter().all(|n| n.starts_with("blocks.1.")),
                "{names:?}"
            );
            assert!(names.contains(&"blocks.1.attn1.to_q.weight".to_string()));
        }
        other => panic!("expected leftover tensors, got {:?}", other.map(|_| ())),
    }
}

fn random_model(cfg: &Config, dev: &Device) -> (Dit, VarMap) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, dev);
    let model = Dit::new(cfg, vb).expect("config builds");
    // Zero-initialised adaLN/head would let a broken path look fine; randomise every tensor.
    for var in vm.all_vars() {
        let r = Tensor::randn(0f32, 0.05, var.shape(), dev).expect("randn");
        var.set(&r).expect("same shape");
    }
    (model, vm)
}

/// Training must reach every parameter (candle's fused norms/softmax/rope would silently cut the
/// graph), and both attention paths must give the same gradients.
#[test]
fn every_parameter_trains_through_both_attention_paths() {
    let dev = Device::Cpu;
    let mut cfg = Config::tiny();
    cfg.num_layers = 2;
    let (mut model, vm) = random_model(&cfg, &dev);
    let x = Tensor::randn(0f32, 1., (2, 16, 3, 4, 6), &dev).expect("latent");
    let t = Tensor::new(&[[0f32, 300., 900.], [0., 0., 500.]], &dev).expect("t");
    let text = Tensor::randn(0f32, 1., (2, 5, 256), &dev).expect("text");
    let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.], [1., 1., 1., 1., 1.]], &dev).expect("mask");
    let w = Tensor::randn(0f32, 1., x.shape(), &dev).expect("weights");
    let mut per_impl = Vec::new();
    for imp in [AttentionImpl::Tiled, AttentionImpl::Naive] {
        model.set_attention_impl(imp);
        let out = model.forward(&x, &t, &text, Some(&mask)).expect("forward");
        let loss = (out * &w).and_then(|l| l.sum_all()).expect("loss");
        let grads = loss.backward().expect("backward");
        let data = vm.data().lock().expect("varmap");
        let mut gs = Vec::new();
        for (name, var) in data.iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("{imp:?}: no gradient for {name}"));
            let n = g
                .abs()
                .and_then(|g| g.max_all())
                .and_then(|g| g.to_scalar::<f32>());
            assert!(n.expect("norm") > 0.0, "{imp:?}: zero gradient for {name}");
            gs.push((name.clone(), g.clone()));
        }
        gs.sort_by(|a, b| a.0.cmp(&b.0));
        per_impl.push(gs);
    }
    let mut worst = 0f32;
    for ((name, a), (_, b)) in per_impl[0].iter().zip(&per_impl[1]) {
        let scale = b
            .abs()
            .and_then(|g| g.max_all())
            .and_then(|g| g.to_scalar::<f32>());
        let rel = max_abs_diff(a, b) / scale.expect("scale").max(1e-6);
        assert!(
            rel < 1e-3,
            "{name}: tiled vs naive gradient differs by {rel} (relative)"
        );
        worst = worst.max(rel);
    }
    println!(
        "{} parameters, worst relative gradient gap tiled vs naive {worst:.2e}",
        per_impl[0].len()
    );
}

/// The pooled-text path (a Tessera extension) starts as a no-op, then carries the caption into the
/// modulation: padding never leaks in and an empty prompt stays finite.
#[test]
fn pooled_text_starts_silent_and_ignores_padding() {
    let dev = Device::Cpu;
    let mut cfg = Config::tiny();
    cfg.num_layers = 1;
    let vm = VarMap::new();
    let pooled = Dit::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).expect("pooled");
    // Randomise all but the pooled path, then build the Wan layout from the same tensors.
    randomise(&vm, |n| !n.contains("text_pooled_embedder"), 0.05);
    let wan_cfg = Config {
        pooled_text: false,
        ..cfg.clone()
    };
    let wan = Dit::new(&wan_cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).expect("wan");
    let x = Tensor::randn(0f32, 1., (2, 16, 2, 4, 4), &dev).expect("latent");
    let t = Tensor::new(&[700f32, 300.], &dev).expect("t");
    let text = Tensor::randn(0f32, 1., (2, 4, 256), &dev).expect("text");
    let mask = Tensor::new(&[[1f32, 1., 0., 0.], [0., 0., 0., 0.]], &dev).expect("mask");
    let run = |m: &Dit, text: &Tensor| m.forward(&x, &t, text, Some(&mask)).expect("forward");
    assert_eq!(max_abs_diff(&run(&pooled, &text), &run(&wan, &text)), 0.0);
    randomise(&vm, |n| n.contains("text_pooled_embedder"), 0.05);
    let out = run(&pooled, &text);
    assert!(
        max_abs_diff(&out, &run(&wan, &text)) > 1e-4,
        "pooled path has no effect"
    );
    let finite = out
        .abs()
        .and_then(|o| o.max_all())
        .and_then(|o| o.to_scalar::<f32>());
    assert!(
        finite.expect("max").is_finite(),
        "empty prompt gave non-finite output"
    );
    // Padding positions (and the all-padding second prompt) may hold anything.
    let noisy_pad = Tensor::cat(
        &[
            text.narrow(1, 0, 2).expect("real"),
            (text.narrow(1, 2, 2).expect("pad") * 7.0).expect("scaled"),
        ],
        1,
    )
    .expect("cat");
    let noisy_pad = Tensor::cat(
        &[
            noisy_pad.narrow(0, 0, 1).expect("first"),
            (noisy_pad.narrow(0, 1, 1).expect("second") * 3.0).expect("scaled"),
        ],
        0,
    )
    .expect("cat");
    assert!(max_abs_diff(&out, &run(&pooled, &noisy_pad)) < 1e-5);
}

#[test]
fn umt5_matches_transformers_tokens_and_states() {
    let dev = Device::Cpu;
    let mut enc = UmT5Encoder::load(
        &fixture("umt5_tiny_config.json"),
        &fixture("umt5_tiny_tokenizer.json"),
        &[fixture("umt5_tiny_weights.safetensors")],
        DType::F32,
        &dev,
    )
    .expect("umT5 fixture loads");
    let io = candle_core::safetensors::load(fixture("umt5_tiny_io.safetensors"), &dev)
        .expect("fixture io");
    let get = |k: &str| io.get(k).unwrap_or_else(|| panic!("fixture lacks {k}"));
    let prompts: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(fixture("umt5_tiny_prompts.json")).expect("prompts"),
    )
    .expect("prompt list");
    let ids = get("input_ids").to_dtype(DType::U32).expect("ids");
    let mask = get("mask");
    let want_ids: Vec<Vec<u32>> = ids.to_vec2().expect("ids");
    let want_mask: Vec<Vec<f32>> = mask.to_vec2().expect("mask");
    for (b, p) in prompts.iter().enumerate() {
        let n = want_mask[b].iter().filter(|&&m| m > 0.5).count();
        assert_eq!(
            enc.tokenize(p).expect("tokenize"),
            want_ids[b][..n],
            "{p:?}"
        );
    }
    let states = enc.forward_ids(&ids, mask).expect("forward");
    let err = max_abs_diff(&states, get("states"));
    println!("umT5 parity: max abs err {err:.3e}");
    assert!(err <= 1e-4, "umT5 states differ by {err}");

    // Through the trait, padded to the longest prompt: the same states.
    enc.pad_to = None;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let out = enc.encode(&refs).expect("encode");
    assert!(max_abs_diff(&out.states, get("states")) <= 1e-4);
    // Wan pads to 512 zero states.
    enc.pad_to = Some(512);
    let out = enc.encode(&[refs[0]]).expect("encode");
    assert_eq!(out.states.dims(), [1, 512, enc.dim()]);
    let real = out
        .mask
        .sum_all()
        .and_then(|m| m.to_scalar::<f32>())
        .expect("mask sum");
    assert_eq!(
        real as usize,
        enc.tokenize(refs[0]).expect("tokenize").len()
    );
}

/// RoPE sees offsets only: on a constant input every token computes the same output. The
/// absolute position path starts silent (zero weights) and, once trained, tells tokens apart by
/// where they sit in the frame — the same places at any resolution.
#[test]
fn absolute_positions_break_translation_symmetry() {
    let dev = Device::Cpu;
    let cfg = Config {
        num_layers: 1,
        abs_pos_embed: true,
        ..Config::tiny()
    };
    let vm = VarMap::new();
    let model = Dit::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).expect("dit");
    randomise(&vm, |n| !n.contains("pos_embedder"), 0.05);
    let t = Tensor::new(&[700f32], &dev).expect("t");
    let text = Tensor::randn(0f32, 1., (1, 4, 256), &dev).expect("text");
    // Per token of the (1, 16, 1, h, w) constant input: the spread of outputs across tokens.
    let spread = |h: usize, w: usize| {
        let x = Tensor::ones((1, 16, 1, h, w), DType::F32, &dev).expect("x");
        let out = model.forward(&x, &t, &text, None).expect("forward");
        let tokens = out
            .reshape((16, h / 2, 2, w / 2, 2))
            .and_then(|o| o.permute((1, 3, 0, 2, 4)))
            .and_then(|o| o.reshape((h * w / 4, 64)))
            .expect("tokens");
        let mean = tokens.mean_keepdim(0).expect("mean");
        max_abs_diff(&tokens, &mean.broadcast_as(tokens.shape()).expect("b"))
    };
    assert!(
        spread(8, 8) < 1e-5,
        "a silent position path changed outputs"
    );
    randomise(&vm, |n| n.contains("pos_embedder"), 0.5);
    assert!(spread(8, 8) > 1e-3, "positions did not reach the output");
    assert!(spread(8, 16) > 1e-3, "another aspect ratio");
}

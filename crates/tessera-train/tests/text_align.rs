//! Text alignment (stage 0 of DiT training) learns what a caption says about its latent.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use tessera_models::text::{SmallTextEncoder, WordTokenizer};
use tessera_train::dit::{dit_config_by_name, text_config_for, DitTrainOptions};
use tessera_train::latents::{LatentItem, LatentSet};
use tessera_train::text_align::{align_text, latent_summary};
use tessera_world::{dense_caption, sample_scene, SampleOptions, Split};

/// World captions with stand-in latents `(4, 3, 4, 4)`: the backdrop's top colour (RGB in
/// channels 0–2) over the upper rows and its bottom colour over the lower rows. Only the caption's
/// first sentence decides them, and telling top from bottom needs word order, which a mean of
/// random token states mostly loses.
fn backdrop_set(n: usize) -> LatentSet {
    let so = SampleOptions {
        width: 32,
        height: 32,
        frames: 9,
        split: Split::Train,
        ..SampleOptions::default()
    };
    let items = (0..n as u64)
        .map(|i| {
            let scene = sample_scene(&so, i).expect("scene");
            let bg = scene.background;
            let mut v = vec![0f32; 4 * 3 * 4 * 4];
            for c in 0..3 {
                for t in 0..3 {
                    for y in 0..4 {
                        let rgb = if y < 2 { bg.top.rgb() } else { bg.bottom.rgb() };
                        for x in 0..4 {
                            v[((c * 3 + t) * 4 + y) * 4 + x] = rgb[c] as f32 / 64.0 - 2.0;
                        }
                    }
                }
            }
            LatentItem {
                latent: Tensor::from_vec(v, (4, 3, 4, 4), &Device::Cpu).expect("latent"),
                caption: dense_caption(&scene),
                alt_caption: None,
            }
        })
        .collect();
    LatentSet::new(items).expect("set")
}

#[test]
fn summary_keeps_first_frame_apart_and_masks_images() {
    let x = Tensor::arange(0f32, 2.0 * 2.0 * 2.0 * 2.0, &Device::Cpu)
        .and_then(|t| t.reshape((2, 2, 2, 2)))
        .expect("x"); // (C, T', h, w): quadrants are single pixels
    let (s, m) = latent_summary(&x, 2).expect("summary");
    let s: Vec<f32> = s.to_vec1().expect("vec");
    // Channel 0: frame 0 = 0..4, frame 1 = 4..8; channel 1: +8.
    assert_eq!(
        s,
        [0., 1., 2., 3., 8., 9., 10., 11., 4., 5., 6., 7., 12., 13., 14., 15.]
    );
    assert_eq!(m.to_vec1::<f32>().expect("mask"), [1f32; 16]);
    let (_, m1) = latent_summary(&x.narrow(1, 0, 1).expect("image"), 2).expect("summary");
    let m1: Vec<f32> = m1.to_vec1().expect("mask");
    assert_eq!(&m1[..8], &[1f32; 8]);
    assert_eq!(&m1[8..], &[0f32; 8]);
    // A 1×1 grid is the per-channel mean; a grid that does not divide the latent is an error.
    let (s1, _) = latent_summary(&x, 1).expect("summary");
    assert_eq!(s1.to_vec1::<f32>().expect("vec"), [1.5, 9.5, 5.5, 13.5]);
    assert!(latent_summary(&x, 3).is_err());
}

#[test]
fn alignment_teaches_the_encoder_which_colour_is_where() {
    let set = backdrop_set(240);
    let captions: Vec<&str> = set.items.iter().map(|i| i.caption.as_str()).collect();
    let tok = WordTokenizer::from_corpus(&captions, 1, 64);
    let tcfg = text_config_for(
        &dit_config_by_name("micro").expect("micro"),
        tok.vocab_size(),
        1,
        64,
    );
    let opts = DitTrainOptions {
        caption_dropout: 0.0,
        ..DitTrainOptions::tiny("unused".into())
    };
    let run = |train_encoder: bool| {
        let vm = VarMap::new();
        let text = SmallTextEncoder::new(
            &tcfg,
            tok.clone(),
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )
        .expect("encoder");
        let vars: Vec<(String, candle_core::Var)> = if train_encoder {
            let data = vm.data().lock().expect("lock");
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            Vec::new() // only the readout learns: what a random encoder's mean state allows
        };
        let mut losses = Vec::new();
        let r = align_text(&text, &vars, &set, &opts, 300, |_, l| losses.push(l)).expect("align");
        assert_eq!(losses.len(), 300);
        r.r2
    };
    let (frozen, aligned) = (run(false), run(true));
    assert!(
        aligned > 0.7 && aligned > frozen + 0.3,
        "held-out R² aligned {aligned:.3}, readout only {frozen:.3}"
    );
}

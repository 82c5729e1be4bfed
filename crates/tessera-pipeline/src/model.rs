//! The model bundle: VAE + DiT + text encoder loaded from one folder.
//!
//! Layout (what the trainer exports; weights may be fp16, compute is f32):
//! ```text
//! DIR/vae/config.json      diffusers AutoencoderKLWan config (with latent mean/std)
//! DIR/vae/model.safetensors            (or diffusion_pytorch_model.safetensors)
//! DIR/dit/config.json      diffusers WanTransformer3DModel config
//! DIR/dit/model.safetensors            (or diffusion_pytorch_model.safetensors)
//! DIR/text/config.json     SmallEncoderConfig
//! DIR/text/model.safetensors
//! DIR/text/tokenizer.json  WordTokenizer (vocabulary, synonyms, max_len)
//! DIR/sampling.json        optional: the model's sampling defaults (crate::Sampling)
//! ```
//!
//! The default model is found by path, not embedded with `include_bytes!`: at up to 40 MB it
//! would be copied into every test and bench binary and relinked on each weight update, while a
//! checkout already holds the folder. [`Model::default_dir`] resolves it with no flag and no
//! download; an installed binary outside the checkout uses `TESSERA_MODEL` or `--model`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tessera_models::dit::{Config as DitConfig, Dit};
use tessera_models::text::{SmallEncoderConfig, SmallTextEncoder, TextEncoder, WordTokenizer};
use tessera_models::vae::{self, AutoencoderKLWan, Config as VaeConfig};

use crate::error::{PipelineError, Result};
use crate::noise::randn;
use crate::request::{Sampling, SAMPLING_FILE};

/// Folder name of the model shipped in the repository.
pub const DEFAULT_MODEL: &str = "tessera-shapes-tiny";

/// Environment variable that overrides the default model folder.
pub const MODEL_ENV: &str = "TESSERA_MODEL";

/// A loaded model: everything generation needs, on one device, in f32.
pub struct Model {
    /// Folder name (or `random-tiny-SEED`), reported in summaries.
    pub name: String,
    pub vae: AutoencoderKLWan,
    pub dit: Dit,
    pub text: Box<dyn TextEncoder + Send + Sync>,
    pub device: Device,
    /// What flags left unset default to ([`Sampling::for_model`]).
    pub sampling: Sampling,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).finish()
    }
}

fn need_file(path: PathBuf, what: &'static str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(PipelineError::ModelFile { path, what })
    }
}

fn weights(dir: &Path, what: &'static str) -> Result<PathBuf> {
    tessera_models::find_weights(dir).ok_or_else(|| PipelineError::ModelFile {
        path: dir.join(tessera_models::WEIGHT_FILES[0]),
        what,
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::ModelJson {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    parse_json(path, &text)
}

/// `text` as `T`; `path` names where it came from in the error.
fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| PipelineError::ModelJson {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

impl Sampling {
    /// The sampling defaults of model folder `dir`: its `sampling.json` over the built-in ones,
    /// or the built-in ones when it has none. Cheap (no weights are read), so flags can be
    /// checked against it before the model loads.
    pub fn for_model(dir: &Path) -> Result<Self> {
        let path = dir.join(SAMPLING_FILE);
        if !path.exists() {
            return Ok(Self::default());
        }
        let bad = |detail: String| PipelineError::Sampling {
            path: path.clone(),
            detail,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let s: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        s.check().map_err(|e| bad(e.to_string()))?;
        Ok(s)
    }
}

impl Model {
    /// The default model folder: `$TESSERA_MODEL`, else `models/tessera-shapes-tiny` of the
    /// workspace this binary was built from, else that path relative to the working directory.
    pub fn default_dir() -> PathBuf {
        if let Some(p) = std::env::var_os(MODEL_ENV).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        if let Some(root) = manifest.ancestors().nth(2) {
            let p = root.join("models").join(DEFAULT_MODEL);
            if p.is_dir() {
                return p;
            }
        }
        PathBuf::from("models").join(DEFAULT_MODEL)
    }

    /// Loads a model folder (layout in the module docs) onto `device`, checking every tensor
    /// name and shape and that the three parts fit together.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(PipelineError::ModelDir {
                path: dir.to_path_buf(),
            });
        }
        // A few bytes: a bad file fails before any weights are read.
        let sampling = Sampling::for_model(dir)?;
        let vae_dir = dir.join("vae");
        let vae_cfg =
            VaeConfig::from_diffusers_json(&need_file(vae_dir.join("config.json"), "VAE config")?)?;
        let vae = AutoencoderKLWan::load(
            &vae_cfg,
            &[weights(&vae_dir, "VAE weights")?],
            DType::F32,
            device,
        )?;
        let dit_dir = dir.join("dit");
        let dit_cfg: DitConfig = read_json(&need_file(dit_dir.join("config.json"), "DiT config")?)?;
        let dit = Dit::load(&dit_cfg, &[weights(&dit_dir, "DiT weights")?], device)?;
        let text_dir = dir.join("text");
        let text_cfg: SmallEncoderConfig = read_json(&need_file(
            text_dir.join("config.json"),
            "text encoder config",
        )?)?;
        let mut tok: WordTokenizer = read_json(&need_file(
            text_dir.join("tokenizer.json"),
            "tokenizer vocabulary",
        )?)?;
        tok.reindex();
        let text = load_text(
            &text_cfg,
            tok,
            &weights(&text_dir, "text encoder weights")?,
            device,
        )?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let mut model = Self::assemble(name, vae, dit, Box::new(text), device.clone())?;
        model.sampling = sampling;
        Ok(model)
    }

    /// A small model with seeded random weights (every layer non-zero, so outputs move): for
    /// tests and benches of the pipeline's plumbing, independent of trained weights.
    pub fn random_tiny(seed: u64) -> Result<Self> {
        Self::random_tiny_time(seed, 4)
    }

    /// [`Self::random_tiny`] with a VAE that compresses time `temporal_factor`× (1, 2 or 4).
    pub fn random_tiny_time(seed: u64, temporal_factor: usize) -> Result<Self> {
        TinyParts::new(seed, temporal_factor)?.build(Device::Cpu)
    }

    /// The default model's architecture (the `docs/configs/` files it was trained from, the
    /// `tiny` text encoder) with seeded random weights: what speed benches measure where the
    /// model folder is absent.
    pub fn random_default_arch(seed: u64) -> Result<Self> {
        let vae_cfg: VaeConfig = parse_json(
            Path::new("docs/configs/vae-tiny-residual-s4-t2-z8.json"),
            include_str!("../../../docs/configs/vae-tiny-residual-s4-t2-z8.json"),
        )?;
        let dit_cfg: DitConfig = parse_json(
            Path::new("docs/configs/dit-tiny-p4-z8.json"),
            include_str!("../../../docs/configs/dit-tiny-p4-z8.json"),
        )?;
        let tok = tiny_tokenizer();
        let text_cfg = SmallEncoderConfig::tiny(tok.vocab_size());
        let parts = TinyParts::with_configs(vae_cfg, dit_cfg, text_cfg, tok, seed)?;
        let mut m = parts.build(Device::Cpu)?;
        m.name = "random-default-arch".into();
        Ok(m)
    }

    /// Writes [`Self::random_tiny`]'s weights (fp16) in the folder layout, for loader tests.
    pub fn save_random_tiny(dir: &Path, seed: u64) -> Result<()> {
        TinyParts::new(seed, 4)?.save(dir)
    }

    fn assemble(
        name: String,
        vae: AutoencoderKLWan,
        dit: Dit,
        text: Box<dyn TextEncoder + Send + Sync>,
        device: Device,
    ) -> Result<Self> {
        let (vc, dc) = (vae.config(), dit.config());
        if vc.z_dim != dc.in_channels || dc.in_channels != dc.out_channels {
            return Err(PipelineError::PartsMismatch {
                what: "VAE latent channels vs DiT in/out channels",
                expected: vc.z_dim,
                got: dc.in_channels,
            });
        }
        // Frame counts are 4k+1 everywhere (requests, windows): the VAE's time steps must fit.
        let tf = vc.temporal_factor();
        if 4 % tf != 0 {
            return Err(PipelineError::TemporalFactor(tf));
        }
        if text.dim() != dc.text_dim {
            return Err(PipelineError::PartsMismatch {
                what: "text encoder width vs DiT text_dim",
                expected: dc.text_dim,
                got: text.dim(),
            });
        }
        Ok(Self {
            name,
            vae,
            dit,
            text,
            device,
            sampling: Sampling::default(),
        })
    }
}

/// Loads the small text encoder strictly: every parameter present with its shape, nothing extra.
fn load_text(
    cfg: &SmallEncoderConfig,
    tok: WordTokenizer,
    path: &Path,
    device: &Device,
) -> Result<SmallTextEncoder> {
    let err = |detail: String| PipelineError::TextWeights {
        path: path.to_path_buf(),
        detail,
    };
    // The expected names and shapes: build once on a scratch VarMap.
    let scratch = VarMap::new();
    SmallTextEncoder::new(
        cfg,
        tok.clone(),
        VarBuilder::from_varmap(&scratch, DType::F32, &Device::Cpu),
    )?;
    let expected: HashMap<String, Vec<usize>> = scratch
        .data()
        .lock()
        .map_err(|_| err("varmap poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let loaded = candle_core::safetensors::load(path, device).map_err(|e| err(e.to_string()))?;
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    for name in names {
        match loaded.get(name) {
            None => return Err(err(format!("missing tensor `{name}`"))),
            Some(t) if t.dims() != expected[name].as_slice() => {
                return Err(err(format!(
                    "tensor `{name}` has shape {:?}, the config expects {:?}",
                    t.dims(),
                    expected[name]
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = loaded.keys().find(|k| !expected.contains_key(*k)) {
        return Err(err(format!("unexpected tensor `{extra}`")));
    }
    let f32s = loaded
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    Ok(SmallTextEncoder::new(
        cfg,
        tok,
        VarBuilder::from_tensors(f32s, DType::F32, device),
    )?)
}

/// Sets every variable of `vm` to seeded values `N(0, 1/fan_in)` (norm gains near 1), in name
/// order so the result depends only on `seed`.
fn seed_varmap(vm: &VarMap, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = vm
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let noise = randn(&mut rng, var.shape().clone(), var.device())?;
        let value = if dims.len() == 1 {
            // Biases small, gains near 1.
            let gain = name.contains("norm") && name.ends_with("weight");
            let centre = if gain { 1.0 } else { 0.0 };
            noise.affine(0.02, centre)?
        } else {
            noise.affine(1.0 / (fan_in as f64).sqrt(), 0.0)?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// The configs and variables behind [`Model::random_tiny`].
struct TinyParts {
    vae_cfg: VaeConfig,
    vae_vm: VarMap,
    dit_cfg: DitConfig,
    dit_vm: VarMap,
    text_cfg: SmallEncoderConfig,
    tok: WordTokenizer,
    text_vm: VarMap,
}

impl TinyParts {
    /// The micro configs of [`Model::random_tiny`].
    fn new(seed: u64, temporal_factor: usize) -> Result<Self> {
        // Wan's geometry (8× space, 4× time) at the smallest widths that still validate; the
        // deepest levels compress time.
        let halvings = temporal_factor.trailing_zeros() as usize;
        let vae_cfg = VaeConfig {
            base_dim: 4,
            z_dim: 4,
            dim_mult: vec![1, 2, 2, 2],
            temperal_downsample: (0..3).map(|i| i + halvings >= 3).collect(),
            latents_mean: vec![0.0; 4],
            latents_std: vec![1.0; 4],
            ..VaeConfig::tiny()
        };
        let dit_cfg = DitConfig {
            num_attention_heads: 2,
            attention_head_dim: 12,
            in_channels: 4,
            out_channels: 4,
            text_dim: 16,
            freq_dim: 32,
            ffn_dim: 48,
            num_layers: 1,
            ..DitConfig::tiny()
        };
        let tok = tiny_tokenizer();
        let text_cfg = SmallEncoderConfig {
            dim: 16,
            num_layers: 1,
            num_heads: 2,
            ffn_dim: 32,
            ..SmallEncoderConfig::tiny(tok.vocab_size())
        };
        Self::with_configs(vae_cfg, dit_cfg, text_cfg, tok, seed)
    }

    fn with_configs(
        vae_cfg: VaeConfig,
        dit_cfg: DitConfig,
        text_cfg: SmallEncoderConfig,
        tok: WordTokenizer,
        seed: u64,
    ) -> Result<Self> {
        let dev = Device::Cpu;
        let vae_vm = vae::init_varmap(&vae_cfg, seed, &dev)?;
        let dit_vm = VarMap::new();
        Dit::new(&dit_cfg, VarBuilder::from_varmap(&dit_vm, DType::F32, &dev))?;
        seed_varmap(&dit_vm, seed.wrapping_add(1))?;
        let text_vm = VarMap::new();
        SmallTextEncoder::new(
            &text_cfg,
            tok.clone(),
            VarBuilder::from_varmap(&text_vm, DType::F32, &dev),
        )?;
        seed_varmap(&text_vm, seed.wrapping_add(2))?;
        Ok(Self {
            vae_cfg,
            vae_vm,
            dit_cfg,
            dit_vm,
            text_cfg,
            tok,
            text_vm,
        })
    }

    fn build(&self, device: Device) -> Result<Model> {
        let vae = AutoencoderKLWan::new(
            &self.vae_cfg,
            VarBuilder::from_varmap(&self.vae_vm, DType::F32, &device),
        )?;
        let dit = Dit::new(
            &self.dit_cfg,
            VarBuilder::from_varmap(&self.dit_vm, DType::F32, &device),
        )?;
        let text = SmallTextEncoder::new(
            &self.text_cfg,
            self.tok.clone(),
            VarBuilder::from_varmap(&self.text_vm, DType::F32, &device),
        )?;
        Model::assemble("random-tiny".to_string(), vae, dit, Box::new(text), device)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let write_json = |path: PathBuf, value: serde_json::Value| -> Result<()> {
            let text =
                serde_json::to_string_pretty(&value).map_err(|e| PipelineError::ModelJson {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            std::fs::write(&path, text).map_err(|e| PipelineError::ModelJson {
                path: path.clone(),
                detail: e.to_string(),
            })
        };
        let to_json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| PipelineError::ModelJson {
                path: dir.to_path_buf(),
                detail: e.to_string(),
            })
        };
        for (part, vm, cfg) in [
            (
                "vae",
                &self.vae_vm,
                to_json(serde_json::to_value(&self.vae_cfg))?,
            ),
            (
                "dit",
                &self.dit_vm,
                to_json(serde_json::to_value(&self.dit_cfg))?,
            ),
            (
                "text",
                &self.text_vm,
                to_json(serde_json::to_value(&self.text_cfg))?,
            ),
        ] {
            let d = dir.join(part);
            std::fs::create_dir_all(&d).map_err(|e| PipelineError::ModelJson {
                path: d.clone(),
                detail: e.to_string(),
            })?;
            let half: HashMap<String, Tensor> = vm
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("varmap poisoned".into()))?
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::F16)?)))
                .collect::<candle_core::Result<_>>()?;
            candle_core::safetensors::save(&half, d.join(tessera_models::WEIGHT_FILES[0]))?;
            write_json(d.join("config.json"), cfg)?;
        }
        write_json(
            dir.join("text").join("tokenizer.json"),
            to_json(serde_json::to_value(&self.tok))?,
        )
    }
}

/// A vocabulary covering the caption grammar's words, so random-weight runs tokenise prompts.
fn tiny_tokenizer() -> WordTokenizer {
    let words = [
        "a",
        "an",
        "the",
        "and",
        "then",
        "in",
        "of",
        "to",
        "is",
        "one",
        "two",
        "three",
        "four",
        "small",
        "medium",
        "large",
        "red",
        "orange",
        "yellow",
        "green",
        "cyan",
        "blue",
        "purple",
        "pink",
        "white",
        "black",
        "circle",
        "circles",
        "square",
        "squares",
        "triangle",
        "triangles",
        "star",
        "stars",
        "ring",
        "rings",
        "diamond",
        "diamonds",
        "cross",
        "crosses",
        "moves",
        "move",
        "bounces",
        "falls",
        "orbits",
        "spins",
        "stays",
        "still",
        "slowly",
        "steadily",
        "quickly",
        "left",
        "right",
        "up",
        "down",
        "upward",
        "downward",
        "top",
        "bottom",
        "center",
        "background",
        "plain",
        "beige",
        "slate",
        "olive",
        "sky",
        "floor",
        "camera",
        "pans",
        "clockwise",
        "counterclockwise",
        "around",
        "heading",
    ];
    WordTokenizer::from_words(words.iter().map(|w| w.to_string()), 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vae_compressing_time_past_4k_plus_1_frames_is_refused() {
        let err = Model::random_tiny_time(3, 8).unwrap_err();
        assert!(matches!(err, PipelineError::TemporalFactor(8)), "{err}");
        assert!(err.to_string().contains("temperal_downsample"), "{err}");
    }

    #[test]
    fn random_tiny_is_deterministic_and_parts_fit() {
        let a = Model::random_tiny(3).unwrap();
        let b = Model::random_tiny(3).unwrap();
        let enc = |m: &Model| {
            m.text
                .encode(&["a red circle"])
                .unwrap()
                .states
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(enc(&a), enc(&b));
        assert_ne!(enc(&a), enc(&Model::random_tiny(4).unwrap()));
    }

    #[test]
    fn missing_folder_and_file_name_the_fix() {
        let err = Model::load(Path::new("/no/such/model"), &Device::Cpu).unwrap_err();
        assert!(matches!(err, PipelineError::ModelDir { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        Model::save_random_tiny(dir.path(), 1).unwrap();
        std::fs::remove_file(dir.path().join("dit/model.safetensors")).unwrap();
        match Model::load(dir.path(), &Device::Cpu).unwrap_err() {
            PipelineError::ModelFile { path, what } => {
                assert!(path.ends_with("dit/model.safetensors"));
                assert_eq!(what, "DiT weights");
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn saved_fp16_round_trips_and_mismatched_tensor_is_named() {
        let dir = tempfile::tempdir().unwrap();
        Model::save_random_tiny(dir.path(), 5).unwrap();
        let loaded = Model::load(dir.path(), &Device::Cpu).unwrap();
        let fresh = Model::random_tiny(5).unwrap();
        let enc = |m: &Model| m.text.encode(&["two blue squares"]).unwrap().states;
        let diff = (enc(&loaded) - enc(&fresh))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 0.05, "fp16 round trip moved text states by {diff}");
        // A text tensor with the wrong shape is named in the error.
        let p = dir.path().join("text/model.safetensors");
        let mut ts = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
        ts.insert(
            "final_norm.weight".into(),
            Tensor::zeros(3, DType::F16, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&ts, &p).unwrap();
        let err = Model::load(dir.path(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("final_norm.weight"), "{err}");
    }

    /// A folder's sampling.json overrides the built-in defaults field by field; a bad value or
    /// an unknown field is an error naming the file, before any weights load.
    #[test]
    fn sampling_defaults_come_from_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        Model::save_random_tiny(dir.path(), 2).unwrap();
        assert_eq!(
            Model::load(dir.path(), &Device::Cpu).unwrap().sampling,
            Sampling::default()
        );
        let file = dir.path().join(SAMPLING_FILE);
        std::fs::write(&file, r#"{"cfg": 2.5, "cfg_interval": [0.2, 0.8]}"#).unwrap();
        let s = Model::load(dir.path(), &Device::Cpu).unwrap().sampling;
        assert_eq!((s.cfg, s.cfg_interval), (2.5, (0.2, 0.8)));
        assert_eq!((s.steps, s.sampler.as_str()), (20, "unipc"));
        for (text, names) in [
            (r#"{"cfg": -1}"#, "cfg scale"),
            (r#"{"cfg_interval": [0.9, 0.2]}"#, "guidance interval"),
            (r#"{"sampler": "ddim"}"#, "ddim"),
            (r#"{"guidance": "pag"}"#, "pag"),
            (r#"{"eta": 2}"#, "eta must be in [0, 1]"),
            (r#"{"eta_until": -0.5}"#, "eta_until must be a noise level"),
            (r#"{"scale": 3}"#, "unknown field `scale`"),
            ("{cfg: 3", "key must be a string"),
        ] {
            std::fs::write(&file, text).unwrap();
            match Sampling::for_model(dir.path()).unwrap_err() {
                e @ PipelineError::Sampling { .. } => {
                    let e = e.to_string();
                    assert!(
                        e.contains("sampling.json") && e.contains(names),
                        "{text}: {e}"
                    );
                }
                e => panic!("{text}: unexpected {e}"),
            }
        }
    }
}

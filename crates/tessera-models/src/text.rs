//! Text conditioning: the [`TextEncoder`] trait the pipeline and trainer use, and the small
//! word-level encoder that ships with the default model (offline, trained jointly with the DiT).
//!
//! The shipped encoder is a pre-LayerNorm transformer over word tokens. Its vocabulary is built
//! from the training captions ([`WordTokenizer::from_corpus`]); prompts worded differently are
//! normalised before lookup: case and punctuation are dropped, digits become number words,
//! paraphrases map to caption words through a synonym table ("crimson ball drops" → "red circle
//! falls") and plurals are reduced when only the singular is known. What is still unknown becomes
//! `[UNK]`, never an error.
//!
//! [`UmT5Encoder`] is the text encoder of the Wan checkpoints (umT5-XXL, frozen): T5 with its own
//! relative position bias in every layer (T5 shares the first layer's), loaded from local
//! `config.json`, `tokenizer.json` and safetensors files. Wan's prompt clean-up (ftfy, whitespace)
//! is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::attention::{attention, AttentionImpl};
use crate::layers::{gelu_tanh, LayerNorm, Linear, RmsNorm};

/// Encoded prompts.
#[derive(Clone, Debug)]
pub struct TextEmbeddings {
    /// `(B, L, D)` token states; padding positions are zero.
    pub states: Tensor,
    /// `(B, L)` f32, 1 for a real token and 0 for padding. An empty prompt is all padding.
    pub mask: Tensor,
}

/// Tokenize + encode, implemented by every text encoder the DiT can be conditioned on.
pub trait TextEncoder {
    /// Encodes a batch of prompts, padded to the longest; over-long prompts are truncated with a
    /// warning, empty ones allowed (unconditional).
    fn encode(&self, prompts: &[&str]) -> std::result::Result<TextEmbeddings, TextError>;
    /// Width `D` of the states.
    fn dim(&self) -> usize;
}

/// What can go wrong building or running a text encoder.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("invalid text encoder config: {0}")]
    Config(String),
    #[error("tokenizer vocabulary has {tokenizer} entries but the encoder was built for {model}; rebuild one from the other")]
    VocabMismatch { tokenizer: usize, model: usize },
    #[error("reading {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// Padding token id: embeds to a masked-out position.
pub const PAD_ID: u32 = 0;
/// Unknown-word token id.
pub const UNK_ID: u32 = 1;

/// Paraphrase → caption word. Applied only when the target is in the vocabulary, so the table
/// is harmless for other datasets.
const SYNONYMS: &[(&str, &str)] = &[
    ("ball", "circle"),
    ("disc", "circle"),
    ("disk", "circle"),
    ("dot", "circle"),
    ("sphere", "circle"),
    ("orb", "circle"),
    ("box", "square"),
    ("block", "square"),
    ("cube", "square"),
    ("rectangle", "square"),
    ("pyramid", "triangle"),
    ("donut", "ring"),
    ("doughnut", "ring"),
    ("hoop", "ring"),
    ("rhombus", "diamond"),
    ("plus", "cross"),
    ("crimson", "red"),
    ("scarlet", "red"),
    ("gold", "yellow"),
    ("golden", "yellow"),
    ("lime", "green"),
    ("emerald", "green"),
    ("aqua", "cyan"),
    ("teal", "cyan"),
    ("turquoise", "cyan"),
    ("navy", "blue"),
    ("azure", "blue"),
    ("violet", "purple"),
    ("magenta", "pink"),
    ("rose", "pink"),
    ("grey", "slate"),
    ("gray", "slate"),
    ("cream", "beige"),
    ("tan", "beige"),
    ("tiny", "small"),
    ("little", "small"),
    ("big", "large"),
    ("huge", "large"),
    ("giant", "large"),
    ("quickly", "fast"),
    ("quick", "fast"),
    ("rapidly", "fast"),
    ("swiftly", "fast"),
    ("slowly", "slow"),
    ("lazily", "slow"),
    ("drops", "falls"),
    ("drop", "fall"),
    ("plummets", "falls"),
    ("sinks", "falls"),
    ("rotates", "spins"),
    ("rotate", "spin"),
    ("twirls", "spins"),
    ("revolves", "orbits"),
    ("circling", "orbits"),
    ("ricochets", "bounces"),
    ("bouncing", "bounces"),
    ("travels", "moves"),
    ("slides", "moves"),
    ("glides", "moves"),
    ("drifts", "moves"),
    ("ground", "floor"),
    ("anticlockwise", "counterclockwise"),
    ("1", "one"),
    ("2", "two"),
    ("3", "three"),
    ("4", "four"),
    ("5", "five"),
    ("6", "six"),
    ("7", "seven"),
    ("8", "eight"),
    ("9", "nine"),
];

/// Word-level tokenizer with paraphrase normalisation; serialised with the model it feeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WordTokenizer {
    /// Index = token id; `[PAD]` and `[UNK]` first.
    words: Vec<String>,
    /// Extra paraphrases on top of the built-in table (dataset-specific).
    #[serde(default)]
    synonyms: BTreeMap<String, String>,
    /// Tokens kept per prompt; longer prompts are truncated with a warning.
    max_len: usize,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl WordTokenizer {
    /// Vocabulary = every word of `captions` seen at least `min_count` times, sorted (so the
    /// same corpus gives the same ids).
    pub fn from_corpus<S: AsRef<str>>(captions: &[S], min_count: usize, max_len: usize) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for c in captions {
            for w in split_words(c.as_ref()) {
                *counts.entry(w).or_default() += 1;
            }
        }
        let words = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count.max(1))
            .map(|(w, _)| w);
        Self::from_words(words, max_len)
    }

    /// Vocabulary from an explicit word list (ids in the given order after `[PAD]`, `[UNK]`).
    pub fn from_words<I: IntoIterator<Item = String>>(words: I, max_len: usize) -> Self {
        let mut all = vec!["[PAD]".to_string(), "[UNK]".to_string()];
        for w in words {
            if !all.contains(&w) {
                all.push(w);
            }
        }
        let mut t = Self {
            words: all,
            synonyms: BTreeMap::new(),
            max_len: max_len.max(1),
            index: HashMap::new(),
        };
        t.reindex();
        t
    }

    /// Rebuilds the lookup table (needed after deserialising).
    pub fn reindex(&mut self) {
        self.index = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
    }

    /// Adds a dataset-specific paraphrase.
    pub fn add_synonym(&mut self, word: &str, canonical: &str) {
        self.synonyms
            .insert(word.to_lowercase(), canonical.to_lowercase());
    }

    pub fn vocab_size(&self) -> usize {
        self.words.len()
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The word behind an id (`[UNK]` for ids out of range).
    pub fn word(&self, id: u32) -> &str {
        self.words.get(id as usize).map_or("[UNK]", String::as_str)
    }

    fn lookup(&self, w: &str) -> Option<u32> {
        if self.index.is_empty() {
            // Deserialised without `reindex`: fall back to a scan rather than mis-tokenise.
            return self.words.iter().position(|x| x == w).map(|i| i as u32);
        }
        self.index.get(w).copied()
    }

    fn synonym(&self, w: &str) -> Option<&str> {
        self.synonyms.get(w).map(String::as_str).or_else(|| {
            SYNONYMS
                .iter()
                .find(|(from, _)| *from == w)
                .map(|(_, to)| *to)
        })
    }

    /// One word → id: exact, synonym, then singular (and its synonym, re-pluralised if the
    /// caption vocabulary has that plural), else `[UNK]`.
    fn word_id(&self, w: &str) -> u32 {
        if let Some(id) = self.lookup(w) {
            return id;
        }
        if let Some(id) = self.synonym(w).and_then(|s| self.lookup(s)) {
            return id;
        }
        for stem in [w.strip_suffix("es"), w.strip_suffix('s')]
            .into_iter()
            .flatten()
        {
            if stem.is_empty() {
                continue;
            }
            let canon = self.synonym(stem).unwrap_or(stem);
            for form in [format!("{canon}s"), format!("{canon}es"), canon.to_string()] {
                if let Some(id) = self.lookup(&form) {
                    return id;
                }
            }
        }
        UNK_ID
    }

    /// Words of `prompt` past the context, which [`Self::tokenize`] drops.
    pub fn overflow(&self, prompt: &str) -> usize {
        split_words(prompt).len().saturating_sub(self.max_len)
    }

    /// Token ids of one prompt, at most `max_len` (extra words are dropped: the encoder warns of
    /// a prompt, a trainer counts its captions once).
    pub fn tokenize(&self, prompt: &str) -> Vec<u32> {
        split_words(prompt)
            .iter()
            .take(self.max_len)
            .map(|w| self.word_id(w))
            .collect()
    }

    /// Ids `(B, L)` u32 and mask `(B, L)` f32 for a batch, padded to the longest prompt (at least
    /// one position, so an all-empty batch is one padding token per prompt).
    pub fn batch(&self, prompts: &[&str], device: &Device) -> Result<(Tensor, Tensor)> {
        let toks: Vec<Vec<u32>> = prompts.iter().map(|p| self.tokenize(p)).collect();
        let len = toks.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = vec![PAD_ID; prompts.len() * len];
        let mut mask = vec![0f32; prompts.len() * len];
        for (b, t) in toks.iter().enumerate() {
            ids[b * len..b * len + t.len()].copy_from_slice(t);
            mask[b * len..b * len + t.len()].fill(1.0);
        }
        Ok((
            Tensor::from_vec(ids, (prompts.len(), len), device)?,
            Tensor::from_vec(mask, (prompts.len(), len), device)?,
        ))
    }
}

/// Lower-case words split at anything that is not a letter or digit ("top-left" → "top",
/// "left"; "up_right" → "up", "right").
fn split_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

/// Hyper-parameters of the shipped encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmallEncoderConfig {
    /// Must equal the tokenizer's vocabulary size.
    pub vocab_size: usize,
    /// Output width; equals the DiT's `text_dim`.
    pub dim: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub ffn_dim: usize,
    /// Positions with a learned embedding; the tokenizer's `max_len` must not exceed it.
    pub max_len: usize,
    pub eps: f64,
}

impl SmallEncoderConfig {
    /// Default for shapes world (a few hundred distinct words).
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            // The tiny DiT's text_dim.
            dim: 256,
            // Two layers resolve "red circle … blue square" bindings; more buys little here.
            num_layers: 2,
            num_heads: 4,
            ffn_dim: 1024,
            // A dense caption is ~60 words; headroom for longer user prompts.
            max_len: 128,
            eps: 1e-6,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), TextError> {
        let bad = |m: String| Err(TextError::Config(m));
        if self.vocab_size < 2 || self.max_len == 0 || self.num_layers == 0 || self.ffn_dim == 0 {
            return bad(format!(
                "vocab_size {} (≥ 2), max_len {}, num_layers {}, ffn_dim {} must be positive",
                self.vocab_size, self.max_len, self.num_layers, self.ffn_dim
            ));
        }
        if self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "dim {} must be a positive multiple of num_heads {}",
                self.dim, self.num_heads
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad(format!("eps {} must be > 0", self.eps));
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct EncoderLayer {
    norm1: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl EncoderLayer {
    fn new(cfg: &SmallEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        let avb = vb.pp("attn");
        Ok(Self {
            norm1: LayerNorm::new(d, cfg.eps, vb.pp("norm1"))?,
            to_q: Linear::load(d, d, avb.pp("to_q"))?,
            to_k: Linear::load(d, d, avb.pp("to_k"))?,
            to_v: Linear::load(d, d, avb.pp("to_v"))?,
            to_out: Linear::load(d, d, avb.pp("to_out"))?,
            norm2: LayerNorm::new(d, cfg.eps, vb.pp("norm2"))?,
            fc1: Linear::load(d, cfg.ffn_dim, vb.pp("mlp.fc1"))?,
            fc2: Linear::load(cfg.ffn_dim, d, vb.pp("mlp.fc2"))?,
            heads: cfg.num_heads,
        })
    }

    /// `x`: `(B, L, D)`, `mask`: `(B, L)`.
    fn forward(&self, x: &Tensor, mask: &Tensor, imp: AttentionImpl) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let hd = d / self.heads;
        let h = self.norm1.forward(x)?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, l, self.heads, hd))?.transpose(1, 2) // (B, H, L, hd)
        };
        let q = split(self.to_q.forward(&h)?)?;
        let k = split(self.to_k.forward(&h)?)?;
        let v = split(self.to_v.forward(&h)?)?;
        let o = attention(&q, &k, &v, Some(mask), imp)?;
        let o = o.transpose(1, 2)?.reshape((b, l, d))?; // (B, L, H·hd)
        let x = (x + self.to_out.forward(&o)?)?;
        let h = self
            .fc2
            .forward(&gelu_tanh(&self.fc1.forward(&self.norm2.forward(&x)?)?)?)?;
        x + h
    }
}

/// The shipped encoder: word embeddings + learned positions → pre-LN transformer → LayerNorm.
/// Every op backpropagates, so it trains with the DiT.
#[derive(Clone, Debug)]
pub struct SmallTextEncoder {
    cfg: SmallEncoderConfig,
    tokenizer: WordTokenizer,
    token_embedding: Embedding,
    position_embedding: Tensor,
    layers: Vec<EncoderLayer>,
    final_norm: LayerNorm,
    attention_impl: AttentionImpl,
}

impl SmallTextEncoder {
    pub fn new(
        cfg: &SmallEncoderConfig,
        tokenizer: WordTokenizer,
        vb: VarBuilder,
    ) -> std::result::Result<Self, TextError> {
        cfg.validate()?;
        if tokenizer.vocab_size() != cfg.vocab_size {
            return Err(TextError::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: cfg.vocab_size,
            });
        }
        if tokenizer.max_len() > cfg.max_len {
            return Err(TextError::Config(format!(
                "tokenizer keeps {} tokens but the encoder has {} positions",
                tokenizer.max_len(),
                cfg.max_len
            )));
        }
        let emb = vb.get_with_hints(
            (cfg.vocab_size, cfg.dim),
            "token_embedding.weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let position_embedding = vb.get_with_hints(
            (cfg.max_len, cfg.dim),
            "position_embedding.weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let layers = (0..cfg.num_layers)
            .map(|i| EncoderLayer::new(cfg, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            tokenizer,
            token_embedding: Embedding::new(emb, cfg.dim),
            position_embedding,
            layers,
            final_norm: LayerNorm::new(cfg.dim, cfg.eps, vb.pp("final_norm"))?,
            attention_impl: AttentionImpl::default(),
        })
    }

    pub fn tokenizer(&self) -> &WordTokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &SmallEncoderConfig {
        &self.cfg
    }

    pub fn set_attention_impl(&mut self, imp: AttentionImpl) {
        self.attention_impl = imp;
    }

    /// Encodes token ids `(B, L)` (u32, `L ≤ max_len`) with their mask `(B, L)` into `(B, L, D)`
    /// states, zero at padding. The training entry point (ids cached per caption).
    pub fn forward_ids(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, l) = ids.dims2()?;
        if l > self.cfg.max_len {
            candle_core::bail!(
                "{l} tokens exceed the encoder's {} positions",
                self.cfg.max_len
            )
        }
        let mut x = self
            .token_embedding
            .forward(ids)?
            .broadcast_add(&self.position_embedding.narrow(0, 0, l)?)?;
        let mask = mask.to_dtype(DType::F32)?;
        for layer in &self.layers {
            x = layer.forward(&x, &mask, self.attention_impl)?;
        }
        self.final_norm
            .forward(&x)?
            .broadcast_mul(&mask.unsqueeze(D::Minus1)?)
    }
}

impl TextEncoder for SmallTextEncoder {
    fn encode(&self, prompts: &[&str]) -> std::result::Result<TextEmbeddings, TextError> {
        let device = self.token_embedding.embeddings().device();
        for p in prompts {
            let dropped = self.tokenizer.overflow(p);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    kept = self.tokenizer.max_len(),
                    "prompt longer than the text encoder's context; truncating"
                );
            }
        }
        let (ids, mask) = self.tokenizer.batch(prompts, device)?;
        let states = self.forward_ids(&ids, &mask)?;
        Ok(TextEmbeddings { states, mask })
    }

    fn dim(&self) -> usize {
        self.cfg.dim
    }
}

// ---------------------------------------------------------------------------------------------
// umT5 (Wan's text encoder)
// ---------------------------------------------------------------------------------------------

/// umT5 encoder hyper-parameters; field names as in transformers' `config.json` (extra fields
/// ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UmT5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Per-head width.
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    /// Distance (tokens) beyond which relative positions share a bucket.
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    /// Only `"gated-gelu"` (umT5) is implemented.
    #[serde(default = "default_ff_proj")]
    pub feed_forward_proj: String,
}

fn default_ff_proj() -> String {
    "gated-gelu".into()
}

impl UmT5Config {
    /// umT5-XXL as used by Wan2.1 (`google/umt5-xxl` encoder).
    pub fn umt5_xxl() -> Self {
        Self {
            vocab_size: 256_384,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10_240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: default_ff_proj(),
        }
    }

    pub fn validate(&self) -> std::result::Result<(), TextError> {
        if self.feed_forward_proj != "gated-gelu" {
            return Err(TextError::Config(format!(
                "feed_forward_proj {:?} unsupported; umT5 uses \"gated-gelu\"",
                self.feed_forward_proj
            )));
        }
        if [
            self.vocab_size,
            self.d_model,
            self.d_kv,
            self.d_ff,
            self.num_heads,
        ]
        .contains(&0)
            || self.relative_attention_num_buckets < 4
        {
            return Err(TextError::Config(format!(
                "degenerate umT5 config {self:?}"
            )));
        }
        Ok(())
    }
}

/// T5's bidirectional relative-position bucket of `key − query` (transformers'
/// `_relative_position_bucket`, computed in f32 like it so bucket edges agree).
fn relative_bucket(rel: i64, num_buckets: usize, max_distance: usize) -> u32 {
    let half = (num_buckets / 2) as i64;
    let base = if rel > 0 { half } else { 0 };
    let dist = rel.abs();
    let max_exact = half / 2;
    if dist < max_exact {
        return (base + dist) as u32;
    }
    let log_ratio = (dist as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (half - max_exact) as f32;
    let large = (max_exact + log_ratio as i64).min(half - 1);
    (base + large) as u32
}

#[derive(Clone, Debug)]
struct UmT5Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `(buckets, heads)`.
    relative_attention_bias: Embedding,
    ff_norm: RmsNorm,
    wi_0: Linear,
    wi_1: Linear,
    wo: Linear,
    heads: usize,
    d_kv: usize,
}

impl UmT5Block {
    fn new(cfg: &UmT5Config, vb: VarBuilder) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.num_heads * cfg.d_kv);
        let avb = vb.pp("layer.0.SelfAttention");
        let fvb = vb.pp("layer.1.DenseReluDense");
        let eps = cfg.layer_norm_epsilon;
        Ok(Self {
            attn_norm: RmsNorm::new(d, eps, vb.pp("layer.0.layer_norm"))?,
            q: Linear::load_no_bias(d, inner, avb.pp("q"))?,
            k: Linear::load_no_bias(d, inner, avb.pp("k"))?,
            v: Linear::load_no_bias(d, inner, avb.pp("v"))?,
            o: Linear::load_no_bias(inner, d, avb.pp("o"))?,
            relative_attention_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                avb.pp("relative_attention_bias"),
            )?,
            ff_norm: RmsNorm::new(d, eps, vb.pp("layer.1.layer_norm"))?,
            wi_0: Linear::load_no_bias(d, cfg.d_ff, fvb.pp("wi_0"))?,
            wi_1: Linear::load_no_bias(d, cfg.d_ff, fvb.pp("wi_1"))?,
            wo: Linear::load_no_bias(cfg.d_ff, d, fvb.pp("wo"))?,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// `x`: `(B, L, D)`; `buckets`: `(L, L)` u32; `mask_bias`: `(B, 1, 1, L)` (0 or −1e30).
    fn forward(&self, x: &Tensor, buckets: &Tensor, mask_bias: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let h = self.attn_norm.forward(x)?;
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, l, self.heads, self.d_kv))?
                .transpose(1, 2)?
                .contiguous() // (B, H, L, d_kv)
        };
        let q = split(self.q.forward(&h)?)?;
        let k = split(self.k.forward(&h)?)?;
        let v = split(self.v.forward(&h)?)?;
        // No 1/√d scaling in T5; the position bias is added to the raw scores.
        let bias = self
            .relative_attention_bias
            .forward(buckets)? // (L, L, H)
            .permute((2, 0, 1))?
            .unsqueeze(0)?; // (1, H, L, L)
        let s = q
            .matmul(&k.t()?)?
            .broadcast_add(&bias)?
            .broadcast_add(mask_bias)?;
        let p = candle_nn::ops::softmax_last_dim(&s.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let o = p
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * self.d_kv))?;
        let x = (x + self.o.forward(&o)?)?;
        let h = self.ff_norm.forward(&x)?;
        let h = (gelu_tanh(&self.wi_0.forward(&h)?)? * self.wi_1.forward(&h)?)?;
        x + self.wo.forward(&h)?
    }
}

/// Wan's text encoder: umT5-XXL's encoder with its SentencePiece tokenizer. Inference only
/// (Wan keeps it frozen; the fused softmax here has no backward pass).
pub struct UmT5Encoder {
    cfg: UmT5Config,
    tokenizer: tokenizers::Tokenizer,
    shared: Embedding,
    blocks: Vec<UmT5Block>,
    final_layer_norm: RmsNorm,
    /// Tokens kept per prompt (Wan: 512).
    pub max_len: usize,
    /// Pad every batch to this many tokens (Wan: 512, zero states); `None` = the longest prompt.
    pub pad_to: Option<usize>,
}

impl UmT5Encoder {
    /// Builds from a tokenizer and weights named as transformers' `UMT5EncoderModel`.
    pub fn new(
        cfg: &UmT5Config,
        tokenizer: tokenizers::Tokenizer,
        vb: VarBuilder,
    ) -> std::result::Result<Self, TextError> {
        cfg.validate()?;
        let name = if vb.contains_tensor("shared.weight") {
            "shared"
        } else {
            "encoder.embed_tokens"
        };
        let shared = candle_nn::embedding(cfg.vocab_size, cfg.d_model, vb.pp(name))?;
        let evb = vb.pp("encoder");
        let blocks = (0..cfg.num_layers)
            .map(|i| UmT5Block::new(cfg, evb.pp(format!("block.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            tokenizer,
            shared,
            blocks,
            final_layer_norm: RmsNorm::new(
                cfg.d_model,
                cfg.layer_norm_epsilon,
                evb.pp("final_layer_norm"),
            )?,
            max_len: 512,
            pad_to: Some(512),
        })
    }

    /// Loads `config.json`, `tokenizer.json` and safetensors shards (e.g. a diffusers Wan
    /// checkpoint's `text_encoder/` and `tokenizer/` folders), computing in `dtype`.
    pub fn load(
        config: &Path,
        tokenizer: &Path,
        weights: &[PathBuf],
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, TextError> {
        let read_err = |path: &Path, msg: String| TextError::Read {
            path: path.to_path_buf(),
            msg,
        };
        let json = std::fs::read_to_string(config).map_err(|e| read_err(config, e.to_string()))?;
        let cfg: UmT5Config =
            serde_json::from_str(&json).map_err(|e| read_err(config, e.to_string()))?;
        let tok = tokenizers::Tokenizer::from_file(tokenizer)
            .map_err(|e| read_err(tokenizer, e.to_string()))?;
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device) }
            .map_err(|e| read_err(weights.first().map_or(Path::new(""), |p| p), e.to_string()))?;
        Self::new(&cfg, tok, vb)
    }

    pub fn config(&self) -> &UmT5Config {
        &self.cfg
    }

    /// Token ids of one prompt with the end-of-sequence token, at most `max_len`.
    pub fn tokenize(&self, prompt: &str) -> std::result::Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer
            .encode(prompt, true)
            .map_err(|e| TextError::Config(format!("tokenizing {prompt:?}: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.max_len {
            tracing::warn!(
                tokens = ids.len(),
                kept = self.max_len,
                "prompt longer than umT5's context; truncating"
            );
            ids.truncate(self.max_len);
        }
        Ok(ids)
    }

    /// Encodes ids `(B, L)` u32 with mask `(B, L)` into `(B, L, d_model)`, zero at padding.
    pub fn forward_ids(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let dev = ids.device();
        let buckets: Vec<u32> = (0..l as i64)
            .flat_map(|q| {
                (0..l as i64).map(move |k| {
                    relative_bucket(
                        k - q,
                        self.cfg.relative_attention_num_buckets,
                        self.cfg.relative_attention_max_distance,
                    )
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, (l, l), dev)?;
        let mut x = self.shared.forward(ids)?;
        let dtype = x.dtype();
        let mask = mask.to_dtype(dtype)?;
        let mask_bias = ((&mask - 1.0)? * 1e30)?.reshape((b, 1, 1, l))?;
        for block in &self.blocks {
            x = block.forward(&x, &buckets, &mask_bias)?;
        }
        self.final_layer_norm
            .forward(&x)?
            .broadcast_mul(&mask.unsqueeze(D::Minus1)?)
    }
}

impl TextEncoder for UmT5Encoder {
    fn encode(&self, prompts: &[&str]) -> std::result::Result<TextEmbeddings, TextError> {
        let toks = prompts
            .iter()
            .map(|p| self.tokenize(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let longest = toks.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let len = self.pad_to.map_or(longest, |p| p.max(longest));
        let mut ids = vec![0u32; prompts.len() * len];
        let mut mask = vec![0f32; prompts.len() * len];
        for (b, t) in toks.iter().enumerate() {
            ids[b * len..b * len + t.len()].copy_from_slice(t);
            mask[b * len..b * len + t.len()].fill(1.0);
        }
        let dev = self.shared.embeddings().device();
        let ids = Tensor::from_vec(ids, (prompts.len(), len), dev)?;
        let mask = Tensor::from_vec(mask, (prompts.len(), len), dev)?;
        let states = self.forward_ids(&ids, &mask)?;
        Ok(TextEmbeddings { states, mask })
    }

    fn dim(&self) -> usize {
        self.cfg.d_model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    const CAPTIONS: &[&str] = &[
        "A plain sky backdrop stands above a checkered beige floor. \
         A large red circle in the top left bounces around quickly, heading down and to the right. \
         Two large blue squares move slowly to the left.",
        "A small green triangle falls to the floor. A yellow star spins clockwise.",
        "Three pink rings orbit the center. A white diamond moves up.",
    ];

    fn tokenizer() -> WordTokenizer {
        WordTokenizer::from_corpus(CAPTIONS, 1, 16)
    }

    fn encoder() -> (SmallTextEncoder, VarMap) {
        let tok = tokenizer();
        let mut cfg = SmallEncoderConfig::tiny(tok.vocab_size());
        cfg.dim = 32;
        cfg.ffn_dim = 64;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        (SmallTextEncoder::new(&cfg, tok, vb).expect("builds"), vm)
    }

    #[test]
    fn paraphrases_tokenize_like_captions() {
        let t = tokenizer();
        let ids = |s: &str| t.tokenize(s);
        assert_eq!(ids("A crimson BALL drops!"), ids("a red circle falls"));
        assert_eq!(ids("2 huge navy boxes"), ids("two large blue squares"));
        assert_eq!(ids("three pink donuts"), ids("three pink rings"));
        assert_eq!(ids("a golden star rotates"), ids("a yellow star spins"));
        let unk = ids("a zebra");
        assert_eq!(unk[1], UNK_ID);
        assert!(!ids("red circle").contains(&UNK_ID));
    }

    #[test]
    fn over_long_prompts_truncate_and_empty_prompts_are_all_padding() -> Result<()> {
        let t = tokenizer();
        let long = "red ".repeat(40);
        assert_eq!(t.tokenize(&long).len(), t.max_len());
        assert_eq!(t.overflow(&long), 40 - t.max_len());
        assert_eq!(t.overflow("red circle"), 0);
        let (ids, mask) = t.batch(&["", "red circle"], &Device::Cpu)?;
        assert_eq!(ids.dims(), [2, 2]);
        assert_eq!(mask.to_vec2::<f32>()?, [[0.0, 0.0], [1.0, 1.0]]);
        let (ids, mask) = t.batch(&[""], &Device::Cpu)?;
        assert_eq!(ids.to_vec2::<u32>()?, [[PAD_ID]]);
        assert_eq!(mask.to_vec2::<f32>()?, [[0.0]]);
        Ok(())
    }

    #[test]
    fn tokenizer_serde_round_trip() {
        let mut t = tokenizer();
        t.add_synonym("Ruby", "red");
        let json = serde_json::to_string(&t).expect("serialises");
        let mut back: WordTokenizer = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.tokenize("ruby ball"), t.tokenize("red circle"));
        back.reindex();
        assert_eq!(back, t);
    }

    #[test]
    fn padding_does_not_leak_and_empty_prompt_is_zero() -> std::result::Result<(), TextError> {
        let (enc, _) = encoder();
        let alone = enc.encode(&["a red circle"])?;
        let batch = enc.encode(&["a red circle", "two large blue squares move slowly", ""])?;
        assert_eq!(batch.states.dims(), [3, 6, 32]);
        let first = batch.states.narrow(0, 0, 1)?.narrow(1, 0, 3)?;
        let diff = (first - &alone.states)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(
            diff < 1e-5,
            "padding changed a real token's state by {diff}"
        );
        let pad = batch.states.narrow(0, 0, 1)?.narrow(1, 3, 3)?;
        assert_eq!(pad.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        let empty = batch.states.narrow(0, 2, 1)?;
        assert_eq!(empty.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        assert_eq!(batch.mask.sum_all()?.to_scalar::<f32>()?, 9.0);
        Ok(())
    }

    #[test]
    fn every_parameter_gets_a_gradient() -> std::result::Result<(), TextError> {
        let (enc, vm) = encoder();
        let out = enc.encode(&["a red circle bounces", "three pink rings"])?;
        let target = Tensor::randn(0f32, 1., out.states.shape(), &Device::Cpu)?;
        let loss = (out.states * target)?.sum_all()?;
        let grads = loss.backward()?;
        for (name, var) in vm.data().lock().expect("varmap").iter() {
            let g = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let n = g.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(n > 0.0, "zero gradient for {name}");
        }
        Ok(())
    }
}

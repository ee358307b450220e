//! Sequential recommenders (SASRec, GRU4Rec) with TF-LLMER's item
//! normalisation: the item table is L2-normalised in every forward pass,
//! both where items are looked up and where they are scored
//! (logits = <h, ê_i>), padding row 0 stays zero and is never scored.
//!
//! SASRec: pre-norm transformer blocks as in shared/reference/sasrec_ref.py,
//! x += drop(attn(LN(x))); x += drop(FFN(LN(x))), FFN = W2·drop(gelu(W1·x)),
//! causal self-attention, learned positions, a final LayerNorm.
//! GRU4Rec: one GRU layer over the (dropped-out) item vectors; with
//! normalised items its states are scaled by a learnable s (init 1/0.07),
//! since a tanh-bounded state cannot sharpen the logits on its own.
//!
//! candle's fused softmax / layer-norm kernels have no backward pass
//! (shared/CANDLE.md): layer norm, GELU, dropout, the masked attention
//! softmax, the item table's normalisation and the output layer with its
//! loss are our own fused ops with a backward (ops/, loss.rs), checked
//! against candle's composite versions; the tests assert that every
//! parameter receives a gradient and check it against finite differences.

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};

use crate::loss::Negatives;
use crate::ops;
use crate::rng::SplitMix64;
use crate::sampling::RowSubset;

pub(crate) const LN_EPS: f32 = 1e-5;

/// The sequence encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backbone {
    /// causal self-attention blocks (Kang & McAuley 2018)
    SasRec,
    /// one GRU layer (Hidasi et al. 2016); its output is bounded (tanh), so
    /// with normalised items the logits get a learnable scale (METHOD.md)
    Gru4Rec,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub backbone: Backbone,
    pub n_items: usize,
    pub dim: usize,
    pub max_len: usize,
    pub layers: usize,
    pub heads: usize,
    pub dropout: f64,
    /// TF-LLMER's item normalisation (false: the plain-SASRec ablation)
    pub normalize: bool,
    pub dtype: DType,
    /// a fixed logit temperature τ: logits = <h, ê_i>/τ. None: SASRec uses
    /// 1, GRU4Rec with normalised items learns its scale (from 1/0.07)
    pub temperature: Option<f64>,
}

impl ModelConfig {
    /// How many numbers the model of this configuration holds (what
    /// `Recommender::new` allocates), or None when that overflows.
    pub fn parameter_count(&self) -> Option<usize> {
        let d = self.dim;
        let dense = |out: usize, inp: usize| out.checked_mul(inp)?.checked_add(out);
        let items = self.n_items.checked_add(1)?.checked_mul(d)?;
        let encoder = match self.backbone {
            Backbone::SasRec => {
                // six dense d×d layers and two layer norms per block
                let block = dense(d, d)?.checked_mul(6)?.checked_add(d.checked_mul(4)?)?;
                let positions = self.max_len.checked_mul(d)?;
                positions.checked_add(block.checked_mul(self.layers)?)?.checked_add(d.checked_mul(2)?)?
            }
            Backbone::Gru4Rec => {
                let gru = dense(d.checked_mul(3)?, d)?.checked_mul(2)?;
                gru.checked_add(usize::from(self.normalize && self.temperature.is_none()))?
            }
        };
        items.checked_add(encoder)
    }
}

/// Initial logit scale of a bounded backbone with normalised items: 1/0.07.
const INITIAL_LOGIT_SCALE: f32 = 1.0 / 0.07;

pub(crate) struct Block {
    pub(crate) ln1: (Var, Var),
    pub(crate) q: (Var, Var),
    pub(crate) k: (Var, Var),
    pub(crate) v: (Var, Var),
    pub(crate) o: (Var, Var),
    pub(crate) ln2: (Var, Var),
    pub(crate) ff1: (Var, Var),
    pub(crate) ff2: (Var, Var),
}

/// A GRU layer with PyTorch's gate layout (r, z, n).
pub(crate) struct Gru {
    pub(crate) input: (Var, Var),
    pub(crate) hidden: (Var, Var),
}

pub(crate) enum Encoder {
    SasRec { pos: Var, blocks: Vec<Block>, ln_final: (Var, Var) },
    Gru4Rec { gru: Gru, logit_scale: Option<Var> },
}

/// A sequential recommender: an item table (normalised in every forward
/// pass when configured) and a sequence encoder.
pub struct Recommender {
    pub config: ModelConfig,
    /// (n_items + 1) × dim; row 0 is padding
    pub item: Var,
    pub(crate) encoder: Encoder,
}

/// Dropout with a mask drawn from our seeded generator (identity when `rng`
/// is None, i.e. in evaluation).
fn dropout(x: &Tensor, p: f64, rng: &mut Option<&mut SplitMix64>) -> Result<Tensor> {
    match rng {
        Some(rng) if p > 0.0 => ops::dropout(x, p, rng),
        _ => Ok(x.clone()),
    }
}

/// x·wᵀ + b over the last dimension (a fused op: candle would broadcast w
/// per sequence and add per-sequence weight gradients in backward).
fn linear(x: &Tensor, (w, b): &(Var, Var)) -> Result<Tensor> {
    ops::linear(x, w.as_tensor(), b.as_tensor())
}

fn layer_norm(x: &Tensor, (w, b): &(Var, Var)) -> Result<Tensor> {
    ops::layer_norm(x, w.as_tensor(), b.as_tensor(), LN_EPS)
}

impl Recommender {
    /// A new model. `init`, when given, holds the starting vectors of items
    /// 1..=n_items (row-major, n_items × dim, e.g. Rec-PCA output); otherwise
    /// item rows start N(0, 0.02²) like the other embeddings.
    pub fn new(config: ModelConfig, init: Option<&[f32]>, rng: &mut SplitMix64) -> Result<Self> {
        let (n, d, dt) = (config.n_items, config.dim, config.dtype);
        if config.backbone == Backbone::SasRec && (config.heads == 0 || d % config.heads != 0) {
            candle_core::bail!("dim {d} is not divisible by heads {}", config.heads);
        }
        let dev = Device::Cpu;
        let var = |values: Vec<f32>, shape: &[usize]| -> Result<Var> {
            Var::from_tensor(&Tensor::from_vec(values, shape, &dev)?.to_dtype(dt)?)
        };
        let mut item_values = vec![0.0f32; d];
        match init {
            Some(rows) if rows.len() == n * d => item_values.extend_from_slice(rows),
            Some(rows) => candle_core::bail!("init has {} values, expected {} × {}", rows.len(), n, d),
            None => item_values.extend(rng.normals(n * d, 0.02)),
        }
        let item = var(item_values, &[n + 1, d])?;
        // PyTorch's defaults: uniform(±1/sqrt(fan_in)) for weights and biases
        let dense = |out: usize, inp: usize, rng: &mut SplitMix64| -> Result<(Var, Var)> {
            let bound = 1.0 / (inp as f64).sqrt();
            Ok((
                var(rng.uniforms(out * inp, -bound, bound), &[out, inp])?,
                var(rng.uniforms(out, -bound, bound), &[out])?,
            ))
        };
        let encoder = match config.backbone {
            Backbone::SasRec => {
                let pos = var(rng.normals(config.max_len * d, 0.02), &[config.max_len, d])?;
                let mut blocks = Vec::with_capacity(config.layers);
                for _ in 0..config.layers {
                    let (q, k, v, o) = (dense(d, d, rng)?, dense(d, d, rng)?, dense(d, d, rng)?, dense(d, d, rng)?);
                    let (ff1, ff2) = (dense(d, d, rng)?, dense(d, d, rng)?);
                    let ln = || -> Result<(Var, Var)> { Ok((var(vec![1.0; d], &[d])?, var(vec![0.0; d], &[d])?)) };
                    blocks.push(Block { ln1: ln()?, q, k, v, o, ln2: ln()?, ff1, ff2 });
                }
                let ln_final = (var(vec![1.0; d], &[d])?, var(vec![0.0; d], &[d])?);
                Encoder::SasRec { pos, blocks, ln_final }
            }
            Backbone::Gru4Rec => {
                // PyTorch's GRU init: uniform(±1/sqrt(hidden)) everywhere
                let gru = Gru { input: dense(3 * d, d, rng)?, hidden: dense(3 * d, d, rng)? };
                let learnable = config.normalize && config.temperature.is_none();
                let logit_scale = if learnable { Some(var(vec![INITIAL_LOGIT_SCALE], &[1])?) } else { None };
                Encoder::Gru4Rec { gru, logit_scale }
            }
        };
        Ok(Self { config, item, encoder })
    }

    /// The same encoder over another item table: `rows` holds items
    /// 1..=n_items of the new table (row-major, n_items × dim; padding row 0
    /// is added). For a model that serves cold-start items beside its
    /// trained ones, and for a warm start over a changed catalogue.
    pub fn with_item_rows(self, n_items: usize, rows: &[f32]) -> Result<Self> {
        let d = self.config.dim;
        if rows.len() != n_items * d {
            candle_core::bail!("item rows have {} values, expected {} × {}", rows.len(), n_items, d);
        }
        let mut values = vec![0.0f32; d];
        values.extend_from_slice(rows);
        let table = Tensor::from_vec(values, &[n_items + 1, d], &Device::Cpu)?.to_dtype(self.config.dtype)?;
        let config = ModelConfig { n_items, ..self.config };
        Ok(Self { config, item: Var::from_tensor(&table)?, encoder: self.encoder })
    }

    /// The stored item rows 1..=n_items (n_items × dim, as f32, before the
    /// forward pass's normalisation).
    pub fn item_rows(&self) -> Result<Vec<f32>> {
        let d = self.config.dim;
        let all = self.item.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(all[d..].to_vec())
    }

    /// Every trainable parameter with a stable name (the model file's keys).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut named = vec![("item".to_string(), self.item.clone())];
        let mut pair = |prefix: String, (w, b): &(Var, Var)| {
            named.push((format!("{prefix}.weight"), w.clone()));
            named.push((format!("{prefix}.bias"), b.clone()));
        };
        let mut extra = Vec::new();
        match &self.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                extra.push(("pos".to_string(), pos.clone()));
                for (i, b) in blocks.iter().enumerate() {
                    for (part, p) in [
                        ("ln1", &b.ln1),
                        ("q", &b.q),
                        ("k", &b.k),
                        ("v", &b.v),
                        ("o", &b.o),
                        ("ln2", &b.ln2),
                        ("ff1", &b.ff1),
                        ("ff2", &b.ff2),
                    ] {
                        pair(format!("blocks.{i}.{part}"), p);
                    }
                }
                pair("ln_final".to_string(), ln_final);
            }
            Encoder::Gru4Rec { gru, logit_scale } => {
                pair("gru.input".to_string(), &gru.input);
                pair("gru.hidden".to_string(), &gru.hidden);
                extra.extend(logit_scale.iter().map(|s| ("logit_scale".to_string(), s.clone())));
            }
        }
        named.extend(extra);
        named
    }

    /// Every trainable parameter.
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The parameters as a safetensors file (the configuration is kept
    /// beside it, by the caller).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let named: Vec<(String, Tensor)> =
            self.named_vars().into_iter().map(|(name, v)| (name, v.as_tensor().clone())).collect();
        safetensors::serialize(named, None).map_err(|e| candle_core::Error::Msg(format!("saving the model: {e}")))
    }

    /// A model of `config` with the parameters of a safetensors file; every
    /// parameter must be present with its shape.
    pub fn from_safetensors(config: ModelConfig, bytes: &[u8]) -> Result<Self> {
        let mut stored = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        // the configuration must describe the file before a model of its
        // size is made: a row edited by hand could otherwise ask for any
        // amount of memory
        let in_file: usize = stored.values().map(|t| t.elem_count()).sum();
        if config.parameter_count() != Some(in_file) {
            candle_core::bail!(
                "the model file holds {in_file} numbers, its configuration (n_items {}, dim {}, max_len {}, layers {}) needs {}",
                config.n_items,
                config.dim,
                config.max_len,
                config.layers,
                config.parameter_count().map_or("more than can be counted".to_string(), |n| n.to_string())
            );
        }
        let model = Self::new(config, None, &mut SplitMix64::new(0))?;
        for (name, var) in model.named_vars() {
            let Some(t) = stored.remove(&name) else { candle_core::bail!("model file lacks {name}") };
            if t.shape() != var.shape() {
                candle_core::bail!("model file has {name} of shape {:?}, expected {:?}", t.shape(), var.shape());
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        Ok(model)
    }

    /// The item table as the model uses it: rows L2-normalised when
    /// `normalize`, row 0 (padding) zero either way.
    pub fn item_table(&self) -> Result<Tensor> {
        // sqrt(‖e‖² + 1e-24) = max(‖e‖, 1e-12) but for rows within 1e-12 of zero
        ops::item_table(self.item.as_tensor(), self.config.normalize)
    }

    /// Hidden states (B × L × dim) for left-padded token sequences
    /// (B × L, u32, 0 = padding), and the item table used. `rng` turns on
    /// dropout (training).
    pub fn forward(&self, seq: &Tensor, rng: Option<&mut SplitMix64>) -> Result<(Tensor, Tensor)> {
        self.forward_with(self.item.as_tensor(), seq, rng)
    }

    /// [`Self::forward`] over `rows` (R × dim, raw rows of the item table,
    /// row 0 the padding row) in place of the whole table: `seq` holds
    /// indices into `rows`. Returns the hidden states and `rows` as the
    /// model uses them (normalised when configured, row 0 zero).
    pub fn forward_with(
        &self,
        rows: &Tensor,
        seq: &Tensor,
        mut rng: Option<&mut SplitMix64>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, l) = seq.dims2()?;
        let d = self.config.dim;
        let table = ops::item_table(rows, self.config.normalize)?;
        let x = table.index_select(&seq.flatten_all()?, 0)?.reshape((b, l, d))?;
        let hidden = match &self.encoder {
            Encoder::SasRec { pos, blocks, ln_final } => {
                let x = x.broadcast_add(&pos.as_tensor().i(0..l)?)?;
                self.attend(seq, dropout(&x, self.config.dropout, &mut rng)?, blocks, ln_final, &mut rng)?
            }
            Encoder::Gru4Rec { gru, logit_scale } => {
                let h = gru_forward(gru, &dropout(&x, self.config.dropout, &mut rng)?)?;
                match logit_scale {
                    // scaling h scales every logit <h, ê_i>
                    Some(s) => h.broadcast_mul(s.as_tensor())?,
                    None => h,
                }
            }
        };
        // a fixed temperature divides every logit <h, ê_i>
        let hidden = match self.config.temperature {
            Some(t) => (hidden / t)?,
            None => hidden,
        };
        Ok((hidden, table))
    }

    fn attend(
        &self,
        seq: &Tensor,
        mut x: Tensor,
        blocks: &[Block],
        ln_final: &(Var, Var),
        rng: &mut Option<&mut SplitMix64>,
    ) -> Result<Tensor> {
        let (b, l) = seq.dims2()?;
        let h = self.config.heads;
        let p = self.config.dropout;
        // query i sees key j == i and the non-padding keys before it
        // (padding positions see only themselves, which keeps every row finite)
        let tokens = seq.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        for block in blocks {
            let y = layer_norm(&x, &block.ln1)?;
            let (q, k, v) = (linear(&y, &block.q)?, linear(&y, &block.k)?, linear(&y, &block.v)?);
            // the attention weights' dropout flags, drawn where the weights were dropped out
            let keep = match rng {
                Some(rng) if p > 0.0 => Some((rng.dropout_keep(b * h * l * l, p), p)),
                _ => None,
            };
            let ctx = ops::attention(&q, &k, &v, &tokens, h, keep)?;
            x = (x + dropout(&linear(&ctx, &block.o)?, p, rng)?)?;
            let y = layer_norm(&x, &block.ln2)?;
            let f = dropout(&ops::gelu_erf(&linear(&y, &block.ff1)?)?, p, rng)?;
            x = (x + dropout(&linear(&f, &block.ff2)?, p, rng)?)?;
        }
        layer_norm(&x, ln_final)
    }

    /// Mean cross-entropy of next-item prediction at every non-padding
    /// position: `targets` (B × L, 0 = no target) against all items.
    pub fn loss(&self, seq: &Tensor, targets: &[u32], rng: Option<&mut SplitMix64>) -> Result<Tensor> {
        self.loss_with(self.item.as_tensor(), seq, targets, Objective::Full, rng)
    }

    /// The training loss over `rows` (raw item rows, row 0 padding; `seq`
    /// and `targets` index them, 0 = padding / no target):
    /// [`Objective::Full`] ranks each target against every row but 0,
    /// [`Objective::Sampled`] against the shared negatives only.
    pub fn loss_with(
        &self,
        rows: &Tensor,
        seq: &Tensor,
        targets: &[u32],
        objective: Objective<'_>,
        rng: Option<&mut SplitMix64>,
    ) -> Result<Tensor> {
        let (hidden, table) = self.forward_with(rows, seq, rng)?;
        let d = self.config.dim;
        let positions: Vec<u32> = (0..targets.len() as u32).filter(|&p| targets[p as usize] > 0).collect();
        let dev = hidden.device();
        let count = positions.len();
        let labels: Vec<u32> = positions.iter().map(|&p| targets[p as usize]).collect();
        let h = hidden.reshape(((), d))?.index_select(&Tensor::from_vec(positions, count, dev)?, 0)?;
        match objective {
            // logits <h, ê_i> over rows 1.., fused with the loss (never stored)
            Objective::Full => {
                let labels: Vec<u32> = labels.iter().map(|&t| t - 1).collect();
                crate::loss::linear_cross_entropy(&h, &table.i(1..)?, &labels)
            }
            Objective::Sampled(negatives) => crate::loss::sampled_cross_entropy(&h, &table, &labels, negatives),
        }
    }

    /// The hidden state after each sequence's last position (B × dim), the
    /// query vector of a recommendation: score(item) = <query, ê_item>.
    /// Reads only the item rows the sequences use.
    pub fn last_hidden(&self, seq: &Tensor) -> Result<Tensor> {
        let tokens = seq.flatten_all()?.to_vec1::<u32>()?;
        if let Some(t) = tokens.iter().find(|&&t| t as usize > self.config.n_items) {
            candle_core::bail!("token {t} is beyond the {} items of the model", self.config.n_items);
        }
        let mut subset = RowSubset::new(self.config.n_items);
        let rows = subset.collect([&tokens[..]]).to_vec();
        let local = Tensor::from_vec(subset.local(&tokens), seq.shape(), seq.device())?;
        let picked =
            self.item.as_tensor().index_select(&Tensor::from_vec(rows.clone(), rows.len(), seq.device())?, 0)?;
        let (hidden, _) = self.forward_with(&picked, &local, None)?;
        let l = hidden.dim(1)?;
        hidden.i((.., l - 1, ..))?.contiguous()
    }

    /// Scores of every token (index 0 = padding, set very low) after each
    /// sequence's last position: B × (n_items + 1).
    pub fn score_last(&self, seq: &Tensor) -> Result<Tensor> {
        self.last_hidden(seq)?.matmul(&self.item_table()?.t()?)
    }
}

/// What the training loss ranks each target against.
#[derive(Clone, Copy, Debug)]
pub enum Objective<'a> {
    /// every item (the full softmax)
    Full,
    /// the sampled softmax's shared negatives (row indices of the rows used)
    Sampled(&'a Negatives),
}

/// σ(x) from composite ops (which all have a backward pass).
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// Runs the GRU over B × L × d inputs from a zero state; returns every
/// step's state, B × L × d (PyTorch's equations and gate order r, z, n).
fn gru_forward(gru: &Gru, x: &Tensor) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let gi = linear(x, &gru.input)?; // B × L × 3d, all steps at once
    let mut h = Tensor::zeros((b, d), x.dtype(), x.device())?;
    let mut states = Vec::with_capacity(l);
    for t in 0..l {
        let gi_t = gi.i((.., t, ..))?;
        let gh = linear(&h, &gru.hidden)?;
        let r = sigmoid(&(gi_t.narrow(1, 0, d)? + gh.narrow(1, 0, d)?)?)?;
        let z = sigmoid(&(gi_t.narrow(1, d, d)? + gh.narrow(1, d, d)?)?)?;
        let n = (gi_t.narrow(1, 2 * d, d)? + r.mul(&gh.narrow(1, 2 * d, d)?)?)?.tanh()?;
        h = ((z.affine(-1.0, 1.0)?.mul(&n))? + z.mul(&h)?)?;
        states.push(h.unsqueeze(1)?);
    }
    Tensor::cat(&states, 1)
}

/// Left-pads (and left-truncates) sequences to `len` tokens: B × len u32.
pub fn left_pad(seqs: &[&[u32]], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; seqs.len() * len];
    for (r, s) in seqs.iter().enumerate() {
        let tail = &s[s.len().saturating_sub(len)..];
        out[r * len + len - tail.len()..(r + 1) * len].copy_from_slice(tail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n_items: usize, normalize: bool, dtype: DType) -> ModelConfig {
        ModelConfig {
            backbone: Backbone::SasRec,
            n_items,
            dim: 8,
            max_len: 6,
            layers: 2,
            heads: 2,
            dropout: 0.0,
            normalize,
            dtype,
            temperature: None,
        }
    }

    fn gru_config(n_items: usize, normalize: bool, dtype: DType) -> ModelConfig {
        ModelConfig { backbone: Backbone::Gru4Rec, ..config(n_items, normalize, dtype) }
    }

    fn batch(rows: &[&[u32]], len: usize) -> Tensor {
        Tensor::from_vec(left_pad(rows, len), (rows.len(), len), &Device::Cpu).unwrap()
    }

    #[test]
    fn parameter_count_is_what_new_allocates() {
        let with_temperature = ModelConfig { temperature: Some(0.1), ..gru_config(7, true, DType::F32) };
        for c in [
            config(10, true, DType::F32),
            gru_config(10, true, DType::F32),
            gru_config(3, false, DType::F32),
            with_temperature,
        ] {
            let m = Recommender::new(c.clone(), None, &mut SplitMix64::new(1)).unwrap();
            let allocated: usize = m.vars().iter().map(|v| v.elem_count()).sum();
            assert_eq!(c.parameter_count(), Some(allocated), "{c:?}");
        }
        let absurd = ModelConfig { layers: usize::MAX / 2, ..config(10, true, DType::F32) };
        assert_eq!(absurd.parameter_count(), None);
    }

    #[test]
    fn a_configuration_that_does_not_match_the_file_is_refused_before_allocating() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(1)).unwrap();
        let bytes = m.to_safetensors().unwrap();
        for edited in [
            ModelConfig { layers: 1_000_000_000, ..config(10, true, DType::F32) },
            ModelConfig { max_len: 2_000_000_000, ..config(10, true, DType::F32) },
            ModelConfig { n_items: usize::MAX, ..config(10, true, DType::F32) },
            ModelConfig { layers: 1, ..config(10, true, DType::F32) },
        ] {
            let err = Recommender::from_safetensors(edited, &bytes).err().expect("refused");
            assert!(err.to_string().contains("the model file holds"), "{err}");
        }
        assert!(Recommender::from_safetensors(config(10, true, DType::F32), &bytes).is_ok());
    }

    #[test]
    fn appended_item_rows_leave_the_trained_items_scores_alone() {
        // cold items after the trained ones: the encoder and the trained
        // rows are the same, so a history of trained items scores them as
        // before, and an appended row scores as its own dot product
        for c in [config(5, true, DType::F32), gru_config(5, false, DType::F32)] {
            let m = Recommender::new(c.clone(), None, &mut SplitMix64::new(3)).unwrap();
            let seq = batch(&[&[1, 4, 2]], c.max_len);
            let before = m.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut rows = m.item_rows().unwrap();
            assert_eq!(rows.len(), 5 * 8);
            let extra: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
            rows.extend_from_slice(&extra);
            let wider = m.with_item_rows(7, &rows).unwrap();
            assert_eq!(wider.config.n_items, 7);
            let after = wider.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(after.len(), 8);
            for (a, b) in before.iter().zip(&after).skip(1) {
                assert!((a - b).abs() < 1e-5, "{c:?}: {a} vs {b}");
            }
            assert!(after[6].is_finite() && after[7].is_finite());
            assert!(wider.with_item_rows(7, &rows[1..]).is_err());
        }
    }

    #[test]
    fn left_pad_keeps_the_latest_items() {
        assert_eq!(left_pad(&[&[1, 2, 3, 4], &[5]], 3), vec![2, 3, 4, 0, 0, 5]);
    }

    #[test]
    fn shapes_and_padding_row() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(1)).unwrap();
        let seq = batch(&[&[1, 2, 3], &[4]], 6);
        let (h, table) = m.forward(&seq, None).unwrap();
        assert_eq!(h.dims(), &[2, 6, 8]);
        assert_eq!(table.dims(), &[11, 8]);
        assert!(table.i(0).unwrap().to_vec1::<f32>().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(m.score_last(&seq).unwrap().dims(), &[2, 11]);
        assert!(h.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn normalised_table_rows_have_unit_length_and_raw_ones_do_not() {
        let init: Vec<f32> = (0..10 * 8).map(|i| (i % 7) as f32 - 2.5).collect();
        for normalize in [true, false] {
            let m = Recommender::new(config(10, normalize, DType::F32), Some(&init), &mut SplitMix64::new(2)).unwrap();
            let norms =
                m.item_table().unwrap().sqr().unwrap().sum(1).unwrap().sqrt().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(norms[0], 0.0);
            let unit = norms[1..].iter().all(|&n| (n - 1.0).abs() < 1e-5);
            assert_eq!(unit, normalize);
        }
    }

    #[test]
    fn positions_do_not_see_the_future() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(3)).unwrap();
        let (a, _) = m.forward(&batch(&[&[1, 2, 3, 4, 5, 6]], 6), None).unwrap();
        let (b, _) = m.forward(&batch(&[&[1, 2, 3, 9, 8, 7]], 6), None).unwrap();
        let prefix = |t: &Tensor| t.i((0, 0..3, ..)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(prefix(&a), prefix(&b));
        let last = |t: &Tensor| t.i((0, 5, ..)).unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(last(&a), last(&b));
    }

    #[test]
    fn padding_does_not_change_real_positions() {
        let m = Recommender::new(config(10, true, DType::F32), None, &mut SplitMix64::new(4)).unwrap();
        // the same history with more or less left padding: only positions
        // (learned, absolute) differ, so compare a model whose positions are zero
        let Encoder::SasRec { pos, .. } = &m.encoder else { unreachable!("a SASRec model") };
        pos.set(&pos.as_tensor().zeros_like().unwrap()).unwrap();
        let (a, _) = m.forward(&batch(&[&[3, 4]], 6), None).unwrap();
        let (b, _) = m.forward(&batch(&[&[3, 4]], 4), None).unwrap();
        let last = |t: &Tensor, l: usize| t.i((0, l - 1, ..)).unwrap().to_vec1::<f32>().unwrap();
        for (x, y) in last(&a, 6).iter().zip(last(&b, 4)) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_it_matches_finite_differences() {
        gradient_check(config(7, true, DType::F64));
        gradient_check(gru_config(7, true, DType::F64));
        gradient_check(gru_config(7, false, DType::F64));
    }

    fn gradient_check(cfg: ModelConfig) {
        let mut rng = SplitMix64::new(5);
        let m = Recommender::new(cfg, None, &mut rng).unwrap();
        let seq = batch(&[&[1, 2, 3, 4], &[5, 6]], 6);
        let targets = left_pad(&[&[2, 3, 4, 7], &[6, 1]], 6);
        let loss = m.loss(&seq, &targets, None).unwrap();
        let grads = loss.backward().unwrap();
        for (i, v) in m.vars().iter().enumerate() {
            assert!(grads.get(v).is_some(), "parameter {i} has no gradient");
        }
        // central differences on a few entries of a few parameters
        let eps = 1e-6;
        let vars = m.vars();
        for v in [&vars[0], &vars[vars.len() / 2], &vars[vars.len() - 2], vars.last().unwrap()] {
            let g = grads.get(v).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for idx in [0usize, base.len() / 2, base.len() - 1] {
                let at = |delta: f64| {
                    let mut p = base.clone();
                    p[idx] += delta;
                    v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap()).unwrap();
                    m.loss(&seq, &targets, None).unwrap().to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap()).unwrap();
                assert!((numeric - g[idx]).abs() <= 1e-6 * (1.0 + numeric.abs()), "∂loss: {} vs {numeric}", g[idx]);
            }
        }
    }

    /// The SASRec loss as candle's composite ops compute it (the model
    /// before the fused ops; dropout masks from the same generator draws).
    fn composite_loss(m: &Recommender, seq: &Tensor, targets: &[u32], mut rng: Option<&mut SplitMix64>) -> Tensor {
        let cfg = &m.config;
        let drop = |x: &Tensor, rng: &mut Option<&mut SplitMix64>| match rng {
            Some(r) if cfg.dropout > 0.0 => {
                let mask = r.dropout_mask(x.elem_count(), cfg.dropout);
                x.mul(&Tensor::from_vec(mask, x.shape(), x.device()).unwrap().to_dtype(x.dtype()).unwrap()).unwrap()
            }
            _ => x.clone(),
        };
        let lin = |x: &Tensor, (w, b): &(Var, Var)| {
            x.broadcast_matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap()
        };
        let ln = |x: &Tensor, (w, b): &(Var, Var)| {
            candle_nn::ops::layer_norm_slow(x, w.as_tensor(), b.as_tensor(), LN_EPS).unwrap()
        };
        let (b, l) = seq.dims2().unwrap();
        let (d, h) = (cfg.dim, cfg.heads);
        let dh = d / h;
        let w = m.item.as_tensor();
        let mut keep = vec![1.0; cfg.n_items + 1];
        keep[0] = 0.0;
        let keep = Tensor::from_vec(keep, (cfg.n_items + 1, 1), &Device::Cpu).unwrap().to_dtype(w.dtype()).unwrap();
        let norm = (w.sqr().unwrap().sum_keepdim(1).unwrap() + 1e-24).unwrap().sqrt().unwrap();
        let table = w.broadcast_div(&norm).unwrap().broadcast_mul(&keep).unwrap();
        let x = table.index_select(&seq.flatten_all().unwrap(), 0).unwrap().reshape((b, l, d)).unwrap();
        let Encoder::SasRec { pos, blocks, ln_final } = &m.encoder else { unreachable!("a SASRec model") };
        let mut x = drop(&x.broadcast_add(&pos.as_tensor().i(0..l).unwrap()).unwrap(), &mut rng);
        let tokens = seq.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let mask = crate::ops::testing::causal_mask(&tokens, b, l).to_dtype(w.dtype()).unwrap();
        for block in blocks {
            let y = ln(&x, &block.ln1);
            let heads = |t: Tensor| t.reshape((b, l, h, dh)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let (q, k, v) = (heads(lin(&y, &block.q)), heads(lin(&y, &block.k)), heads(lin(&y, &block.v)));
            let scores = (q.matmul(&k.t().unwrap()).unwrap() / (dh as f64).sqrt()).unwrap();
            let att = candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), candle_core::D::Minus1).unwrap();
            let att = drop(&att, &mut rng);
            let ctx = att.matmul(&v).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, l, d));
            x = (x + drop(&lin(&ctx.unwrap(), &block.o), &mut rng)).unwrap();
            let y = ln(&x, &block.ln2);
            // gelu_erf from erf (candle's own gelu_erf backward rounds 1/√(2π) to 0.398942)
            let u = lin(&y, &block.ff1);
            let gelu = ((&u * 0.5).unwrap() * ((&u / 2f64.sqrt()).unwrap().erf().unwrap() + 1.0).unwrap()).unwrap();
            let f = drop(&gelu, &mut rng);
            x = (x + drop(&lin(&f, &block.ff2), &mut rng)).unwrap();
        }
        let hidden = ln(&x, ln_final).reshape(((), d)).unwrap();
        let positions: Vec<u32> = (0..targets.len() as u32).filter(|&p| targets[p as usize] > 0).collect();
        let labels: Vec<u32> = positions.iter().map(|&p| targets[p as usize] - 1).collect();
        let n = positions.len();
        let hidden = hidden.index_select(&Tensor::from_vec(positions, n, &Device::Cpu).unwrap(), 0).unwrap();
        let logits = hidden.matmul(&table.i(1..).unwrap().t().unwrap()).unwrap();
        candle_nn::loss::cross_entropy(&logits, &Tensor::from_vec(labels, n, &Device::Cpu).unwrap()).unwrap()
    }

    #[test]
    fn the_fused_model_computes_what_the_composite_one_does() {
        let cfg = ModelConfig { dropout: 0.2, ..config(9, true, DType::F64) };
        let m = Recommender::new(cfg, None, &mut SplitMix64::new(21)).unwrap();
        let seq = batch(&[&[1, 2, 3, 4], &[5, 6], &[7, 8, 9, 1, 2, 3]], 6);
        let targets = left_pad(&[&[2, 3, 4, 7], &[6, 1], &[8, 9, 1, 2, 3, 4]], 6);
        for dropout in [false, true] {
            let (mut r1, mut r2) = (SplitMix64::new(5), SplitMix64::new(5));
            let ours = m.loss(&seq, &targets, dropout.then_some(&mut r1)).unwrap();
            let theirs = composite_loss(&m, &seq, &targets, dropout.then_some(&mut r2));
            let (a, b) = (ours.to_scalar::<f64>().unwrap(), theirs.to_scalar::<f64>().unwrap());
            assert!((a - b).abs() < 1e-12, "loss {a} vs {b}");
            assert_eq!(r1.next_u64(), r2.next_u64(), "the same number of draws");
            let (ga, gb) = (ours.backward().unwrap(), theirs.backward().unwrap());
            for (name, v) in m.named_vars() {
                let flat = |g: &candle_core::backprop::GradStore| {
                    g.get(&v).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
                };
                for (p, q) in flat(&ga).iter().zip(flat(&gb)) {
                    assert!((p - q).abs() <= 1e-10 * (1.0 + q.abs()), "∂{name}: {p} vs {q}");
                }
            }
        }
    }

    #[test]
    fn training_lowers_the_loss_and_is_reproducible() {
        training_run_check(config(12, true, DType::F32));
        training_run_check(gru_config(12, true, DType::F32));
    }

    #[test]
    fn a_saved_model_loads_back_exactly() {
        for cfg in [config(9, true, DType::F32), gru_config(9, true, DType::F32), gru_config(9, false, DType::F32)] {
            let m = Recommender::new(cfg.clone(), None, &mut SplitMix64::new(11)).unwrap();
            let bytes = m.to_safetensors().unwrap();
            let back = Recommender::from_safetensors(cfg.clone(), &bytes).unwrap();
            let seq = batch(&[&[1, 2, 3], &[9]], 6);
            let a = m.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = back.score_last(&seq).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b);
            // a file of another shape is refused
            let other = ModelConfig { dim: 4, heads: 1, ..cfg };
            assert!(Recommender::from_safetensors(other, &bytes).is_err());
            assert!(Recommender::from_safetensors(config(9, true, DType::F32), b"not a model").is_err());
        }
    }

    #[test]
    fn gru4rec_shapes_and_logit_scale() {
        for normalize in [true, false] {
            let m = Recommender::new(gru_config(10, normalize, DType::F32), None, &mut SplitMix64::new(6)).unwrap();
            let (h, _) = m.forward(&batch(&[&[1, 2, 3], &[4]], 6), None).unwrap();
            assert_eq!(h.dims(), &[2, 6, 8]);
            // 1 item table + 2 weight/bias pairs, + the scale when normalised
            assert_eq!(m.vars().len(), 5 + usize::from(normalize));
        }
    }

    #[test]
    fn a_fixed_temperature_divides_the_scores_and_replaces_the_learned_scale() {
        let seq = batch(&[&[1, 2, 3], &[4]], 6);
        for backbone in [Backbone::SasRec, Backbone::Gru4Rec] {
            let plain = ModelConfig { backbone, ..config(10, true, DType::F64) };
            let hot = ModelConfig { temperature: Some(0.25), ..plain.clone() };
            // the same seed gives the same weights (the learned scale takes no random draws)
            let a = Recommender::new(plain, None, &mut SplitMix64::new(8)).unwrap();
            let b = Recommender::new(hot, None, &mut SplitMix64::new(8)).unwrap();
            let sa = a.score_last(&seq).unwrap().to_vec2::<f64>().unwrap();
            let sb = b.score_last(&seq).unwrap().to_vec2::<f64>().unwrap();
            let scale = if backbone == Backbone::Gru4Rec { 1.0 / INITIAL_LOGIT_SCALE as f64 } else { 1.0 };
            for (ra, rb) in sa.iter().zip(&sb) {
                for (x, y) in ra.iter().zip(rb).skip(1) {
                    assert!((x * scale * 4.0 - y).abs() < 1e-9 * (1.0 + y.abs()), "{backbone:?}: {x} vs {y}");
                }
            }
            assert!(!b.named_vars().iter().any(|(n, _)| n == "logit_scale"));
        }
    }

    fn training_run_check(base: ModelConfig) {
        let run = || {
            let mut rng = SplitMix64::new(9);
            let cfg = ModelConfig { dropout: 0.1, ..base.clone() };
            let m = Recommender::new(cfg, None, &mut rng).unwrap();
            let mut opt = <candle_nn::AdamW as candle_nn::Optimizer>::new(
                m.vars(),
                candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
            )
            .unwrap();
            // a deterministic successor pattern: item t is followed by t+1
            let rows: Vec<Vec<u32>> = (0..16).map(|s| (0..7).map(|k| 1 + (s + k) % 12).collect()).collect();
            let inputs: Vec<&[u32]> = rows.iter().map(|r| &r[..6]).collect();
            let outputs: Vec<&[u32]> = rows.iter().map(|r| &r[1..]).collect();
            let seq = Tensor::from_vec(left_pad(&inputs, 6), (16, 6), &Device::Cpu).unwrap();
            let targets = left_pad(&outputs, 6);
            let mut losses = Vec::new();
            for _ in 0..60 {
                let loss = m.loss(&seq, &targets, Some(&mut rng)).unwrap();
                losses.push(loss.to_scalar::<f32>().unwrap());
                candle_nn::Optimizer::backward_step(&mut opt, &loss).unwrap();
            }
            losses
        };
        let losses = run();
        assert!(losses[59] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[59]);
        assert_eq!(losses, run(), "the same seed must give the same run");
    }
}

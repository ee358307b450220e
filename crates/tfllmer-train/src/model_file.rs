//! Reading part of a stored model: where each tensor lies in the model's
//! safetensors bytes (the 8-byte header length, the JSON header, then the
//! data; <https://github.com/huggingface/safetensors#format>), and a model
//! of the encoder alone, made from those tensors without the item table.
//!
//! A backend that serves a model through an item index table needs the
//! encoder (kilobytes to a few megabytes) but not the item table (n_items ×
//! dim floats: 256 MB at 1M × 64); with the layout it reads only the
//! encoder's byte ranges of the stored file.

use std::ops::Range;

use candle_core::{DType, Device, Result, Tensor};

use crate::model::{ModelConfig, Recommender};
use crate::rng::SplitMix64;

/// The name of the item table in a model file.
pub const ITEM_TABLE: &str = "item";

/// The longest header accepted (safetensors' own limit).
const MAX_HEADER: usize = 100_000_000;

/// One tensor of a model file.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// its bytes, as offsets into the whole file
    pub bytes: Range<usize>,
}

/// Where the tensors of a model file lie.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFileLayout {
    pub tensors: Vec<StoredTensor>,
}

/// The length of the JSON header from the file's first 8 bytes; the header
/// occupies bytes 8..8 + len.
pub fn header_len(first8: &[u8]) -> Result<usize> {
    let Some(bytes) = first8.get(..8) else { candle_core::bail!("a model file shorter than 8 bytes") };
    let len = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    match usize::try_from(len) {
        Ok(len) if len <= MAX_HEADER => Ok(len),
        _ => candle_core::bail!("a model file whose header claims {len} bytes"),
    }
}

impl ModelFileLayout {
    /// Parses the header (`header`: bytes 8..8 + header_len of the file).
    pub fn parse(header: &[u8]) -> Result<Self> {
        let start = 8 + header.len();
        let json: serde_json::Value = serde_json::from_slice(header)
            .map_err(|e| candle_core::Error::Msg(format!("a model file's header is not JSON: {e}")))?;
        let Some(entries) = json.as_object() else { candle_core::bail!("a model file's header is not an object") };
        let mut tensors = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            if name == "__metadata__" {
                continue;
            }
            let bad = || candle_core::Error::Msg(format!("a model file's header has a malformed entry for {name}"));
            let dtype = match entry.get("dtype").and_then(|v| v.as_str()).ok_or_else(bad)? {
                "F32" => DType::F32,
                "F64" => DType::F64,
                "F16" => DType::F16,
                "BF16" => DType::BF16,
                other => candle_core::bail!("a model file holds {name} as {other}, not a float type"),
            };
            let numbers = |key: &str| -> Result<Vec<usize>> {
                entry
                    .get(key)
                    .and_then(|v| v.as_array())
                    .ok_or_else(bad)?
                    .iter()
                    .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(bad))
                    .collect()
            };
            let shape = numbers("shape")?;
            let offsets = numbers("data_offsets")?;
            let [from, to] = offsets[..] else { return Err(bad()) };
            let count = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).ok_or_else(bad)?;
            if to < from || count.checked_mul(dtype.size_in_bytes()) != Some(to - from) {
                return Err(bad());
            }
            let bytes = start.checked_add(from).ok_or_else(bad)?..start.checked_add(to).ok_or_else(bad)?;
            tensors.push(StoredTensor { name: name.clone(), dtype, shape, bytes });
        }
        tensors.sort_by_key(|t| t.bytes.start);
        Ok(Self { tensors })
    }

    /// Every tensor but the item table, in file order.
    pub fn encoder_tensors(&self) -> Vec<&StoredTensor> {
        self.tensors.iter().filter(|t| t.name != ITEM_TABLE).collect()
    }
}

/// The encoder of a stored model of `config`, without its item table: a
/// model whose configuration says n_items 0 (its item table is the
/// padding row alone), every other weight from `parts` (the bytes of
/// [`ModelFileLayout::encoder_tensors`], in that order). Score it with
/// [`crate::scorer::Scorer::query_vector_of_rows`], given the history's
/// item rows. Errors: a missing, extra or misshapen tensor.
pub fn encoder_from_parts(config: &ModelConfig, layout: &ModelFileLayout, parts: &[Vec<u8>]) -> Result<Recommender> {
    let encoder = layout.encoder_tensors();
    if encoder.len() != parts.len() {
        candle_core::bail!("{} encoder tensors, {} parts read", encoder.len(), parts.len());
    }
    let config = ModelConfig { n_items: 0, ..config.clone() };
    let model = Recommender::new(config, None, &mut SplitMix64::new(0))?;
    let vars = model.named_vars();
    if vars.len() != encoder.len() + 1 {
        candle_core::bail!(
            "the model file holds {} encoder tensors, its configuration needs {}",
            encoder.len(),
            vars.len() - 1
        );
    }
    for (name, var) in vars {
        if name == ITEM_TABLE {
            continue;
        }
        let Some(i) = encoder.iter().position(|t| t.name == name) else {
            candle_core::bail!("model file lacks {name}")
        };
        let (stored, bytes) = (encoder[i], &parts[i]);
        if stored.shape.as_slice() != var.shape().dims() {
            candle_core::bail!("model file has {name} of shape {:?}, expected {:?}", stored.shape, var.shape());
        }
        let t = Tensor::from_raw_buffer(bytes, stored.dtype, &stored.shape, &Device::Cpu)?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Backbone;
    use crate::scorer::Scorer;

    fn config(backbone: Backbone, normalize: bool) -> ModelConfig {
        ModelConfig {
            backbone,
            n_items: 40,
            dim: 12,
            max_len: 6,
            layers: 2,
            heads: 2,
            dropout: 0.1,
            normalize,
            dtype: DType::F32,
            temperature: None,
        }
    }

    /// What a backend does: the header, then the encoder's ranges only.
    fn encoder_of(bytes: &[u8], config: &ModelConfig) -> Recommender {
        let n = header_len(bytes).unwrap();
        let layout = ModelFileLayout::parse(&bytes[8..8 + n]).unwrap();
        let parts: Vec<Vec<u8>> = layout.encoder_tensors().iter().map(|t| bytes[t.bytes.clone()].to_vec()).collect();
        encoder_from_parts(config, &layout, &parts).unwrap()
    }

    #[test]
    fn the_encoder_alone_gives_the_query_vectors_of_the_whole_model() {
        for (backbone, normalize) in
            [(Backbone::SasRec, true), (Backbone::SasRec, false), (Backbone::Gru4Rec, true), (Backbone::Gru4Rec, false)]
        {
            let cfg = config(backbone, normalize);
            let mut rng = SplitMix64::new(7);
            let whole = Recommender::new(cfg.clone(), None, &mut rng).unwrap();
            let bytes = whole.to_safetensors().unwrap();
            let full = Scorer::from_model(&whole).unwrap();
            let lean = Scorer::from_model(&encoder_of(&bytes, &cfg)).unwrap();
            assert!(lean.memory_bytes() < full.memory_bytes());
            // the rows an index table receives are the scorer's, bit for bit
            let table = Scorer::item_table_of(&whole).unwrap();
            let d = cfg.dim;
            assert!(table[..d].iter().all(|&v| v == 0.0));
            for t in 1..=cfg.n_items as u32 {
                assert_eq!(&table[t as usize * d..(t as usize + 1) * d], full.item_row(t).unwrap());
            }
            for history in [vec![3u32], vec![1, 40, 7, 7, 2], (1..=15).collect::<Vec<u32>>()] {
                let rows: Vec<f32> = history.iter().flat_map(|&t| full.item_row(t).unwrap().to_vec()).collect();
                let expected = full.query_vector(&history).unwrap();
                assert_eq!(lean.query_vector_of_rows(&rows).unwrap(), expected, "{backbone:?} {normalize} {history:?}");
                // and the scores of rows equal the full ranking's
                let scores = full.score_next(&history).unwrap();
                for t in [1u32, 17, 40] {
                    assert_eq!(Scorer::score_row(&expected, full.item_row(t).unwrap()), scores[t as usize]);
                }
            }
            assert_eq!(lean.query_vector_of_rows(&[]), None);
        }
    }

    #[test]
    fn the_layout_names_every_tensor_and_refuses_bad_headers() {
        let cfg = config(Backbone::SasRec, true);
        let whole = Recommender::new(cfg.clone(), None, &mut SplitMix64::new(1)).unwrap();
        let bytes = whole.to_safetensors().unwrap();
        let n = header_len(&bytes).unwrap();
        let layout = ModelFileLayout::parse(&bytes[8..8 + n]).unwrap();
        assert_eq!(layout.tensors.len(), whole.named_vars().len());
        let item = layout.tensors.iter().find(|t| t.name == ITEM_TABLE).unwrap();
        assert_eq!(item.shape, vec![41, 12]);
        assert_eq!(layout.encoder_tensors().len(), layout.tensors.len() - 1);
        assert!(layout.tensors.iter().all(|t| t.bytes.end <= bytes.len()));
        assert!(header_len(&[1, 2, 3]).is_err());
        assert!(header_len(&u64::MAX.to_le_bytes()).is_err());
        assert!(ModelFileLayout::parse(b"[1, 2]").is_err());
        assert!(ModelFileLayout::parse(br#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#).is_err());
        assert!(ModelFileLayout::parse(br#"{"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}"#).is_err());
        // parts of another configuration are refused
        let parts: Vec<Vec<u8>> = layout.encoder_tensors().iter().map(|t| bytes[t.bytes.clone()].to_vec()).collect();
        let wider = ModelConfig { dim: 16, ..cfg.clone() };
        assert!(encoder_from_parts(&wider, &layout, &parts).is_err());
        let gru = config(Backbone::Gru4Rec, true);
        assert!(encoder_from_parts(&gru, &layout, &parts).is_err());
        assert!(encoder_from_parts(&cfg, &layout, &parts[1..]).is_err());
    }
}

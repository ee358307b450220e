//! The stored form of a reduced embedding set (one byte string).
//!
//! Layout (little-endian): magic b"TFEM", format version u32, n_items u64,
//! dim u32, item ids n × i64 (ascending), values n × dim f32 (row-major,
//! row r belongs to ids[r]): 8 + 4·dim bytes per item. Version 2 (0.5.0)
//! adds Rec-PCA's projection after the values: input width D u32 (0 when
//! there is none), then μ as D × f64 and W as D × dim f64 (row-major);
//! version 1 blobs (no projection) still decode.

use std::fmt;

use crate::rec_pca::Projection;

const MAGIC: &[u8; 4] = b"TFEM";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 4 + 4 + 8 + 4;

/// Item ids (ascending) and their vectors, row-major; with the projection
/// that made them when there is one (embeddings stored before 0.5.0 have
/// none).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEmbedding {
    pub ids: Vec<i64>,
    pub dim: usize,
    pub values: Vec<f32>,
    pub projection: Option<Projection>,
}

impl StoredEmbedding {
    /// Sorts rows by item id, so that stored embeddings list items in order.
    pub fn sorted(ids: Vec<i64>, dim: usize, values: Vec<f32>) -> Self {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by_key(|&r| ids[r]);
        let sorted_ids = order.iter().map(|&r| ids[r]).collect();
        let mut sorted_values = Vec::with_capacity(values.len());
        for &r in &order {
            sorted_values.extend_from_slice(&values[r * dim..(r + 1) * dim]);
        }
        Self { ids: sorted_ids, dim, values: sorted_values, projection: None }
    }

    /// With the projection that produced the rows.
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = Some(projection);
        self
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.dim..(r + 1) * self.dim]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored embedding is corrupt: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

pub fn encode(e: &StoredEmbedding) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + e.ids.len() * 8 + e.values.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(e.ids.len() as u64).to_le_bytes());
    out.extend_from_slice(&(e.dim as u32).to_le_bytes());
    for id in &e.ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for v in &e.values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match &e.projection {
        None => out.extend_from_slice(&0u32.to_le_bytes()),
        Some(p) => {
            out.extend_from_slice(&(p.input_dim() as u32).to_le_bytes());
            for v in p.mean.iter().chain(&p.components) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<StoredEmbedding, CodecError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(CodecError("not a tfllmer embedding".into()));
    }
    let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let version = u32_at(4);
    if version != 1 && version != VERSION {
        return Err(CodecError(format!("unknown format version {version}")));
    }
    let n = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or([0; 8]));
    let dim = u32_at(16) as usize;
    let rows_end =
        usize::try_from(n).ok().and_then(|n| n.checked_mul(8 + 4 * dim)).and_then(|body| body.checked_add(HEADER_LEN));
    let Some(rows_end) = rows_end.filter(|&end| end <= bytes.len()) else {
        return Err(CodecError("length does not match the header".into()));
    };
    let n = n as usize;
    let body = &bytes[HEADER_LEN..rows_end];
    let ids: Vec<i64> =
        body[..n * 8].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(CodecError("item ids are not ascending".into()));
    }
    let values = body[n * 8..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let projection = if version == 1 {
        if rows_end != bytes.len() {
            return Err(CodecError("length does not match the header".into()));
        }
        None
    } else {
        decode_projection(&bytes[rows_end..], dim)?
    };
    Ok(StoredEmbedding { ids, dim, values, projection })
}

/// The projection part of a version 2 blob (all of the bytes after the rows).
fn decode_projection(bytes: &[u8], dim: usize) -> Result<Option<Projection>, CodecError> {
    let Some(width) = bytes.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return Err(CodecError("length does not match the header".into()));
    };
    let values = width.checked_mul(dim + 1);
    if values.and_then(|v| v.checked_mul(8)).and_then(|b| b.checked_add(4)) != Some(bytes.len()) {
        return Err(CodecError("the projection's length does not match its width".into()));
    }
    if width == 0 {
        return Ok(None);
    }
    let floats: Vec<f64> =
        bytes[4..].chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    if floats.iter().any(|v| !v.is_finite()) {
        return Err(CodecError("the projection holds a value that is not finite".into()));
    }
    let (mean, components) = floats.split_at(width);
    Ok(Some(Projection::from_parts(mean.to_vec(), components.to_vec(), dim)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_sorted_by_id() {
        let e = StoredEmbedding::sorted(vec![30, -2, 7], 2, vec![3.0, 3.5, -2.0, -2.5, 7.0, 7.5]);
        assert_eq!(e.ids, vec![-2, 7, 30]);
        assert_eq!(e.row(0), &[-2.0, -2.5]);
        assert_eq!(e.row(2), &[3.0, 3.5]);
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        // with a projection (D = 3 to dim 2)
        let p = Projection::from_parts(vec![0.1, 0.2, 0.3], vec![1.0, 0.0, 0.0, 1.0, 0.5, -0.5], 2);
        let with = e.clone().with_projection(p);
        assert_eq!(decode(&encode(&with)).unwrap(), with);
    }

    #[test]
    fn version_1_blobs_still_decode() {
        // the 0.4.0 layout: no projection part
        let e = StoredEmbedding::sorted(vec![4, 9], 2, vec![1.0, 2.0, 3.0, 4.0]);
        let mut v1 = encode(&e);
        v1.truncate(v1.len() - 4);
        v1[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&v1).unwrap(), e);
        // a version 1 blob with bytes after its rows is corrupt
        v1.push(0);
        assert!(decode(&v1).is_err());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let bytes = encode(&StoredEmbedding::sorted(vec![1, 2], 3, vec![0.0; 6]));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
        let mut swapped = bytes.clone();
        swapped[HEADER_LEN] = 9; // first id 9 > second id 2
        assert!(decode(&swapped).is_err());
        let mut huge = bytes;
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        // a projection cut short, or with a NaN
        let p = Projection::from_parts(vec![0.0; 3], vec![0.5; 9], 3);
        let with = encode(&StoredEmbedding::sorted(vec![1, 2], 3, vec![0.0; 6]).with_projection(p));
        for cut in 1..(4 + 8 * 12) {
            assert!(decode(&with[..with.len() - cut]).is_err());
        }
        let mut nan = with.clone();
        let at = nan.len() - 8;
        nan[at..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode(&nan).is_err());
    }
}

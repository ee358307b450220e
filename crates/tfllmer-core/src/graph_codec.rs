//! The stored form of a co-occurrence graph: one compact byte string.
//!
//! Layout (LEB128 varints unless noted):
//! ```text
//! magic b"TFGR"   format version (u32 LE, = 1)   flags (u8: bit 0 = integer weights)
//! n_items   nnz                              (nnz = undirected edges)
//! items     first id zigzag, then gaps       (ascending item ids)
//! degrees   n_items counts                   (edges per row of the upper triangle)
//! columns   per row: first column - row, then gaps (all >= 1)
//! weights   varints if integer, else f64 LE each
//! ```
//! Gaps between sorted columns and small integer counts take one or two
//! bytes each, so ML-1M with window 3 (886k edges) stores in about 2 MB,
//! against 12 bytes per edge for plain CSR arrays.

use std::fmt;

use sprs::CsMat;

use crate::graph::CooccurrenceGraph;

const MAGIC: &[u8; 4] = b"TFGR";
const VERSION: u32 = 1;
const INTEGER_WEIGHTS: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stored graph is corrupt: {}", self.0)
    }
}

impl std::error::Error for CodecError {}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Weights that are whole numbers (counts) are stored as varints.
fn all_integer(weights: &[f64]) -> bool {
    weights.iter().all(|&w| w >= 0.0 && w.fract() == 0.0 && w < 9.0e15)
}

pub fn encode(graph: &CooccurrenceGraph) -> Vec<u8> {
    let n = graph.items.len();
    let upper = &graph.upper;
    let weights = upper.data();
    let integer = all_integer(weights);
    let mut out = Vec::with_capacity(16 + n * 3 + upper.nnz() * if integer { 3 } else { 10 });
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(if integer { INTEGER_WEIGHTS } else { 0 });
    put_varint(&mut out, n as u64);
    put_varint(&mut out, upper.nnz() as u64);
    let mut previous = None;
    for &item in &graph.items {
        match previous {
            None => put_varint(&mut out, zigzag(item)),
            Some(p) => put_varint(&mut out, item.wrapping_sub(p) as u64),
        }
        previous = Some(item);
    }
    for row in upper.outer_iterator() {
        put_varint(&mut out, row.nnz() as u64);
    }
    for (row, vec) in upper.outer_iterator().enumerate() {
        let mut last = row;
        for &col in vec.indices() {
            put_varint(&mut out, (col - last) as u64);
            last = col;
        }
    }
    for &w in weights {
        if integer {
            put_varint(&mut out, w as u64);
        } else {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, len: usize, what: &str) -> Result<&[u8], CodecError> {
        if self.bytes.len() < len {
            return Err(CodecError(format!("truncated in {what}")));
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self, what: &str) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first().ok_or_else(|| CodecError(format!("truncated in {what}")))?;
            self.bytes = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError(format!("overlong number in {what}")))
    }

    /// A count that cannot exceed what the remaining bytes could hold.
    fn count(&mut self, what: &str) -> Result<usize, CodecError> {
        let v = self.varint(what)?;
        usize::try_from(v)
            .ok()
            .filter(|&c| c <= self.bytes.len())
            .ok_or_else(|| CodecError(format!("impossible {what}")))
    }
}

pub fn decode(bytes: &[u8]) -> Result<CooccurrenceGraph, CodecError> {
    let mut r = Reader { bytes };
    if r.take(4, "magic")? != MAGIC {
        return Err(CodecError("not a tfllmer graph".into()));
    }
    let version = u32::from_le_bytes(r.take(4, "version")?.try_into().unwrap_or([0; 4]));
    if version != VERSION {
        return Err(CodecError(format!("unknown format version {version}")));
    }
    let integer = r.take(1, "flags")?[0] & INTEGER_WEIGHTS != 0;
    let n = r.count("item count")?;
    let nnz = r.count("edge count")?;

    let mut items: Vec<i64> = Vec::with_capacity(n);
    for _ in 0..n {
        let v = r.varint("items")?;
        let item = match items.last() {
            None => unzigzag(v),
            Some(&previous) => i64::try_from(v)
                .ok()
                .filter(|&gap| gap >= 1)
                .and_then(|gap| previous.checked_add(gap))
                .ok_or_else(|| CodecError("item ids are not ascending".into()))?,
        };
        items.push(item);
    }
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0usize);
    for _ in 0..n {
        let degree = r.count("degrees")?;
        indptr.push(indptr[indptr.len() - 1] + degree);
    }
    if indptr[n] != nnz {
        return Err(CodecError("degrees do not add up to the edge count".into()));
    }
    let mut indices = Vec::with_capacity(nnz);
    for row in 0..n {
        let mut col = row;
        for _ in indptr[row]..indptr[row + 1] {
            let gap = r.varint("columns")?;
            col = usize::try_from(gap)
                .ok()
                .filter(|&g| g >= 1)
                .and_then(|g| col.checked_add(g))
                .filter(|&c| c < n)
                .ok_or_else(|| CodecError("an edge is out of range or not in the upper triangle".into()))?;
            indices.push(col);
        }
    }
    let mut data = Vec::with_capacity(nnz);
    for _ in 0..nnz {
        data.push(if integer {
            r.varint("weights")? as f64
        } else {
            f64::from_le_bytes(r.take(8, "weights")?.try_into().unwrap_or([0; 8]))
        });
    }
    if !r.bytes.is_empty() {
        return Err(CodecError("trailing bytes".into()));
    }
    let upper = CsMat::try_new((n, n), indptr, indices, data)
        .map_err(|(_, _, _, e)| CodecError(format!("invalid CSR structure: {e}")))?;
    Ok(CooccurrenceGraph { items, upper })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{build, Event, GraphParams, Weighting};

    fn sample(weighting: Weighting) -> CooccurrenceGraph {
        let events = [(1, 10), (1, 20), (1, 30), (2, 30), (2, 10), (3, -5), (3, 20), (3, 1 << 40)]
            .iter()
            .enumerate()
            .map(|(t, &(user, item))| Event { user, time: t as i64, item })
            .collect();
        let params = GraphParams { holdout: 0, window_size: 2, weighting, ..GraphParams::default() };
        build(events, &params).unwrap().0
    }

    #[test]
    fn round_trip_is_exact_for_counts_and_fractions() {
        for weighting in [Weighting::Count, Weighting::InverseDistance] {
            let g = sample(weighting);
            assert_eq!(decode(&encode(&g)).unwrap(), g);
        }
        // counts take one byte per weight, fractions eight
        let counts = encode(&sample(Weighting::Count)).len();
        let fractions = encode(&sample(Weighting::InverseDistance)).len();
        assert_eq!(fractions - counts, sample(Weighting::Count).n_edges() * 7);
    }

    #[test]
    fn an_empty_graph_round_trips() {
        let g = CooccurrenceGraph { items: vec![-3, 7], upper: CsMat::zero((2, 2)) };
        assert_eq!(decode(&encode(&g)).unwrap(), g);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let bytes = encode(&sample(Weighting::InverseDistance));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // every single-byte change either decodes to a valid graph or errors
        for i in 9..bytes.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(g) = decode(&b) {
                    assert!(g.items.windows(2).all(|w| w[0] < w[1]));
                    assert!(g.upper.outer_iterator().enumerate().all(|(r, v)| v.indices().iter().all(|&c| c > r)));
                }
            }
        }
    }
}

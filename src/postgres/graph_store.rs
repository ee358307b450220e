//! The catalog table `tfllmer.graph_store`: one row per graph, its CSR blob
//! included. Row-level security on it (sql/bootstrap.sql) shows each role
//! only the graphs of roles it belongs to, so every query here runs as the
//! caller and sees exactly what the caller may see.

use pgrx::prelude::*;
use tfllmer_core::graph::{GraphParams};
use tfllmer_core::graph_codec;
use tfllmer_core::CooccurrenceGraph;

use super::errors::{raise, Code};
use super::interactions::InteractionSource;

fn spi_failed(e: pgrx::spi::Error) -> ! {
    raise(Code::ERRCODE_INTERNAL_ERROR, format!("tfllmer catalog access failed: {e}"))
}

/// Whether a graph of that name is visible to the caller.
pub fn exists(graph_name: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM tfllmer.graph_store WHERE graph_name = $1)",
        &[graph_name.into()],
    )
    .unwrap_or_else(|e| spi_failed(e))
    .unwrap_or(false)
}

/// Deletes the caller's graph; false when there is none.
pub fn delete(graph_name: &str) -> bool {
    Spi::get_one_with_args::<i64>(
        "WITH gone AS (DELETE FROM tfllmer.graph_store WHERE graph_name = $1 RETURNING 1) SELECT count(*) FROM gone",
        &[graph_name.into()],
    )
    .unwrap_or_else(|e| spi_failed(e))
    .unwrap_or(0)
        > 0
}

pub struct NewGraph<'a> {
    pub graph_name: &'a str,
    pub source: &'a InteractionSource,
    pub params: &'a GraphParams,
    pub graph: &'a CooccurrenceGraph,
    pub n_users: i64,
    pub build_ms: f64,
}

/// Stores a graph owned by the current role. Returns false when the name is
/// already taken by a graph the caller cannot see (another role's).
pub fn insert(new: &NewGraph) -> bool {
    let blob = graph_codec::encode(new.graph);
    let p = new.params;
    let inserted = Spi::get_one_with_args::<i64>(
        "WITH added AS (
            INSERT INTO tfllmer.graph_store (graph_name, owner, source_table, source_name,
                user_column, item_column, time_column, window_size, holdout, weighting, damping,
                top_k, n_users, n_items, n_edges, total_weight, build_ms, csr)
            VALUES ($1, tfllmer.current_role_oid(), $2, $3, $4, $5, $6, $7, $8, $9, $10,
                $11, $12, $13, $14, $15, $16, $17)
            ON CONFLICT (graph_name) DO NOTHING
            RETURNING 1)
         SELECT count(*) FROM added",
        &[
            new.graph_name.into(),
            new.source.relation.oid.into(),
            new.source.relation.display.as_str().into(),
            new.source.user.name.as_str().into(),
            new.source.item.name.as_str().into(),
            new.source.time.name.as_str().into(),
            (p.window_size as i32).into(),
            i32::try_from(p.holdout).unwrap_or(i32::MAX).into(),
            p.weighting.name().into(),
            p.damping.name().into(),
            p.top_k.map(|k| i32::try_from(k).unwrap_or(i32::MAX)).into(),
            new.n_users.into(),
            (new.graph.n_items() as i64).into(),
            (new.graph.n_edges() as i64).into(),
            new.graph.total_weight().into(),
            new.build_ms.into(),
            blob.as_slice().into(),
        ],
    )
    .unwrap_or_else(|e| spi_failed(e))
    .unwrap_or(0);
    inserted > 0
}

/// Loads a graph the caller can see, or raises "does not exist".
pub fn load(graph_name: &str) -> CooccurrenceGraph {
    let blob = Spi::get_one_with_args::<Vec<u8>>(
        "SELECT (SELECT csr FROM tfllmer.graph_store WHERE graph_name = $1)",
        &[graph_name.into()],
    )
    .unwrap_or_else(|e| spi_failed(e));
    let Some(blob) = blob else { raise_unknown(graph_name) };
    graph_codec::decode(&blob).unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("graph \"{graph_name}\": {e}")))
}

/// The ERROR for a graph name that the caller cannot see.
pub fn raise_unknown(graph_name: &str) -> ! {
    raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("graph \"{graph_name}\" does not exist"))
}

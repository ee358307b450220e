//! Rec-PCA on stored LLM embeddings: `rec_pca`, `embedding`,
//! `drop_embedding` (the `embeddings` view is in sql/bootstrap.sql).

use std::time::Instant;

use pgrx::prelude::*;
use tfllmer_core::embedding_codec::{self, StoredEmbedding};
use tfllmer_core::rec_pca::{self, Krylov, Method, RecPcaError, RecPcaOutput, RecPcaParams};

use crate::api::graphs::load_graph;
use crate::postgres::backend::require_primary;
use crate::postgres::catalog::EMBEDDINGS;
use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::item_vectors::{StreamedVectors, VectorSource};
use crate::postgres::relation::readable_relation;
use crate::postgres::sql_types::{RegClass, SqlName};

/// Inputs of at least this many values (items × input dim) report their
/// phases as NOTICEs; smaller ones only at DEBUG1.
const LARGE_INPUT: usize = 50_000_000;

fn rec_pca_error(e: RecPcaError) -> ! {
    if let RecPcaError::Rank { rank, .. } = e {
        let hint = if rank == 0 {
            "Every embedding points the same way: there is no variance to keep.".to_string()
        } else {
            format!("Pass dim => {rank} or less, or embeddings that differ in more directions.")
        };
        raise_with_hint(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("dim: {e}"), hint);
    }
    let code = match e {
        RecPcaError::Dim { .. } | RecPcaError::Lambda(_) => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        RecPcaError::NotFinite { .. } => Code::ERRCODE_FLOATING_POINT_EXCEPTION,
        RecPcaError::DuplicateItem(_) => Code::ERRCODE_UNIQUE_VIOLATION,
        RecPcaError::Empty | RecPcaError::Ragged { .. } => Code::ERRCODE_DATA_EXCEPTION,
        RecPcaError::Eigen | RecPcaError::Rank { .. } => Code::ERRCODE_INTERNAL_ERROR,
        // the table changed under a read-only snapshot: not expected
        RecPcaError::Source(_) => Code::ERRCODE_DATA_CORRUPTED,
    };
    let argument = match e {
        RecPcaError::Dim { .. } => "",
        RecPcaError::Lambda(_) => "",
        _ => "embedding_column: ",
    };
    raise(code, format!("{argument}{e}"))
}

/// What rec_pca returns (written out in the #[pg_extern]s: pgrx's SQL
/// generator does not resolve type aliases).
type RecPcaRow = TableIterator<
    'static,
    (
        name!(embedding_name, String),
        name!(n_items, i64),
        name!(input_dim, i32),
        name!(output_dim, i32),
        name!(retained_variance, f64),
        name!(graph_tv_pca, Option<f64>),
        name!(graph_tv, Option<f64>),
        name!(build_ms, f64),
    ),
>;

/// Reduces the LLM embeddings of `items` to `dim` dimensions with Rec-PCA
/// over the co-occurrence graph `graph_name` (NULL: plain PCA) and stores
/// the result under `embedding_name`, owned by the current role. `method`:
/// 'exact', 'randomized' or 'auto' (docs/sql-reference.md).
///
/// (Its C symbol is new in 0.4.0: the 8-argument `rec_pca_wrapper` below
/// keeps the definitions of earlier versions working with this library
/// until ALTER EXTENSION UPDATE.)
#[pg_extern(name = "rec_pca", volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn rec_pca_with_method(
    embedding_name: Option<&str>,
    items: Option<RegClass>,
    id_column: default!(Option<SqlName>, "'item_id'"),
    embedding_column: default!(Option<SqlName>, "'embedding'"),
    graph_name: default!(Option<&str>, "NULL"),
    dim: default!(Option<i32>, 64),
    lambda: default!(Option<f64>, 0.5),
    replace: default!(Option<bool>, false),
    method: default!(Option<&str>, "'auto'"),
) -> TableIterator<
    'static,
    (
        name!(embedding_name, String),
        name!(n_items, i64),
        name!(input_dim, i32),
        name!(output_dim, i32),
        name!(retained_variance, f64),
        name!(graph_tv_pca, Option<f64>),
        name!(graph_tv, Option<f64>),
        name!(build_ms, f64),
    ),
> {
    run_rec_pca(embedding_name, items, id_column, embedding_column, graph_name, dim, lambda, replace, method)
}

/// rec_pca as versions 0.1.0 to 0.3.0 declare it (8 arguments, symbol
/// `rec_pca_wrapper`): method 'auto'. No SQL of its own.
#[pg_extern(sql = false)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn rec_pca(
    embedding_name: Option<&str>,
    items: Option<RegClass>,
    id_column: Option<SqlName>,
    embedding_column: Option<SqlName>,
    graph_name: Option<&str>,
    dim: Option<i32>,
    lambda: Option<f64>,
    replace: Option<bool>,
) -> TableIterator<
    'static,
    (
        name!(embedding_name, String),
        name!(n_items, i64),
        name!(input_dim, i32),
        name!(output_dim, i32),
        name!(retained_variance, f64),
        name!(graph_tv_pca, Option<f64>),
        name!(graph_tv, Option<f64>),
        name!(build_ms, f64),
    ),
> {
    run_rec_pca(embedding_name, items, id_column, embedding_column, graph_name, dim, lambda, replace, Some("auto"))
}

#[allow(clippy::too_many_arguments)]
fn run_rec_pca(
    embedding_name: Option<&str>,
    items: Option<RegClass>,
    id_column: Option<SqlName>,
    embedding_column: Option<SqlName>,
    graph_name: Option<&str>,
    dim: Option<i32>,
    lambda: Option<f64>,
    replace: Option<bool>,
    method: Option<&str>,
) -> RecPcaRow {
    require_primary("rec_pca");
    let started = Instant::now();
    let embedding_name = object_name(embedding_name, "embedding_name");
    let relation = readable_relation(items, "items");
    let source = VectorSource::new(relation, id_column, embedding_column);
    let dim = required(dim, "dim");
    if dim < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("dim must be at least 1, got {dim}"));
    }
    let lambda = required(lambda, "lambda");
    if !(0.0..=1.0).contains(&lambda) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("lambda must be between 0 and 1, got {lambda}"));
    }
    let replace = required(replace, "replace");
    let graph_name = graph_name.map(|g| object_name(Some(g), "graph_name"));
    let graph = graph_name.map(load_graph);
    EMBEDDINGS.check_name_free(embedding_name, replace);

    let method = required(method, "method");
    let chosen = Method::parse(method).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("method must be 'exact', 'randomized' or 'auto', got '{method}'"),
        )
    });

    // 'auto' needs the size: the ids (and the first row's width) first
    let mut streamed = StreamedVectors::new(&source).unwrap_or_else(|| {
        raise(Code::ERRCODE_DATA_EXCEPTION, format!("items: \"{}\" has no rows", source.relation.display))
    });
    let (n_items, input_dim) = (streamed.ids.len(), tfllmer_core::rec_pca::RowSource::dim(&streamed));
    let method = chosen.unwrap_or_else(|| Method::auto(n_items, input_dim));
    let params = RecPcaParams {
        threads: crate::settings::threads(),
        ..RecPcaParams::new(dim.into(), lambda, input_dim, n_items).unwrap_or_else(|e| rec_pca_error(e))
    };
    let adjacency_for = |ids: &[i64]| {
        graph.as_ref().map(|g| {
            let (a, missing) = g.normalized_adjacency_for(ids);
            if missing > 0 {
                notice!(
                    "rec_pca: {missing} item(s) of graph \"{}\" (of {}) have no embedding in {} and are left out",
                    graph_name.unwrap_or_default(),
                    g.n_items(),
                    source.relation.display
                );
            }
            a
        })
    };
    let loud = n_items.saturating_mul(input_dim) >= LARGE_INPUT;
    let krylov = Krylov::default();
    let passes = krylov.passes(dim as usize, input_dim);
    // a message when the phase changes, and within a long phase (the
    // randomized method's blocks of products, the exact method's sums) every
    // 10 seconds, with how far the phase is
    let mut last: (&str, Instant) = ("", Instant::now());
    let mut progress = |phase: &'static str, done: f64| {
        check_for_interrupts!();
        let again = phase == last.0;
        if !again || last.1.elapsed().as_secs_f64() >= 10.0 {
            let elapsed = started.elapsed().as_secs_f64();
            let share = if again { format!(", {:.0}%", done * 100.0) } else { String::new() };
            if loud {
                notice!("rec_pca \"{embedding_name}\" ({}): {phase}{share} ({elapsed:.1} s)", method.as_str());
            } else {
                debug1!("rec_pca \"{embedding_name}\": {phase} ({elapsed:.3} s, {:.0}%)", done * 100.0);
            }
            last = (phase, Instant::now());
        }
    };
    let (ids, out): (Vec<i64>, RecPcaOutput) = match method {
        Method::Exact => {
            drop(streamed);
            let embeddings = source.read();
            rec_pca::validate(&embeddings).unwrap_or_else(|e| rec_pca_error(e));
            let adjacency = adjacency_for(&embeddings.ids);
            let ids = embeddings.ids.clone();
            let out = rec_pca::rec_pca(embeddings, adjacency.as_ref(), params, &mut progress)
                .unwrap_or_else(|e| rec_pca_error(e));
            (ids, out)
        }
        Method::Randomized => {
            let adjacency = adjacency_for(&streamed.ids);
            if loud {
                notice!("rec_pca \"{embedding_name}\": randomized, {passes} passes over {n_items} rows of {input_dim}");
            }
            let out = rec_pca::rec_pca_randomized(&mut streamed, adjacency.as_ref(), params, &krylov, &mut progress)
                .unwrap_or_else(|e| rec_pca_error(e));
            (std::mem::take(&mut streamed.ids), out)
        }
    };
    let build_ms = started.elapsed().as_secs_f64() * 1e3;

    let stored = StoredEmbedding::sorted(ids, out.dim, out.z).with_projection(out.projection);
    EMBEDDINGS.insert(
        embedding_name,
        replace,
        &[
            "source_table",
            "source_name",
            "id_column",
            "embedding_column",
            "graph_name",
            "lambda",
            "n_items",
            "input_dim",
            "output_dim",
            "retained_variance",
            "graph_tv_pca",
            "graph_tv",
            "build_ms",
            "method",
        ],
        vec![
            source.relation.oid.into(),
            source.relation.display.as_str().into(),
            source.id.name.as_str().into(),
            source.vector.name.as_str().into(),
            graph_name.into(),
            // without a graph lambda plays no part
            graph_name.map(|_| lambda).into(),
            (n_items as i64).into(),
            (input_dim as i32).into(),
            dim.into(),
            out.retained_variance.into(),
            out.graph_tv_pca.into(),
            out.graph_tv.into(),
            build_ms.into(),
            method.as_str().into(),
        ],
        &embedding_codec::encode(&stored),
    );
    TableIterator::once((
        embedding_name.to_string(),
        n_items as i64,
        input_dim as i32,
        dim,
        out.retained_variance,
        out.graph_tv_pca,
        out.graph_tv,
        build_ms,
    ))
}

/// The reduced vectors of a stored embedding, by item id.
#[pg_extern(stable, parallel_unsafe)]
fn embedding(
    embedding_name: Option<&str>,
) -> TableIterator<'static, (name!(item_id, i64), name!(embedding, Vec<f32>))> {
    let embedding_name = object_name(embedding_name, "embedding_name");
    let stored = load_embedding(embedding_name);
    let rows: Vec<(i64, Vec<f32>)> =
        stored.ids.iter().enumerate().map(|(r, &id)| (id, stored.row(r).to_vec())).collect();
    TableIterator::new(rows)
}

/// Drops one of the caller's embeddings. Unknown names are an ERROR unless
/// `if_exists`, which returns false instead.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_embedding(embedding_name: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    require_primary("drop_embedding");
    let embedding_name = object_name(embedding_name, "embedding_name");
    EMBEDDINGS.drop(embedding_name, required(if_exists, "if_exists"))
}

/// A stored embedding the caller can see, or "does not exist".
pub fn load_embedding(embedding_name: &str) -> StoredEmbedding {
    embedding_codec::decode(&EMBEDDINGS.load_blob(embedding_name))
        .unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("embedding \"{embedding_name}\": {e}")))
}

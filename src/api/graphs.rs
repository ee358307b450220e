//! Co-occurrence graphs: `build_graph`, `graph_edges`, `drop_graph`
//! (the `graphs` view is in sql/bootstrap.sql).

use std::time::Instant;

use pgrx::prelude::*;
use tfllmer_core::graph::{self, Damping, GraphError, GraphParams, Weighting};

use tfllmer_core::graph_codec;

use crate::postgres::backend::require_primary;
use crate::postgres::catalog::GRAPHS;
use crate::postgres::errors::{object_name, raise, required, Code};
use crate::postgres::interactions::InteractionSource;
use crate::postgres::relation::readable_relation;
use crate::postgres::sql_types::{RegClass, SqlName};

/// Builds the item-item co-occurrence graph of an interaction table and
/// stores it under `graph_name`, owned by the current role.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::too_many_arguments)]
fn build_graph(
    graph_name: Option<&str>,
    interactions: Option<RegClass>,
    user_column: default!(Option<SqlName>, "'user_id'"),
    item_column: default!(Option<SqlName>, "'item_id'"),
    time_column: default!(Option<SqlName>, "'ts'"),
    window_size: default!(Option<i32>, 1),
    holdout: default!(Option<i32>, 2),
    weighting: default!(Option<&str>, "'count'"),
    damping: default!(Option<&str>, "'none'"),
    top_k: default!(Option<i32>, "NULL"),
    replace: default!(Option<bool>, false),
) -> TableIterator<
    'static,
    (
        name!(graph_name, String),
        name!(n_users, i64),
        name!(n_items, i64),
        name!(n_edges, i64),
        name!(total_weight, f64),
        name!(build_ms, f64),
    ),
> {
    let started = Instant::now();
    require_primary("build_graph");
    let graph_name = object_name(graph_name, "graph_name");
    let relation = readable_relation(interactions, "interactions");
    let source = InteractionSource::new(relation, user_column, item_column, time_column);

    let weighting_name = required(weighting, "weighting");
    let weighting = Weighting::parse(weighting_name).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("weighting must be {}, got '{weighting_name}'", Weighting::NAMES),
        )
    });
    let damping_name = required(damping, "damping");
    let damping = Damping::parse(damping_name).unwrap_or_else(|| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("damping must be {}, got '{damping_name}'", Damping::NAMES),
        )
    });
    let params = GraphParams::from_raw(
        required(window_size, "window_size").into(),
        required(holdout, "holdout").into(),
        weighting,
        damping,
        top_k.map(i64::from),
    )
    .unwrap_or_else(|e| raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()));
    let replace = required(replace, "replace");

    GRAPHS.check_name_free(graph_name, replace);

    let read = source.read_events();
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    if read.null_rows > 0 {
        notice!(
            "build_graph: skipped {} interaction(s) with NULL {}, {} or {}",
            read.null_rows,
            source.user.name,
            source.item.name,
            source.time.name
        );
    }
    let n_read = read.events.len();
    // large inputs report their phases as NOTICEs, others at DEBUG1
    let loud = n_read >= LARGE_INPUT;
    let phase = |text: String| {
        if loud {
            notice!("build_graph \"{graph_name}\": {text} ({:.1} s)", started.elapsed().as_secs_f64());
        } else {
            debug1!("build_graph \"{graph_name}\": {text} ({:.3} s)", started.elapsed().as_secs_f64());
        }
    };
    phase(format!("read {n_read} interactions; building"));
    let (graph, stats) = graph::build(read.events, &params).unwrap_or_else(|e| match e {
        GraphError::NoInteractions if read.null_rows == 0 => {
            raise(Code::ERRCODE_DATA_EXCEPTION, format!("interactions: \"{}\" has no rows", source.relation.display))
        }
        GraphError::NoInteractions => raise(
            Code::ERRCODE_DATA_EXCEPTION,
            format!("interactions: every row of \"{}\" has a NULL user, item or time", source.relation.display),
        ),
        other => raise(Code::ERRCODE_DATA_EXCEPTION, format!("interactions: {other} ({n_read} interactions read)")),
    });

    let built_ms = started.elapsed().as_secs_f64() * 1e3;
    phase(format!("{} edges over {} items; storing", graph.n_edges(), graph.n_items()));
    let n_users = stats.n_users as i64;
    GRAPHS.insert(
        graph_name,
        replace,
        &[
            "source_table",
            "source_name",
            "user_column",
            "item_column",
            "time_column",
            "window_size",
            "holdout",
            "weighting",
            "damping",
            "top_k",
            "n_users",
            "n_items",
            "n_edges",
            "total_weight",
            "build_ms",
        ],
        vec![
            source.relation.oid.into(),
            source.relation.display.as_str().into(),
            source.user.name.as_str().into(),
            source.item.name.as_str().into(),
            source.time.name.as_str().into(),
            (params.window_size as i32).into(),
            i32::try_from(params.holdout).unwrap_or(i32::MAX).into(),
            params.weighting.name().into(),
            params.damping.name().into(),
            params.top_k.map(|k| i32::try_from(k).unwrap_or(i32::MAX)).into(),
            n_users.into(),
            (graph.n_items() as i64).into(),
            (graph.n_edges() as i64).into(),
            graph.total_weight().into(),
            built_ms.into(),
        ],
        &graph_codec::encode(&graph),
    );
    let total_ms = started.elapsed().as_secs_f64() * 1e3;
    debug1!(
        "build_graph \"{graph_name}\": read {n_read} interactions in {read_ms:.0} ms, built in {:.0} ms, stored in {:.0} ms",
        built_ms - read_ms,
        total_ms - built_ms
    );
    TableIterator::once((
        graph_name.to_string(),
        n_users,
        graph.n_items() as i64,
        graph.n_edges() as i64,
        graph.total_weight(),
        built_ms,
    ))
}

/// Inputs of at least this many interactions report their phases as
/// NOTICEs (about 10 s of work here); smaller ones at DEBUG1.
const LARGE_INPUT: usize = 10_000_000;

/// The edges of a stored graph, each once, with item_a < item_b.
#[pg_extern(stable, parallel_unsafe)]
fn graph_edges(
    graph_name: Option<&str>,
) -> TableIterator<'static, (name!(item_a, i64), name!(item_b, i64), name!(weight, f64))> {
    let graph_name = object_name(graph_name, "graph_name");
    let graph = load_graph(graph_name);
    let edges: Vec<(i64, i64, f64)> = graph.edges().collect();
    TableIterator::new(edges)
}

/// Drops one of the caller's graphs. Unknown names are an ERROR unless
/// `if_exists`, which returns false instead.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_graph(graph_name: Option<&str>, if_exists: default!(Option<bool>, false)) -> bool {
    require_primary("drop_graph");
    let graph_name = object_name(graph_name, "graph_name");
    GRAPHS.drop(graph_name, required(if_exists, "if_exists"))
}

/// A stored graph the caller can see, or "does not exist".
pub fn load_graph(graph_name: &str) -> tfllmer_core::CooccurrenceGraph {
    graph_codec::decode(&GRAPHS.load_blob(graph_name))
        .unwrap_or_else(|e| raise(Code::ERRCODE_DATA_CORRUPTED, format!("graph \"{graph_name}\": {e}")))
}

//! Item indexes: `create_item_index`, `drop_item_index` (the tables and
//! their catalog are postgres/item_index.rs; recommend() uses them through
//! postgres/model_cache.rs).

use pgrx::prelude::*;
use pgrx::JsonB;
use tfllmer_train::scorer::Scorer;

use crate::postgres::backend::require_primary;
use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::item_index::{self, IndexOptions};
use crate::postgres::models::{load_version, newest_version, raise_no_version};

/// Writes the item vectors of the newest version of `model_name` into a
/// table with a pgvector HNSW index (inner product), which recommend(),
/// recommend_next() and similar_items() then ask for the best items; each
/// new version of the model gets its own index the same way when training
/// stores it. `options`: m (16), ef_construction (64), ef_search (100),
/// maintenance_work_mem (the session's). Needs pgvector.
#[pg_extern(volatile, parallel_unsafe)]
fn create_item_index(
    model_name: Option<&str>,
    method: default!(Option<&str>, "'hnsw'"),
    options: default!(Option<JsonB>, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(model_name, String),
        name!(version, i32),
        name!(index_table, String),
        name!(n_items, i64),
        name!(build_ms, f64),
    ),
> {
    let model_name = object_name(model_name, "model_name");
    let method = required(method, "method");
    if method != "hnsw" {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("method must be 'hnsw', got '{method}'"));
    }
    let options = IndexOptions::parse(&required(options, "options").0);
    require_primary("create_item_index");
    item_index::require_pgvector();
    if newest_version(model_name).is_none() {
        raise_no_version(model_name);
    }
    // a version stored meanwhile waits for this index, then gets its own
    item_index::lock_model(model_name);
    let Some(key) = newest_version(model_name) else { raise_no_version(model_name) };
    if item_index::index_of(model_name, key.version).is_some() {
        raise_with_hint(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("model \"{model_name}\" version {} already has an item index", key.version),
            format!(
                "To rebuild it with other options: SELECT tfllmer.drop_item_index('{}'); first.",
                model_name.replace('\'', "''")
            ),
        );
    }
    let loaded = load_version(model_name, Some(key.version));
    let rows = Scorer::item_table_of(&loaded.model).unwrap_or_else(|e| {
        raise(Code::ERRCODE_INTERNAL_ERROR, format!("model \"{model_name}\": {}", tfllmer_train::error_message(&e)))
    });
    let dim = loaded.model.config.dim;
    drop(loaded.model);
    let built = item_index::build(model_name, key.version, key.job_id, &rows, dim, &loaded.items, &options);
    TableIterator::once((model_name.to_string(), key.version, built.table, built.n_items, built.build_ms))
}

/// Drops every item index table of `model_name`; recommend() then scores
/// every item exactly again. False when the model had none.
#[pg_extern(volatile, parallel_unsafe)]
fn drop_item_index(model_name: Option<&str>) -> bool {
    let model_name = object_name(model_name, "model_name");
    require_primary("drop_item_index");
    if newest_version(model_name).is_none() {
        raise_no_version(model_name);
    }
    item_index::drop_where(model_name, None) > 0
}

//! Cold-start items: `add_items`, `drop_items` (the catalog is
//! postgres/cold_items.rs, the map tfllmer_core::cold; the train options
//! cold_items and cold_holdout are in worker/run.rs).

use pgrx::prelude::*;
use tfllmer_core::vocabulary::Vocabulary;
use tfllmer_train::scorer::Scorer;

use crate::postgres::backend::require_primary;
use crate::postgres::cold_items::{self, ColdRows};
use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::item_index;
use crate::postgres::item_vectors::VectorSource;
use crate::postgres::models::{describe_version, newest_version, raise_no_version, require_owner};
use crate::postgres::relation::readable_relation;
use crate::postgres::spi::first_pair;
use crate::postgres::sql_types::{RegClass, SqlName};

/// The newest version of the caller's own model, locked against a version
/// being stored or an index being built meanwhile; raises for an unknown
/// model, one without a version, or another role's.
fn own_newest_version(model_name: &str, function: &str) -> i32 {
    require_primary(function);
    item_index::lock_model(model_name);
    let Some(key) = newest_version(model_name) else { raise_no_version(model_name) };
    require_owner(model_name, key.version, "change its items");
    key.version
}

/// The trained items of a version (its stored vocabulary).
fn trained_items(model_name: &str, version: i32) -> Vocabulary {
    let (ids, n) = first_pair::<Vec<u8>, i64>(
        "SELECT item_ids, n_items FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
        &[model_name.into(), version.into()],
    )
    .unwrap_or_else(|| raise_no_version(model_name));
    Vocabulary::decode(&ids.unwrap_or_default(), n.unwrap_or(0) as usize).unwrap_or_else(|e| {
        raise(Code::ERRCODE_DATA_CORRUPTED, format!("model \"{model_name}\" version {version}: {e}"))
    })
}

/// Adds the items of `items` to the newest version of `model_name` as
/// cold-start items: each item's LLM embedding (`embedding_column`, the
/// width of the model's init embedding's input) is projected as Rec-PCA
/// projected the init embedding and mapped into the model's item space by
/// the map fitted when the version was trained (docs/sql-reference.md,
/// "Cold-start items"). recommend(), recommend_next(), similar_items() and
/// the item index then serve them beside the trained items; the trained
/// items' vectors do not change. Returns how many were added. Items the
/// model has already are an ERROR unless `skip_known`.
#[pg_extern(volatile, parallel_unsafe)]
fn add_items(
    model_name: Option<&str>,
    items: Option<RegClass>,
    id_column: default!(Option<SqlName>, "'item_id'"),
    embedding_column: default!(Option<SqlName>, "'embedding'"),
    skip_known: default!(Option<bool>, false),
) -> i64 {
    let model_name = object_name(model_name, "model_name");
    let skip_known = required(skip_known, "skip_known");
    let relation = readable_relation(items, "items");
    let source = VectorSource::new(relation, id_column, embedding_column);
    let version = own_newest_version(model_name, "add_items");
    let Some(map) = cold_items::cold_map(model_name, version) else {
        raise_with_hint(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("model \"{model_name}\" version {version} has no map for new items"),
            "Cold-start items are mapped from LLM embeddings through the model's init embedding: train with \
             init => an embedding made by rec_pca in tfllmer 0.5.0 or later.",
        )
    };
    let read = source.read();
    if read.ids.is_empty() {
        return 0;
    }
    let width = map.projection.input_dim();
    if read.input_dim != width {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "embedding_column: the embeddings have {} values; model \"{model_name}\" maps LLM embeddings of {width} \
                 (those its init embedding was made from)",
                read.input_dim
            ),
        );
    }
    let mut order: Vec<usize> = (0..read.ids.len()).collect();
    order.sort_unstable_by_key(|&r| read.ids[r]);
    if let Some(w) = order.windows(2).find(|w| read.ids[w[0]] == read.ids[w[1]]) {
        raise(Code::ERRCODE_UNIQUE_VIOLATION, format!("items: item {} appears more than once", read.ids[w[0]]));
    }
    let trained = trained_items(model_name, version);
    let sorted_ids: Vec<i64> = order.iter().map(|&r| read.ids[r]).collect();
    let cold_now = cold_items::existing(model_name, version, &sorted_ids);
    let known = |id: i64| trained.token(id).is_some() || cold_now.binary_search(&id).is_ok();
    let dim = map.dim();
    let mut cold = ColdRows::default();
    let mut skipped = 0usize;
    for &r in &order {
        let id = read.ids[r];
        if known(id) {
            if skip_known {
                skipped += 1;
                continue;
            }
            let what = if trained.token(id).is_some() { "a trained item" } else { "already a cold item" };
            raise_with_hint(
                Code::ERRCODE_UNIQUE_VIOLATION,
                format!("items: item {id} is {what} of model \"{model_name}\""),
                "Pass skip_known => true to add only the items the model does not have.",
            );
        }
        let x = read.row(r);
        let Some(z) = map.projection.project(x) else {
            raise(
                Code::ERRCODE_FLOATING_POINT_EXCEPTION,
                format!("embedding_column: the embedding of item {id} holds a value that is not finite"),
            )
        };
        cold.ids.push(id);
        cold.rows.extend(map.row_of_init(&z));
        cold.init_rows.extend_from_slice(&z);
        pgrx::check_for_interrupts!();
    }
    debug1!("add_items: model \"{model_name}\" version {version}: {} added, {skipped} known", cold.len());
    if cold.is_empty() {
        return 0;
    }
    cold_items::insert(model_name, version, &cold, dim);
    // the index holds rows as the model scores them
    let config = describe_version(model_name, Some(version)).config;
    item_index::add_rows(model_name, version, &cold.ids, &Scorer::scoring_rows(&config, cold.rows.clone()), dim);
    cold_items::adjust_count(model_name, version, cold.len() as i64);
    cold.len() as i64
}

/// Removes cold-start items from the newest version of `model_name`;
/// returns how many it had. Trained items cannot be removed (they are part
/// of the model: retrain without them, or exclude them in recommend()).
#[pg_extern(volatile, parallel_unsafe)]
fn drop_items(model_name: Option<&str>, item_ids: Option<Vec<Option<i64>>>) -> i64 {
    let model_name = object_name(model_name, "model_name");
    let ids: Vec<i64> = required(item_ids, "item_ids")
        .into_iter()
        .map(|id| id.unwrap_or_else(|| raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "item_ids must not contain NULL")))
        .collect();
    let version = own_newest_version(model_name, "drop_items");
    let trained = trained_items(model_name, version);
    if let Some(&id) = ids.iter().find(|&&id| trained.token(id).is_some()) {
        raise_with_hint(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("item_ids: item {id} is a trained item of model \"{model_name}\"; only cold items can be dropped"),
            "Leave it out of answers with recommend(..., exclude => ...), or retrain without it.",
        );
    }
    let gone = cold_items::delete(model_name, version, &ids);
    if gone.is_empty() {
        return 0;
    }
    item_index::remove_rows(model_name, version, &gone);
    cold_items::adjust_count(model_name, version, -(gone.len() as i64));
    gone.len() as i64
}

/// Whether item `item_id` is in the seeded hold-out of share `share` that
/// train()'s option cold_holdout (with option seed) keeps out of training:
/// for building the graph (and so Rec-PCA's graph term) without those
/// items too. The same answer on every machine and in every version.
#[pg_extern(immutable, parallel_safe, strict)]
fn cold_holdout(item_id: i64, share: f64, seed: i64) -> bool {
    if !(0.0..=1.0).contains(&share) {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("share must be in [0, 1], got {share}"));
    }
    if seed < 0 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("seed must be at least 0, got {seed}"));
    }
    tfllmer_core::cold::held_out(item_id, share, seed as u64)
}

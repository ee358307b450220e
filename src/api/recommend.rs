//! Recommendations: `recommend`, `recommend_next`, `similar_items`, and
//! `cached_models` (what this backend keeps ready to score). Each call
//! scores with the newest trained version of the model (see
//! postgres/model_cache.rs); docs/sql-reference.md says what users get for
//! empty histories, unknown items and large k.

use pgrx::prelude::*;
use tfllmer_core::ranking::Ranker;

use crate::postgres::errors::{object_name, raise, required, Code};
use crate::postgres::model_cache::{cached_models as cached, ready_model, ReadyModel};
use crate::postgres::spi::first_value;
use crate::postgres::user_history::user_tokens;

fn positive_k(k: Option<i32>) -> usize {
    let k = required(k, "k");
    if k < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be at least 1, got {k}"));
    }
    k as usize
}

/// The best `k` items after the token history `tokens` (oldest first),
/// leaving out `excluded`; empty for an empty history.
fn next_items(model: &ReadyModel, tokens: &[u32], k: usize, excluded: &[u32]) -> Vec<(i64, f32)> {
    let Some(scores) = model.scorer.score_next(tokens) else { return Vec::new() };
    let top = Ranker::new(model.scorer.n_items()).top_k(&scores, k, excluded);
    top.into_iter().map(|(token, score)| (model.item_id(token), score)).collect()
}

/// The `k` items `user_id` is most likely to interact with next, best
/// first, from their latest interactions in the model's table (read now, as
/// the caller). No rows for a user without history.
#[pg_extern(stable, parallel_restricted)]
fn recommend(
    model_name: Option<&str>,
    user_id: Option<i64>,
    k: default!(Option<i32>, 10),
    exclude_seen: default!(Option<bool>, true),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let user_id = required(user_id, "user_id");
    let k = positive_k(k);
    let exclude_seen = required(exclude_seen, "exclude_seen");
    let model = ready_model(model_name);
    // the scorer reads the latest max_len tokens; all of them were seen
    let tokens = user_tokens(&model, user_id, exclude_seen);
    let seen: &[u32] = if exclude_seen { &tokens } else { &[] };
    TableIterator::new(next_items(&model, &tokens, k, seen))
}

/// The `k` items most likely to follow `history` (item ids, oldest first),
/// best first. Items the model does not know are ignored.
#[pg_extern(stable, parallel_restricted)]
fn recommend_next(
    model_name: Option<&str>,
    history: Option<Vec<Option<i64>>>,
    k: default!(Option<i32>, 10),
    exclude_seen: default!(Option<bool>, true),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let history = required(history, "history");
    let k = positive_k(k);
    let exclude_seen = required(exclude_seen, "exclude_seen");
    if history.iter().any(Option::is_none) {
        raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "history must not contain NULL item ids");
    }
    let model = ready_model(model_name);
    // the scorer reads the latest max_len tokens; all of them were seen
    let tokens: Vec<u32> = history.iter().flatten().filter_map(|&id| model.token(id)).collect();
    let seen: &[u32] = if exclude_seen { &tokens } else { &[] };
    TableIterator::new(next_items(&model, &tokens, k, seen))
}

/// The `k` items whose vectors in the model's item table are closest to
/// `item_id`'s (cosine), best first; no rows for an item the model does
/// not know.
#[pg_extern(stable, parallel_restricted)]
fn similar_items(
    model_name: Option<&str>,
    item_id: Option<i64>,
    k: default!(Option<i32>, 10),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let item_id = required(item_id, "item_id");
    let k = positive_k(k);
    let model = ready_model(model_name);
    let Some(token) = model.token(item_id) else { return TableIterator::new(Vec::new()) };
    let Some(scores) = model.scorer.similar(token) else { return TableIterator::new(Vec::new()) };
    let top = Ranker::new(model.scorer.n_items()).top_k(&scores, k, &[token]);
    TableIterator::new(top.into_iter().map(|(t, score)| (model.item_id(t), score)).collect::<Vec<_>>())
}

/// The models this backend keeps ready to score (tfllmer.model_cache_size),
/// most recently used first; only those the caller may use.
#[pg_extern(volatile, parallel_restricted)]
fn cached_models(
) -> TableIterator<'static, (name!(model_name, String), name!(version, i32), name!(bytes, i64), name!(hits, i64))> {
    let visible = cached()
        .into_iter()
        .filter(|(name, ..)| {
            first_value::<bool>(
                "SELECT EXISTS (SELECT 1 FROM tfllmer.model_names WHERE model_name = $1)",
                &[name.as_str().into()],
            )
            .unwrap_or(false)
        })
        .collect::<Vec<_>>();
    TableIterator::new(visible)
}

//! Recommendations: `recommend`, `recommend_next`, `similar_items` (with
//! the business rules `candidates` and `exclude`), the vectors they score
//! with (`user_vector`, `history_vector`, `item_vectors`), and
//! `cached_models` (what this backend keeps ready to score). Each call
//! scores with the newest trained version of the model (see
//! postgres/model_cache.rs); docs/sql-reference.md says what users get for
//! empty histories, unknown items and large k.
//!
//! They are PARALLEL UNSAFE: their catalog and history reads go through
//! SPI, which in a writing statement (CREATE TABLE ... AS, REFRESH
//! MATERIALIZED VIEW) must make earlier writes visible, and that is not
//! allowed while a parallel plan runs; so no query calling them gets one.
//!
//! The recommend functions' C symbols are new in 0.4.0 (they read the two
//! rule arguments); the symbols of earlier versions (`recommend_wrapper`,
//! ...) stay, without SQL of their own, so that a database still on an
//! older catalog keeps working with this library until ALTER EXTENSION
//! UPDATE.

use pgrx::prelude::*;
use tfllmer_core::ranking::{best_of, Ranker};
use tfllmer_train::normalize_rows;
use tfllmer_train::scorer::Scorer;

use crate::postgres::errors::{object_name, raise, raise_with_hint, required, Code};
use crate::postgres::item_index::ServingIndex;
use crate::postgres::model_cache::{cached_models as cached, ready_model, ReadyModel};
use crate::postgres::models::load_version;
use crate::postgres::spi::first_value;
use crate::postgres::user_history::{latest_items, user_tokens};

fn positive_k(k: Option<i32>) -> usize {
    let k = required(k, "k");
    if k < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be at least 1, got {k}"));
    }
    k as usize
}

/// Which items may be recommended: `candidates` (None: every item) minus
/// `exclude`, as tokens of the model.
struct Rules {
    candidates: Option<Vec<u32>>,
    exclude: Vec<u32>,
}

impl Rules {
    /// Checks the two arrays: no NULLs, and only items the model knows
    /// (an id the model was not trained on is an ERROR naming it).
    fn new(model: &ReadyModel, candidates: Option<Vec<Option<i64>>>, exclude: Option<Vec<Option<i64>>>) -> Self {
        let tokens = |ids: Vec<Option<i64>>, argument: &str| -> Vec<u32> {
            let mut tokens = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(id) = id else {
                    raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{argument} must not contain NULL item ids"))
                };
                match model.token(id) {
                    Some(t) => tokens.push(t),
                    None => raise_with_hint(
                        Code::ERRCODE_INVALID_PARAMETER_VALUE,
                        format!("{argument}: model \"{}\" has no item {id}", model.name),
                        "Pass only items the model was trained on: tfllmer.item_vectors(model_name) lists them.",
                    ),
                }
            }
            tokens.sort_unstable();
            tokens.dedup();
            tokens
        };
        Self {
            candidates: candidates.map(|ids| tokens(ids, "candidates")),
            exclude: exclude.map(|ids| tokens(ids, "exclude")).unwrap_or_default(),
        }
    }

    /// The eligible candidates (sorted), leaving out `also_excluded` too;
    /// None when every item not excluded is a candidate.
    fn eligible(&self, also_excluded: &[u32]) -> Option<Vec<u32>> {
        let candidates = self.candidates.as_ref()?;
        let mut also = also_excluded.to_vec();
        also.sort_unstable();
        let mut out = candidates.clone();
        out.retain(|t| self.exclude.binary_search(t).is_err() && also.binary_search(t).is_err());
        Some(out)
    }

    /// `exclude` and `also_excluded` together.
    fn excluded(&self, also_excluded: &[u32]) -> Vec<u32> {
        let mut out = self.exclude.clone();
        out.extend_from_slice(also_excluded);
        out
    }
}

/// The best `k` items after the token history `tokens` (oldest first)
/// under `rules`, leaving out `seen`; empty for an empty history. With
/// candidates, only they are scored.
fn next_items(model: &ReadyModel, tokens: &[u32], k: usize, seen: &[u32], rules: &Rules) -> Vec<(i64, f32)> {
    let top = match rules.eligible(seen) {
        Some(eligible) => {
            let Some(query) = model.scorer.query_vector(tokens) else { return Vec::new() };
            let scores = model.scorer.score_tokens(&query, &eligible);
            best_of(eligible.into_iter().zip(scores).collect(), k)
        }
        None => {
            let Some(scores) = model.scorer.score_next(tokens) else { return Vec::new() };
            Ranker::new(model.scorer.n_items()).top_k(&scores, k, &rules.excluded(seen))
        }
    };
    top.into_iter().map(|(token, score)| (model.item_id(token), score)).collect()
}

/// The rules of a model served through an item index, by item id.
struct IdRules {
    /// the candidates' rows (None: every item)
    candidates: Option<Vec<(i64, Vec<f32>)>>,
    /// sorted
    exclude: Vec<i64>,
}

impl IdRules {
    /// Checks the two arrays as [`Rules::new`] does (no NULLs, only items
    /// the model has), against the index table.
    fn new(
        model: &ReadyModel,
        index: &ServingIndex,
        candidates: Option<Vec<Option<i64>>>,
        exclude: Option<Vec<Option<i64>>>,
    ) -> Self {
        let candidates = candidates.map(|ids| index.rows_of(ids, "candidates", &model.name));
        let exclude = exclude
            .map(|ids| index.rows_of(ids, "exclude", &model.name).into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        Self { candidates, exclude }
    }

    /// `exclude` and `also_excluded` together, sorted.
    fn excluded(&self, also_excluded: &[i64]) -> Vec<i64> {
        let mut out = self.exclude.clone();
        out.extend_from_slice(also_excluded);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The best `k` items by `score`, leaving out `excluded` (sorted): the
    /// candidates scored exactly, else the index asked for the best.
    fn best(
        &self,
        index: &ServingIndex,
        query: &[f32],
        k: usize,
        excluded: &[i64],
        cosine: bool,
        score: impl Fn(&[f32]) -> f32,
    ) -> Vec<(i64, f32)> {
        match &self.candidates {
            Some(rows) => best_of(
                rows.iter()
                    .filter(|(id, _)| excluded.binary_search(id).is_err())
                    .map(|(id, row)| (*id, score(row)))
                    .collect(),
                k,
            ),
            None => index.best(query, k, excluded, cosine, score),
        }
    }
}

/// The best `k` items after a history given by its rows (oldest first),
/// through the item index, leaving out `seen` (item ids).
fn next_items_indexed(
    model: &ReadyModel,
    index: &ServingIndex,
    rows: &[f32],
    k: usize,
    seen: &[i64],
    rules: &IdRules,
) -> Vec<(i64, f32)> {
    let Some(query) = model.scorer.query_vector_of_rows(rows) else { return Vec::new() };
    rules.best(index, &query, k, &rules.excluded(seen), false, |row| Scorer::score_row(&query, row))
}

/// A user's history through the item index: the rows the model reads
/// (oldest first) and the items seen (all of them when `all_seen`).
fn user_rows(model: &ReadyModel, index: &ServingIndex, user: i64, all_seen: bool) -> (Vec<f32>, Vec<i64>) {
    let max_len = model.max_len();
    if all_seen {
        let all = latest_items(model, user, None);
        return (index.history_rows(&all, max_len), all);
    }
    let latest = latest_items(model, user, Some(max_len));
    let rows = index.history_rows(&latest, max_len);
    // items the model does not know took places in the window: read on
    if latest.len() == max_len && rows.len() < max_len * model.scorer.config().dim {
        let all = latest_items(model, user, None);
        return (index.history_rows(&all, max_len), Vec::new());
    }
    (rows, Vec::new())
}

/// A given history (oldest first) through the item index: the rows the
/// model reads, and the items seen (every id of it).
fn history_rows(model: &ReadyModel, index: &ServingIndex, history: &[Option<i64>]) -> (Vec<f32>, Vec<i64>) {
    if history.iter().any(Option::is_none) {
        raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "history must not contain NULL item ids");
    }
    let newest_first: Vec<i64> = history.iter().rev().flatten().copied().collect();
    (index.history_rows(&newest_first, model.max_len()), newest_first)
}

/// The `k` items `user_id` is most likely to interact with next, best
/// first, from their latest interactions in the model's table (read now, as
/// the caller); only among `candidates` (NULL: all items), never `exclude`.
/// No rows for a user without history.
#[pg_extern(name = "recommend", stable, parallel_unsafe)]
fn recommend_with_rules(
    model_name: Option<&str>,
    user_id: Option<i64>,
    k: default!(Option<i32>, 10),
    exclude_seen: default!(Option<bool>, true),
    candidates: default!(Option<Vec<Option<i64>>>, "NULL"),
    exclude: default!(Option<Vec<Option<i64>>>, "NULL"),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let user_id = required(user_id, "user_id");
    let k = positive_k(k);
    let exclude_seen = required(exclude_seen, "exclude_seen");
    let model = ready_model(model_name);
    if let Some(index) = model.index() {
        let rules = IdRules::new(&model, index, candidates, exclude);
        let (rows, seen) = user_rows(&model, index, user_id, exclude_seen);
        return TableIterator::new(next_items_indexed(&model, index, &rows, k, &seen, &rules));
    }
    let rules = Rules::new(&model, candidates, exclude);
    // the scorer reads the latest max_len tokens; all of them were seen
    let tokens = user_tokens(&model, user_id, exclude_seen);
    let seen: &[u32] = if exclude_seen { &tokens } else { &[] };
    TableIterator::new(next_items(&model, &tokens, k, seen, &rules))
}

/// recommend as versions 0.1.0 to 0.3.0 declare it (4 arguments). No SQL
/// of its own.
#[pg_extern(sql = false)]
fn recommend(
    model_name: Option<&str>,
    user_id: Option<i64>,
    k: Option<i32>,
    exclude_seen: Option<bool>,
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    recommend_with_rules(model_name, user_id, k, exclude_seen, None, None)
}

/// The item tokens of `history` the model knows, oldest first; an ERROR
/// for NULL ids.
fn history_tokens(model: &ReadyModel, history: &[Option<i64>]) -> Vec<u32> {
    if history.iter().any(Option::is_none) {
        raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "history must not contain NULL item ids");
    }
    history.iter().flatten().filter_map(|&id| model.token(id)).collect()
}

/// The `k` items most likely to follow `history` (item ids, oldest first),
/// best first, under the same rules as `recommend`. Items the model does
/// not know are ignored.
#[pg_extern(name = "recommend_next", stable, parallel_unsafe)]
fn recommend_next_with_rules(
    model_name: Option<&str>,
    history: Option<Vec<Option<i64>>>,
    k: default!(Option<i32>, 10),
    exclude_seen: default!(Option<bool>, true),
    candidates: default!(Option<Vec<Option<i64>>>, "NULL"),
    exclude: default!(Option<Vec<Option<i64>>>, "NULL"),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let history = required(history, "history");
    let k = positive_k(k);
    let exclude_seen = required(exclude_seen, "exclude_seen");
    let model = ready_model(model_name);
    if let Some(index) = model.index() {
        let rules = IdRules::new(&model, index, candidates, exclude);
        let (rows, seen) = history_rows(&model, index, &history);
        let seen: &[i64] = if exclude_seen { &seen } else { &[] };
        return TableIterator::new(next_items_indexed(&model, index, &rows, k, seen, &rules));
    }
    let rules = Rules::new(&model, candidates, exclude);
    // the scorer reads the latest max_len tokens; all of them were seen
    let tokens = history_tokens(&model, &history);
    let seen: &[u32] = if exclude_seen { &tokens } else { &[] };
    TableIterator::new(next_items(&model, &tokens, k, seen, &rules))
}

/// recommend_next as versions 0.1.0 to 0.3.0 declare it. No SQL of its own.
#[pg_extern(sql = false)]
fn recommend_next(
    model_name: Option<&str>,
    history: Option<Vec<Option<i64>>>,
    k: Option<i32>,
    exclude_seen: Option<bool>,
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    recommend_next_with_rules(model_name, history, k, exclude_seen, None, None)
}

/// The `k` items whose vectors in the model's item table are closest to
/// `item_id`'s (cosine), best first, among `candidates` (NULL: all) and
/// never `exclude`; no rows for an item the model does not know.
#[pg_extern(name = "similar_items", stable, parallel_unsafe)]
fn similar_items_with_rules(
    model_name: Option<&str>,
    item_id: Option<i64>,
    k: default!(Option<i32>, 10),
    candidates: default!(Option<Vec<Option<i64>>>, "NULL"),
    exclude: default!(Option<Vec<Option<i64>>>, "NULL"),
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    let model_name = object_name(model_name, "model_name");
    let item_id = required(item_id, "item_id");
    let k = positive_k(k);
    let model = ready_model(model_name);
    if let Some(index) = model.index() {
        return TableIterator::new(similar_indexed(&model, index, item_id, k, candidates, exclude));
    }
    let rules = Rules::new(&model, candidates, exclude);
    let Some(token) = model.token(item_id) else { return TableIterator::new(Vec::new()) };
    // with candidates, only they are scored
    let top = match rules.eligible(&[token]) {
        Some(eligible) => {
            let Some(scores) = model.scorer.similar_tokens(token, &eligible) else {
                return TableIterator::new(Vec::new());
            };
            best_of(eligible.into_iter().zip(scores).collect(), k)
        }
        None => {
            let Some(scores) = model.scorer.similar(token) else { return TableIterator::new(Vec::new()) };
            Ranker::new(model.scorer.n_items()).top_k(&scores, k, &rules.excluded(&[token]))
        }
    };
    TableIterator::new(top.into_iter().map(|(t, score)| (model.item_id(t), score)).collect::<Vec<_>>())
}

/// similar_items through the item index: cosine similarity of the rows
/// (the index's inner product when the model normalises its items, a scan
/// of the table by cosine distance when it does not), scored as the exact
/// path scores them.
fn similar_indexed(
    model: &ReadyModel,
    index: &ServingIndex,
    item_id: i64,
    k: usize,
    candidates: Option<Vec<Option<i64>>>,
    exclude: Option<Vec<Option<i64>>>,
) -> Vec<(i64, f32)> {
    let rules = IdRules::new(model, index, candidates, exclude);
    let Some((_, row)) = index.rows(&[item_id]).pop() else { return Vec::new() };
    let d = model.scorer.config().dim;
    let normalized = model.scorer.config().normalize;
    // unit rows, as the exact path's `similar` compares them
    let unit = |row: &[f32]| -> Vec<f32> {
        let mut out = row.to_vec();
        if !normalized {
            normalize_rows(&mut out, d);
        }
        out
    };
    let query = unit(&row);
    let excluded = rules.excluded(&[item_id]);
    rules.best(index, &query, k, &excluded, !normalized, |other| Scorer::score_row(&query, &unit(other)))
}

/// similar_items as versions 0.1.0 to 0.3.0 declare it. No SQL of its own.
#[pg_extern(sql = false)]
fn similar_items(
    model_name: Option<&str>,
    item_id: Option<i64>,
    k: Option<i32>,
) -> TableIterator<'static, (name!(item_id, i64), name!(score, f32))> {
    similar_items_with_rules(model_name, item_id, k, None, None)
}

/// What the model computes for `user_id` from their latest interactions
/// (read now, as for `recommend`): the query vector q (dim values) such
/// that recommend()'s score of an item is ⟨q, v⟩ for its row v of
/// `item_vectors` (the model's logit scale or 1/temperature is folded into
/// q). NULL for a user without history the model can read.
#[pg_extern(stable, parallel_unsafe)]
fn user_vector(model_name: Option<&str>, user_id: Option<i64>) -> Option<Vec<f32>> {
    let model_name = object_name(model_name, "model_name");
    let user_id = required(user_id, "user_id");
    let model = ready_model(model_name);
    if let Some(index) = model.index() {
        return model.scorer.query_vector_of_rows(&user_rows(&model, index, user_id, false).0);
    }
    model.scorer.query_vector(&user_tokens(&model, user_id, false))
}

/// The query vector after `history` (item ids, oldest first; unknown items
/// ignored), as `user_vector`; NULL when no item of it is known.
#[pg_extern(stable, parallel_unsafe)]
fn history_vector(model_name: Option<&str>, history: Option<Vec<Option<i64>>>) -> Option<Vec<f32>> {
    let model_name = object_name(model_name, "model_name");
    let history = required(history, "history");
    let model = ready_model(model_name);
    if let Some(index) = model.index() {
        return model.scorer.query_vector_of_rows(&history_rows(&model, index, &history).0);
    }
    model.scorer.query_vector(&history_tokens(&model, &history))
}

/// Every item of the model's newest version with the vector recommend()
/// scores it by (dim values; unit length when the model normalises its
/// items), in token order.
#[pg_extern(stable, parallel_unsafe)]
fn item_vectors(model_name: Option<&str>) -> TableIterator<'static, (name!(item_id, i64), name!(embedding, Vec<f32>))> {
    let model_name = object_name(model_name, "model_name");
    let model = ready_model(model_name);
    if model.index().is_some() {
        // served through an index, this backend keeps no item table: read
        // the version whole for this call (not cached)
        let loaded = load_version(model_name, Some(model.key.version));
        let table = Scorer::item_table_of(&loaded.model).unwrap_or_else(|e| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("model \"{model_name}\": {}", tfllmer_train::error_message(&e)))
        });
        let (d, items) = (model.scorer.config().dim, loaded.items);
        let n = items.len() as u32;
        return TableIterator::new((1..=n).filter_map(move |t| {
            let t_ = t as usize;
            Some((items.item_id(t)?, table[t_ * d..(t_ + 1) * d].to_vec()))
        }));
    }
    // one row at a time (a million-item table is never copied whole)
    let n = model.scorer.n_items() as u32;
    TableIterator::new((1..=n).filter_map(move |t| Some((model.item_id(t), model.scorer.item_row(t)?.to_vec()))))
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

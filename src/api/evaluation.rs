//! `evaluate`: leave-one-out HR@K and NDCG@K of a model's newest version
//! on its interaction table as it is now, over all test events or (items
//! => 'cold') those whose target is a cold-start item, then beside three
//! baselines ranked the same way (tfllmer_core::baselines).

use pgrx::prelude::*;
use tfllmer_core::baselines::{self, Draws};
use tfllmer_core::ranking::{Ranker, RankingMetrics};
use tfllmer_core::sequences::{leave_one_out, Histories};

use crate::postgres::backend;
use crate::postgres::errors::{notice_with_hint, object_name, raise, raise_with_hint, required, Code};
use crate::postgres::interactions::InteractionSource;
use crate::postgres::item_vectors::VectorSource;
use crate::postgres::models::{load_version, LoadedModel};
use crate::postgres::relation::readable_relation;
use crate::postgres::spi::{first_pair, first_value};
use crate::postgres::sql_types::{RegClass, SqlName};
use crate::settings;

type Row = (String, i64, f64, f64, String);

/// HR@k and NDCG@k of a baseline over the cases (history, target): `score`
/// writes its scores of tokens 0..=n_items for a case.
fn rank_cases(
    cases: &[(&[u32], u32)],
    k: usize,
    n_items: usize,
    mut score: impl FnMut(&[u32], &mut Vec<f32>),
) -> RankingMetrics {
    let mut ranker = Ranker::new(n_items);
    let mut scores = Vec::with_capacity(n_items + 1);
    let mut metrics = RankingMetrics::new(k);
    for &(history, target) in cases {
        score(history, &mut scores);
        metrics.add(ranker.rank_of_target(&scores, target, history));
        pgrx::check_for_interrupts!();
    }
    metrics
}

/// Leave-one-out HR@k and NDCG@k of the newest version of `model_name` on
/// its interaction table as it is now (read with the caller's privileges):
/// full ranking over every item the model serves (trained and cold), the
/// user's history masked. `items`: 'all' (the validation and test events
/// of every user), 'warm' (those whose target is a trained item) or 'cold'
/// (the test events whose target is a cold-start item, with the baselines
/// random, popularity and nearest_llm beside the model). Columns: split, n_users, hr, ndcg, method ('model' or the
/// baseline's name).
#[pg_extern(name = "evaluate", volatile, parallel_unsafe)]
fn evaluate_items(
    model_name: Option<&str>,
    k: default!(Option<i32>, 10),
    items: default!(Option<&str>, "'all'"),
) -> TableIterator<
    'static,
    (name!(split, String), name!(n_users, i64), name!(hr, f64), name!(ndcg, f64), name!(method, String)),
> {
    TableIterator::new(run(model_name, k, items))
}

/// evaluate as versions 0.1.0 to 0.4.0 declare it (2 arguments, four
/// columns, symbol `evaluate_wrapper`): items 'all'. No SQL of its own.
#[pg_extern(sql = false)]
fn evaluate(
    model_name: Option<&str>,
    k: Option<i32>,
) -> TableIterator<'static, (name!(split, String), name!(n_users, i64), name!(hr, f64), name!(ndcg, f64))> {
    TableIterator::new(run(model_name, k, Some("all")).into_iter().map(|(s, n, h, g, _)| (s, n, h, g)))
}

fn run(model_name: Option<&str>, k: Option<i32>, items: Option<&str>) -> Vec<Row> {
    let model_name = object_name(model_name, "model_name");
    let k = required(k, "k");
    if k < 1 {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("k must be at least 1, got {k}"));
    }
    let items = required(items, "items");
    let cold = match items {
        "all" | "warm" => false,
        "cold" => true,
        other => raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("items must be 'all', 'cold' or 'warm', got '{other}'"),
        ),
    };
    // candle's pool first, built with PostgreSQL's signals blocked
    tfllmer_train::threads::init_compute_threads(settings::threads());
    let loaded = load_version(model_name, None);
    debug1!("evaluate: model \"{model_name}\" version {}", loaded.version);
    if cold && loaded.items.n_cold() == 0 {
        raise_with_hint(
            Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("model \"{model_name}\" version {} has no cold-start items", loaded.version),
            "Train with options {\"cold_holdout\": 0.1} to hold a share of the items out and evaluate them as cold \
             items, or add items with tfllmer.add_items().",
        );
    }
    let relation = readable_relation(Some(RegClass(loaded.source_table)), "interactions");
    let source = InteractionSource::new(
        relation,
        Some(SqlName(loaded.user_column.clone())),
        Some(SqlName(loaded.item_column.clone())),
        Some(SqlName(loaded.time_column.clone())),
    );
    let (histories, _unknown) = Histories::with_items(source.read_events().events, &loaded.items);
    let split = leave_one_out(&histories);
    let k = k as usize;
    let model_metrics = |cases: &[(&[u32], u32)]| {
        tfllmer_train::train::evaluate(&loaded.model, cases, k).unwrap_or_else(|e| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("evaluation failed: {}", tfllmer_train::error_message(&e)))
        })
    };
    let row = |split: &str, m: &RankingMetrics, method: &str| {
        (split.to_string(), m.users as i64, m.hr(), m.ndcg(), method.to_string())
    };
    let n_trained = loaded.items.n_trained();
    let n_items = loaded.items.len();
    let is_cold = |t: u32| t as usize > n_trained;
    if !cold {
        // 'warm': the events whose target is a trained item
        let keep = |t: u32| items == "all" || !is_cold(t);
        let valid: Vec<(&[u32], u32)> = split.valid.iter().filter(|v| keep(v.2)).map(|v| (v.1, v.2)).collect();
        let test: Vec<(&[u32], u32)> = split.test.iter().filter(|v| keep(v.2)).map(|v| (v.1, v.2)).collect();
        return vec![row("valid", &model_metrics(&valid), "model"), row("test", &model_metrics(&test), "model")];
    }
    let test: Vec<(&[u32], u32)> = split.test.iter().filter(|c| is_cold(c.2)).map(|c| (c.1, c.2)).collect();
    // two rankings of the same events: 'test' over every item (will a new
    // item surface at all?), 'test_cold_only' over the cold items only (a
    // "new items" shelf; there the baselines are the issue's: popularity
    // is uniform over cold items, nearest_llm picks among them)
    let cold_only: Vec<bool> = (0..=n_items).map(|t| t > n_trained).collect();
    let only_cold = |out: &mut Vec<f32>| {
        for (s, &ok) in out.iter_mut().zip(&cold_only) {
            if !ok {
                *s = f32::NEG_INFINITY;
            }
        }
    };
    let model_among = |eligible: Option<&[bool]>| {
        tfllmer_train::train::evaluate_among(&loaded.model, &test, k, eligible).unwrap_or_else(|e| {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("evaluation failed: {}", tfllmer_train::error_message(&e)))
        })
    };
    let mut rows = vec![row("test", &model_among(None), "model")];

    // popularity as training saw it: trained items in the training parts
    let mut counts = vec![0u64; n_items + 1];
    for (_, seq) in &split.train {
        for &t in seq.iter().filter(|&&t| !is_cold(t)) {
            counts[t as usize] += 1;
        }
    }
    // the baselines' draws: seeded by the model's seed, so a call repeats
    let seed = first_value::<i64>(
        "SELECT (options->>'seed')::int8 FROM tfllmer.model_store WHERE model_name = $1 AND version = $2",
        &[model_name.into(), loaded.version.into()],
    )
    .unwrap_or(0) as u64;
    for (split_name, restrict) in [("test", false), ("test_cold_only", true)] {
        if restrict {
            rows.push(row(split_name, &model_among(Some(&cold_only)), "model"));
        }
        let mut draws = Draws::new(seed);
        let m = rank_cases(&test, k, n_items, |_, out| {
            baselines::random_scores(n_items, &mut draws, out);
            if restrict {
                only_cold(out);
            }
        });
        rows.push(row(split_name, &m, "random"));
        let mut draws = Draws::new(seed.wrapping_add(1));
        let m = rank_cases(&test, k, n_items, |_, out| {
            baselines::popularity_scores(&counts, &mut draws, out);
            if restrict {
                only_cold(out);
            }
        });
        rows.push(row(split_name, &m, "popularity"));
    }
    match llm_vectors(model_name, &loaded, &test) {
        Some(vectors) => {
            let cold_rows: Vec<(u32, &[f32])> = (n_trained as u32 + 1..=n_items as u32)
                .filter_map(|t| vectors.get(&t).map(|v| (t, v.as_slice())))
                .collect();
            let mut draws = Draws::new(seed.wrapping_add(2));
            let m = rank_cases(&test, k, n_items, |history, out| {
                let query = history.iter().rev().find_map(|t| vectors.get(t)).map(Vec::as_slice);
                baselines::nearest_scores(n_items, &cold_rows, query, &mut draws, out);
                only_cold(out);
            });
            rows.push(row("test_cold_only", &m, "nearest_llm"));
        }
        None => notice_with_hint(
            format!("evaluate: no nearest_llm baseline for model \"{model_name}\""),
            "It needs the LLM embeddings the model's init embedding was made from (its table is gone, or the \
             model has no init embedding).",
        ),
    }
    rows
}

/// The LLM embeddings (unit length) of the cold items and of the items in
/// the test histories, by token, from the table the model's init embedding
/// was made from; None when there is no such table.
fn llm_vectors(
    model_name: &str,
    loaded: &LoadedModel,
    test: &[(&[u32], u32)],
) -> Option<std::collections::HashMap<u32, Vec<f32>>> {
    let (table, columns) = first_pair::<pg_sys::Oid, Vec<String>>(
        "SELECT e.source_table::oid, ARRAY[e.id_column::text, e.embedding_column::text]
           FROM tfllmer.model_store m JOIN tfllmer.embedding_store e ON e.embedding_name = m.init
          WHERE m.model_name = $1 AND m.version = $2",
        &[model_name.into(), loaded.version.into()],
    )?;
    let (table, columns) = (table?, columns?);
    if !backend::relation_exists(table) || columns.len() != 2 {
        return None;
    }
    // (a table the caller may not read: no baseline, rather than an ERROR)
    let readable = first_value::<bool>(
        "SELECT pg_catalog.has_column_privilege($1::oid, $2, 'SELECT')
                AND pg_catalog.has_column_privilege($1::oid, $3, 'SELECT')",
        &[table.into(), columns[0].as_str().into(), columns[1].as_str().into()],
    );
    if readable != Some(true) {
        return None;
    }
    let n_trained = loaded.items.n_trained() as u32;
    let mut wanted: Vec<u32> = (n_trained + 1..=loaded.items.len() as u32).collect();
    wanted.extend(test.iter().flat_map(|c| c.0.iter().copied()));
    wanted.sort_unstable();
    wanted.dedup();
    let ids: Vec<String> = wanted.iter().filter_map(|&t| loaded.items.item_id(t)).map(|id| id.to_string()).collect();
    let relation = readable_relation(Some(RegClass(table)), "init embedding's table");
    let [id_column, embedding_column] = [columns[0].clone(), columns[1].clone()];
    let source = VectorSource::new(relation, Some(SqlName(id_column)), Some(SqlName(embedding_column)));
    let read = source.read_where(&format!("{} = ANY ('{{{}}}'::pg_catalog.int8[])", source.id.quoted, ids.join(",")));
    let mut out = std::collections::HashMap::with_capacity(read.ids.len());
    for (r, &id) in read.ids.iter().enumerate() {
        if let Some(t) = loaded.items.token(id) {
            let v = read.row(r);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            out.insert(t, v.iter().map(|x| x / norm).collect());
        }
    }
    Some(out)
}

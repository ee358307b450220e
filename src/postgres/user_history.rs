//! A user's latest interactions, read at query time from a model's
//! interaction table with the caller's privileges (and row-level security),
//! so what a user did a minute ago counts without retraining.

use pgrx::prelude::*;

use super::errors::{notice_with_hint, raise_with_hint, Code};
use super::interactions::InteractionSource;
use super::model_cache::ReadyModel;
use super::relation::readable_relation;
use super::spi::{first_value, prepared, spi_failed};
use super::sql_types::{RegClass, SqlName};

/// The query text for a model's table, built from the table's current name
/// (so a renamed table is still found) and quoted column names. Ordered as
/// training orders a history: by time, then item id; newest first here.
fn history_query(model: &ReadyModel) -> String {
    // SAFETY: a syscache lookup by OID; NULL for a dropped table
    if unsafe { pg_sys::get_rel_name(model.source_table) }.is_null() {
        raise_with_hint(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("the interactions table of model \"{}\" no longer exists", model.name),
            "recommend() reads each user's history from the table the model was trained on; \
             recommend_next() takes a history as an array instead.",
        );
    }
    // checked up front (existence, SELECT privilege) for a clear ERROR
    // rather than one from inside the query
    let relation = readable_relation(Some(RegClass(model.source_table)), "interactions");
    let column = |name: &str, argument: &str| relation.column(Some(SqlName(name.to_string())), argument).quoted;
    let (user, item, time) = (
        column(&model.user_column, "user_column"),
        column(&model.item_column, "item_column"),
        column(&model.time_column, "time_column"),
    );
    let table = &relation.quoted;
    format!(
        "SELECT {item}::int8 FROM {table}
          WHERE {user} = $1 AND {item} IS NOT NULL AND {time} IS NOT NULL
          ORDER BY {time} DESC, {item} DESC LIMIT $2"
    )
}

/// Item ids of `user`'s latest `limit` interactions (all when None), newest
/// first.
pub fn latest_items(model: &ReadyModel, user: i64, limit: Option<usize>) -> Vec<i64> {
    let query = history_query(model);
    Spi::connect(|client| {
        let statement = prepared(
            client,
            &query,
            &[PgOid::BuiltIn(PgBuiltInOids::INT8OID), PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
        )?;
        let limit = limit.map(|l| l as i64);
        let rows = client.select(&*statement, None, &[user.into(), limit.into()])?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(item) = row.get::<i64>(1)? {
                items.push(item);
            }
        }
        Ok::<_, pgrx::spi::Error>(items)
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// The tokens of `user`'s interactions with items the model knows, oldest
/// first: at least the latest max_len of them (what the model reads), all of
/// them when `all_seen` (every item the user has interacted with).
pub fn user_tokens(model: &ReadyModel, user: i64, all_seen: bool) -> Vec<u32> {
    let max_len = model.max_len();
    let known = |items: &[i64]| -> Vec<u32> { items.iter().rev().filter_map(|&id| model.token(id)).collect() };
    if all_seen {
        return known(&latest_items(model, user, None));
    }
    let latest = latest_items(model, user, Some(max_len));
    let tokens = known(&latest);
    // items the model does not know took places in the window: read on
    if latest.len() == max_len && tokens.len() < max_len {
        known(&latest_items(model, user, None))
    } else {
        tokens
    }
}

/// Tells the caller (a NOTICE at train time) when no index serves the
/// history read of recommend(): a btree index whose first two keys are the
/// user and the time column. Views and foreign tables are not checked.
pub fn advise_history_index(source: &InteractionSource) {
    let checked = [pg_sys::RELKIND_RELATION, pg_sys::RELKIND_PARTITIONED_TABLE, pg_sys::RELKIND_MATVIEW];
    // SAFETY: a syscache lookup by OID
    if !checked.contains(&(unsafe { pg_sys::get_rel_relkind(source.relation.oid) } as u8)) {
        return;
    }
    let indexed = first_value::<bool>(
        "SELECT EXISTS (
             SELECT 1 FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
               JOIN pg_catalog.pg_am a ON a.oid = c.relam
              WHERE i.indrelid = $1 AND a.amname = 'btree' AND i.indpred IS NULL AND i.indnkeyatts >= 2
                AND i.indkey[0] = (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $2)
                AND i.indkey[1] = (SELECT attnum FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attname = $3))",
        &[source.relation.oid.into(), source.user.name.as_str().into(), source.time.name.as_str().into()],
    )
    .unwrap_or(false);
    if !indexed {
        notice_with_hint(
            format!(
                "recommend() will read each user's latest interactions from {} at query time, and no index on \
                 ({}, {}) serves that read",
                source.relation.display, source.user.name, source.time.name
            ),
            format!(
                "For fast recommendations: CREATE INDEX ON {} ({}, {}, {});",
                source.relation.quoted, source.user.quoted, source.time.quoted, source.item.quoted
            ),
        );
    }
}

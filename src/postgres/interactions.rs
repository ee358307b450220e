//! Reading a user's interaction table (user, item, time) through SPI, with
//! the caller's privileges and row-level security.

use pgrx::pg_sys;
use tfllmer_core::graph::{f64_order_key, Event};

use super::errors::{raise, warning_with_hint, Code};
use super::relation::{UserColumn, UserRelation};
use super::row_stream::{stream_rows, Flow};
use super::spi::first_value;
use super::sql_types::SqlName;

/// The three checked columns of an interaction table.
pub struct InteractionSource {
    pub relation: UserRelation,
    pub user: UserColumn,
    pub item: UserColumn,
    pub time: UserColumn,
}

/// How a time value becomes an `i64` order key.
#[derive(Clone, Copy)]
enum TimeKey {
    /// the Datum holds an integer of this many bytes (int2/4/8, date, time,
    /// timestamp, timestamptz: all plain integers inside)
    Integer(u8),
    Float4,
    Float8,
    /// any other orderable type: PostgreSQL ranks the values (dense_rank)
    Ranked,
}

pub struct ReadEvents {
    pub events: Vec<Event>,
    /// rows skipped because user, item or time was NULL
    pub null_rows: u64,
}

impl InteractionSource {
    pub fn new(
        relation: UserRelation,
        user_column: Option<SqlName>,
        item_column: Option<SqlName>,
        time_column: Option<SqlName>,
    ) -> Self {
        let user = relation.column(user_column, "user_column");
        user.require_integer("user_column");
        let item = relation.column(item_column, "item_column");
        item.require_integer("item_column");
        let time = relation.column(time_column, "time_column");
        if !time.is_orderable() {
            raise(
                Code::ERRCODE_UNDEFINED_FUNCTION,
                format!(
                    "time_column: column \"{}\" of type {} has no ordering (no default btree operator class)",
                    time.name, time.type_name
                ),
            );
        }
        if time.is_string() {
            warn_text_order(&time);
        }
        Self { relation, user, item, time }
    }

    fn time_key(&self) -> TimeKey {
        match self.time.base_type {
            pg_sys::INT2OID => TimeKey::Integer(2),
            pg_sys::INT4OID | pg_sys::DATEOID => TimeKey::Integer(4),
            pg_sys::INT8OID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID | pg_sys::TIMEOID => TimeKey::Integer(8),
            pg_sys::FLOAT4OID => TimeKey::Float4,
            pg_sys::FLOAT8OID => TimeKey::Float8,
            _ => TimeKey::Ranked,
        }
    }

    fn query(&self, time_key: TimeKey) -> String {
        let time = match time_key {
            TimeKey::Ranked => format!(
                "CASE WHEN {t} IS NULL THEN NULL ELSE pg_catalog.dense_rank() OVER (ORDER BY {t}) END",
                t = self.time.quoted
            ),
            _ => self.time.quoted.clone(),
        };
        format!("SELECT {}, {}, {} FROM {}", self.user.quoted, self.item.quoted, time, self.relation.quoted)
    }

    /// Reads every row; rows with a NULL in any of the three columns are
    /// counted and skipped.
    pub fn read_events(&self) -> ReadEvents {
        let time_key = self.time_key();
        let (user_bytes, item_bytes) = (integer_width(self.user.base_type), integer_width(self.item.base_type));
        // the planner's row estimate sizes the buffer once (views have none)
        let estimate =
            first_value::<f32>("SELECT reltuples FROM pg_catalog.pg_class WHERE oid = $1", &[self.relation.oid.into()])
                .unwrap_or(0.0);
        let mut out = ReadEvents { events: Vec::with_capacity(estimate.clamp(0.0, 1e8) as usize), null_rows: 0 };
        stream_rows(&self.query(time_key), &self.relation.display, &mut |values, nulls| {
            if nulls[..3].iter().any(|&n| n) {
                out.null_rows += 1;
                return Flow::Continue;
            }
            let t = values[2];
            let time = match time_key {
                TimeKey::Integer(bytes) => integer_datum(t, bytes),
                TimeKey::Float4 => f64_order_key(f32::from_bits(t.value() as u32) as f64),
                TimeKey::Float8 => f64_order_key(f64::from_bits(t.value() as u64)),
                TimeKey::Ranked => integer_datum(t, 8),
            };
            out.events.push(Event {
                user: integer_datum(values[0], user_bytes),
                item: integer_datum(values[1], item_bytes),
                time,
            });
            Flow::Continue
        });
        out
    }
}

/// Strings order as text ('10' before '9', dates in other formats out of
/// order): PostgreSQL's ordering decides, but the user should know.
fn warn_text_order(time: &UserColumn) {
    warning_with_hint(
        format!(
            "time_column: column \"{}\" is of type {}, so interactions are ordered as text ('10' sorts before \
             '9')",
            time.name, time.type_name
        ),
        format!(
            "Cast it to a number or a timestamp in a view, e.g. CREATE VIEW v AS SELECT ..., {}::bigint AS {} FROM ...",
            time.quoted, time.quoted
        ),
    );
}

pub fn integer_width(base_type: pg_sys::Oid) -> u8 {
    match base_type {
        pg_sys::INT2OID => 2,
        pg_sys::INT4OID => 4,
        _ => 8,
    }
}

/// A by-value integer Datum of the given width, sign-extended.
pub fn integer_datum(d: pg_sys::Datum, bytes: u8) -> i64 {
    match bytes {
        2 => d.value() as i16 as i64,
        4 => d.value() as i32 as i64,
        _ => d.value() as i64,
    }
}

//! Reading a user's interaction table (user, item, time) through SPI, with
//! the caller's privileges and row-level security.

use pgrx::pg_sys;
use pgrx::prelude::*;
use tfllmer_core::graph::{f64_order_key, Event};

use super::errors::{raise, Code};
use super::relation::{UserColumn, UserRelation};
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
    ///
    /// The query runs through SPI (so privileges and row-level security
    /// apply) but its rows go straight from the executor into Rust through a
    /// DestReceiver, without being copied into an SPI tuple table first.
    pub fn read_events(&self) -> ReadEvents {
        let time_key = self.time_key();
        let query = std::ffi::CString::new(self.query(time_key)).unwrap_or_default();
        // the planner's row estimate sizes the buffer once (views have none)
        let estimate = Spi::get_one_with_args::<f32>(
            "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = $1",
            &[self.relation.oid.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(0.0);
        let mut sink = EventSink {
            out: ReadEvents { events: Vec::with_capacity(estimate.clamp(0.0, 1e8) as usize), null_rows: 0 },
            time_key,
            user_bytes: integer_width(self.user.base_type),
            item_bytes: integer_width(self.item.base_type),
        };
        let mut receiver = EventReceiver {
            base: pg_sys::DestReceiver {
                receiveSlot: Some(receive_event),
                rStartup: Some(startup_noop),
                rShutdown: Some(receiver_noop),
                rDestroy: Some(receiver_noop),
                mydest: pg_sys::CommandDest::DestNone,
            },
            sink: &mut sink,
        };
        let status = Spi::connect(|_client| {
            let options = pg_sys::SPIExecuteOptions {
                read_only: true,
                dest: &mut receiver.base,
                ..Default::default()
            };
            // SAFETY: SPI is connected; `receiver` and `sink` outlive the call
            unsafe { pg_sys::SPI_execute_extended(query.as_ptr(), &options) }
        });
        // a SELECT whose rows go to a DestNone receiver reports SPI_OK_UTILITY
        if status != pg_sys::SPI_OK_UTILITY as i32 && status != pg_sys::SPI_OK_SELECT as i32 {
            raise(Code::ERRCODE_INTERNAL_ERROR, format!("reading {} failed: SPI status {status}", self.relation.display));
        }
        sink.out
    }
}

struct EventSink {
    out: ReadEvents,
    time_key: TimeKey,
    user_bytes: u8,
    item_bytes: u8,
}

impl EventSink {
    fn push(&mut self, values: &[pg_sys::Datum], nulls: &[bool]) {
        if nulls.iter().any(|&n| n) {
            self.out.null_rows += 1;
            return;
        }
        let t = values[2];
        let time = match self.time_key {
            TimeKey::Integer(bytes) => integer_datum(t, bytes),
            TimeKey::Float4 => f64_order_key(f32::from_bits(t.value() as u32) as f64),
            TimeKey::Float8 => f64_order_key(f64::from_bits(t.value() as u64)),
            TimeKey::Ranked => integer_datum(t, 8),
        };
        self.out.events.push(Event {
            user: integer_datum(values[0], self.user_bytes),
            item: integer_datum(values[1], self.item_bytes),
            time,
        });
    }
}

/// A DestReceiver whose rows land in an [`EventSink`].
#[repr(C)]
struct EventReceiver {
    /// first, so a pointer to it is a pointer to the receiver
    base: pg_sys::DestReceiver,
    sink: *mut EventSink,
}

#[pg_guard]
unsafe extern "C-unwind" fn receive_event(slot: *mut pg_sys::TupleTableSlot, receiver: *mut pg_sys::DestReceiver) -> bool {
    // SAFETY: the executor passes the receiver we built (base is its first
    // field) and a slot of the query's three columns
    unsafe {
        let sink = &mut *(*(receiver as *mut EventReceiver)).sink;
        if (*slot).tts_nvalid < 3 {
            pg_sys::slot_getsomeattrs_int(slot, 3);
        }
        let values = std::slice::from_raw_parts((*slot).tts_values, 3);
        let nulls = std::slice::from_raw_parts((*slot).tts_isnull, 3);
        sink.push(values, nulls);
    }
    true
}

#[pg_guard]
unsafe extern "C-unwind" fn startup_noop(_receiver: *mut pg_sys::DestReceiver, _operation: std::ffi::c_int, _desc: pg_sys::TupleDesc) {}

#[pg_guard]
unsafe extern "C-unwind" fn receiver_noop(_receiver: *mut pg_sys::DestReceiver) {}

fn integer_width(base_type: pg_sys::Oid) -> u8 {
    match base_type {
        pg_sys::INT2OID => 2,
        pg_sys::INT4OID => 4,
        _ => 8,
    }
}

/// A by-value integer Datum of the given width, sign-extended.
fn integer_datum(d: pg_sys::Datum, bytes: u8) -> i64 {
    match bytes {
        2 => d.value() as i16 as i64,
        4 => d.value() as i32 as i64,
        _ => d.value() as i64,
    }
}

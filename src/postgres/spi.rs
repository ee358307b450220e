//! Single-row SPI queries that may return no row at all (pgrx's
//! `Spi::get_one` treats "no row" as an error): a lookup by key, an UPDATE
//! ... RETURNING that matched nothing. Reads never assign a transaction id
//! (they must work on a hot standby); writes go through [`write_returning`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult};
use pgrx::PgMemoryContexts;

use super::errors::{raise, Code};

/// The ERROR for a failed catalog query (a bug or a broken installation,
/// never a user mistake).
pub fn spi_failed(e: pgrx::spi::Error) -> ! {
    raise(Code::ERRCODE_INTERNAL_ERROR, format!("tfllmer catalog access failed: {e}"))
}

/// Runs a read with a fresh snapshot (READ COMMITTED: what has committed
/// by now, and this transaction's own earlier writes), without making the
/// transaction a writing one: no transaction id is assigned, so reads work
/// on a hot standby and cost no xid. (pgrx's `update` and `Spi::get_one*`
/// assign one; polling loops such as wait_job need the fresh snapshot.)
fn fresh_read<R>(read: impl FnOnce() -> R) -> R {
    // SAFETY: plain transaction-state calls on the backend's main thread,
    // inside a transaction (every SQL-callable function runs in one); the
    // snapshot pushed here is popped below, or by the abort of an ERROR
    unsafe {
        // this transaction wrote: make its writes visible to the read (not
        // possible, nor needed, in parallel mode: a parallel plan of the
        // calling statement, e.g. CREATE TABLE ... AS SELECT ... recommend())
        if pg_sys::GetCurrentTransactionIdIfAny() != pg_sys::InvalidTransactionId && !pg_sys::IsInParallelMode() {
            pg_sys::CommandCounterIncrement();
        }
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let value = read();
    // SAFETY: pops the snapshot pushed above
    unsafe { pg_sys::PopActiveSnapshot() };
    value
}

/// Column 1 of the first row of a read-only query; None when there is no
/// row or it is NULL. Each call sees a fresh snapshot (see `fresh_read`).
pub fn first_value<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid<'_>]) -> Option<A> {
    fresh_read(|| {
        Spi::connect(|client| {
            let mut rows = client.select(query, Some(1), args)?;
            match rows.next() {
                Some(row) => row.get::<A>(1),
                None => Ok(None),
            }
        })
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// Columns 1 and 2 of the first row of a read-only query, None when there
/// is no row.
pub fn first_pair<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid<'_>],
) -> Option<(Option<A>, Option<B>)> {
    fresh_read(|| {
        Spi::connect(|client| {
            let mut rows = client.select(query, Some(1), args)?;
            match rows.next() {
                Some(row) => Ok(Some((row.get::<A>(1)?, row.get::<B>(2)?))),
                None => Ok(None),
            }
        })
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// Column 1 of the first row a writing statement returns (INSERT / UPDATE
/// / DELETE ... RETURNING, SELECT ... FOR UPDATE); None when there is none.
pub fn write_returning<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid<'_>]) -> Option<A> {
    Spi::connect_mut(|client| {
        let mut rows = client.update(query, Some(1), args)?;
        match rows.next() {
            Some(row) => row.get::<A>(1),
            None => Ok(None),
        }
    })
    .unwrap_or_else(|e| spi_failed(e))
}

/// Runs `f` in a memory context of its own, deleted when `f` returns:
/// whatever PostgreSQL allocates meanwhile (a detoasted blob, SPI's copies
/// of returned values) is freed at once instead of living as long as the
/// caller's context (for a set-returning function called for each row of
/// a query: until the query ends). `f` returns Rust values only.
pub fn in_own_memory<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let mut context = PgMemoryContexts::new(name);
    // SAFETY: an owned context made just now, a child of the current one
    // (deleted with it by an ERROR's cleanup too); nothing allocated in it
    // is referenced after `f` returns
    unsafe { context.switch_to(|_| f()) }
}

thread_local! {
    /// Plans kept for the life of the backend, by query text.
    static PREPARED: RefCell<HashMap<String, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// Kept plans beyond this many are dropped (all of them: queries built from
/// table names can pile up when tables are renamed or recreated).
const MAX_PREPARED: usize = 64;

/// A read-only statement planned once per backend and kept (PostgreSQL
/// replans it when a table it reads changes). For the queries that run on
/// every recommendation, where planning would cost more than running.
pub fn prepared(client: &SpiClient<'_>, query: &str, arg_types: &[PgOid]) -> SpiResult<Rc<OwnedPreparedStatement>> {
    if let Some(found) = PREPARED.with(|p| p.borrow().get(query).cloned()) {
        return Ok(found);
    }
    let statement = Rc::new(client.prepare(query, arg_types)?.keep());
    PREPARED.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_PREPARED {
            p.clear();
        }
        p.insert(query.to_string(), statement.clone());
    });
    Ok(statement)
}

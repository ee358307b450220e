//! Transactions of a background worker, which has none of its own: each
//! piece of work that touches the database runs in a short transaction of
//! its own, and every way it can fail (a PostgreSQL ERROR, a Rust panic)
//! comes back as a plain message, the transaction rolled back.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReportWithLevel};
use pgrx::PgTryBuilder;

/// Runs `body` in its own transaction and commits it; a PostgreSQL ERROR
/// or a panic rolls it back and comes back as the error's message.
pub fn transaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: called only where no transaction is open (a background
    // worker between units of work), on the main thread
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(AssertUnwindSafe(move || {
        let value = body();
        // SAFETY: pops the snapshot pushed above and commits the
        // transaction started above
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(value)
    }))
    .catch_others(|e| Err(caught_message(&e)))
    .execute();
    if result.is_err() {
        // SAFETY: the transaction started above is still open (its body or
        // its commit failed); aborting also releases the snapshot
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    result
}

/// Runs `body` in a subtransaction of the open transaction: a PostgreSQL
/// ERROR or a panic inside rolls back what `body` did (and only that) and
/// comes back as the error's message; otherwise its work stays in the
/// transaction. (The pattern of PL/Python's `plpy.subtransaction`.)
pub fn subtransaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: inside a transaction, on the main thread; the memory context
    // and resource owner are restored as PostgreSQL's PLs restore them
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let result = PgTryBuilder::new(AssertUnwindSafe(move || {
        let value = body();
        // SAFETY: releases the subtransaction begun above
        unsafe {
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        Ok(value)
    }))
    .catch_others(|e| Err(caught_message(&e)))
    .execute();
    if result.is_err() {
        // SAFETY: the subtransaction begun above is still open (its body
        // failed); rolling it back returns to the outer transaction
        unsafe {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
    }
    result
}

/// Rolls back a transaction left open by an unwinding panic (a worker
/// that caught one outside [`transaction`]).
pub fn abort_open_transaction() {
    // SAFETY: IsTransactionState only reads the transaction state; the
    // abort is the documented cleanup after an error
    unsafe {
        if pg_sys::IsTransactionState() {
            pg_sys::AbortCurrentTransaction();
        }
    }
}

/// The message of a caught ERROR or panic, with its DETAIL when it has one
/// (and never a backtrace or a source location).
pub fn caught_message(e: &CaughtError) -> String {
    let report = match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    match report.detail() {
        // (detail() is the DETAIL alone: pgrx keeps a captured backtrace apart)
        Some(detail) if !detail.is_empty() => format!("{} ({detail})", report.message()),
        _ => report.message().to_string(),
    }
}

/// The message of a panic payload caught with `catch_unwind`: a string
/// panic's text, or the message of a PostgreSQL ERROR that unwound.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(e) = payload.downcast_ref::<CaughtError>() {
        caught_message(e)
    } else if let Some(r) = payload.downcast_ref::<ErrorReportWithLevel>() {
        r.message().to_string()
    } else {
        "a panic without a message".to_string()
    }
}

//! The state of this backend that tfllmer asks PostgreSQL about directly
//! (no SQL): which database and role it is, whether it runs on a hot
//! standby, its isolation level, and an interruptible sleep. Every raw FFI
//! call the SQL-facing functions need lives here, each with its SAFETY note.

use std::time::Duration;

use pgrx::pg_sys;

use super::errors::{raise_with_hint, Code};

/// The database this backend is connected to.
pub fn database() -> pg_sys::Oid {
    // SAFETY: MyDatabaseId is set once at connection time and only read here,
    // on the backend's main thread
    unsafe { pg_sys::MyDatabaseId }
}

/// The role privileges are checked against now (after SET ROLE / SECURITY
/// DEFINER), as `current_user` reports it.
pub fn current_role() -> pg_sys::Oid {
    // SAFETY: a plain getter of backend-local state, on the main thread
    unsafe { pg_sys::GetUserId() }
}

/// True on a hot standby (the server is replaying WAL): nothing may be
/// written, not even bookkeeping.
pub fn in_recovery() -> bool {
    // SAFETY: a plain query of shared state, safe in any backend
    unsafe { pg_sys::RecoveryInProgress() }
}

/// Refuses a call that must write on a hot standby: 25006
/// (read_only_sql_transaction), with a HINT to call it on the primary.
pub fn require_primary(function: &str) {
    if in_recovery() {
        raise_with_hint(
            Code::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!("tfllmer.{function}() writes and cannot run on a hot standby (the server is in recovery)"),
            "Call it on the primary; the standby sees the result once it has replayed it.",
        );
    }
}

/// True when the transaction's snapshot is fixed for its whole life
/// (REPEATABLE READ or SERIALIZABLE).
pub fn snapshot_is_fixed() -> bool {
    // SAFETY: XactIsoLevel is backend-local and only read here
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Makes the next read of pg_stat_activity fetch fresh data (a transaction
/// otherwise keeps the first snapshot of the activity statistics).
pub fn refresh_activity_snapshot() {
    // SAFETY: frees this backend's cached statistics snapshot; nothing
    // holds a pointer into it between SQL statements
    unsafe { pg_sys::pgstat_clear_snapshot() };
}

/// Sleeps on the backend's latch for `d`; Ctrl-C, statement_timeout and
/// the postmaster's death end the wait (as an ERROR / exit).
pub fn sleep_interruptibly(d: Duration) {
    // SAFETY: MyLatch is this backend's own latch; WaitLatch and ResetLatch
    // are the documented way to sleep in a backend's main thread
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis().min(i64::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// Whether a relation with this OID still exists.
pub fn relation_exists(oid: pg_sys::Oid) -> bool {
    // SAFETY: a syscache lookup by OID; returns 0 for a missing relation
    unsafe { pg_sys::get_rel_relkind(oid) != 0 }
}

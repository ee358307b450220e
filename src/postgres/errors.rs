//! Raising SQL errors. Every user mistake becomes an ERROR with a SQLSTATE
//! that fits it; nothing here panics.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

pub use pgrx::PgSqlErrorCode as Code;

/// Raises an ERROR (rolls back the statement) and never returns.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "tfllmer").report(PgLogLevel::ERROR);
    unreachable!("an ERROR report returns control to PostgreSQL")
}

/// Like [`raise`], with a HINT line telling the user what to do.
pub fn raise_with_hint(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "tfllmer").set_hint(hint.into()).report(PgLogLevel::ERROR);
    unreachable!("an ERROR report returns control to PostgreSQL")
}

/// The value of a required argument, or an ERROR naming it.
pub fn required<T>(value: Option<T>, argument: &str) -> T {
    match value {
        Some(v) => v,
        None => raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{argument} must not be NULL")),
    }
}

/// Names of tfllmer objects (graphs, embeddings, models): 1 to 63 bytes, like
/// PostgreSQL identifiers, but any characters (they are data, never SQL).
pub fn object_name<'a>(value: Option<&'a str>, argument: &str) -> &'a str {
    let name = required(value, argument);
    if name.is_empty() || name.len() > 63 {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{argument} must be 1 to 63 bytes long, got {} bytes", name.len()),
        );
    }
    name
}

/// A NOTICE with a HINT line (advice that does not stop the call).
pub fn notice_with_hint(message: impl Into<String>, hint: impl Into<String>) {
    ErrorReport::new(Code::ERRCODE_SUCCESSFUL_COMPLETION, message.into(), "tfllmer")
        .set_hint(hint.into())
        .report(PgLogLevel::NOTICE);
}

/// A WARNING with a HINT line (something the user should fix, that does
/// not stop the call).
pub fn warning_with_hint(message: impl Into<String>, hint: impl Into<String>) {
    ErrorReport::new(Code::ERRCODE_WARNING, message.into(), "tfllmer")
        .set_hint(hint.into())
        .report(PgLogLevel::WARNING);
}

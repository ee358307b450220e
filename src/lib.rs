//! tfllmer: LLM-enhanced sequential recommendation (TF-LLMER) inside
//! PostgreSQL. This crate is the thin SQL layer; the maths lives in
//! `tfllmer_core` (crates/tfllmer-core).

::pgrx::pg_module_magic!(name, version);

mod api;
mod postgres;
mod settings;
mod worker;

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    quiet_backtraces();
    settings::define();
}

/// pgrx appends a captured Rust backtrace to the DETAIL of every ERROR that
/// passes through Rust code whenever RUST_BACKTRACE is set in the server's
/// environment; users must never see one. Capturing is turned off for this
/// process unless RUST_LIB_BACKTRACE asks for it explicitly (a developer
/// who wants backtraces sets RUST_LIB_BACKTRACE=1).
fn quiet_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // (_PG_init runs once, on the backend's only thread, before tfllmer
        // starts any thread: nothing reads the environment meanwhile)
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

// The catalog (tables, views, policies, grants), written by hand so it reads
// as SQL and can be versioned with upgrade scripts.
pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);

/// `#[pg_test]`s: SQL behaviour checked from Rust inside a real backend.
/// pgrx runs them from schema `tests`, which must be this inline module;
/// the test files are included into it. Bad-input cases with their
/// SQLSTATEs live in tests/pg_regress.
#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    include!("tests/graphs.rs");
    include!("tests/training.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

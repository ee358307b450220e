//! Argument types that pgrx does not provide: `name` and a plain `regclass`.

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable};
use pgrx::{FromDatum, IntoDatum};

/// A SQL `name` argument (column names), as a Rust string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlName(pub String);

impl FromDatum for SqlName {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null || datum.is_null() {
            return None;
        }
        // a name Datum points at a NUL-terminated NameData
        // SAFETY: a non-NULL name/text datum points to a NUL-terminated value PostgreSQL keeps for the call
        let cstr = unsafe { CStr::from_ptr(datum.cast_mut_ptr::<std::ffi::c_char>()) };
        Some(SqlName(cstr.to_string_lossy().into_owned()))
    }
}

impl IntoDatum for SqlName {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // the SQL layer never returns a name; text is what callers get
        self.0.into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::NAMEOID
    }
}

// SAFETY: the argument is unboxed through FromDatum, which checks for NULL
unsafe impl<'fcx> ArgAbi<'fcx> for SqlName {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: the argument comes from PostgreSQL's call frame, as ArgAbi requires
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| SqlName(String::new()))
    }
}

// SAFETY: the SQL type `name` matches the Rust type's datum representation
unsafe impl SqlTranslatable for SqlName {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(SqlName);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("name"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("name")));
}

/// A `regclass` argument as a bare OID. Unlike pgrx's `PgRelation` it does not
/// open the relation, so a stale OID becomes our own clear ERROR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            None
        } else {
            // SAFETY: a regclass datum is an OID passed by value
            unsafe { pg_sys::Oid::from_datum(datum, false) }.map(RegClass)
        }
    }
}

impl IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

// SAFETY: the argument is unboxed through FromDatum, which checks for NULL
unsafe impl<'fcx> ArgAbi<'fcx> for RegClass {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: the argument comes from PostgreSQL's call frame, as ArgAbi requires
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or(RegClass(pg_sys::InvalidOid))
    }
}

// SAFETY: the SQL type `regclass` is an OID, as the Rust type holds
unsafe impl SqlTranslatable for RegClass {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(RegClass);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("regclass"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("regclass")));
}

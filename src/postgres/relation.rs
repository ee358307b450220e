//! Checks on user tables and columns before any query is built from them.
//! Identifiers reach SQL only through [`quote_ident`] after these checks.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

use super::errors::{raise, required, Code};
use super::sql_types::{RegClass, SqlName};

/// Always-quoted identifier: safe for any name, keyword or not.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn owned_cstr(ptr: *mut std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: ptr is non-NULL and points to a NUL-terminated string PostgreSQL allocated
        Some(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned())
    }
}

/// A relation the caller named through a `regclass` argument.
pub struct UserRelation {
    pub oid: pg_sys::Oid,
    /// schema-qualified and quoted, for building queries
    pub quoted: String,
    /// schema.table as users read it, for messages and the catalog
    pub display: String,
    argument: &'static str,
}

/// A column of a [`UserRelation`], checked to exist and be readable.
pub struct UserColumn {
    pub name: String,
    pub quoted: String,
    /// the type after looking through domains
    pub base_type: pg_sys::Oid,
    /// the column's own type
    pub declared_type: pg_sys::Oid,
    /// the declared type, for messages
    pub type_name: String,
}

/// Resolves a relation argument that will be read with SELECT: it must exist
/// and be something that holds rows.
pub fn readable_relation(value: Option<RegClass>, argument: &'static str) -> UserRelation {
    let RegClass(oid) = required(value, argument);
    // SAFETY: a syscache lookup by OID; 0 for a missing relation
    let relkind = unsafe { pg_sys::get_rel_relkind(oid) } as u8;
    // SAFETY: a syscache lookup by OID; NULL for a missing relation
    let name = owned_cstr(unsafe { pg_sys::get_rel_name(oid) });
    let (Some(name), true) = (name, relkind != 0) else {
        raise(
            Code::ERRCODE_UNDEFINED_TABLE,
            format!("{argument}: relation with OID {} does not exist", u32::from(oid)),
        );
    };
    let namespace =
        // SAFETY: catalog lookups by OID; NULL for a missing namespace
        owned_cstr(unsafe { pg_sys::get_namespace_name(pg_sys::get_rel_namespace(oid)) }).unwrap_or_default();
    let display = format!("{namespace}.{name}");
    let holds_rows = [
        pg_sys::RELKIND_RELATION,
        pg_sys::RELKIND_VIEW,
        pg_sys::RELKIND_MATVIEW,
        pg_sys::RELKIND_FOREIGN_TABLE,
        pg_sys::RELKIND_PARTITIONED_TABLE,
    ];
    if !holds_rows.contains(&relkind) {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("{argument} must be a table, view or materialized view; \"{display}\" is not"),
        );
    }
    UserRelation { oid, quoted: format!("{}.{}", quote_ident(&namespace), quote_ident(&name)), display, argument }
}

impl UserRelation {
    /// Resolves a column argument: it must exist and be readable by the caller.
    pub fn column(&self, value: Option<SqlName>, argument: &str) -> UserColumn {
        let SqlName(name) = required(value, argument);
        let cname = CString::new(name.as_str()).unwrap_or_default();
        // SAFETY: a syscache lookup with a NUL-terminated name that outlives the call
        let attnum = unsafe { pg_sys::get_attnum(self.oid, cname.as_ptr()) };
        if attnum < 0 {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "{argument}: \"{name}\" is a system column; name a column of {} \"{}\"",
                    self.argument, self.display
                ),
            );
        }
        if attnum == 0 {
            raise(
                Code::ERRCODE_UNDEFINED_COLUMN,
                format!("{argument}: column \"{name}\" does not exist in {} \"{}\"", self.argument, self.display),
            );
        }
        // SAFETY: a plain getter of the backend's current role
        let user = unsafe { pg_sys::GetUserId() };
        // SAFETY: an ACL check by OIDs and column number; it reads the catalog only
        let readable = unsafe {
            pg_sys::pg_class_aclcheck(self.oid, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
                == pg_sys::AclResult::ACLCHECK_OK
                || pg_sys::pg_attribute_aclcheck(self.oid, attnum, user, pg_sys::ACL_SELECT as pg_sys::AclMode)
                    == pg_sys::AclResult::ACLCHECK_OK
        };
        if !readable {
            raise(
                Code::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "permission denied for {} \"{}\": the current role cannot SELECT column \"{name}\" ({argument})",
                    self.argument, self.display
                ),
            );
        }
        // SAFETY: a syscache lookup of a column that get_attnum just found
        let declared = unsafe { pg_sys::get_atttype(self.oid, attnum) };
        // SAFETY: a type cache lookup by OID
        let base_type = unsafe { pg_sys::getBaseType(declared) };
        // SAFETY: formats a type name by OID into a palloc'd string
        let type_name = owned_cstr(unsafe { pg_sys::format_type_be(declared) }).unwrap_or_default();
        UserColumn { quoted: quote_ident(&name), name, base_type, declared_type: declared, type_name }
    }
}

impl UserColumn {
    /// Raises unless the column holds integer ids (smallint, integer, bigint).
    pub fn require_integer(&self, argument: &str) {
        if ![pg_sys::INT2OID, pg_sys::INT4OID, pg_sys::INT8OID].contains(&self.base_type) {
            raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "{argument}: column \"{}\" must be smallint, integer or bigint, not {}",
                    self.name, self.type_name
                ),
            );
        }
    }

    /// Whether values of this column can be ordered (a default btree order).
    pub fn is_orderable(&self) -> bool {
        // SAFETY: a type cache lookup by OID; the entry lives as long as the
        // backend and is only read
        let entry = unsafe { pg_sys::lookup_type_cache(self.base_type, pg_sys::TYPECACHE_LT_OPR as i32) };
        // SAFETY: entry is non-NULL (checked) and lives as long as the backend
        !entry.is_null() && unsafe { (*entry).lt_opr } != pg_sys::InvalidOid
    }

    /// Whether the column holds strings (text, varchar, char, name, or a
    /// domain or type of the string category): they order as text does.
    pub fn is_string(&self) -> bool {
        // SAFETY: a syscache lookup of the type's category by OID
        unsafe { pg_sys::TypeCategory(self.base_type) as u8 == pg_sys::TYPCATEGORY_STRING }
    }
}

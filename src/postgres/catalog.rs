//! The catalog tables (sql/bootstrap.sql): one row per graph or embedding,
//! its data in a blob column, and for objects larger than
//! `tfllmer.part_size` (256 MB by default; PostgreSQL limits one value to
//! 1 GB) the rest of the data in pieces in tfllmer.object_parts. Row-level security on them shows each role
//! only the rows of roles whose privileges it has, so every query here runs
//! as the caller and sees exactly what the caller may see.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use super::errors::{raise, raise_with_hint, Code};
use super::spi::{first_pair, first_value, spi_failed};

/// One catalog table and how its objects are named in messages.
pub struct Catalog {
    /// schema-qualified table
    pub table: &'static str,
    /// the name column (primary key)
    pub key: &'static str,
    /// the column holding the object's data
    pub blob: &'static str,
    /// "graph", "embedding": for messages
    pub kind: &'static str,
    /// the function that drops one, for hints
    pub drop_function: &'static str,
    /// columns added in 0.4.0 (left out while the database's catalog is older)
    pub columns_since_0_4: &'static [&'static str],
}

/// Whether the database's tfllmer catalog is that of 0.4.0 or later. The
/// library of a newer version can run against an older catalog between
/// installing it and ALTER EXTENSION UPDATE: it then leaves out what the
/// older catalog lacks (pieces, the new columns) instead of failing.
pub fn catalog_is_current() -> bool {
    first_value::<bool>("SELECT pg_catalog.to_regclass('tfllmer.object_parts') IS NOT NULL", &[]).unwrap_or(false)
}

pub const GRAPHS: Catalog = Catalog {
    table: "tfllmer.graph_store",
    key: "graph_name",
    blob: "csr",
    kind: "graph",
    drop_function: "tfllmer.drop_graph",
    columns_since_0_4: &[],
};

pub const EMBEDDINGS: Catalog = Catalog {
    table: "tfllmer.embedding_store",
    key: "embedding_name",
    blob: "data",
    kind: "embedding",
    drop_function: "tfllmer.drop_embedding",
    columns_since_0_4: &["method"],
};

impl Catalog {
    /// Whether an object of that name is visible to the caller.
    pub fn exists(&self, name: &str) -> bool {
        first_value::<bool>(
            &format!("SELECT EXISTS (SELECT 1 FROM {} WHERE {} = $1)", self.table, self.key),
            &[name.into()],
        )
        .unwrap_or(false)
    }

    /// Before building: raises unless the name is free or `replace` is set,
    /// so that a taken name fails before the expensive part.
    pub fn check_name_free(&self, name: &str, replace: bool) {
        if !replace && self.exists(name) {
            raise_with_hint(
                Code::ERRCODE_DUPLICATE_OBJECT,
                format!("{} \"{name}\" already exists", self.kind),
                format!("Pass replace => true to rebuild it, or drop it with {}().", self.drop_function),
            );
        }
    }

    /// Deletes the caller's object (and its pieces); false when there is none.
    pub fn delete(&self, name: &str) -> bool {
        // (its pieces go with it: ON DELETE CASCADE)
        Spi::get_one_with_args::<i64>(
            &format!(
                "WITH gone AS (DELETE FROM {} WHERE {} = $1 RETURNING 1) SELECT count(*) FROM gone",
                self.table, self.key
            ),
            &[name.into()],
        )
        .unwrap_or_else(|e| spi_failed(e))
        .unwrap_or(0)
            > 0
    }

    /// Stores a new object owned by the current role: `columns` (after the
    /// name) with their values, and `blob` (its first `tfllmer.part_size`
    /// bytes in the blob column, the rest in numbered pieces). With
    /// `replace`, the caller's old object of that name goes first. Raises
    /// when another role holds the name.
    pub fn insert(&self, name: &str, replace: bool, columns: &[&str], values: Vec<DatumWithOid<'_>>, blob: &[u8]) {
        if replace {
            self.delete(name);
        }
        let current = catalog_is_current();
        let piece_size = if current { crate::settings::part_bytes() } else { blob.len().max(1) };
        let mut pieces = blob.chunks(piece_size);
        let first = pieces.next().unwrap_or_default();
        let (mut columns, mut values): (Vec<&str>, Vec<DatumWithOid<'_>>) =
            columns.iter().copied().zip(values).filter(|(c, _)| current || !self.columns_since_0_4.contains(c)).unzip();
        columns.push(self.blob);
        values.push(first.into());
        let placeholders: Vec<String> = (2..=columns.len() + 1).map(|i| format!("${i}")).collect();
        let query = format!(
            "WITH added AS (
                INSERT INTO {table} ({key}, owner, {cols}) VALUES ($1, tfllmer.current_role_oid(), {vals})
                ON CONFLICT ({key}) DO NOTHING RETURNING 1)
             SELECT count(*) FROM added",
            table = self.table,
            key = self.key,
            cols = columns.join(", "),
            vals = placeholders.join(", ")
        );
        let mut args: Vec<DatumWithOid<'_>> = Vec::with_capacity(values.len() + 1);
        args.push(name.into());
        args.extend(values);
        let inserted = Spi::get_one_with_args::<i64>(&query, &args).unwrap_or_else(|e| spi_failed(e)).unwrap_or(0);
        if inserted == 0 {
            // the name exists, but not visibly: another role's object
            raise(
                Code::ERRCODE_DUPLICATE_OBJECT,
                format!("{} name \"{name}\" is already used by another role", self.kind),
            );
        }
        for (part, piece) in pieces.enumerate() {
            Spi::run_with_args(
                &format!("INSERT INTO tfllmer.object_parts ({}, part, data) VALUES ($1, $2, $3)", self.key),
                &[name.into(), (part as i32 + 1).into(), piece.into()],
            )
            .unwrap_or_else(|e| spi_failed(e));
        }
    }

    /// The data of an object the caller can see (its pieces joined), or
    /// "does not exist".
    pub fn load_blob(&self, name: &str) -> Vec<u8> {
        if !catalog_is_current() {
            return first_value::<Vec<u8>>(
                &format!("SELECT {} FROM {} WHERE {} = $1", self.blob, self.table, self.key),
                &[name.into()],
            )
            .unwrap_or_else(|| self.raise_unknown(name));
        }
        let (blob, parts) = first_pair::<Vec<u8>, i64>(
            &format!(
                "SELECT {blob}, (SELECT count(*) FROM tfllmer.object_parts p WHERE p.{key} = $1 AND p.owner = o.owner)
                   FROM {table} o WHERE {key} = $1",
                blob = self.blob,
                table = self.table,
                key = self.key
            ),
            &[name.into()],
        )
        .unwrap_or_else(|| self.raise_unknown(name));
        let mut blob = blob.unwrap_or_default();
        for part in 1..=parts.unwrap_or(0) {
            let piece = first_value::<Vec<u8>>(
                &format!(
                    "SELECT p.data FROM tfllmer.object_parts p JOIN {table} o ON o.{key} = p.{key} AND o.owner = p.owner
                      WHERE p.{key} = $1 AND p.part = $2",
                    table = self.table,
                    key = self.key
                ),
                &[name.into(), (part as i32).into()],
            )
            .unwrap_or_else(|| {
                raise(
                    Code::ERRCODE_DATA_CORRUPTED,
                    format!("{} \"{name}\": piece {part} of its data is missing", self.kind),
                )
            });
            blob.extend_from_slice(&piece);
        }
        blob
    }

    /// The ERROR for a name the caller cannot see.
    pub fn raise_unknown(&self, name: &str) -> ! {
        raise(Code::ERRCODE_UNDEFINED_OBJECT, format!("{} \"{name}\" does not exist", self.kind))
    }

    /// drop_*(): true when dropped; unknown names raise unless `if_exists`.
    pub fn drop(&self, name: &str, if_exists: bool) -> bool {
        if self.delete(name) {
            true
        } else if if_exists {
            false
        } else {
            self.raise_unknown(name)
        }
    }
}

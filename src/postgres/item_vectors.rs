//! Reading item embeddings (id, vector) through SPI. The vector column may be
//! real[], double precision[], or any type with a cast to real[] (pgvector's
//! `vector`, domains, ...). Every row is checked; the first bad one is an
//! ERROR that names the item.

use pgrx::array::RawArray;
use pgrx::pg_sys;
use pgrx::prelude::*;
use tfllmer_core::rec_pca::{BlockFn, Embeddings, RecPcaError, RowSource};

use super::errors::{raise, Code};
use super::interactions::{integer_datum, integer_width};
use super::relation::{UserColumn, UserRelation};
use super::row_stream::{stream_rows, Flow};
use super::sql_types::SqlName;

#[derive(Clone, Copy, PartialEq)]
enum VectorType {
    Float4,
    Float8,
    /// read as `column::real[]`
    CastToFloat4,
}

pub struct VectorSource {
    pub relation: UserRelation,
    pub id: UserColumn,
    pub vector: UserColumn,
    vector_type: VectorType,
}

impl VectorSource {
    pub fn new(relation: UserRelation, id_column: Option<SqlName>, embedding_column: Option<SqlName>) -> Self {
        let id = relation.column(id_column, "id_column");
        id.require_integer("id_column");
        let vector = relation.column(embedding_column, "embedding_column");
        let vector_type = match vector.base_type {
            pg_sys::FLOAT4ARRAYOID => VectorType::Float4,
            pg_sys::FLOAT8ARRAYOID => VectorType::Float8,
            _ if castable_to_real_array(vector.declared_type) => VectorType::CastToFloat4,
            _ => raise(
                Code::ERRCODE_DATATYPE_MISMATCH,
                format!(
                    "embedding_column: column \"{}\" must be real[], double precision[] or a type with a cast \
                     to real[] (such as pgvector's vector), not {}",
                    vector.name, vector.type_name
                ),
            ),
        };
        Self { relation, id, vector, vector_type }
    }

    /// Reads all rows. Raises on NULL ids or vectors, arrays that are empty,
    /// multi-dimensional, contain NULLs, or differ in length, and values
    /// outside the range of real.
    pub fn read(&self) -> Embeddings {
        self.read_query(&self.query())
    }

    /// The rows whose id satisfies `condition` (SQL over the quoted id column).
    pub fn read_where(&self, condition: &str) -> Embeddings {
        self.read_query(&format!("{} WHERE {condition}", self.query()))
    }

    /// SELECT id, vector (as real[] where it needs the cast).
    fn query(&self) -> String {
        let vector = match self.vector_type {
            VectorType::CastToFloat4 => format!("{}::pg_catalog.float4[]", self.vector.quoted),
            _ => self.vector.quoted.clone(),
        };
        format!("SELECT {}, {} FROM {}", self.id.quoted, vector, self.relation.quoted)
    }

    /// A row's item id, or what is wrong with it (NULL id or vector).
    fn check_row(&self, values: &[pg_sys::Datum], nulls: &[bool], id_bytes: u8) -> Result<i64, (Code, String)> {
        if nulls[0] {
            return Err((
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("id_column: \"{}\" is NULL in a row", self.id.name),
            ));
        }
        let item = integer_datum(values[0], id_bytes);
        if nulls[1] {
            return Err((
                Code::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                format!("embedding_column: item {item} has a NULL embedding"),
            ));
        }
        Ok(item)
    }

    fn read_query(&self, query: &str) -> Embeddings {
        let id_bytes = integer_width(self.id.base_type);
        let float8 = self.vector_type == VectorType::Float8;
        let mut out = Embeddings { ids: Vec::new(), input_dim: 0, values: Vec::new() };
        let mut failure: Option<(Code, String)> = None;
        stream_rows(query, &self.relation.display, &mut |values, nulls| {
            let item = match self.check_row(values, nulls, id_bytes) {
                Ok(item) => item,
                Err(e) => {
                    failure = Some(e);
                    return Flow::Stop;
                }
            };
            // SAFETY: column 2 is a non-NULL array of float4 or float8
            match unsafe { append_vector(values[1], float8, &mut out) } {
                Ok(()) => {
                    out.ids.push(item);
                    check_for_interrupts!();
                    Flow::Continue
                }
                Err((code, problem)) => {
                    failure = Some((code, format!("embedding_column: the embedding of item {item} {problem}")));
                    Flow::Stop
                }
            }
        });
        if let Some((code, message)) = failure {
            raise(code, message);
        }
        out
    }
}

/// Rows of a table read again on every pass, for Rec-PCA's randomized
/// method: nothing but the item ids (8 bytes an item) and one block of
/// rows is held. Every pass runs under the statement's snapshot (read-only
/// SPI), so every pass sees the same rows; their order may differ (a
/// synchronised sequential scan may start anywhere), so each row's place is
/// found by its id. Bad rows (NULL, ragged, NaN) are ERRORs naming the item.
pub struct StreamedVectors<'a> {
    source: &'a VectorSource,
    /// the item ids, ascending: a row's place is its id's index
    pub ids: Vec<i64>,
    dim: usize,
    /// rows handed to the solver at once
    block_rows: usize,
    /// passes so far, and the callback's phase reporting
    pub passes: usize,
}

impl<'a> StreamedVectors<'a> {
    /// Reads the ids (not the vectors, which TOAST keeps aside) and the
    /// first row's width. Raises on NULL or duplicate ids; None when the
    /// table has no rows.
    pub fn new(source: &'a VectorSource) -> Option<Self> {
        let query = format!("SELECT {} FROM {}", source.id.quoted, source.relation.quoted);
        let id_bytes = integer_width(source.id.base_type);
        let mut ids = Vec::new();
        let mut null_id = false;
        stream_rows(&query, &source.relation.display, &mut |values, nulls| {
            if nulls[0] {
                null_id = true;
                return Flow::Stop;
            }
            ids.push(integer_datum(values[0], id_bytes));
            Flow::Continue
        });
        if null_id {
            raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("id_column: \"{}\" is NULL in a row", source.id.name));
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            raise(
                Code::ERRCODE_UNIQUE_VIOLATION,
                format!("embedding_column: item {} has more than one embedding", w[0]),
            );
        }
        let first = *ids.first()?;
        let dim = source.read_where(&format!("{} = {first}", source.id.quoted)).input_dim;
        Some(Self { source, ids, dim, block_rows: 1024, passes: 0 })
    }
}

impl RowSource for StreamedVectors<'_> {
    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn item_id(&self, place: usize) -> i64 {
        self.ids.get(place).copied().unwrap_or(-1)
    }

    fn pass(&mut self, f: &mut BlockFn<'_>) -> Result<(), RecPcaError> {
        self.passes += 1;
        let id_bytes = integer_width(self.source.id.base_type);
        let float8 = self.source.vector_type == VectorType::Float8;
        let mut block = Embeddings { ids: Vec::new(), input_dim: self.dim, values: Vec::new() };
        let mut places: Vec<usize> = Vec::with_capacity(self.block_rows);
        let mut failure: Option<(Code, String)> = None;
        let mut solver: Result<(), RecPcaError> = Ok(());
        let ids = &self.ids;
        let block_rows = self.block_rows;
        stream_rows(&self.source.query(), &self.source.relation.display, &mut |values, nulls| {
            let problem = self.source.check_row(values, nulls, id_bytes);
            let item = match problem {
                Ok(item) => item,
                Err(e) => {
                    failure = Some(e);
                    return Flow::Stop;
                }
            };
            let Ok(place) = ids.binary_search(&item) else {
                solver = Err(RecPcaError::Source(format!("item {item} appeared while the embeddings were read")));
                return Flow::Stop;
            };
            // SAFETY: column 2 is a non-NULL array of float4 or float8 (checked above)
            if let Err((code, problem)) = unsafe { append_vector(values[1], float8, &mut block) } {
                failure = Some((code, format!("embedding_column: the embedding of item {item} {problem}")));
                return Flow::Stop;
            }
            places.push(place);
            check_for_interrupts!();
            if places.len() == block_rows {
                solver = f(&places, &block.values);
                places.clear();
                block.values.clear();
                if solver.is_err() {
                    return Flow::Stop;
                }
            }
            Flow::Continue
        });
        if let Some((code, message)) = failure {
            raise(code, message);
        }
        solver?;
        if !places.is_empty() {
            f(&places, &block.values)?;
        }
        Ok(())
    }
}

/// Appends one array Datum's values to `out` (fixing `input_dim` on the first).
unsafe fn append_vector(datum: pg_sys::Datum, float8: bool, out: &mut Embeddings) -> Result<(), (Code, String)> {
    let original = datum.cast_mut_ptr::<pg_sys::varlena>();
    // SAFETY: the datum is a non-NULL array value of the row being read; detoasting copies it if needed
    let detoasted = unsafe { pg_sys::pg_detoast_datum(original) };
    let Some(ptr) = std::ptr::NonNull::new(detoasted.cast::<pg_sys::ArrayType>()) else {
        return Err((Code::ERRCODE_INTERNAL_ERROR, "could not be read".into()));
    };
    // SAFETY: ptr is the detoasted array header just obtained, valid until it is freed below
    let mut array = unsafe { RawArray::from_ptr(ptr) };
    let result = (|| {
        let dims = array.dims().len();
        let len = array.len();
        if dims > 1 {
            return Err((Code::ERRCODE_ARRAY_ELEMENT_ERROR, format!("has {dims} dimensions; one is expected")));
        }
        if len == 0 {
            return Err((Code::ERRCODE_DATA_EXCEPTION, "is empty".to_string()));
        }
        // SAFETY: the array's null bitmap lies inside the detoasted copy
        if unsafe { array.any_nulls() } {
            return Err((Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "has a NULL element".to_string()));
        }
        if out.input_dim == 0 {
            out.input_dim = len;
        } else if len != out.input_dim {
            return Err((
                Code::ERRCODE_ARRAY_ELEMENT_ERROR,
                format!("has {len} values, but the first embedding read has {}", out.input_dim),
            ));
        }
        if float8 {
            // SAFETY: a non-NULL, one-dimensional float8[] without NULLs holds `len` f64
            let values = unsafe { array.data::<f64>().as_ref() };
            for &v in values {
                if v.is_finite() && v.abs() > f32::MAX as f64 {
                    return Err((
                        Code::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("has {v:e}, outside the range of real"),
                    ));
                }
                out.values.push(v as f32);
            }
        } else {
            // SAFETY: as above, for float4[]
            out.values.extend_from_slice(unsafe { array.data::<f32>().as_ref() });
        }
        Ok(())
    })();
    if detoasted != original {
        // a detoasted copy lives until the end of the query otherwise
        // SAFETY: detoasted is a palloc'd copy made above (it differs from the original) and nothing refers to it any more
        unsafe { pg_sys::pfree(detoasted.cast()) };
    }
    result
}

/// Whether an explicit cast from `type_oid` to real[] exists.
fn castable_to_real_array(type_oid: pg_sys::Oid) -> bool {
    let target = pg_sys::FLOAT4ARRAYOID;
    // SAFETY: a catalog lookup with pointers to two local OIDs, valid for the call
    unsafe { pg_sys::can_coerce_type(1, &type_oid, &target, pg_sys::CoercionContext::COERCION_EXPLICIT) }
}

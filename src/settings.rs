//! Settings (GUCs), defined when the library is loaded: no
//! shared_preload_libraries entry is needed, and `SET tfllmer.threads = 4`
//! works in any session once a tfllmer function has been called (or after
//! `LOAD 'tfllmer'`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Threads the maths may use inside one backend (Rec-PCA's sparse product
/// and eigendecompositions). Results do not depend on it.
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// Memory for ready-to-score models kept by one backend (MB); 0 keeps none.
pub static MODEL_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(256);

/// Largest piece of one stored graph or embedding kept in one bytea
/// (bytes): PostgreSQL limits a value to 1 GB, so larger objects are kept
/// in several pieces (tfllmer.object_parts).
pub static PART_BYTES: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024 * 1024);

pub fn define() {
    GucRegistry::define_int_guc(
        c"tfllmer.part_size",
        c"Largest piece of a stored graph or embedding kept in one value.",
        c"Objects larger than this are stored in several pieces (PostgreSQL limits one value to 1 GB). Lower it only to test.",
        &PART_BYTES,
        1024,
        512 * 1024 * 1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"tfllmer.model_cache_size",
        c"Memory each backend may use to keep trained models ready to score.",
        c"recommend(), recommend_next() and similar_items() keep the models they use, least recently used first out; a model larger than this is loaded for each call. 0 disables the cache.",
        &MODEL_CACHE_SIZE,
        0,
        1024 * 1024, // 1 TB
        GucContext::Userset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"tfllmer.threads",
        c"Threads a tfllmer function may use for its maths inside one backend.",
        c"Helper threads do pure computation and never call into PostgreSQL; 1 keeps everything on the backend's own thread.",
        &THREADS,
        1,
        64,
        GucContext::Userset,
        GucFlags::default(),
    );
}

pub fn threads() -> usize {
    THREADS.get().max(1) as usize
}

/// tfllmer.model_cache_size in bytes.
pub fn model_cache_bytes() -> usize {
    MODEL_CACHE_SIZE.get().max(0) as usize * 1024 * 1024
}

/// tfllmer.part_size in bytes.
pub fn part_bytes() -> usize {
    PART_BYTES.get().max(1024) as usize
}

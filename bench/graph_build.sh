#!/usr/bin/env bash
# Benchmark: build_graph on MovieLens-1M against plain SQL (BENCHMARKS.md).
# Installs a release build, starts a private cluster, loads ML-1M, times both.
# usage: bench/graph_build.sh [DATA_DIR/ml-1m] [--runs N]
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="${1:-$(data_dir)/ml-1m}"
shift || true
[ -f "$data/interactions.csv" ] || { echo "no $data/interactions.csv (pass the ml-1m folder)" >&2; exit 2; }
ensure_deps
install_extension release
cluster=/tmp/tfllmer-bench
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
psql_q -c "CREATE EXTENSION tfllmer" \
       -c "CREATE TABLE ml1m (user_id int, item_id int, ts bigint)" \
       -c "\\copy ml1m FROM '$data/interactions.csv' CSV HEADER" \
       -c "VACUUM ANALYZE ml1m"
echo "machine: $(machine_summary)"
python3 bench/graph_build.py ml1m "$@"

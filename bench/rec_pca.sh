#!/usr/bin/env bash
# Benchmark: rec_pca against the numpy reference on MovieLens-1M (dim 64,
# window-1 graph), and on a generated 100,000 x 1,024 case (BENCHMARKS.md).
# usage: bench/rec_pca.sh [DATA_DIR] [--skip-generated]
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="${1:-$(data_dir)}"
reference="$(reference_dir)"
[ -f "$data/ml-1m/item_embeddings.f32" ] || { echo "no $data/ml-1m (pass the shared data folder)" >&2; exit 2; }
ensure_deps
install_extension release
python=$(reference_python)
cluster=/tmp/tfllmer-bench
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
echo "machine: $(machine_summary)"

run_case() {  # name folder extra-args
    local db="bench_$1"
    psql_q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    PGDATABASE=$db python3 scripts/load_dataset.py "$2"
    PGDATABASE=$db psql_q -c "CREATE EXTENSION tfllmer"
    echo "### $1"
    PGDATABASE=$db "$python" bench/rec_pca.py "$2" "$reference" "${@:3}"
}

run_case ml1m "$data/ml-1m" --dim 64 --window 1
if [ "${2:-}" != --skip-generated ]; then
    gen=/tmp/tfllmer-bench-generated
    "$python" bench/generate_embeddings.py "$gen" --items 100000 --dim 1024
    run_case generated_100k "$gen" --dim 64 --window 1 --runs 3
fi

#!/usr/bin/env bash
# Benchmark: the whole pipeline on a generated interaction set of size S, M
# or L (bench/scale_data.py), step by step, through SQL, with each step's
# time and peak memory (BENCHMARKS.md, "Catalogue scale").
#   1. build_graph (window 1, holdout 2)
#   2. rec_pca to 64 dimensions over that graph (method auto, or METHOD=...)
#   3. one training epoch (SASRec, Rec-PCA init, max_len 50, 2 threads) with
#      the loss of LOSS (default sampled_softmax) and the default evaluation
#      sample; then the popularity baseline on the same test users
# Peak memory: VmHWM of the backend that ran the step (graph, Rec-PCA; read
# from /proc while it runs, minus its value before the step) and of the
# training worker.
#
# usage: bench/scale.sh SIZE [DATA_ROOT]
#   SIZE       S, M or L
#   DATA_ROOT  where generated sets live (default /tmp/tfllmer-scale); a set
#              is generated there once (DIM=768 by default) and reused
# env: DIM (input width, default 768); USERS, ITEMS, INTERACTIONS (override
#      the size's counts: e.g. SIZE M with ITEMS=200000 DIM=4096 for Rec-PCA
#      at the widest common LLM width; such a set gets its own folder);
#      LOSS (full | sampled_softmax),
#      NEGATIVES (default 256), SAMPLER (uniform | popularity), METHOD,
#      EPOCHS (default 1), SKIP_TRAIN=1, SAMPLE_SECONDS=S (time S seconds of
#      batches from the job's progress, then cancel it and print the epoch
#      time that rate gives: for a loss too slow to finish an epoch, e.g.
#      the full softmax at size M)
set -euo pipefail
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
size="${1:?usage: bench/scale.sh S|M|L [DATA_ROOT]}"
root="${2:-/tmp/tfllmer-scale}"
dim="${DIM:-768}"
counts=()
suffix=""
for var in USERS ITEMS INTERACTIONS; do
    if [ -n "${!var:-}" ]; then
        flag=${var,,}
        counts+=("--$flag" "${!var}")
        suffix="$suffix-$flag${!var}"
    fi
done
data="$root/$size-$dim$suffix"
python=$(reference_python)
ensure_deps
if [ ! -f "$data/stats.json" ]; then
    log "generating size $size ($dim-d${suffix:+, $suffix}) in $data"
    /usr/bin/time -f "generated in %e s, peak %M KiB" "$python" bench/scale_data.py "$data" --size "$size" --dim "$dim" "${counts[@]}"
fi
install_extension release
cluster=/tmp/tfllmer-bench-scale
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
echo "machine: $(machine_summary)"
echo "data: $(cat "$data/stats.json" | tr -d '\n' | tr -s ' ')"
export PGDATABASE=bench_scale
psql_q -d postgres -c "CREATE DATABASE bench_scale"
started=$(date +%s)
PGDATABASE=bench_scale "$python" scripts/load_dataset.py "$data"
echo "loaded in $(( $(date +%s) - started )) s"
psql_q -c "CREATE EXTENSION tfllmer"

# Runs SQL in one backend and prints the statement's peak memory: the
# backend's VmHWM after the statement minus before it (VmHWM never falls,
# so a fresh backend per step).
step() {  # step LABEL SQL
    local label=$1 sql=$2 out pid
    out=$(psql_q -A -t -F ' | ' <<SQL
SELECT pg_backend_pid();
\timing on
$sql
SQL
    )
    pid=$(echo "$out" | head -1)
    echo "### $label"
    echo "$out" | tail -n +2
    echo "peak backend memory (VmHWM, sampled each second): $(peak_of "\$1 == $pid") MiB (shared_buffers: $(psql_q -A -t -c 'SHOW shared_buffers'))"
}
# sample every server process's VmHWM once a second: "pid kib cmdline"
sampler() {
    while sleep 1; do
        for status in /proc/[0-9]*/status; do
            pid=${status#/proc/}; pid=${pid%/status}
            cmd=$( { tr "\0" " " < "/proc/$pid/cmdline"; } 2>/dev/null) || continue
            case "$cmd" in postgres:*) ;; *) continue ;; esac
            hwm=$(awk '/VmHWM/ {print $2}' "$status" 2>/dev/null) || continue
            [ -n "$hwm" ] && echo "$pid $hwm $cmd"
        done
    done >> "$cluster/hwm.log"
}
peak_of() {  # peak_of AWK_CONDITION -> MiB
    awk "$1 {if (\$2 > m) m = \$2} END {if (m) printf \"%.0f\", m / 1024}" "$cluster/hwm.log"
}
sampler &
sampler_pid=$!
trap 'kill $sampler_pid 2>/dev/null; cluster_stop "$cluster"' EXIT

step "build_graph (window 1, holdout 2)" \
    "SELECT graph_name, n_users, n_items, n_edges, round(build_ms) AS build_ms FROM tfllmer.build_graph('g', 'interactions');"
step "rec_pca to 64 (lambda 0.5, method ${METHOD:-auto})" \
    "SET client_min_messages = notice; SELECT n_items, input_dim, round(retained_variance::numeric, 4) AS retained, round(graph_tv::numeric, 4) AS graph_tv, round(build_ms) AS build_ms FROM tfllmer.rec_pca('e', 'items', graph_name => 'g', dim => 64, method => '${METHOD:-auto}'); SELECT method FROM tfllmer.embeddings;"
[ -n "${SKIP_TRAIN:-}" ] && exit 0

loss="${LOSS:-sampled_softmax}"
extra=""
[ "$loss" = sampled_softmax ] && extra=", \"negatives\": ${NEGATIVES:-256}, \"sampler\": \"${SAMPLER:-uniform}\""
options="{\"epochs\": ${EPOCHS:-1}, \"max_len\": 50, \"threads\": 2, \"loss\": \"$loss\"$extra}"
echo "### train: $options"
job=$(psql_q -A -t -c "SELECT tfllmer.train('m', 'interactions', init => 'e', options => '$options')")
if [ -n "${SAMPLE_SECONDS:-}" ]; then
    progress() { psql_q -A -t -c "SELECT extract(epoch FROM clock_timestamp()) || ' ' || coalesce(progress, 0) FROM tfllmer.jobs WHERE job_id = $job"; }
    until [ "$(progress | awk '{print ($2 > 0)}')" = 1 ]; do sleep 2; done
    read -r t1 p1 <<< "$(progress)"
    sleep "$SAMPLE_SECONDS"
    read -r t2 p2 <<< "$(progress)"
    psql_q -A -t -c "SELECT tfllmer.cancel_job($job)" >/dev/null
    psql_q -A -t -c "SELECT tfllmer.wait_job($job)" >/dev/null || true
    awk -v t1="$t1" -v p1="$p1" -v t2="$t2" -v p2="$p2" -v e="${EPOCHS:-1}" 'BEGIN {
        printf "sampled %.0f s of batches: %.4f of an epoch; one epoch at that rate: %.0f s (%.1f h)\n",
               t2 - t1, (p2 - p1) * e, (t2 - t1) / ((p2 - p1) * e), (t2 - t1) / ((p2 - p1) * e) / 3600 }'
    echo "peak training worker memory (VmHWM, sampled each second): $(peak_of "/tfllmer training job $job\$/ || /tfllmer training job $job /") MiB"
    exit 0
fi
psql_q -A -t -c "SELECT tfllmer.wait_job($job)"
psql_q -c "SELECT state, error, detail FROM tfllmer.jobs WHERE job_id = $job" \
       -c "SELECT epoch, round(train_loss::numeric, 4) AS train_loss, round(valid_ndcg10::numeric, 4) AS valid_ndcg10, round(epoch_ms / 1000) AS epoch_s FROM tfllmer.job_log($job)" \
       -c "SELECT test_users, round(test_hr10::numeric, 4) AS test_hr10, round(test_ndcg10::numeric, 4) AS test_ndcg10 FROM tfllmer.models WHERE model_name = 'm'"
echo "peak training worker memory (VmHWM, sampled each second): $(peak_of "/tfllmer training job $job\$/ || /tfllmer training job $job /") MiB"
echo "popularity baseline (same leave-one-out, history masked, all users):"
"$python" bench/popularity.py "$data"

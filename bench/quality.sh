#!/usr/bin/env bash
# Benchmark: what the TF-LLMER variants reach, trained through tfllmer.train
# in PostgreSQL, with the same budget each (BENCHMARKS.md, "Training quality").
# SASRec (a) random init, not normalised; (b) PCA init, not normalised;
# (c) PCA init, normalised; (d) Rec-PCA (lambda 0.5) init, normalised
# (TF-LLMER); and GRU4Rec (a) and (d). Graph: window 1, holdout 2 (as the
# reference). Prints a markdown table and writes the loss curves of the four
# SASRec variants as an SVG.
#
# usage: bench/quality.sh DATA_FOLDER [EPOCHS] [MAX_LEN] [SVG_OUT]
#   e.g. bench/quality.sh ../shared/data/ml-100k 50 200 docs/img/loss_ml100k.svg
# env: TFLLMER_BENCH_SECONDS=S caps each job's training time (max_train_seconds)
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="$(cd "$1" && pwd)"
epochs="${2:-50}"
max_len="${3:-200}"
svg="${4:-}"
ensure_deps
install_extension release
cluster=/tmp/tfllmer-bench-quality
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p'); $($PG_BIN/postgres --version)"
export PGDATABASE=bench_quality
psql_q -d postgres -c "CREATE DATABASE bench_quality"
python3 scripts/load_dataset.py "$data"
cap=""
[ -n "${TFLLMER_BENCH_SECONDS:-}" ] && cap=", \"max_train_seconds\": $TFLLMER_BENCH_SECONDS"
options="{\"epochs\": $epochs, \"max_len\": $max_len, \"dim\": 64, \"patience\": 10, \"seed\": 7, \"threads\": 2$cap}"
psql_q <<SQL
CREATE EXTENSION tfllmer;
SELECT graph_name, n_edges FROM tfllmer.build_graph('g', 'interactions', window_size => 1, holdout => 2);
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained FROM tfllmer.rec_pca('pca', 'items', dim => 64);
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained, round(graph_tv::numeric, 4) AS graph_tv
FROM tfllmer.rec_pca('recpca', 'items', graph_name => 'g', dim => 64, lambda => 0.5);
SQL
echo "options: $options"
run() {  # run LABEL BACKBONE INIT NORMALIZE
    local init=NULL
    [ "$3" != random ] && init="'$3'"
    local job
    job=$(psql_q -A -t -c "SELECT tfllmer.train('$1', 'interactions', init => $init, backbone => '$2',
                                               \"normalize\" => $4, options => '$options')")
    psql_q -A -t -c "SELECT tfllmer.wait_job($job)" >/dev/null
    echo "$job"
}
jobs=()
for v in "sasrec_a sasrec random false" "sasrec_b sasrec pca false" "sasrec_c sasrec pca true" \
         "sasrec_d sasrec recpca true" "gru4rec_a gru4rec random false" "gru4rec_d gru4rec recpca true"; do
    set -- $v
    jobs+=("$(run "$@")")
done
psql_q <<SQL
SELECT j.model_name AS variant, j.state, j.epoch AS epochs, m.best_epoch,
       round(m.valid_ndcg10::numeric, 4) AS valid_ndcg10,
       round(m.test_hr10::numeric, 4) AS test_hr10, round(m.test_ndcg10::numeric, 4) AS test_ndcg10,
       round((SELECT avg(epoch_ms) / 1000 FROM tfllmer.job_log(j.job_id))::numeric, 2) AS s_per_epoch
FROM tfllmer.jobs j LEFT JOIN tfllmer.models m ON m.job_id = j.job_id
ORDER BY j.job_id;
SQL
if [ -n "$svg" ]; then
    mkdir -p "$(dirname "$svg")"
    psql_q -A -t -c "SELECT tfllmer.loss_plot(ARRAY[${jobs[0]}, ${jobs[1]}, ${jobs[2]}, ${jobs[3]}],
                         title => 'SASRec on $(basename "$data"): training loss per epoch')" > "$svg"
    echo "wrote $svg"
fi

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
#      TFLLMER_BENCH_VARIANTS="sasrec_a sasrec_d ..." runs only these variants
#      TFLLMER_BENCH_THREADS=T threads per job (default 2)
#      TFLLMER_BENCH_PATIENCE=P early-stopping patience in epochs (default 10)
#      TFLLMER_BENCH_SEEDS="7 8 9" trains every variant once per seed (default 7);
#        with more than one seed the models are named VARIANT_sSEED
#      TFLLMER_BENCH_LOSSES="full sampled_softmax:1024:uniform" trains every variant once per
#        loss (option "loss", "negatives", "sampler"); models are named VARIANT_LOSS[_sSEED]
#        (default: no loss option, i.e. chosen by catalogue size)
#      TFLLMER_BENCH_PARALLEL=1 submits every job at once (they share the cores;
#        same results as one after another for the same thread count, as
#        training is deterministic per seed and thread count; s/epoch grows)
# Also prints each training worker's peak resident memory (VmHWM).
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
echo "machine: $(machine_summary)"
export PGDATABASE=bench_quality
psql_q -d postgres -c "CREATE DATABASE bench_quality"
python3 scripts/load_dataset.py "$data"
cap=""
[ -n "${TFLLMER_BENCH_SECONDS:-}" ] && cap=", \"max_train_seconds\": $TFLLMER_BENCH_SECONDS"
threads="${TFLLMER_BENCH_THREADS:-2}"
read -ra seed_list <<< "${TFLLMER_BENCH_SEEDS:-7}"
read -ra loss_list <<< "${TFLLMER_BENCH_LOSSES:-default}"
loss_options() {  # loss_options SPEC -> extra JSON members
    local name k sampler
    IFS=: read -r name k sampler <<< "$1"
    case "$name" in
        default) ;;
        full) echo ", \"loss\": \"full\"" ;;
        *) echo ", \"loss\": \"$name\"${k:+, \"negatives\": $k}${sampler:+, \"sampler\": \"$sampler\"}" ;;
    esac
}
loss_label() {  # full -> full, sampled_softmax:1024:popularity -> ss1024pop
    local name k sampler
    IFS=: read -r name k sampler <<< "$1"
    case "$name" in full) echo full ;; *) echo "ss${k}${sampler:0:3}" ;; esac
}
options_for_seed() {  # options_for_seed SEED [LOSS_SPEC]
    echo "{\"epochs\": $epochs, \"max_len\": $max_len, \"dim\": 64, \"patience\": ${TFLLMER_BENCH_PATIENCE:-10}, \"seed\": $1, \"threads\": $threads$cap$(loss_options "${2:-default}")}"
}
psql_q <<SQL
CREATE EXTENSION tfllmer;
SELECT graph_name, n_edges FROM tfllmer.build_graph('g', 'interactions', window_size => 1, holdout => 2);
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained FROM tfllmer.rec_pca('pca', 'items', dim => 64);
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained, round(graph_tv::numeric, 4) AS graph_tv
FROM tfllmer.rec_pca('recpca', 'items', graph_name => 'g', dim => 64, lambda => 0.5);
SQL
echo "options: $(options_for_seed SEED) for seed in ${seed_list[*]}"
# Peak memory of the training workers: sampled from /proc while they run
# (a worker's VmHWM is its peak RSS so far; the last sample before it exits).
peak_file=$(mktemp)
# (only this cluster's workers: children of its postmaster)
postmaster=$(head -1 "$cluster/data/postmaster.pid")
sample_memory() {
    while sleep 2; do
        for status in /proc/[0-9]*/status; do
            pid=${status#/proc/}; pid=${pid%/status}
            grep -q "tfllmer training job" "/proc/$pid/cmdline" 2>/dev/null || continue
            [ "$(awk '/^PPid:/ {print $2}' "$status" 2>/dev/null)" = "$postmaster" ] || continue
            hwm=$(awk '/VmHWM/ {print $2}' "$status" 2>/dev/null) || continue
            [ -n "$hwm" ] && echo "$(tr '\0' ' ' < "/proc/$pid/cmdline" | sed 's/.*tfllmer training job //') $hwm"
        done
    done >> "$peak_file"
}
sample_memory &
sampler=$!
trap 'kill $sampler 2>/dev/null; rm -f "$peak_file"; cluster_stop "$cluster"' EXIT
submit() {  # submit LABEL BACKBONE INIT NORMALIZE SEED LOSS_SPEC -> job id
    local init=NULL
    [ "$3" != random ] && init="'$3'"
    psql_q -A -t -c "SELECT tfllmer.train('$1', 'interactions', init => $init, backbone => '$2',
                                          \"normalize\" => $4, options => '$(options_for_seed "$5" "$6")')"
}
wait_for() { psql_q -A -t -c "SELECT tfllmer.wait_job($1)" >/dev/null; }
selected="${TFLLMER_BENCH_VARIANTS:-sasrec_a sasrec_b sasrec_c sasrec_d gru4rec_a gru4rec_d}"
jobs=()
sasrec_jobs=()
for v in "sasrec_a sasrec random false" "sasrec_b sasrec pca false" "sasrec_c sasrec pca true" \
         "sasrec_d sasrec recpca true" "gru4rec_a gru4rec random false" "gru4rec_d gru4rec recpca true"; do
    set -- $v
    case " $selected " in *" $1 "*) ;; *) continue ;; esac
    for loss in "${loss_list[@]}"; do
        for seed in "${seed_list[@]}"; do
            label=$1
            [ "$loss" != default ] && label="${label}_$(loss_label "$loss")"
            [ ${#seed_list[@]} -gt 1 ] && label="${label}_s$seed"
            job=$(submit "$label" "$2" "$3" "$4" "$seed" "$loss")
            [ -n "${TFLLMER_BENCH_PARALLEL:-}" ] || wait_for "$job"
            jobs+=("$job")
            [ "$2" = sasrec ] && sasrec_jobs+=("$job")
        done
    done
done
for job in "${jobs[@]}"; do wait_for "$job"; done
kill $sampler 2>/dev/null || true
echo "peak resident memory per training worker (VmHWM):"
sort -k1,1n -k2,2n "$peak_file" | awk '{peak[$1] = $2} END {for (j in peak) printf "  job %s: %.0f MiB\n", j, peak[j] / 1024}' | sort -k2n
psql_q <<SQL
SELECT j.model_name AS variant, j.state, j.epoch AS epochs, m.best_epoch,
       round(m.valid_ndcg10::numeric, 4) AS valid_ndcg10,
       round(m.test_hr10::numeric, 4) AS test_hr10, round(m.test_ndcg10::numeric, 4) AS test_ndcg10,
       round((SELECT avg(epoch_ms) / 1000 FROM tfllmer.job_log(j.job_id))::numeric, 2) AS s_per_epoch,
       m.test_users, j.detail
FROM tfllmer.jobs j LEFT JOIN tfllmer.models m ON m.job_id = j.job_id
ORDER BY j.job_id;
SQL
if [ -n "$svg" ] && [ ${#sasrec_jobs[@]} -gt 0 ]; then
    mkdir -p "$(dirname "$svg")"
    psql_q -A -t -c "SELECT tfllmer.loss_plot(ARRAY[$(IFS=,; echo "${sasrec_jobs[*]}")],
                         title => 'SASRec on $(basename "$data"): training loss per epoch')" > "$svg"
    echo "wrote $svg"
fi

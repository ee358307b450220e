#!/usr/bin/env bash
# Benchmark: cold-start items (BENCHMARKS.md, "Cold-start items"). For each
# seed, a seeded share of the items is held out entirely (tfllmer.cold_holdout):
# the graph is built without their interactions, Rec-PCA runs over every
# item's LLM embedding with that graph, and train() with option
# cold_holdout leaves them out of training and serves them as cold items.
# evaluate(items => 'cold') ranks the test events whose target is a
# held-out item (full ranking over every item) for the model and the three
# baselines; the same model with cold_map 'init' (cold items keep their
# Rec-PCA rows, no fitted map) is the ablation. The warm side: the
# hold-out model's figures on the test events with a trained target
# (items => 'warm') beside a model trained on everything with the same seed
# (items => 'all').
#
# usage: bench/cold_items.sh DATA_FOLDER [EPOCHS] [MAX_LEN]
#   e.g. bench/cold_items.sh ../shared/data/ml-100k 50 200
# env: SEEDS ("7 8 9"), SHARE (0.1), PATIENCE (10), THREADS (2),
#      TFLLMER_PG (15; 18 runs it on the PyPI wheel's PostgreSQL 18)
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="$(cd "$1" && pwd)"
epochs="${2:-50}"
max_len="${3:-200}"
share="${SHARE:-0.1}"
read -ra seeds <<< "${SEEDS:-7 8 9}"
ensure_deps
install_extension release
# (one cluster per data set and version: runs on others can go beside it)
cluster="/tmp/tfllmer-bench-cold-$(basename "$data")-pg$PG_MAJOR"
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
echo "machine: $(machine_summary)"
echo "command: bench/cold_items.sh $1 $epochs $max_len (SEEDS=\"${seeds[*]}\" SHARE=$share)"
export PGDATABASE=bench_cold
psql_q -d postgres -c "CREATE DATABASE bench_cold"
python3 scripts/load_dataset.py "$data"
psql_q -c "CREATE EXTENSION tfllmer" -c "CREATE INDEX ON interactions (user_id, ts, item_id)"
options() {  # options SEED [EXTRA JSON MEMBERS]
    echo "{\"epochs\": $epochs, \"max_len\": $max_len, \"dim\": 64, \"patience\": ${PATIENCE:-10}, \"seed\": $1, \"threads\": ${THREADS:-2}${2:-}}"
}
train() {  # train MODEL INIT OPTIONS: waits, fails loudly
    local job state
    job=$(psql_q -A -t -c "SELECT tfllmer.train('$1', 'interactions', init => '$2', options => '$3')")
    state=$(psql_q -A -t -c "SELECT tfllmer.wait_job($job)")
    [ "$state" = succeeded ] || { psql_q -c "SELECT job_id, state, error FROM tfllmer.jobs WHERE job_id = $job"; exit 1; }
}
psql_q -c "CREATE TABLE results (seed int, model text, items text, method text, split text, n_users bigint, hr float8, ndcg float8)"
for seed in "${seeds[@]}"; do
    log "seed $seed"
    psql_q <<SQL
CREATE VIEW warm_$seed AS SELECT * FROM interactions WHERE NOT tfllmer.cold_holdout(item_id, $share, $seed);
SELECT graph_name, n_items, n_edges FROM tfllmer.build_graph('g_$seed', 'warm_$seed', window_size => 1, holdout => 2);
SELECT embedding_name, round(retained_variance::numeric, 4) AS retained
FROM tfllmer.rec_pca('e_$seed', 'items', graph_name => 'g_$seed', dim => 64, lambda => 0.5);
SELECT graph_name FROM tfllmer.build_graph('gall_$seed', 'interactions', window_size => 1, holdout => 2);
SELECT embedding_name FROM tfllmer.rec_pca('eall_$seed', 'items', graph_name => 'gall_$seed', dim => 64, lambda => 0.5);
SQL
    train "cold_$seed" "e_$seed" "$(options "$seed" ", \"cold_holdout\": $share")"
    train "init_$seed" "e_$seed" "$(options "$seed" ", \"cold_holdout\": $share, \"cold_map\": \"init\"")"
    train "all_$seed" "eall_$seed" "$(options "$seed")"
    psql_q <<SQL
INSERT INTO results SELECT $seed, 'cold_$seed', 'cold', method, split, n_users, hr, ndcg FROM tfllmer.evaluate('cold_$seed', 10, 'cold');
INSERT INTO results SELECT $seed, 'init_$seed', 'cold', 'model (cold_map init)', split, n_users, hr, ndcg
FROM tfllmer.evaluate('init_$seed', 10, 'cold') WHERE method = 'model';
INSERT INTO results SELECT $seed, 'cold_$seed', 'warm', 'model (hold-out)', split, n_users, hr, ndcg
FROM tfllmer.evaluate('cold_$seed', 10, 'warm') WHERE split = 'test';
INSERT INTO results SELECT $seed, 'all_$seed', 'all', 'model (no hold-out)', split, n_users, hr, ndcg
FROM tfllmer.evaluate('all_$seed', 10, 'all') WHERE split = 'test';
SQL
done
psql_q <<SQL
SELECT j.model_name, j.epoch AS epochs, m.best_epoch, m.n_items, m.n_cold_items,
       round((SELECT avg(epoch_ms) / 1000 FROM tfllmer.job_log(j.job_id))::numeric, 2) AS s_per_epoch,
       substring(j.detail FROM 'cold-item map[^;]*') AS map
FROM tfllmer.jobs j JOIN tfllmer.models m ON m.job_id = j.job_id ORDER BY j.job_id;
SELECT seed, items, split, method, n_users, round(hr::numeric, 4) AS hr10, round(ndcg::numeric, 4) AS ndcg10
FROM results ORDER BY seed, items, split, method;
-- the mean over seeds (and its spread)
SELECT items, split, method, count(*) AS seeds, round(avg(n_users)) AS users,
       round(avg(hr)::numeric, 4) AS hr10, round(stddev_samp(hr)::numeric, 4) AS hr_sd,
       round(avg(ndcg)::numeric, 4) AS ndcg10, round(stddev_samp(ndcg)::numeric, 4) AS ndcg_sd
FROM results GROUP BY items, split, method ORDER BY items, split, ndcg10 DESC;
SQL

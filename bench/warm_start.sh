#!/usr/bin/env bash
# Benchmark: warm starts (BENCHMARKS.md, "Warm starts"). A model is trained
# on the first 90% of each user's timeline (a view), then continued with
# option warm_start on all of it; a model trained from scratch on all of it,
# with the same options and seed, is the reference. Validation is the same
# for both (leave-one-out on the whole table, the same users), so the
# epoch logs compare directly: the time the warm start takes to reach the
# from-scratch model's best validation NDCG@10, against the time the
# from-scratch model takes to reach it; and the final test NDCG@10 of each.
# Both use Rec-PCA embeddings of the same items (the warm start keeps the
# embedding its base was trained from, so new items are mapped through the
# base's cold-item map).
#
# usage: bench/warm_start.sh DATA_FOLDER [EPOCHS] [MAX_LEN]
#   e.g. bench/warm_start.sh ../shared/data/ml-1m 200 200
# env: SEED (7), PATIENCE (10), WARM_EPOCHS (EPOCHS), THREADS (2),
#      TFLLMER_PG (15; 18 runs it on the PyPI wheel's PostgreSQL 18)
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
data="$(cd "$1" && pwd)"
epochs="${2:-200}"
max_len="${3:-200}"
seed="${SEED:-7}"
ensure_deps
install_extension release
# (one cluster per data set and version: runs on others can go beside it)
cluster="/tmp/tfllmer-bench-warm-$(basename "$data")-pg$PG_MAJOR"
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
echo "machine: $(machine_summary)"
echo "command: bench/warm_start.sh $1 $epochs $max_len (SEED=$seed)"
export PGDATABASE=bench_warm
psql_q -d postgres -c "CREATE DATABASE bench_warm"
python3 scripts/load_dataset.py "$data"
psql_q <<'SQL'
CREATE EXTENSION tfllmer;
CREATE INDEX ON interactions (user_id, ts, item_id);
-- the first 90% of each user's timeline (in the order training uses: time, then item)
CREATE VIEW first90 AS
SELECT user_id, item_id, ts FROM (
    SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY ts, item_id) AS n,
              count(*) OVER (PARTITION BY user_id) AS total
    FROM interactions) t
WHERE n <= ceil(0.9 * total);
SELECT graph_name, n_items, n_edges FROM tfllmer.build_graph('g90', 'first90', window_size => 1, holdout => 2);
SELECT embedding_name FROM tfllmer.rec_pca('e90', 'items', graph_name => 'g90', dim => 64, lambda => 0.5);
SELECT graph_name, n_items, n_edges FROM tfllmer.build_graph('gall', 'interactions', window_size => 1, holdout => 2);
SELECT embedding_name FROM tfllmer.rec_pca('eall', 'items', graph_name => 'gall', dim => 64, lambda => 0.5);
SQL
options="{\"epochs\": $epochs, \"max_len\": $max_len, \"dim\": 64, \"patience\": ${PATIENCE:-10}, \"seed\": $seed, \"threads\": ${THREADS:-2}}"
train() {  # train MODEL TABLE INIT OPTIONS -> job id, waited for
    local job state
    job=$(psql_q -A -t -c "SELECT tfllmer.train('$1', '$2', init => '$3', options => '$4')")
    state=$(psql_q -A -t -c "SELECT tfllmer.wait_job($job)")
    [ "$state" = succeeded ] || { psql_q -c "SELECT job_id, state, error FROM tfllmer.jobs WHERE job_id = $job" >&2; exit 1; }
    echo "$job"
}
log "from scratch on all interactions"
scratch=$(train scratch interactions eall "$options")
log "base: the first 90% of each timeline"
base=$(train warm first90 e90 "$options")
log "warm start on all interactions"
warm=$(train warm interactions e90 "{\"warm_start\": true, \"epochs\": ${WARM_EPOCHS:-$epochs}}")
psql_q <<SQL
SELECT j.job_id, j.model_name, j.interactions, j.epoch AS epochs, m.best_epoch,
       round(m.valid_ndcg10::numeric, 4) AS valid_ndcg10, round(m.test_hr10::numeric, 4) AS test_hr10,
       round(m.test_ndcg10::numeric, 4) AS test_ndcg10,
       round((SELECT sum(epoch_ms) / 1000 FROM tfllmer.job_log(j.job_id))::numeric, 1) AS train_s,
       substring(j.detail FROM 'warm start from version [^;]*') AS warm
FROM tfllmer.jobs j JOIN tfllmer.models m ON m.job_id = j.job_id ORDER BY j.job_id;
-- time to the from-scratch model's best validation NDCG@10 (cumulative
-- epoch time up to the first epoch that reaches it)
WITH target AS (SELECT max(valid_ndcg10) AS best FROM tfllmer.job_log($scratch)),
runs AS (
    SELECT 'scratch' AS run, l.epoch, l.valid_ndcg10, sum(l.epoch_ms) OVER (ORDER BY l.epoch) / 1000 AS seconds
    FROM tfllmer.job_log($scratch) l
    UNION ALL
    SELECT 'warm start', l.epoch, l.valid_ndcg10, sum(l.epoch_ms) OVER (ORDER BY l.epoch) / 1000
    FROM tfllmer.job_log($warm) l)
SELECT r.run, round(t.best::numeric, 4) AS target_valid_ndcg10,
       min(r.epoch) FILTER (WHERE r.valid_ndcg10 >= t.best) AS epochs_to_target,
       round((min(r.seconds) FILTER (WHERE r.valid_ndcg10 >= t.best))::numeric, 1) AS seconds_to_target,
       round(max(r.valid_ndcg10)::numeric, 4) AS best_valid_ndcg10
FROM runs r, target t GROUP BY r.run, t.best ORDER BY r.run;
SELECT epoch, round(valid_ndcg10::numeric, 4) AS warm_valid_ndcg10, round((epoch_ms / 1000)::numeric, 1) AS s
FROM tfllmer.job_log($warm) ORDER BY epoch;
SQL

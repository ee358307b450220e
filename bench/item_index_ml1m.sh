#!/usr/bin/env bash
# Benchmark: does serving through an item index change the answers on a
# real catalogue? MovieLens-1M (3,706 items), a TF-LLMER model (Rec-PCA
# init, dim 64, max_len 200), every user's top 10 (exclude_seen) by the
# exact path, then through create_item_index's HNSW index with its default
# options: how many users get the same top 10 (same items, same order), the
# same set, and recall@10. PostgreSQL 18 with pgvector (TFLLMER_PG=16 works
# too). BENCHMARKS.md, "Item index".
#
# usage: bench/item_index_ml1m.sh [EPOCHS]   (default 10)
set -euo pipefail
export TFLLMER_PG="${TFLLMER_PG:-18}"
source "$(dirname "$0")/../scripts/common.sh"
cd "$TFLLMER_ROOT"
epochs="${1:-10}"
shared="$(data_dir)"
[ -n "$shared" ] || { echo "the shared MovieLens data is needed (TFLLMER_DATA_DIR)" >&2; exit 2; }
python=$(reference_python)
ensure_deps
install_extension release
cluster=/tmp/tfllmer-bench-index-ml1m
cluster_start "$cluster"
trap 'cluster_stop "$cluster"' EXIT
export PGDATABASE=bench_ml1m
echo "machine: $(nproc) cores; $($PG_BIN/postgres --version); load: $(cut -d' ' -f1-3 /proc/loadavg)"
psql_q -d postgres -c "CREATE DATABASE bench_ml1m"
"$python" scripts/load_dataset.py "$shared/ml-1m" >/dev/null
psql_q -c "CREATE EXTENSION vector" -c "CREATE EXTENSION tfllmer"
psql_q -A -t <<SQL
SELECT 'graph: ' || n_items || ' items' FROM tfllmer.build_graph('g', 'interactions');
SELECT 'rec_pca: ' || n_items || ' items' FROM tfllmer.rec_pca('e', 'items', graph_name => 'g', dim => 64);
SQL
job=$(psql_q -A -t -c "SELECT tfllmer.train('ml', 'interactions', init => 'e',
        options => '{\"epochs\": $epochs, \"max_len\": 200, \"dim\": 64, \"threads\": 2}')")
psql_q -A -t -c "SELECT tfllmer.wait_job($job)" >/dev/null
psql_q -c "SELECT model_name, version, n_items, dim, round(test_ndcg10::numeric, 4) AS test_ndcg10 FROM tfllmer.models"
top10() {  # top10 TABLE
    psql_q -A -t <<SQL
\timing on
CREATE TABLE $1 AS SELECT u.user_id, array_agg(r.item_id ORDER BY r.score DESC, r.item_id) AS items
FROM (SELECT DISTINCT user_id FROM interactions) u, tfllmer.recommend('ml', u.user_id, k => 10) r GROUP BY u.user_id;
SQL
}
echo "every user's top 10, exact path:"
top10 exact_answers
psql_q -A -t -c "SELECT 'index built: ' || c.n_items || ' items, ' || round(c.build_ms) || ' ms, options ' || i.options
                 FROM tfllmer.create_item_index('ml') c JOIN tfllmer.item_indexes i USING (model_name, version)"
echo "every user's top 10 through the index:"
top10 index_answers
psql_q -c "
SELECT count(*) AS users,
       count(*) FILTER (WHERE i.items = e.items) AS same_top_10,
       round(100.0 * count(*) FILTER (WHERE i.items = e.items) / count(*), 2) AS same_top_10_pct,
       count(*) FILTER (WHERE ARRAY(SELECT unnest(i.items) ORDER BY 1) = ARRAY(SELECT unnest(e.items) ORDER BY 1)) AS same_set,
       round(avg(cardinality(ARRAY(SELECT unnest(i.items) INTERSECT SELECT unnest(e.items)))::numeric
                 / cardinality(e.items)), 5) AS recall_at_10
FROM index_answers i JOIN exact_answers e USING (user_id)"

#!/usr/bin/env bash
# The whole pipeline on a generated interaction set (bench/scale_data.py, a
# small size of its kind), loaded the fast way (binary COPY): build_graph;
# rec_pca by the exact and the randomized method, which agree; training with
# the sampled softmax and a sample of evaluation users, which beats the
# popularity baseline; recommend.
# usage: generated_pipeline.sh CLUSTER_DIR   (PG* variables point at that cluster)
set -euo pipefail
source "$(dirname "$0")/../../scripts/common.sh"
cd "$TFLLMER_ROOT"
python=$(reference_python)
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
"$python" bench/scale_data.py "$data" --users 1500 --items 1200 --interactions 45000 --dim 96 --seed 3 2>/dev/null
psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS tfllmer_generated" \
       -c "CREATE DATABASE tfllmer_generated"
export PGDATABASE=tfllmer_generated
"$python" scripts/load_dataset.py "$data" 2>/dev/null
fail=0
check() {  # check DESCRIPTION SQL  (SQL prints t or f)
    local got
    got=$(psql_q -A -t -c "$2")
    if [ "$got" = t ]; then echo "ok   $1"; else echo "FAIL $1 (got '$got')"; fail=1; fi
}
psql_q -q >/dev/null <<'SQL'
CREATE EXTENSION tfllmer;
SELECT graph_name FROM tfllmer.build_graph('g', 'interactions');
SELECT embedding_name FROM tfllmer.rec_pca('exact', 'items', graph_name => 'g', dim => 16, method => 'exact');
SELECT embedding_name FROM tfllmer.rec_pca('fast', 'items', graph_name => 'g', dim => 16, method => 'randomized');
SQL
check "the loaded embeddings are the generated ones (1200 x 96)" \
    "SELECT count(*) = 1200 AND min(cardinality(embedding)) = 96 FROM items"
check "rec_pca: the randomized method agrees with the exact one (retained variance, graph TV to 1e-4)" \
    "SELECT abs(a.retained_variance - b.retained_variance) < 1e-4 AND abs(a.graph_tv - b.graph_tv) < 1e-4
            AND abs(a.graph_tv_pca - b.graph_tv_pca) < 1e-4 AND b.method = 'randomized'
     FROM tfllmer.embeddings a, tfllmer.embeddings b WHERE a.embedding_name = 'exact' AND b.embedding_name = 'fast'"
job=$(psql_q -A -t -c "SELECT tfllmer.train('m', 'interactions', init => 'fast', options =>
    '{\"epochs\": 4, \"max_len\": 20, \"loss\": \"sampled_softmax\", \"negatives\": 64, \"eval_users\": 600}')")
state=$(psql_q -A -t -c "SELECT tfllmer.wait_job($job)")
check "training with the sampled softmax succeeds" "SELECT '$state' = 'succeeded'"
check "its test figures cover the 600 sampled users" "SELECT test_users = 600 FROM tfllmer.models WHERE model_name = 'm'"
pop=$("$python" bench/popularity.py "$data" | sed 's/.*NDCG@10 //')
check "the model beats popularity (test NDCG@10 over $pop)" \
    "SELECT test_ndcg10 > $pop FROM tfllmer.models WHERE model_name = 'm'"
check "recommend answers with 10 items" "SELECT count(*) = 10 FROM tfllmer.recommend('m', 5)"
psql_q -d postgres -c "DROP DATABASE tfllmer_generated"
[ "$fail" = 0 ]

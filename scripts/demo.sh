#!/usr/bin/env bash
# The whole pipeline end to end: installs what is missing, builds and
# installs the extension, starts a private PostgreSQL cluster, loads sample
# data, runs every tfllmer step and prints the results.
# Safe to run twice (the demo cluster is recreated).
#
# usage: scripts/demo.sh [--data DIR]
#   --data DIR   a folder in the format of shared/data (interactions.csv,
#                item_embeddings.f32 + .json) instead of the built-in,
#                generated sample
source "$(dirname "$0")/common.sh"
cd "$TFLLMER_ROOT"

data=""
while [ $# -gt 0 ]; do
    case "$1" in
        --data) data="$(cd "$2" && pwd)"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

ensure_deps
install_extension

demo=/tmp/tfllmer-demo
cluster_start "$demo"
if [ -z "$data" ]; then
    data="$demo/sample"
    as_root install -d -m 755 "$data"
    python3 scripts/sample_data.py "$data" >&2
fi
export PGDATABASE=tfllmer_demo
psql_q -d postgres -c "CREATE DATABASE tfllmer_demo"
log "loading $data"
python3 scripts/load_dataset.py "$data"
psql_q -c "CREATE EXTENSION tfllmer"

log "the data"
psql_q <<'SQL'
SELECT count(*) AS interactions, count(DISTINCT user_id) AS users, count(DISTINCT item_id) AS items
FROM interactions;
-- problem 1 of the paper: LLM item vectors have very different lengths
SELECT round(min(n)::numeric, 3) AS min_norm, round(max(n)::numeric, 3) AS max_norm,
       round((max(n) / min(n))::numeric, 1) AS max_over_min
FROM (SELECT sqrt((SELECT sum(x * x) FROM unnest(embedding) x)) AS n FROM items) s;
SQL

log "step 1: the item-item co-occurrence graph (tfllmer.build_graph)"
psql_q <<'SQL'
SELECT graph_name, n_users, n_items, n_edges, total_weight, round(build_ms::numeric, 1) AS build_ms
FROM tfllmer.build_graph('demo_graph', 'interactions', window_size => 3);
SELECT graph_name, source_table, window_size, holdout, weighting, n_edges, size_bytes FROM tfllmer.graphs;
SELECT item_a, item_b, weight FROM tfllmer.graph_edges('demo_graph') ORDER BY weight DESC, item_a, item_b LIMIT 5;
SQL
if psql_q -A -t -c "SELECT to_regclass('item_info') IS NOT NULL AND EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'item_info' AND column_name = 'community')" | grep -q t; then
    # problem 2 of the paper: what users consume together (the graph) follows
    # taste communities, while the LLM vectors cluster by genre
    psql_q <<'SQL'
SELECT round((100 * sum(weight) FILTER (WHERE a.genre = b.genre) / sum(weight))::numeric, 1) AS pct_weight_same_genre,
       round((100 * sum(weight) FILTER (WHERE a.community = b.community) / sum(weight))::numeric, 1) AS pct_weight_same_community
FROM tfllmer.graph_edges('demo_graph') e
JOIN item_info a ON a.item_id = e.item_a JOIN item_info b ON b.item_id = e.item_b;
SQL
fi

log "step 2: Rec-PCA of the LLM embeddings over that graph (tfllmer.rec_pca)"
psql_q <<'SQL'
-- plain PCA for comparison, then Rec-PCA: lower graph_tv means items that
-- users consume together end up closer
SELECT embedding_name, n_items, input_dim, output_dim, round(retained_variance::numeric, 4) AS retained_variance,
       graph_tv FROM tfllmer.rec_pca('demo_pca', 'items', dim => 16);
SELECT embedding_name, n_items, input_dim, output_dim, round(retained_variance::numeric, 4) AS retained_variance,
       round(graph_tv_pca::numeric, 4) AS graph_tv_pca, round(graph_tv::numeric, 4) AS graph_tv,
       round(build_ms::numeric, 1) AS build_ms
FROM tfllmer.rec_pca('demo_recpca', 'items', graph_name => 'demo_graph', dim => 16, lambda => 0.5);
SELECT item_id, embedding[1:4] AS first_4_of_16 FROM tfllmer.embedding('demo_recpca') LIMIT 3;
SQL

log "step 3: train SASRec from the Rec-PCA vectors, normalised (TF-LLMER), in a background worker (tfllmer.train)"
job=$(psql_q -A -t -c "SELECT tfllmer.train('demo_model', 'interactions', init => 'demo_recpca',
        options => '{\"epochs\": ${TFLLMER_DEMO_EPOCHS:-20}, \"max_len\": 50, \"patience\": 3}')")
echo "train() returned job $job at once; the worker reports its progress in tfllmer.jobs:"
while true; do
    state=$(psql_q -A -t -F ' ' -c "SELECT state, epoch, max_epochs, round(progress::numeric, 2),
        coalesce(round(train_loss::numeric, 4)::text, '-'), coalesce(round(valid_ndcg10::numeric, 4)::text, '-'),
        coalesce(date_trunc('second', eta)::text, '-') FROM tfllmer.jobs WHERE job_id = $job")
    set -- $state
    printf '  state %-9s epoch %s/%s  progress %s  train_loss %s  valid_ndcg10 %s  eta %s\n' "$@"
    case "$1" in succeeded|failed|cancelled) break ;; esac
    sleep 2
done
psql_q <<SQL
SELECT epoch, round(train_loss::numeric, 4) AS train_loss, round(valid_hr10::numeric, 4) AS valid_hr10,
       round(valid_ndcg10::numeric, 4) AS valid_ndcg10, round(epoch_ms::numeric) AS epoch_ms
FROM tfllmer.job_log($job);
SELECT model_name, version, backbone, normalized, init, n_items, dim, round(valid_ndcg10::numeric, 4) AS valid_ndcg10,
       round(test_hr10::numeric, 4) AS test_hr10, round(test_ndcg10::numeric, 4) AS test_ndcg10, size_bytes
FROM tfllmer.models;
-- leave-one-out evaluation, full ranking with the history masked
SELECT split, n_users, round(hr::numeric, 4) AS hr20, round(ndcg::numeric, 4) AS ndcg20 FROM tfllmer.evaluate('demo_model', k => 20);
SQL

log "step 4: recommendations in SQL (tfllmer.recommend, recommend_next, similar_items)"
psql_q <<'SQL'
-- per request: what next for user 1? (history read now from interactions)
SELECT item_id, round(score::numeric, 3) AS score FROM tfllmer.recommend('demo_model', 1, k => 5);
-- a few users at once, as one query
SELECT u.user_id, array_agg(r.item_id ORDER BY r.score DESC) AS top_5
FROM (SELECT DISTINCT user_id FROM interactions ORDER BY user_id LIMIT 4) u,
     LATERAL tfllmer.recommend('demo_model', u.user_id, 5) r
GROUP BY u.user_id ORDER BY u.user_id;
-- what counts happens at once: user 1 consumes the top recommendation...
INSERT INTO interactions
SELECT 1, item_id, (SELECT max(ts) + 1 FROM interactions WHERE user_id = 1)
FROM tfllmer.recommend('demo_model', 1, k => 1);
-- ...and the next call already knows it (no retraining)
SELECT array_agg(item_id) AS top_5_now FROM tfllmer.recommend('demo_model', 1, k => 5);
-- for a history that is not stored (oldest first), and items like item 1
SELECT array_agg(item_id) AS after_items_1_2_3 FROM tfllmer.recommend_next('demo_model', ARRAY[1, 2, 3], k => 5);
SELECT item_id, round(score::numeric, 3) AS cosine FROM tfllmer.similar_items('demo_model', 1, k => 3);
-- every user, timed
\timing on
SELECT count(*) AS recommendations, count(DISTINCT u.user_id) AS users
FROM (SELECT DISTINCT user_id FROM interactions) u, LATERAL tfllmer.recommend('demo_model', u.user_id, 10) r;
SQL

log "step 5: a new item, no interactions yet: served at once from its LLM embedding (tfllmer.add_items)"
psql_q <<'SQL'
\timing off
-- a new item whose description is item 1's: the model maps its embedding
-- into its item space (the trained items do not change)
CREATE TABLE new_items AS
SELECT (SELECT max(item_id) FROM items) + 1 AS item_id, embedding FROM items WHERE item_id = 1;
SELECT tfllmer.add_items('demo_model', 'new_items') AS added;
SELECT model_name, version, n_items, n_cold_items FROM tfllmer.models;
SELECT item_id, round(score::numeric, 3) AS cosine
FROM tfllmer.similar_items('demo_model', (SELECT item_id FROM new_items), k => 3);
SQL

log "done"
cat <<EOF
The demo cluster keeps running, with the data in database tfllmer_demo:
    $PG_BIN/psql -h $PGHOST -p $PGPORT -U postgres tfllmer_demo
Stop it with:
    runuser -u postgres -- $PG_BIN/pg_ctl -D $demo/data stop
EOF

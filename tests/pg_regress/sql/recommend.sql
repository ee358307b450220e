-- Recommendations: recommend() for a user (history read now from the
-- model's table), recommend_next() for a given history, similar_items(),
-- and the per-backend model cache. (each file starts from a fresh install)
\i common/fresh_install.sql

\set walk_users 80
\set walk_steps 12
\i common/walks.sql

-- train() says which index makes recommend() fast when there is none
SELECT tfllmer.train('walker', 'walks',
       options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "dim": 16, "learning_rate": 0.01, "patience": 100}') AS job \gset
SELECT tfllmer.wait_job(:job);
CREATE INDEX walks_recent ON walks (user_id, ts, item_id);

-- user 5 walked items 6, 7, ..., 17: item 18 comes next
SELECT array_agg(item_id ORDER BY ts) AS history FROM walks WHERE user_id = 5;
SELECT 18 IN (SELECT item_id FROM tfllmer.recommend('walker', 5, k => 3)) AS predicts_next_item;
-- k rows, best first, none the user has seen
SELECT count(*) AS n,
       bool_and(item_id NOT IN (SELECT item_id FROM walks WHERE user_id = 5)) AS unseen
FROM tfllmer.recommend('walker', 5);
SELECT bool_and(score <= previous) AS best_first
FROM (SELECT score, lag(score) OVER (ORDER BY ordinality) AS previous
      FROM tfllmer.recommend('walker', 5, k => 30) WITH ORDINALITY) r
WHERE previous IS NOT NULL;
-- k larger than the catalogue returns what exists: 30 items, 12 seen
SELECT count(*) AS unseen_items FROM tfllmer.recommend('walker', 5, k => 1000);
SELECT count(*) AS all_items FROM tfllmer.recommend('walker', 5, k => 1000, exclude_seen => false);
-- the same call gives the same answer
SELECT (SELECT array_agg(item_id) FROM tfllmer.recommend('walker', 5))
     = (SELECT array_agg(item_id) FROM tfllmer.recommend('walker', 5)) AS repeatable;

-- what a user does now counts at once, without retraining
INSERT INTO walks VALUES (5, 18, 12);
SELECT 18 NOT IN (SELECT item_id FROM tfllmer.recommend('walker', 5, k => 3)) AS seen_item_left_out,
       19 IN (SELECT item_id FROM tfllmer.recommend('walker', 5, k => 3)) AS predicts_the_one_after;
DELETE FROM walks WHERE user_id = 5 AND ts = 12;

-- a user without history (or unknown) gets no rows
SELECT count(*) AS unknown_user FROM tfllmer.recommend('walker', 999);
-- rows with a NULL item or time are skipped, as in training
INSERT INTO walks VALUES (81, 3, NULL), (81, NULL, 4);
SELECT count(*) AS only_null_rows FROM tfllmer.recommend('walker', 81);

-- recommend_next() with the same history (oldest first) gives the same
-- items and scores
SELECT (SELECT array_agg(row(item_id, score)) FROM tfllmer.recommend('walker', 7))
     = (SELECT array_agg(row(item_id, score)) FROM tfllmer.recommend_next('walker',
          (SELECT array_agg(item_id ORDER BY ts, item_id) FROM walks WHERE user_id = 7))) AS same_as_recommend;
-- items the model does not know are ignored; an empty history gets no rows
SELECT (SELECT array_agg(item_id) FROM tfllmer.recommend_next('walker', ARRAY[1000, 6, 7, -1]))
     = (SELECT array_agg(item_id) FROM tfllmer.recommend_next('walker', ARRAY[6, 7])) AS unknown_ignored;
SELECT count(*) AS empty_history FROM tfllmer.recommend_next('walker', ARRAY[]::bigint[]);
SELECT count(*) AS only_unknown FROM tfllmer.recommend_next('walker', ARRAY[1000]);
-- exclude_seen leaves out the history's items, or not
SELECT bool_and(item_id NOT IN (6, 7)) AS seen_left_out FROM tfllmer.recommend_next('walker', ARRAY[6, 7], k => 28);
SELECT count(*) AS everything FROM tfllmer.recommend_next('walker', ARRAY[6, 7], k => 50, exclude_seen => false);

-- similar_items(): cosine similarity of item vectors, the item itself left out
SELECT count(*) AS n, bool_and(item_id <> 10) AS not_itself, bool_and(score BETWEEN -1.0001 AND 1.0001) AS cosine
FROM tfllmer.similar_items('walker', 10, k => 5);
SELECT count(*) AS others FROM tfllmer.similar_items('walker', 10, k => 100);
-- symmetric: the similarity of a to b is that of b to a
SELECT bool_and(abs(ab.score - ba.score) < 1e-5) AS symmetric
FROM tfllmer.similar_items('walker', 10, k => 100) ab
JOIN LATERAL tfllmer.similar_items('walker', ab.item_id, k => 100) ba ON ba.item_id = 10;
SELECT count(*) AS unknown_item FROM tfllmer.similar_items('walker', 1000);

-- a whole cohort in one query
SELECT count(*) AS rows, count(DISTINCT u) AS users
FROM generate_series(1, 80) u, LATERAL tfllmer.recommend('walker', u, 3) r;

-- the backend keeps the model ready to score
SELECT model_name, version, bytes > 0 AS sized, hits > 0 AS reused FROM tfllmer.cached_models();
-- a new version is used as soon as it is committed
SELECT tfllmer.train('walker', 'walks', backbone => 'gru4rec',
       options => '{"epochs": 2, "batch_size": 32, "max_len": 12, "dim": 16}') AS job2 \gset
SELECT tfllmer.wait_job(:job2);
SELECT count(*) FROM tfllmer.recommend('walker', 5);
SELECT model_name, version FROM tfllmer.cached_models();
-- with no cache memory every call loads the model, and still answers
SET tfllmer.model_cache_size = 0;
SELECT count(*) FROM tfllmer.recommend('walker', 5);
SELECT count(*) AS cached FROM tfllmer.cached_models();
RESET tfllmer.model_cache_size;
-- recommendations for every user written into a table, with a parallel
-- plan offered (the recommend functions are PARALLEL UNSAFE: none is used)
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
CREATE TABLE all_top AS
SELECT u.user_id, r.item_id, r.score
FROM (SELECT DISTINCT user_id FROM walks) u, tfllmer.recommend('walker', u.user_id, k => 3) r;
SELECT count(*) AS rows, count(DISTINCT user_id) AS users FROM all_top;
DROP TABLE all_top;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
-- every C function that reads through SPI is PARALLEL UNSAFE (SPI starts
-- commands, which a parallel query forbids); only these read nothing: the
-- hold-out hash, and this backend's own cache (restricted to the leader)
SELECT proname, proparallel FROM pg_catalog.pg_proc
WHERE pronamespace = 'tfllmer'::regnamespace AND prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'c')
  AND proparallel <> 'u'
ORDER BY 1;
-- a dropped model is never served from the cache
SELECT count(*) FROM tfllmer.recommend('walker', 5);
SELECT tfllmer.drop_model('walker');
SELECT * FROM tfllmer.recommend('walker', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS cached FROM tfllmer.cached_models();

DROP TABLE walks;

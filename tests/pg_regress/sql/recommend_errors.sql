-- Bad input to the recommendation functions: each an ERROR with a SQLSTATE
-- that fits and a message naming the argument. (fresh install)
\i common/fresh_install.sql
\set walk_users 40
\set walk_steps 6
\i common/walks.sql
CREATE INDEX ON walks (user_id, ts, item_id);
SELECT tfllmer.train('walker', 'walks', options => '{"epochs": 2, "max_len": 8, "dim": 8}') AS job \gset
SELECT tfllmer.wait_job(:job);

-- the model: NULL, empty, unknown
SELECT * FROM tfllmer.recommend(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend('', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend('no_such_model', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('no_such_model', ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.similar_items('no_such_model', 1);
\echo :LAST_ERROR_SQLSTATE

-- k: NULL, zero, negative
SELECT * FROM tfllmer.recommend('walker', 1, k => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend('walker', 1, k => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('walker', ARRAY[1], k => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.similar_items('walker', 1, k => 0);
\echo :LAST_ERROR_SQLSTATE

-- the user, the history, the item, exclude_seen
SELECT * FROM tfllmer.recommend('walker', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('walker', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('walker', ARRAY[1, NULL, 2]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.similar_items('walker', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend('walker', 1, exclude_seen => NULL);
\echo :LAST_ERROR_SQLSTATE

-- a model still training, or whose job failed, has no version to use
CREATE TABLE long_walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 300 AS item_id, k AS ts
FROM generate_series(1, 400) u, generate_series(0, 49) k;
SELECT tfllmer.train('long', 'long_walks', options => '{"epochs": 100000, "batch_size": 8, "max_len": 50}') AS job2 \gset
-- (the job may be queued or running by now: the message says which)
DO $$
BEGIN
    PERFORM * FROM tfllmer.recommend('long', 1);
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    RAISE NOTICE '55000, says it is still training: %', SQLERRM LIKE '%still training (job % is %)';
END $$;
SELECT tfllmer.cancel_job(:job2);
SELECT tfllmer.wait_job(:job2);
SELECT * FROM tfllmer.recommend_next('long', ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE

-- a model row edited by hand into nonsense: an ERROR naming the model and
-- what does not fit (the size is checked before any memory is taken)
CREATE TABLE kept AS SELECT * FROM tfllmer.model_store WHERE model_name = 'walker';
UPDATE tfllmer.model_store SET layers = 1000000000 WHERE model_name = 'walker';
SELECT * FROM tfllmer.recommend('walker', 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.model_store SET layers = kept.layers, max_len = 2000000000 FROM kept
 WHERE model_store.model_name = 'walker';
SELECT * FROM tfllmer.similar_items('walker', 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.model_store SET max_len = kept.max_len, weights = substr(kept.weights, 1, 100) FROM kept
 WHERE model_store.model_name = 'walker';
SELECT * FROM tfllmer.evaluate('walker');
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.model_store SET weights = kept.weights, item_ids = '\x0102' FROM kept
 WHERE model_store.model_name = 'walker';
SELECT * FROM tfllmer.recommend_next('walker', ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE
-- put back, it answers again
UPDATE tfllmer.model_store SET item_ids = kept.item_ids FROM kept WHERE model_store.model_name = 'walker';
SELECT count(*) FROM tfllmer.recommend_next('walker', ARRAY[1]);
DROP TABLE kept;

-- the model's table was dropped: recommend() cannot read histories, while
-- recommend_next() and similar_items() still work
DROP TABLE walks;
SELECT * FROM tfllmer.recommend('walker', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.recommend_next('walker', ARRAY[1, 2]);
SELECT count(*) FROM tfllmer.similar_items('walker', 1);
-- nothing was written by the failed calls
SELECT model_name, version FROM tfllmer.models;

DROP TABLE long_walks;
SELECT tfllmer.drop_model('walker');
SELECT tfllmer.drop_model('long');

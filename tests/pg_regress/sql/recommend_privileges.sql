-- Recommendations run with the caller's privileges: another role cannot use
-- a model, even one this backend has cached for its owner; histories are
-- read as the caller, so grants and row-level security apply. (fresh install)
\i common/fresh_install.sql
\i common/two_roles.sql
-- a table owned by the DBA, with row-level security: alice may read the
-- interactions of users 1 to 20 only
\set walk_users 40
\set walk_steps 8
\i common/walks.sql
CREATE INDEX ON walks (user_id, ts, item_id);
ALTER TABLE walks ENABLE ROW LEVEL SECURITY;
CREATE POLICY first_twenty ON walks FOR SELECT TO tfllmer_alice USING (user_id <= 20);
GRANT SELECT ON walks TO tfllmer_alice;

-- alice trains on the rows she can see, and gets recommendations for them
SET ROLE tfllmer_alice;
SELECT tfllmer.train('alice_model', 'walks', options => '{"epochs": 2, "max_len": 8, "dim": 8}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT n_users FROM tfllmer.jobs WHERE job_id = :job;
SELECT count(*) AS for_user_5 FROM tfllmer.recommend('alice_model', 5, k => 3);
-- user 30's rows are hidden from her: no history, no rows
SELECT count(*) AS for_user_30 FROM tfllmer.recommend('alice_model', 30, k => 3);
SELECT tfllmer.user_vector('alice_model', 5) IS NOT NULL AS vector_for_5,
       tfllmer.user_vector('alice_model', 30) IS NULL AS none_for_30;
SELECT model_name, version FROM tfllmer.cached_models();
RESET ROLE;

-- bob, in the same backend (the model is in its cache), cannot use it or
-- see that it is cached
SET ROLE tfllmer_bob;
SELECT * FROM tfllmer.recommend('alice_model', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.recommend_next('alice_model', ARRAY[1, 2]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.similar_items('alice_model', 1);
\echo :LAST_ERROR_SQLSTATE
-- nor read its vectors
SELECT tfllmer.user_vector('alice_model', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.history_vector('alice_model', ARRAY[1, 2]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tfllmer.item_vectors('alice_model');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS cached_for_bob FROM tfllmer.cached_models();
RESET ROLE;

-- nor change its items, prune it, or see its cold items
CREATE TABLE walk_texts AS
SELECT i::bigint AS item_id, ARRAY[cos(i), sin(i), cos(2 * i), sin(2 * i)]::real[] AS embedding
FROM generate_series(1, 40) i;
GRANT SELECT ON walk_texts TO PUBLIC;
SET ROLE tfllmer_bob;
SELECT tfllmer.add_items('alice_model', 'walk_texts');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_items('alice_model', ARRAY[1]);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.prune_model('alice_model');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.evaluate('alice_model', items => 'cold');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS cold_items_for_bob FROM tfllmer.cold_items;
RESET ROLE;
-- a member of alice's role sees her model, but only its owner changes it
GRANT tfllmer_alice TO tfllmer_bob;
SET ROLE tfllmer_bob;
SELECT tfllmer.add_items('alice_model', 'walk_texts');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_items('alice_model', ARRAY[39]);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE tfllmer_alice FROM tfllmer_bob;
-- alice herself: her model was trained without an init embedding, so it
-- has no map for new items
SET ROLE tfllmer_alice;
SELECT tfllmer.add_items('alice_model', 'walk_texts');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP TABLE walk_texts;

-- alice loses her grant: recommend() can no longer read histories
REVOKE SELECT ON walks FROM tfllmer_alice;
SET ROLE tfllmer_alice;
SELECT * FROM tfllmer.recommend('alice_model', 5);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS from_a_given_history FROM tfllmer.recommend_next('alice_model', ARRAY[1, 2], k => 3);
RESET ROLE;

-- clean up the roles' objects
DROP TABLE walks;
DELETE FROM tfllmer.job_store;
DELETE FROM tfllmer.model_names;
DROP ROLE tfllmer_alice;
DROP ROLE tfllmer_bob;

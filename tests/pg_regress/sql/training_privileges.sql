-- Jobs and models are private to the role that trained them: another role
-- cannot see, wait for, cancel, evaluate, drop or reuse the name of them.
-- The worker acts as the role that called train(). (fresh install)
\i common/fresh_install.sql
\i common/two_roles.sql
CREATE TABLE alice_walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, 40) u, generate_series(0, 7) k;
ALTER TABLE alice_walks OWNER TO tfllmer_alice;
CREATE TABLE bob_walks AS SELECT * FROM generate_series(1, 3) AS user_id, generate_series(1, 3) AS item_id, generate_series(1, 3) AS ts;
ALTER TABLE bob_walks OWNER TO tfllmer_bob;

-- alice trains on her table with nothing but plain grants
SET ROLE tfllmer_alice;
SELECT tfllmer.train('alice_model', 'alice_walks', options => '{"epochs": 2, "max_len": 8, "dim": 8}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT model_name, version, owner FROM tfllmer.models;
SELECT owner, state FROM tfllmer.jobs;
RESET ROLE;

-- bob sees none of it
SET ROLE tfllmer_bob;
SELECT count(*) AS jobs_bob_sees FROM tfllmer.jobs;
SELECT count(*) AS models_bob_sees FROM tfllmer.models;
SELECT tfllmer.wait_job(:job);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.cancel_job(:job);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.job_log(:job);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.evaluate('alice_model');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_model('alice_model');
\echo :LAST_ERROR_SQLSTATE
-- nor can he train on her table, or take her model's name
SELECT tfllmer.train('bob_model', 'alice_walks');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('alice_model', 'bob_walks');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- the worker reads with the caller's privileges: if alice loses her grant
-- before her worker reads, the job fails instead of reading as anyone else
CREATE TABLE shared_walks AS SELECT * FROM alice_walks;
GRANT SELECT ON shared_walks TO tfllmer_alice;
BEGIN;
SET LOCAL ROLE tfllmer_alice;
SELECT tfllmer.train('alice_shared', 'shared_walks', options => '{"epochs": 1, "max_len": 8, "dim": 8}') AS job2 \gset
RESET ROLE;
REVOKE SELECT ON shared_walks FROM tfllmer_alice;
COMMIT;
SET ROLE tfllmer_alice;
SELECT tfllmer.wait_job(:job2);
SELECT state, error FROM tfllmer.jobs WHERE job_id = :job2;
SELECT count(*) AS versions FROM tfllmer.models WHERE model_name = 'alice_shared';
RESET ROLE;

-- a role cannot make a worker connect as someone else: the login role of a
-- job comes from the inserting session, never from the role
SET ROLE tfllmer_alice;
INSERT INTO tfllmer.job_store (model_name, login_role, source_table, source_name, user_column, item_column,
                               time_column, backbone, normalize, options, max_epochs)
VALUES ('forged', 10, 'alice_walks'::regclass, 'x', 'user_id', 'item_id', 'ts', 'sasrec', true, '{}', 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.job_store SET login_role = 10;
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.job_store SET created_xid = '1';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- nor give bob's model a version, or bob's job an epoch log, by writing the
-- catalog directly: his next version or epoch would collide with it
CREATE TABLE bob_seq AS SELECT * FROM alice_walks;
ALTER TABLE bob_seq OWNER TO tfllmer_bob;
CREATE INDEX ON bob_seq (user_id, ts, item_id);
SET ROLE tfllmer_bob;
SELECT tfllmer.train('bob_model', 'bob_seq', options => '{"epochs": 1, "max_len": 4, "dim": 4}') AS bob_job \gset
SELECT tfllmer.wait_job(:bob_job);
RESET ROLE;
SET ROLE tfllmer_alice;
INSERT INTO tfllmer.model_store (model_name, version, job_id, backbone, normalized, n_items, n_users, dim, max_len,
                                 layers, heads, dropout, options, source_table, source_name, user_column,
                                 item_column, time_column, epochs, best_epoch, valid_ndcg10, test_hr10,
                                 test_ndcg10, item_ids, weights)
SELECT 'bob_model', 2, job_id, backbone, normalized, n_items, n_users, dim, max_len, layers, heads, dropout,
       options, source_table, source_name, user_column, item_column, time_column, epochs, best_epoch,
       valid_ndcg10, test_hr10, test_ndcg10, item_ids, weights
FROM tfllmer.model_store WHERE model_name = 'alice_model';
\echo :LAST_ERROR_SQLSTATE
UPDATE tfllmer.model_store SET model_name = 'bob_model';
\echo :LAST_ERROR_SQLSTATE
INSERT INTO tfllmer.job_epoch_store (job_id, epoch, train_loss, valid_hr10, valid_ndcg10, epoch_ms)
VALUES (:bob_job, 99, 0, 0, 0, 0);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- bob's next version is still his version 2
SET ROLE tfllmer_bob;
SELECT tfllmer.train('bob_model', 'bob_seq', options => '{"epochs": 1, "max_len": 4, "dim": 4}') AS bob_job \gset
SELECT tfllmer.wait_job(:bob_job);
SELECT model_name, version, owner FROM tfllmer.models ORDER BY version;
RESET ROLE;

-- clean up the roles' objects
DROP TABLE bob_walks, alice_walks, shared_walks, bob_seq;
DELETE FROM tfllmer.job_store;
DELETE FROM tfllmer.model_names;
DROP ROLE tfllmer_alice;
DROP ROLE tfllmer_bob;

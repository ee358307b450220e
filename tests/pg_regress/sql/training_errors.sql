-- Bad input to the training functions: every case is an ERROR with a
-- SQLSTATE that fits, a message naming the argument, and no job left
-- behind. (each file starts from a fresh install)
\i common/fresh_install.sql
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts, 'x' || k AS label
FROM generate_series(1, 40) u, generate_series(0, 5) k;
CREATE TABLE pairs AS SELECT user_id, item_id, ts FROM walks WHERE ts < 2;
CREATE TABLE walk_items AS SELECT DISTINCT item_id, ARRAY[item_id, 1, item_id % 3, item_id % 7]::real[] AS embedding FROM walks;
SELECT embedding_name, output_dim FROM tfllmer.rec_pca('e4', 'walk_items', dim => 4);

-- the model name, the table and its columns
SELECT tfllmer.train(NULL, 'walks');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('', 'walks');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train(repeat('m', 64), 'walks');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'no_such_table');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', user_column => 'who');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', item_column => 'label');
\echo :LAST_ERROR_SQLSTATE
-- too few interactions to split: nobody has 3
SELECT tfllmer.train('m', 'pairs');
\echo :LAST_ERROR_SQLSTATE

-- init, backbone, normalize
SELECT tfllmer.train('m', 'walks', init => 'no_such_embedding');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', init => 'e4', options => '{"dim": 8}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', backbone => 'bert4rec');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', backbone => NULL);
\echo :LAST_ERROR_SQLSTATE
-- (normalize is an SQL keyword: as a named argument it needs double quotes)
SELECT tfllmer.train('m', 'walks', "normalize" => NULL);
\echo :LAST_ERROR_SQLSTATE

-- options: unknown keys, wrong types, out of range
SELECT tfllmer.train('m', 'walks', options => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"epoch": 5}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"epochs": "5"}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"epochs": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"epochs": 2.5}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"batch_size": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"max_len": 100000}');
\echo :LAST_ERROR_SQLSTATE
-- the loss: 'full' or 'sampled_softmax'; negatives and sampler belong to the latter
SELECT tfllmer.train('m', 'walks', options => '{"loss": "bpr"}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"negatives": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"loss": "full", "negatives": 64}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"sampler": "zipf"}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"eval_users": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"learning_rate": -0.1}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"learning_rate": null}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"dropout": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"heads": 3}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', backbone => 'gru4rec', options => '{"layers": 2}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"threads": 1000}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.train('m', 'walks', options => '{"temperature": 0}');
\echo :LAST_ERROR_SQLSTATE
-- nothing was left behind by any of these
SELECT count(*) AS jobs FROM tfllmer.jobs;
SELECT count(*) AS model_names FROM tfllmer.model_names;

-- a model name taken by a running job
SELECT tfllmer.train('busy', 'walks', options => '{"epochs": 100000, "max_len": 6}') AS job \gset
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT state FROM tfllmer.jobs WHERE model_name = 'busy') <> 'queued';
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT tfllmer.train('busy', 'walks');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_model('busy');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.cancel_job(:job);
SELECT tfllmer.wait_job(:job);
SELECT tfllmer.drop_model('busy');

-- unknown jobs
SELECT tfllmer.cancel_job(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.wait_job(123456);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.wait_job(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.job_log(123456);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.wait_job(:job, timeout_s => -1);
\echo :LAST_ERROR_SQLSTATE
-- a job cannot be waited for in the transaction that created it
BEGIN;
SELECT tfllmer.train('same_tx', 'walks', options => '{"epochs": 1}') AS job2 \gset
SELECT tfllmer.wait_job(:job2);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- the blocking route: CALL train_and_wait() commits the job and waits, so
-- it cannot run inside a transaction block, and it raises when the job
-- fails. (A view whose time column fails in the training worker, and only
-- there, makes a job that fails after train() has accepted it.)
CREATE FUNCTION fails_in_worker(t int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') LIKE 'tfllmer job %' THEN
        RAISE EXCEPTION 'the time column cannot be read here';
    END IF;
    RETURN t;
END $$;
CREATE VIEW walks_failing AS SELECT user_id, item_id, fails_in_worker(ts) AS ts FROM walks;
CALL tfllmer.train_and_wait('failing', 'walks_failing', options => '{"epochs": 1, "max_len": 8, "dim": 8}');
\echo :LAST_ERROR_SQLSTATE
SELECT state, error FROM tfllmer.jobs WHERE model_name = 'failing';
CALL tfllmer.train_and_wait(NULL, 'walks');
\echo :LAST_ERROR_SQLSTATE
CALL tfllmer.train_and_wait('m', 'walks', options => '{"epochs": 0}');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
CALL tfllmer.train_and_wait('in_a_block', 'walks', options => '{"epochs": 1}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) AS jobs_left_behind FROM tfllmer.jobs WHERE model_name IN ('m', 'in_a_block');

-- evaluate and drop_model
SELECT * FROM tfllmer.evaluate('no_such_model');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.evaluate(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.evaluate('busy', k => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.evaluate('busy', k => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_model('no_such_model');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_model('no_such_model', if_exists => true);

-- loss_plot
SELECT tfllmer.loss_plot(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.loss_plot('{}');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.loss_plot(ARRAY[NULL]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.loss_plot(ARRAY[123456]);
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.loss_plot(ARRAY[:job], metric => 'accuracy');
\echo :LAST_ERROR_SQLSTATE
DROP VIEW walks_failing;
DROP FUNCTION fails_in_worker;
DROP TABLE walks, pairs, walk_items;

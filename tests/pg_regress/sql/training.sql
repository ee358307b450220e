-- Training in a background worker: a job goes queued -> running ->
-- succeeded, its progress and log are visible, the model gets versions,
-- and evaluate() scores it. (each file starts from a fresh install)
\i common/fresh_install.sql

\set walk_users 80
\set walk_steps 12
\i common/walks.sql

-- train() returns a job id at once; the worker trains in the background
SELECT tfllmer.train('walker', 'walks',
       options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "dim": 16, "learning_rate": 0.01, "patience": 100}') AS job \gset
SELECT state IN ('queued', 'running') AS in_progress, max_epochs FROM tfllmer.jobs WHERE job_id = :job;
SELECT tfllmer.wait_job(:job);
SELECT model_name, owner = current_user AS mine, state, epoch, max_epochs, progress, error,
       n_users, n_items, backbone, normalize, init, interactions, model_version, eta
FROM tfllmer.jobs WHERE job_id = :job;
-- the resolved options are stored with the job
SELECT options FROM tfllmer.jobs WHERE job_id = :job;
-- one log row per epoch; the loss falls
SELECT count(*) AS epochs, bool_and(epoch_ms > 0) AS timed, bool_and(valid_ndcg10 BETWEEN 0 AND 1) AS metrics_in_range
FROM tfllmer.job_log(:job);
SELECT (SELECT train_loss FROM tfllmer.job_log(:job) WHERE epoch = 12)
     < (SELECT train_loss FROM tfllmer.job_log(:job) WHERE epoch = 1) AS loss_fell;
-- the model: version 1, current, with the best epoch's validation NDCG
SELECT model_name, version, owner = current_user AS mine, backbone, normalized, init, n_items, dim, is_current,
       valid_ndcg10 = (SELECT max(valid_ndcg10) FROM tfllmer.job_log(:job)) AS kept_best_epoch,
       size_bytes > 0 AS stored
FROM tfllmer.models;
-- evaluate(): leave-one-out on the table as it is now; it learned the walk
-- (a random ranking of 30 items has HR@10 about 0.33 and NDCG@10 about 0.15)
SELECT split, n_users, hr > 0.6 AS learned_hr, ndcg > 0.3 AS learned_ndcg FROM tfllmer.evaluate('walker');
SELECT split, n_users, hr >= ndcg AS hr_bounds_ndcg FROM tfllmer.evaluate('walker', k => 1);
-- the stored test metrics are what evaluate() computes on unchanged data
SELECT abs(m.test_ndcg10 - e.ndcg) < 1e-9 AS same_test_ndcg, abs(m.test_hr10 - e.hr) < 1e-9 AS same_test_hr
FROM tfllmer.models m, tfllmer.evaluate('walker') e WHERE e.split = 'test';

-- a second job on the same name makes version 2, which becomes current;
-- version 1 stays until the model is dropped
SELECT tfllmer.train('walker', 'walks', backbone => 'gru4rec',
       options => '{"epochs": 2, "batch_size": 32, "max_len": 12, "dim": 16}') AS job2 \gset
SELECT tfllmer.wait_job(:job2);
SELECT version, backbone, is_current FROM tfllmer.models ORDER BY version;
SELECT model_version FROM tfllmer.jobs WHERE job_id = :job2;

-- the same seed and thread count train the same model
SELECT tfllmer.train('walker_again', 'walks',
       options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "dim": 16, "learning_rate": 0.01, "patience": 100}') AS job3 \gset
SELECT tfllmer.wait_job(:job3);
SELECT a.train_loss = b.train_loss AS same_loss, a.valid_ndcg10 = b.valid_ndcg10 AS same_ndcg
FROM tfllmer.job_log(:job) a JOIN tfllmer.job_log(:job3) b USING (epoch) WHERE epoch = 12;

-- the blocking route: CALL train_and_wait() takes train()'s arguments,
-- commits the new job, waits for it, and returns its id and final state
-- (SELECT tfllmer.wait_job(tfllmer.train(...)) cannot: the job would not
-- be committed before the wait)
CALL tfllmer.train_and_wait('walker_blocking', 'walks',
     options => '{"epochs": 2, "batch_size": 32, "max_len": 12, "dim": 16}');
SELECT model_name, version, is_current FROM tfllmer.models WHERE model_name = 'walker_blocking';

-- cancel: a running job stops within a batch and stores no version
CREATE TABLE long_walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 300 AS item_id, k AS ts
FROM generate_series(1, 400) u, generate_series(0, 49) k;
SELECT tfllmer.train('long', 'long_walks', options => '{"epochs": 100000, "batch_size": 8, "max_len": 50}') AS job4 \gset
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN (SELECT state FROM tfllmer.jobs WHERE model_name = 'long') <> 'queued';
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT state FROM tfllmer.jobs WHERE job_id = :job4;
SELECT tfllmer.cancel_job(:job4);
SELECT tfllmer.wait_job(:job4);
SELECT state, error, finished_at IS NOT NULL AS finished FROM tfllmer.jobs WHERE job_id = :job4;
SELECT count(*) AS versions FROM tfllmer.models WHERE model_name = 'long';
-- cancelling a job that has ended does nothing
SELECT tfllmer.cancel_job(:job4), tfllmer.cancel_job(:job);
-- a model whose only job was cancelled has no version to use
SELECT * FROM tfllmer.evaluate('long');
\echo :LAST_ERROR_SQLSTATE

-- a queued job cancelled before its worker started never runs
BEGIN;
SELECT tfllmer.train('never', 'walks', options => '{"epochs": 1}') AS job5 \gset
SELECT tfllmer.cancel_job(:job5);
COMMIT;
SELECT tfllmer.wait_job(:job5);
SELECT state, started_at IS NULL AS never_started FROM tfllmer.jobs WHERE job_id = :job5;

-- failure: the table is gone by the time the worker reads it
BEGIN;
CREATE TABLE doomed AS SELECT * FROM walks;
SELECT tfllmer.train('doomed', 'doomed', options => '{"epochs": 1}') AS job6 \gset
DROP TABLE doomed;
COMMIT;
SELECT tfllmer.wait_job(:job6);
SELECT state, error FROM tfllmer.jobs WHERE job_id = :job6;
SELECT * FROM tfllmer.evaluate('doomed');
\echo :LAST_ERROR_SQLSTATE

-- a rolled-back train() leaves nothing behind
BEGIN;
SELECT tfllmer.train('rolled_back', 'walks') IS NOT NULL AS started;
ROLLBACK;
SELECT count(*) FROM tfllmer.jobs WHERE model_name = 'rolled_back';

-- wait_job with a timeout returns the state it has then
SELECT tfllmer.train('slow', 'long_walks', options => '{"epochs": 100000, "batch_size": 8, "max_len": 50}') AS job7 \gset
SELECT tfllmer.wait_job(:job7, timeout_s => 0.2) IN ('queued', 'running') AS still_going;
SELECT tfllmer.cancel_job(:job7);
SELECT tfllmer.wait_job(:job7);

-- training curves as an SVG picture, one line per job (docs/img has examples)
SELECT left(tfllmer.loss_plot(ARRAY[:job, :job2]), 4) AS svg,
       strpos(tfllmer.loss_plot(ARRAY[:job, :job2]), 'walker (sasrec, random init, normalised)') > 0 AS labelled,
       strpos(tfllmer.loss_plot(ARRAY[:job], metric => 'valid_ndcg10'), 'validation NDCG@10') > 0 AS ndcg_axis;

-- Big catalogues: the sampled softmax ranks each target against a few
-- negatives drawn for its sequence (option "negatives", drawn "uniform"ly or
-- by "popularity", with the logQ correction) instead of every item; "loss"
-- left out picks it by catalogue size (full up to 20,000 items). Validation
-- and test can rank a seeded sample of users ("eval_users"; by default all
-- users until users x items passes 10^10). What was chosen is in the job's
-- detail and in the version's options; test_users says how many users the
-- test figures cover.
SELECT tfllmer.train('sampled', 'walks', options => '{"epochs": 12, "batch_size": 16, "max_len": 12, "dim": 16,
       "learning_rate": 0.01, "patience": 100, "loss": "sampled_softmax", "negatives": 8, "eval_users": 20}') AS job8 \gset
SELECT tfllmer.wait_job(:job8);
SELECT detail FROM tfllmer.jobs WHERE job_id = :job8;
SELECT test_users, options->>'loss' AS loss, options->'negatives' AS negatives, options->>'sampler' AS sampler,
       options->'eval_users' AS eval_users
FROM tfllmer.models WHERE model_name = 'sampled';
-- ranked against 8 of 30 items in training, it still learned the walk over all of them
SELECT split, n_users, hr > 0.6 AS learned_hr FROM tfllmer.evaluate('sampled');
-- the default on 30 items: the full softmax, every user
SELECT options->>'loss' AS loss, test_users FROM tfllmer.models WHERE model_name = 'walker' AND version = 1;
SELECT tfllmer.drop_model('sampled');

-- drop_model removes every version
SELECT tfllmer.drop_model('walker');
SELECT count(*) FROM tfllmer.models WHERE model_name = 'walker';
SELECT tfllmer.drop_model('walker', if_exists => true);
DROP TABLE walks, long_walks;

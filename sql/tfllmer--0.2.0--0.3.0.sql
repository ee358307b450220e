-- tfllmer 0.2.0 -> 0.3.0
--
-- * CALL tfllmer.train_and_wait(...): train() that commits the new job,
--   waits for it and raises when it fails or is cancelled.
-- * On a hot standby the jobs view no longer shows the primary's running
--   jobs as failed (the standby has none of the primary's workers).
\echo Use "ALTER EXTENSION tfllmer UPDATE TO '0.3.0'" to load this file. \quit

CREATE OR REPLACE VIEW tfllmer.jobs WITH (security_invoker = true) AS
SELECT job_id, model_name, pg_catalog.pg_get_userbyid(owner) AS owner,
       CASE WHEN lost THEN 'failed' ELSE state END AS state,
       epoch, max_epochs, progress, train_loss, valid_ndcg10, best_valid_ndcg10,
       started_at, updated_at, finished_at,
       CASE WHEN lost
            THEN 'the training worker (PID ' || worker_pid || ') ended without finishing the job: '
                 || 'it was killed, crashed, or the server restarted'
            ELSE error END AS error,
       -- additions to the API's columns
       CASE WHEN state = 'running' AND NOT lost AND eta_s IS NOT NULL
            THEN pg_catalog.make_interval(secs => eta_s) END AS eta,
       backbone, normalize, init, source_name AS interactions, options,
       n_users, n_items, model_version, detail, queued_at, worker_pid
-- (a hot standby has none of the primary's workers: it shows what it replayed)
FROM (SELECT s.*, s.state = 'running' AND NOT pg_catalog.pg_is_in_recovery()
                  AND NOT tfllmer.job_worker_alive(s.worker_pid, s.job_id) AS lost
      FROM tfllmer.job_store s) j;

CREATE PROCEDURE tfllmer.train_and_wait(
    model_name   text,
    interactions regclass,
    user_column  name DEFAULT 'user_id',
    item_column  name DEFAULT 'item_id',
    time_column  name DEFAULT 'ts',
    init         text DEFAULT NULL,
    backbone     text DEFAULT 'sasrec',
    "normalize"  boolean DEFAULT true,
    options      jsonb DEFAULT '{}',
    timeout_s    double precision DEFAULT NULL,
    INOUT job_id bigint DEFAULT NULL,
    INOUT state  text DEFAULT NULL)
LANGUAGE plpgsql
AS $procedure$
DECLARE
    job bigint;
    ended text;
    message text;
BEGIN
    job := tfllmer.train($1, $2, $3, $4, $5, $6, $7, $8, $9);
    -- the worker starts once the job row is committed
    COMMIT;
    ended := tfllmer.wait_job(job, $10);
    job_id := job;
    state := ended;
    IF ended = 'failed' THEN
        SELECT j.error INTO message FROM tfllmer.jobs j WHERE j.job_id = job;
        RAISE EXCEPTION 'training job % for model "%" failed: %', job, $1, coalesce(message, 'no message')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'tfllmer.jobs and tfllmer.job_log(' || job || ') show how far it got.';
    ELSIF ended = 'cancelled' THEN
        RAISE EXCEPTION 'training job % for model "%" was cancelled', job, $1
            USING ERRCODE = 'query_canceled';
    ELSIF ended <> 'succeeded' THEN
        RAISE NOTICE 'training job % for model "%" is still %: timeout_s (% s) passed', job, $1, ended, $10
            USING HINT = 'tfllmer.wait_job(' || job || ') waits on; the job goes on either way.';
    END IF;
END
$procedure$;
COMMENT ON PROCEDURE tfllmer.train_and_wait IS
    'train() that commits the new job and waits for it; raises if the job fails or is cancelled';

-- CALL tfllmer.train_and_wait(<the arguments of train()>, timeout_s):
-- queues the job like train(), commits (its worker can only start once the
-- job row is committed), waits like wait_job(), and raises when the job
-- fails (55000, with the job's error) or is cancelled (57014). After
-- timeout_s it returns with a NOTICE and the job goes on. CALL returns the
-- job id and its state (the two INOUT arguments). Not inside an explicit
-- transaction block: a procedure that commits cannot run there (2D000).
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

-- tfllmer catalog: the tables behind graphs, embeddings and models.
--
-- Privacy model: every tfllmer function runs with the caller's privileges.
-- Catalog tables are granted to PUBLIC, and row-level security shows each
-- role only the rows owned by a role it has the privileges of
-- (pg_has_role(owner, 'USAGE')): a role's own objects, and those of the
-- group roles it inherits. Rows can only be written as their owner.
--
-- Owners are stored as regrole and source tables as regclass (OIDs inside):
-- pg_dump writes them as names, so a restore into another cluster, where
-- roles and tables get new OIDs, keeps every object with its role and table.

GRANT USAGE ON SCHEMA tfllmer TO PUBLIC;

-- The OID of the current role (current_user), for ownership columns.
CREATE FUNCTION tfllmer.current_role_oid() RETURNS oid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user $$;

-- The OID of the session's login role (session_user): the role a training
-- worker connects as.
CREATE FUNCTION tfllmer.session_role_oid() RETURNS oid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user $$;

-- One row per co-occurrence graph; csr holds the whole graph (crates/tfllmer-core/src/graph_codec.rs).
CREATE TABLE tfllmer.graph_store (
    graph_name   text PRIMARY KEY CHECK (octet_length(graph_name) BETWEEN 1 AND 63),
    owner        regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    source_table regclass NOT NULL,
    source_name  text NOT NULL,
    user_column  name NOT NULL,
    item_column  name NOT NULL,
    time_column  name NOT NULL,
    window_size  integer NOT NULL,
    holdout      integer NOT NULL,
    weighting    text NOT NULL,
    damping      text NOT NULL,
    top_k        integer,
    n_users      bigint NOT NULL,
    n_items      bigint NOT NULL,
    n_edges      bigint NOT NULL,
    total_weight double precision NOT NULL,
    build_ms     double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    csr          bytea NOT NULL
);
-- the blob is already compact (varints): store it out of line, uncompressed
ALTER TABLE tfllmer.graph_store ALTER COLUMN csr SET STORAGE EXTERNAL;
ALTER TABLE tfllmer.graph_store ENABLE ROW LEVEL SECURITY;
-- (pg_has_role is only asked about roles that exist: it raises an error for a
-- dropped role's OID, which would break the table for everyone)
CREATE POLICY graph_store_owner ON tfllmer.graph_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.graph_store TO PUBLIC;
-- pg_dump includes the graphs
SELECT pg_catalog.pg_extension_config_dump('tfllmer.graph_store', '');

-- One row per reduced embedding set (Rec-PCA output); data holds item ids
-- and vectors (crates/tfllmer-core/src/embedding_codec.rs).
CREATE TABLE tfllmer.embedding_store (
    embedding_name    text PRIMARY KEY CHECK (octet_length(embedding_name) BETWEEN 1 AND 63),
    owner             regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    source_table      regclass NOT NULL,
    source_name       text NOT NULL,
    id_column         name NOT NULL,
    embedding_column  name NOT NULL,
    graph_name        text,
    lambda            double precision,
    n_items           bigint NOT NULL,
    input_dim         integer NOT NULL,
    output_dim        integer NOT NULL,
    retained_variance double precision NOT NULL,
    graph_tv_pca      double precision,
    graph_tv          double precision,
    build_ms          double precision NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    data              bytea NOT NULL,
    -- 'exact' or 'randomized' (rec_pca's method, as chosen)
    method            text NOT NULL
);
ALTER TABLE tfllmer.embedding_store ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE tfllmer.embedding_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY embedding_store_owner ON tfllmer.embedding_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.embedding_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.embedding_store', '');

-- Pieces of graphs and embeddings larger than tfllmer.part_size (PostgreSQL
-- limits one value to 1 GB): piece 0 is the object's own blob column, pieces
-- 1, 2, ... are here, each tied to its object (deleted with it) and read only
-- with its owner's. Owned and visible like the objects themselves.
CREATE TABLE tfllmer.object_parts (
    graph_name      text REFERENCES tfllmer.graph_store ON DELETE CASCADE,
    embedding_name  text REFERENCES tfllmer.embedding_store ON DELETE CASCADE,
    part            integer NOT NULL CHECK (part >= 1),
    owner           regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    data            bytea NOT NULL,
    CHECK ((graph_name IS NULL) <> (embedding_name IS NULL)),
    UNIQUE (graph_name, part),
    UNIQUE (embedding_name, part)
);
ALTER TABLE tfllmer.object_parts ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE tfllmer.object_parts ENABLE ROW LEVEL SECURITY;
CREATE POLICY object_parts_owner ON tfllmer.object_parts
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.object_parts TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.object_parts', '');

CREATE VIEW tfllmer.graphs WITH (security_invoker = true) AS
SELECT graph_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       user_column, item_column, time_column,
       window_size, holdout, weighting, damping, top_k,
       n_users, n_items, n_edges, total_weight,
       pg_catalog.octet_length(csr)::bigint
       + coalesce((SELECT sum(pg_catalog.octet_length(p.data)) FROM tfllmer.object_parts p
                   WHERE p.graph_name = g.graph_name AND p.owner = g.owner), 0)::bigint AS size_bytes,
       build_ms, created_at
FROM tfllmer.graph_store g;
GRANT SELECT ON tfllmer.graphs TO PUBLIC;

CREATE VIEW tfllmer.embeddings WITH (security_invoker = true) AS
SELECT embedding_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       id_column, embedding_column, graph_name, lambda,
       n_items, input_dim, output_dim,
       retained_variance, graph_tv_pca, graph_tv,
       pg_catalog.octet_length(data)::bigint
       + coalesce((SELECT sum(pg_catalog.octet_length(p.data)) FROM tfllmer.object_parts p
                   WHERE p.embedding_name = e.embedding_name AND p.owner = e.owner), 0)::bigint AS size_bytes,
       build_ms, created_at, method
FROM tfllmer.embedding_store e;
GRANT SELECT ON tfllmer.embeddings TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Training: jobs, their per-epoch log, model names and model versions.
-- ---------------------------------------------------------------------------

-- One row per train() call. The background worker that runs a job connects
-- as login_role (the caller's session user, who can log in) and then does
-- SET ROLE owner (the caller's current_user), so it reads with the caller's
-- privileges and writes rows the caller owns. Roles write this table
-- directly (row-level security keeps them to their own rows), but never
-- login_role or created_xid: those come from their defaults, so a job row
-- can only make a worker connect as the session that inserted it.
CREATE TABLE tfllmer.job_store (
    job_id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name        text NOT NULL CHECK (octet_length(model_name) BETWEEN 1 AND 63),
    owner             regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    login_role        regrole NOT NULL DEFAULT tfllmer.session_role_oid(),
    -- the transaction that called train(): the worker waits for it to end
    created_xid       xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    source_table      regclass NOT NULL,
    source_name       text NOT NULL,
    user_column       name NOT NULL,
    item_column       name NOT NULL,
    time_column       name NOT NULL,
    init              text,
    backbone          text NOT NULL,
    normalize         boolean NOT NULL,
    options           jsonb NOT NULL,
    epoch             integer NOT NULL DEFAULT 0,
    max_epochs        integer NOT NULL,
    progress          double precision NOT NULL DEFAULT 0,
    train_loss        double precision,
    valid_ndcg10      double precision,
    best_valid_ndcg10 double precision,
    eta_s             double precision,
    n_users           bigint,
    n_items           bigint,
    cancel_requested  boolean NOT NULL DEFAULT false,
    worker_pid        integer,
    launched_at       timestamptz,
    queued_at         timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    updated_at        timestamptz,
    finished_at       timestamptz,
    model_version     integer,
    detail            text,
    error             text
);
ALTER TABLE tfllmer.job_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_store_owner ON tfllmer.job_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, DELETE ON tfllmer.job_store TO PUBLIC;
GRANT INSERT (model_name, source_table, source_name, user_column, item_column, time_column, init, backbone,
              normalize, options, max_epochs) ON tfllmer.job_store TO PUBLIC;
GRANT UPDATE (state, epoch, progress, train_loss, valid_ndcg10, best_valid_ndcg10, eta_s, n_users, n_items,
              cancel_requested, worker_pid, launched_at, started_at, updated_at, finished_at, model_version,
              detail, error) ON tfllmer.job_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.job_store', '');
-- and where its job ids have got to, so that a restored database's next job
-- does not reuse one
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tfllmer.job_store', 'job_id'), '');

-- One row per finished epoch of a job.
CREATE TABLE tfllmer.job_epoch_store (
    job_id       bigint NOT NULL REFERENCES tfllmer.job_store ON DELETE CASCADE,
    epoch        integer NOT NULL,
    owner        regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    train_loss   double precision NOT NULL,
    valid_hr10   double precision NOT NULL,
    valid_ndcg10 double precision NOT NULL,
    epoch_ms     double precision NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
ALTER TABLE tfllmer.job_epoch_store ENABLE ROW LEVEL SECURITY;
-- (rows only for a job the role can see: another role's job cannot be
-- given epochs that would collide with its worker's)
CREATE POLICY job_epoch_store_owner ON tfllmer.job_epoch_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.job_store j WHERE j.job_id = job_epoch_store.job_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.job_epoch_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.job_epoch_store', '');

-- A model name belongs to the role that first trained it; its versions
-- live in model_store and go with it.
CREATE TABLE tfllmer.model_names (
    model_name text PRIMARY KEY CHECK (octet_length(model_name) BETWEEN 1 AND 63),
    owner      regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tfllmer.model_names ENABLE ROW LEVEL SECURITY;
CREATE POLICY model_names_owner ON tfllmer.model_names
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.model_names TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.model_names', '');

-- One row per successfully trained version; weights are safetensors bytes
-- (crates/tfllmer-train/src/model.rs), item_ids the item id of each token
-- 1..n_items as little-endian int8.
CREATE TABLE tfllmer.model_store (
    model_name    text NOT NULL REFERENCES tfllmer.model_names ON DELETE CASCADE,
    version       integer NOT NULL CHECK (version >= 1),
    owner         regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    job_id        bigint NOT NULL,
    backbone      text NOT NULL,
    normalized    boolean NOT NULL,
    init          text,
    n_items       bigint NOT NULL,
    n_users       bigint NOT NULL,
    dim           integer NOT NULL,
    max_len       integer NOT NULL,
    layers        integer NOT NULL,
    heads         integer NOT NULL,
    dropout       double precision NOT NULL,
    options       jsonb NOT NULL,
    source_table  regclass NOT NULL,
    source_name   text NOT NULL,
    user_column   name NOT NULL,
    item_column   name NOT NULL,
    time_column   name NOT NULL,
    epochs        integer NOT NULL,
    best_epoch    integer NOT NULL,
    valid_ndcg10  double precision NOT NULL,
    test_hr10     double precision NOT NULL,
    test_ndcg10   double precision NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    item_ids      bytea NOT NULL,
    weights       bytea NOT NULL,
    -- how many users the test figures were computed on (option eval_users)
    test_users    bigint NOT NULL,
    -- cold-start items served beside the trained ones (tfllmer.cold_item_store)
    n_cold_items  bigint NOT NULL DEFAULT 0,
    -- the map from LLM embeddings to item rows (tfllmer_core::cold), NULL
    -- when the model has none (random init, or an init embedding made
    -- before 0.5.0)
    cold_map      bytea,
    PRIMARY KEY (model_name, version)
);
ALTER TABLE tfllmer.model_store ALTER COLUMN weights SET STORAGE EXTERNAL;
ALTER TABLE tfllmer.model_store ENABLE ROW LEVEL SECURITY;
-- (versions only under a name the role can see: another role's model
-- cannot be given versions, which would collide with its next one)
CREATE POLICY model_store_owner ON tfllmer.model_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.model_names n WHERE n.model_name = model_store.model_name));
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.model_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.model_store', '');

-- Whether a job's worker is still alive: the worker names itself
-- 'tfllmer job <id>' (application_name, which pg_stat_activity shows every
-- role). A worker killed with kill -9, or lost in a crash or restart, is not,
-- so its job never looks 'running' forever.
CREATE FUNCTION tfllmer.job_worker_alive(pid integer, job_id bigint) RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                     WHERE a.pid = $1 AND a.application_name = 'tfllmer job ' || $2) $$;

CREATE VIEW tfllmer.jobs WITH (security_invoker = true) AS
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
GRANT SELECT ON tfllmer.jobs TO PUBLIC;

CREATE VIEW tfllmer.models WITH (security_invoker = true) AS
SELECT model_name, version, pg_catalog.pg_get_userbyid(owner) AS owner,
       backbone, normalized, init, n_items, dim, created_at,
       valid_ndcg10, test_hr10, test_ndcg10,
       pg_catalog.octet_length(weights)::bigint AS size_bytes,
       -- additions
       version = max(version) OVER (PARTITION BY model_name) AS is_current,
       job_id, n_users, max_len, layers, heads, dropout, options,
       source_name AS interactions, epochs, best_epoch, test_users,
       n_cold_items, cold_map IS NOT NULL AS takes_cold_items
FROM tfllmer.model_store;
GRANT SELECT ON tfllmer.models TO PUBLIC;

-- Starting queued jobs when a worker slot frees up. A job is queued when
-- train() found no free background-worker slot (max_worker_processes);
-- whoever finishes a job next starts the oldest queued ones, whichever
-- role they belong to. The only SECURITY DEFINER code in tfllmer: it
-- reveals job ids and role OIDs of queued jobs, nothing else, and marks
-- them as being launched so that they are not launched twice.
CREATE FUNCTION tfllmer.claim_queued_jobs(max_jobs integer)
RETURNS TABLE (job_id bigint, login_role oid, owner oid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE tfllmer.job_store j SET launched_at = now()
    WHERE j.job_id IN (SELECT q.job_id FROM tfllmer.job_store q
                       WHERE q.state = 'queued'
                         AND (q.launched_at IS NULL OR q.launched_at < now() - interval '1 minute')
                       ORDER BY q.job_id LIMIT max_jobs
                       FOR UPDATE SKIP LOCKED)
    RETURNING j.job_id, j.login_role::oid, j.owner::oid
$$;

-- A launch claimed above that found no free slot: the job waits again.
CREATE FUNCTION tfllmer.release_queued_job(job_id bigint) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ UPDATE tfllmer.job_store j SET launched_at = NULL WHERE j.job_id = $1 AND j.state = 'queued' $$;

-- ---------------------------------------------------------------------------
-- Item index tables (create_item_index): a model version's item vectors in
-- an ordinary table with a pgvector HNSW index, so that recommend() asks
-- the index for the best items instead of keeping the whole item table in
-- every backend. The tables live in schema tfllmer_items, each owned by the
-- role that asked for it (nobody else can read it) and named
-- items_<job id>: CREATE there is granted to PUBLIC for that. The schema is
-- never on search_path; tfllmer reaches the tables by OID.
-- ---------------------------------------------------------------------------
CREATE SCHEMA tfllmer_items;
GRANT USAGE, CREATE ON SCHEMA tfllmer_items TO PUBLIC;

-- One row per indexed model version: the newest version's table serves;
-- the one before stays until the next version replaces it (a request that
-- read the catalog just before a switch still finds its table).
CREATE TABLE tfllmer.item_index_store (
    model_name   text NOT NULL,
    version      integer NOT NULL,
    owner        regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    index_table  regclass NOT NULL,
    method       text NOT NULL CHECK (method IN ('hnsw')),
    -- m, ef_construction, ef_search, maintenance_work_mem (as built)
    options      jsonb NOT NULL,
    n_items      bigint NOT NULL,
    dim          integer NOT NULL,
    build_ms     double precision NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, version),
    FOREIGN KEY (model_name, version) REFERENCES tfllmer.model_store ON DELETE CASCADE
);
ALTER TABLE tfllmer.item_index_store ENABLE ROW LEVEL SECURITY;
-- (rows only for a model version the role can see, naming an ordinary
-- table of schema tfllmer_items that the role owns: a row cannot point
-- another role's recommend() at a relation of the writer's choosing;
-- recommend() checks the same before it uses a row)
CREATE POLICY item_index_store_owner ON tfllmer.item_index_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.model_store m
                            WHERE m.model_name = item_index_store.model_name
                              AND m.version = item_index_store.version AND m.owner = item_index_store.owner)
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                            WHERE c.oid = index_table AND c.relkind = 'r'
                              AND c.relnamespace = 'tfllmer_items'::regnamespace
                              AND c.relowner = tfllmer.current_role_oid()));
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.item_index_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.item_index_store', '');

CREATE VIEW tfllmer.item_indexes WITH (security_invoker = true) AS
SELECT model_name, version, pg_catalog.pg_get_userbyid(owner) AS owner,
       index_table, method, options, n_items, dim,
       pg_catalog.pg_total_relation_size(index_table) AS size_bytes,
       version = (SELECT max(m.version) FROM tfllmer.model_store m WHERE m.model_name = i.model_name) AS is_current,
       build_ms, created_at
FROM tfllmer.item_index_store i;
GRANT SELECT ON tfllmer.item_indexes TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Cold-start items (add_items, train option cold_items): items with an LLM
-- embedding and no interactions in training, served beside a version's
-- trained items. Each row is the item's row in the version's item table
-- (as stored: the model normalises it where it scores, when it normalises
-- its rows, exactly as its trained rows), mapped from its LLM
-- embedding by the version's cold_map, and its init row (the Rec-PCA
-- projection of that embedding), from which later versions map it again.
-- ---------------------------------------------------------------------------
CREATE TABLE tfllmer.cold_item_store (
    model_name  text NOT NULL,
    version     integer NOT NULL,
    item_id     bigint NOT NULL,
    owner       regrole NOT NULL DEFAULT tfllmer.current_role_oid(),
    embedding   real[] NOT NULL,
    init_row    real[] NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, version, item_id),
    FOREIGN KEY (model_name, version) REFERENCES tfllmer.model_store ON DELETE CASCADE
);
ALTER TABLE tfllmer.cold_item_store ENABLE ROW LEVEL SECURITY;
-- (rows only for a version of the writer's own model)
CREATE POLICY cold_item_store_owner ON tfllmer.cold_item_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid()
                AND EXISTS (SELECT 1 FROM tfllmer.model_store m
                            WHERE m.model_name = cold_item_store.model_name
                              AND m.version = cold_item_store.version AND m.owner = cold_item_store.owner));
-- (members of the owner's role see the rows; only the owner removes them)
CREATE POLICY cold_item_store_owner_deletes ON tfllmer.cold_item_store AS RESTRICTIVE FOR DELETE
    USING (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, DELETE ON tfllmer.cold_item_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.cold_item_store', '');

CREATE VIEW tfllmer.cold_items WITH (security_invoker = true) AS
SELECT c.model_name, c.version, c.item_id, pg_catalog.pg_get_userbyid(c.owner) AS owner, c.added_at,
       c.version = (SELECT max(m.version) FROM tfllmer.model_store m WHERE m.model_name = c.model_name) AS is_current
FROM tfllmer.cold_item_store c;
GRANT SELECT ON tfllmer.cold_items TO PUBLIC;

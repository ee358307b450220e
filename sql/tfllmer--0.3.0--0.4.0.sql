-- tfllmer 0.3.0 -> 0.4.0
--
-- * Each model version records how many users its test figures were
--   computed on (test_users): training options eval_users, and the default
--   for large user counts, rank a seeded sample of users. Versions trained
--   before 0.4.0 were tested on every user.
-- * rec_pca(..., method => 'exact' | 'randomized' | 'auto'): each stored
--   embedding records the method used (0.3.0 had only the exact one).
-- * Graphs and embeddings larger than tfllmer.part_size (256 MB) are stored
--   in pieces (tfllmer.object_parts): objects over PostgreSQL's 1 GB limit
--   for one value work.
-- * recommend, recommend_next and similar_items take candidates (only these
--   items) and exclude (never these); user_vector, history_vector and
--   item_vectors return the vectors they score with.
-- * create_item_index / drop_item_index: a model's item vectors in a table
--   with a pgvector HNSW index (schema tfllmer_items, catalog
--   tfllmer.item_index_store, view tfllmer.item_indexes), which recommend()
--   then asks for the best items.
\echo Use "ALTER EXTENSION tfllmer UPDATE TO '0.4.0'" to load this file. \quit

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



ALTER TABLE tfllmer.model_store ADD COLUMN test_users bigint;
UPDATE tfllmer.model_store SET test_users = n_users;
ALTER TABLE tfllmer.model_store ALTER COLUMN test_users SET NOT NULL;

CREATE OR REPLACE VIEW tfllmer.models WITH (security_invoker = true) AS
SELECT model_name, version, pg_catalog.pg_get_userbyid(owner) AS owner,
       backbone, normalized, init, n_items, dim, created_at,
       valid_ndcg10, test_hr10, test_ndcg10,
       pg_catalog.octet_length(weights)::bigint AS size_bytes,
       -- additions
       version = max(version) OVER (PARTITION BY model_name) AS is_current,
       job_id, n_users, max_len, layers, heads, dropout, options,
       source_name AS interactions, epochs, best_epoch, test_users
FROM tfllmer.model_store;

ALTER TABLE tfllmer.embedding_store ADD COLUMN method text;
UPDATE tfllmer.embedding_store SET method = 'exact';
ALTER TABLE tfllmer.embedding_store ALTER COLUMN method SET NOT NULL;

CREATE OR REPLACE VIEW tfllmer.embeddings WITH (security_invoker = true) AS
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

CREATE OR REPLACE VIEW tfllmer.graphs WITH (security_invoker = true) AS
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

-- rec_pca gains its last argument, method (a new C symbol reads nine; the
-- old one, which the earlier definition names, still reads eight)
DROP FUNCTION tfllmer.rec_pca(text, regclass, name, name, text, integer, double precision, boolean);
CREATE FUNCTION tfllmer.rec_pca(
	"embedding_name" TEXT,
	"items" regclass,
	"id_column" name DEFAULT 'item_id',
	"embedding_column" name DEFAULT 'embedding',
	"graph_name" TEXT DEFAULT NULL,
	"dim" INT DEFAULT 64,
	"lambda" double precision DEFAULT 0.5,
	"replace" bool DEFAULT false,
	"method" TEXT DEFAULT 'auto'
) RETURNS TABLE (
	"embedding_name" TEXT,
	"n_items" bigint,
	"input_dim" INT,
	"output_dim" INT,
	"retained_variance" double precision,
	"graph_tv_pca" double precision,
	"graph_tv" double precision,
	"build_ms" double precision
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'rec_pca_with_method_wrapper';

-- recommend, recommend_next and similar_items gain the business rules
-- candidates and exclude (new C symbols read them; the old ones, which the
-- earlier definitions name, still read the old arguments)
DROP FUNCTION tfllmer.recommend(text, bigint, integer, boolean);
CREATE FUNCTION tfllmer.recommend(
	"model_name" TEXT,
	"user_id" bigint,
	"k" INT DEFAULT 10,
	"exclude_seen" bool DEFAULT true,
	"candidates" bigint[] DEFAULT NULL,
	"exclude" bigint[] DEFAULT NULL
) RETURNS TABLE (
	"item_id" bigint,
	"score" real
)
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'recommend_with_rules_wrapper';

DROP FUNCTION tfllmer.recommend_next(text, bigint[], integer, boolean);
CREATE FUNCTION tfllmer.recommend_next(
	"model_name" TEXT,
	"history" bigint[],
	"k" INT DEFAULT 10,
	"exclude_seen" bool DEFAULT true,
	"candidates" bigint[] DEFAULT NULL,
	"exclude" bigint[] DEFAULT NULL
) RETURNS TABLE (
	"item_id" bigint,
	"score" real
)
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'recommend_next_with_rules_wrapper';

DROP FUNCTION tfllmer.similar_items(text, bigint, integer);
CREATE FUNCTION tfllmer.similar_items(
	"model_name" TEXT,
	"item_id" bigint,
	"k" INT DEFAULT 10,
	"candidates" bigint[] DEFAULT NULL,
	"exclude" bigint[] DEFAULT NULL
) RETURNS TABLE (
	"item_id" bigint,
	"score" real
)
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'similar_items_with_rules_wrapper';

-- the vectors recommend() scores with, for SQL and pgvector
CREATE FUNCTION tfllmer.user_vector("model_name" TEXT, "user_id" bigint) RETURNS real[]
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'user_vector_wrapper';

CREATE FUNCTION tfllmer.history_vector("model_name" TEXT, "history" bigint[]) RETURNS real[]
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'history_vector_wrapper';

CREATE FUNCTION tfllmer.item_vectors("model_name" TEXT) RETURNS TABLE (
	"item_id" bigint,
	"embedding" real[]
)
STABLE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'item_vectors_wrapper';

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

CREATE FUNCTION tfllmer.create_item_index(
	"model_name" TEXT,
	"method" TEXT DEFAULT 'hnsw',
	"options" jsonb DEFAULT '{}'
) RETURNS TABLE (
	"model_name" TEXT,
	"version" INT,
	"index_table" TEXT,
	"n_items" bigint,
	"build_ms" double precision
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'create_item_index_wrapper';

CREATE FUNCTION tfllmer.drop_item_index("model_name" TEXT) RETURNS bool
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_item_index_wrapper';

-- tfllmer catalog: the tables behind graphs, embeddings and models.
--
-- Privacy model: every tfllmer function runs with the caller's privileges.
-- Catalog tables are granted to PUBLIC, and row-level security shows each
-- role only the rows owned by a role it has the privileges of
-- (pg_has_role(owner, 'USAGE')): a role's own objects, and those of the
-- group roles it inherits. Rows can only be written as their owner.

GRANT USAGE ON SCHEMA tfllmer TO PUBLIC;

-- The OID of the current role (current_user), for ownership columns.
CREATE FUNCTION tfllmer.current_role_oid() RETURNS oid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user $$;

-- One row per co-occurrence graph; csr holds the whole graph (crates/tfllmer-core/src/graph_codec.rs).
CREATE TABLE tfllmer.graph_store (
    graph_name   text PRIMARY KEY CHECK (octet_length(graph_name) BETWEEN 1 AND 63),
    owner        oid NOT NULL DEFAULT tfllmer.current_role_oid(),
    source_table oid NOT NULL,
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

CREATE VIEW tfllmer.graphs WITH (security_invoker = true) AS
SELECT graph_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       user_column, item_column, time_column,
       window_size, holdout, weighting, damping, top_k,
       n_users, n_items, n_edges, total_weight,
       pg_catalog.octet_length(csr)::bigint AS size_bytes,
       build_ms, created_at
FROM tfllmer.graph_store;
GRANT SELECT ON tfllmer.graphs TO PUBLIC;

-- One row per reduced embedding set (Rec-PCA output); data holds item ids
-- and vectors (crates/tfllmer-core/src/embedding_codec.rs).
CREATE TABLE tfllmer.embedding_store (
    embedding_name    text PRIMARY KEY CHECK (octet_length(embedding_name) BETWEEN 1 AND 63),
    owner             oid NOT NULL DEFAULT tfllmer.current_role_oid(),
    source_table      oid NOT NULL,
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
    data              bytea NOT NULL
);
ALTER TABLE tfllmer.embedding_store ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE tfllmer.embedding_store ENABLE ROW LEVEL SECURITY;
CREATE POLICY embedding_store_owner ON tfllmer.embedding_store
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                   WHERE r.oid = owner AND pg_catalog.pg_has_role(r.oid, 'USAGE')))
    WITH CHECK (owner = tfllmer.current_role_oid());
GRANT SELECT, INSERT, UPDATE, DELETE ON tfllmer.embedding_store TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('tfllmer.embedding_store', '');

CREATE VIEW tfllmer.embeddings WITH (security_invoker = true) AS
SELECT embedding_name,
       pg_catalog.pg_get_userbyid(owner) AS owner,
       source_name AS source_table,
       id_column, embedding_column, graph_name, lambda,
       n_items, input_dim, output_dim,
       retained_variance, graph_tv_pca, graph_tv,
       pg_catalog.octet_length(data)::bigint AS size_bytes,
       build_ms, created_at
FROM tfllmer.embedding_store;
GRANT SELECT ON tfllmer.embeddings TO PUBLIC;

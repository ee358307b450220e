-- tfllmer 0.4.0 -> 0.5.0
--
-- * Cold-start items: rec_pca keeps its projection (in the embedding's
--   blob), each trained version keeps the map from LLM embeddings to its
--   item space (model_store.cold_map), and items without interactions are
--   served beside the trained ones (tfllmer.cold_item_store, view
--   tfllmer.cold_items; add_items, drop_items, train option cold_items).
--   Versions trained before 0.5.0 have no map: retrain (from an embedding
--   made by 0.5.0's rec_pca) to add cold items to them.
-- * evaluate(model_name, k, items => 'all' | 'cold'): 'cold' ranks the test
--   events whose target is a cold item, beside the baselines random,
--   popularity and nearest_llm (new column method); train() option
--   cold_holdout holds a seeded share of the items out for it
--   (tfllmer.cold_holdout tells which).
-- * train() option warm_start continues the newest version; prune_model
--   keeps the newest N versions (schedules: docs/operations.md's pg_cron
--   recipe).
-- * embedding, graph_edges, job_log and loss_plot are PARALLEL UNSAFE (they
--   failed inside a parallel query).
\echo Use "ALTER EXTENSION tfllmer UPDATE TO '0.5.0'" to load this file. \quit

ALTER TABLE tfllmer.model_store ADD COLUMN n_cold_items bigint NOT NULL DEFAULT 0;
ALTER TABLE tfllmer.model_store ADD COLUMN cold_map bytea;

CREATE OR REPLACE VIEW tfllmer.models WITH (security_invoker = true) AS
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

-- add_items / drop_items: cold-start items of a model's newest version
CREATE FUNCTION tfllmer.add_items(
	"model_name" TEXT,
	"items" regclass,
	"id_column" name DEFAULT 'item_id',
	"embedding_column" name DEFAULT 'embedding',
	"skip_known" bool DEFAULT false
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'add_items_wrapper';

CREATE FUNCTION tfllmer.drop_items(
	"model_name" TEXT,
	"item_ids" bigint[]
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'drop_items_wrapper';

-- the seeded item hold-out of train()'s option cold_holdout
CREATE FUNCTION tfllmer.cold_holdout(
	"item_id" bigint,
	"share" double precision,
	"seed" bigint
) RETURNS bool
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'cold_holdout_wrapper';

-- evaluate(..., items => 'all' | 'cold') with a method column (the model
-- or a baseline): the result type changes, so the function is recreated
DROP FUNCTION tfllmer.evaluate(text, integer);
CREATE FUNCTION tfllmer.evaluate(
	"model_name" TEXT,
	"k" INT DEFAULT 10,
	"items" TEXT DEFAULT 'all'
) RETURNS TABLE (
	"split" TEXT,
	"n_users" bigint,
	"hr" double precision,
	"ndcg" double precision,
	"method" TEXT
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'evaluate_items_wrapper';

-- prune_model: keep the newest N versions (for schedules)
CREATE FUNCTION tfllmer.prune_model(
	"model_name" TEXT,
	"keep" INT DEFAULT 3
) RETURNS bigint
VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'prune_model_wrapper';

-- Functions that read through SPI cannot run in a parallel query (SPI
-- starts commands there: "cannot start commands during a parallel
-- operation", e.g. CREATE TABLE AS SELECT * FROM tfllmer.graph_edges(...)
-- with a parallel plan): PARALLEL UNSAFE, as recommend() since 0.4.0.
ALTER FUNCTION tfllmer.embedding(text) PARALLEL UNSAFE;
ALTER FUNCTION tfllmer.graph_edges(text) PARALLEL UNSAFE;
ALTER FUNCTION tfllmer.job_log(bigint) PARALLEL UNSAFE;
ALTER FUNCTION tfllmer.loss_plot(bigint[], text, text) PARALLEL UNSAFE;

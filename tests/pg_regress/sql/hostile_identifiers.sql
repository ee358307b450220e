-- Hostile identifiers: schemas, tables and columns named with quotes,
-- semicolons, spaces, mixed case, unicode, SQL keywords and 63 bytes, and
-- tfllmer objects named like SQL. Each works, through the whole pipeline
-- (graph, Rec-PCA, training in a worker, recommendations that build their
-- query from the names), or is refused with a clear ERROR; none is ever run
-- as SQL. (fresh install)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
DROP SCHEMA IF EXISTS "Sché""ma; DROP TABLE x;--" CASCADE;
RESET client_min_messages;
CREATE EXTENSION tfllmer;
CREATE TABLE canary (ok int);
INSERT INTO canary VALUES (1);
CREATE SCHEMA "Sché""ma; DROP TABLE x;--";
CREATE TABLE "Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--" (
    "User ID" int, "it""em;--" int, "select" int);
INSERT INTO "Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--"
SELECT u, 1 + (u * 7 + k) % 30, k FROM generate_series(1, 40) u, generate_series(0, 7) k;
-- 63 bytes, the longest name PostgreSQL keeps
CREATE TABLE "Ünïcödé items .................................... 63 bytes" (
    "id ""x""" int, "vector (real[]); --" real[]);
SELECT octet_length('Ünïcödé items .................................... 63 bytes') AS table_name_bytes;
INSERT INTO "Ünïcödé items .................................... 63 bytes"
SELECT i, ARRAY[i, i % 3, i % 5, 1]::real[] FROM generate_series(1, 30) i;

SELECT graph_name, n_users, n_items FROM tfllmer.build_graph('g; DROP TABLE canary;--',
       '"Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--"',
       user_column => 'User ID', item_column => 'it"em;--', time_column => 'select');
SELECT embedding_name, n_items, output_dim FROM tfllmer.rec_pca('''e''', '"Ünïcödé items .................................... 63 bytes"',
       id_column => 'id "x"', embedding_column => 'vector (real[]); --', graph_name => 'g; DROP TABLE canary;--', dim => 4);
SELECT tfllmer.train('Model "m"; DROP TABLE canary;--',
       '"Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--"',
       user_column => 'User ID', item_column => 'it"em;--', time_column => 'select', init => '''e''',
       options => '{"epochs": 2, "max_len": 8, "dim": 4}') AS job \gset
SELECT tfllmer.wait_job(:job);
SELECT model_name, state, n_users, n_items, error FROM tfllmer.jobs WHERE job_id = :job;
-- recommend() reads histories with a query built from these names
CREATE INDEX ON "Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--" ("User ID", "select", "it""em;--");
SELECT count(*) AS recommended FROM tfllmer.recommend('Model "m"; DROP TABLE canary;--', 5, k => 3);
SELECT count(*) AS similar FROM tfllmer.similar_items('Model "m"; DROP TABLE canary;--', 5, k => 3);
-- the table is found under a new name too
ALTER TABLE "Sché""ma; DROP TABLE x;--"."Ev""il; DROP TABLE canary;--" RENAME TO "Mixed Case";
SELECT count(*) AS after_rename FROM tfllmer.recommend('Model "m"; DROP TABLE canary;--', 5, k => 3);
-- nothing was run as SQL: the canary table is still there
SELECT count(*) AS canary_rows FROM canary;

-- names that cannot be used are refused, never run
SELECT * FROM tfllmer.build_graph('x', '"no such; DROP TABLE canary"');
SELECT * FROM tfllmer.build_graph('x', '"Sché""ma; DROP TABLE x;--"."Mixed Case"', user_column => 'user id');
SELECT * FROM tfllmer.build_graph(repeat('é', 32), '"Sché""ma; DROP TABLE x;--"."Mixed Case"');
SELECT count(*) AS canary_rows FROM canary;

SELECT tfllmer.drop_model('Model "m"; DROP TABLE canary;--');
SELECT tfllmer.drop_embedding('''e''');
SELECT tfllmer.drop_graph('g; DROP TABLE canary;--');
DROP SCHEMA "Sché""ma; DROP TABLE x;--" CASCADE;
DROP TABLE canary, "Ünïcödé items .................................... 63 bytes";

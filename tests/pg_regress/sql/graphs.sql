-- Co-occurrence graphs: the first step of the TF-LLMER pipeline.
--
-- An interaction table holds who consumed what, and when. Any table, view
-- or materialized view works; columns default to user_id, item_id and ts.
-- (each file starts from a fresh install)
\i common/fresh_install.sql

CREATE TABLE listens (user_id int, item_id int, ts int);
INSERT INTO listens VALUES
    -- user 1 listened to 10, 20, 30, then 40 and 50 (the last two are held out)
    (1, 10, 1), (1, 20, 2), (1, 30, 3), (1, 40, 4), (1, 50, 5),
    -- user 2: 30 then 10 then 20; 99 and 98 are held out
    (2, 30, 1), (2, 10, 2), (2, 20, 3), (2, 99, 4), (2, 98, 5),
    -- user 3: 20 and 10 at the same time: ties are ordered by item id (10, 20)
    (3, 20, 7), (3, 10, 7), (3, 30, 8), (3, 60, 9), (3, 70, 10);

-- With the defaults (window 1, holdout 2), consecutive training items are
-- linked: user 1 gives 10-20 and 20-30, user 2 gives 30-10 and 10-20,
-- user 3 gives 10-20 and 20-30. Each user's last 2 interactions are
-- validation and test targets and never enter the graph.
SELECT graph_name, n_users, n_items, n_edges, total_weight
FROM tfllmer.build_graph('listens_w1', 'listens');

-- Edges are undirected, listed once with item_a < item_b.
SELECT * FROM tfllmer.graph_edges('listens_w1');

-- A wider window also links items two and three positions apart;
-- 'inverse_distance' weights a pair at distance d by 1/d.
SELECT graph_name, n_edges, total_weight
FROM tfllmer.build_graph('listens_w2', 'listens', window_size => 2, weighting => 'inverse_distance');
SELECT * FROM tfllmer.graph_edges('listens_w2');

-- holdout => 0 uses every interaction (no evaluation split).
SELECT n_items, n_edges, total_weight
FROM tfllmer.build_graph('listens_all', 'listens', holdout => 0);

-- damping => 'log' replaces each weight w by ln(1 + w), so that a few very
-- frequent pairs do not dominate.
SELECT item_a, item_b, round(weight::numeric, 4) AS weight
FROM tfllmer.build_graph('listens_log', 'listens', damping => 'log') b,
     tfllmer.graph_edges(b.graph_name);

-- top_k keeps, per item, its k heaviest edges (ties: the smaller item id);
-- an edge survives if either end keeps it.
SELECT item_a, item_b, weight
FROM tfllmer.build_graph('listens_top1', 'listens', holdout => 0, top_k => 1) b,
     tfllmer.graph_edges(b.graph_name);

-- Graphs are listed in tfllmer.graphs with their parameters and counts.
SELECT graph_name, owner, source_table, window_size, holdout, weighting, damping, top_k,
       n_users, n_items, n_edges, total_weight, size_bytes > 0 AS stored
FROM tfllmer.graphs ORDER BY graph_name;

-- A name can be rebuilt in place with replace => true.
SELECT graph_name, n_edges FROM tfllmer.build_graph('listens_w1', 'listens', window_size => 3, replace => true);
SELECT window_size FROM tfllmer.graphs WHERE graph_name = 'listens_w1';
SELECT n_edges FROM tfllmer.build_graph('listens_w1', 'listens', replace => true);

-- Other column names, integer widths and time types work the same: here a
-- bigint user, a smallint item and a timestamp.
CREATE TABLE plays (listener bigint, track smallint, played_at timestamptz);
INSERT INTO plays SELECT user_id, item_id, timestamptz '2026-01-01' + ts * interval '1 minute' FROM listens;
SELECT n_users, n_items, n_edges, total_weight
FROM tfllmer.build_graph('plays_w1', 'plays', user_column => 'listener', item_column => 'track', time_column => 'played_at');
SELECT (SELECT array_agg(e ORDER BY e) FROM tfllmer.graph_edges('plays_w1') e)
     = (SELECT array_agg(e ORDER BY e) FROM tfllmer.graph_edges('listens_w1') e) AS same_edges_as_window_1;

-- a time column of a string type is ordered as text ('10' before '9'):
-- PostgreSQL's ordering decides, with a WARNING and the cast to use
CREATE TABLE text_listens AS SELECT user_id, item_id, ts::text AS ts FROM listens;
SELECT graph_name, n_edges FROM tfllmer.build_graph('text_times', 'text_listens');
SELECT tfllmer.drop_graph('text_times');
DROP TABLE text_listens;

-- Any table and column names work: they are quoted, never pasted into SQL.
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."we;ird ""table""" ("user id" int, "Item" int, "select" int);
INSERT INTO "Odd Schema"."we;ird ""table""" SELECT user_id, item_id, ts FROM listens;
SELECT graph_name, n_edges
FROM tfllmer.build_graph('odd names ; DROP TABLE listens', '"Odd Schema"."we;ird ""table"""',
                         user_column => 'user id', item_column => 'Item', time_column => 'select');
SELECT source_table, user_column, item_column, time_column FROM tfllmer.graphs WHERE graph_name LIKE 'odd%';

-- Rows with a NULL user, item or time are skipped, with a NOTICE.
INSERT INTO plays VALUES (4, 10, NULL), (NULL, 10, now());
SELECT n_edges FROM tfllmer.build_graph('plays_nulls', 'plays', user_column => 'listener', item_column => 'track', time_column => 'played_at');

-- A failed or rolled-back build leaves nothing behind.
BEGIN;
SELECT graph_name FROM tfllmer.build_graph('rolled_back', 'listens');
ROLLBACK;
SELECT count(*) FROM tfllmer.graphs WHERE graph_name = 'rolled_back';

-- drop_graph removes a graph; if_exists => true makes a missing one a no-op.
SELECT tfllmer.drop_graph('listens_all');
SELECT tfllmer.drop_graph('listens_all', if_exists => true);
SELECT graph_name FROM tfllmer.graphs ORDER BY graph_name;

-- A graph larger than tfllmer.part_size (256 MB; PostgreSQL keeps at most
-- 1 GB in one value) is stored in pieces and reads back whole. Here with
-- pieces of 1 kB, on a graph of a few hundred walks.
CREATE TABLE walks_big AS
SELECT u AS user_id, 1 + (u * 7 + k * (1 + u % 5)) % 400 AS item_id, k AS ts
FROM generate_series(1, 300) u, generate_series(1, 20) k;
SELECT graph_name, n_edges FROM tfllmer.build_graph('whole', 'walks_big');
SET tfllmer.part_size = 1024;
SELECT graph_name, n_edges FROM tfllmer.build_graph('pieces', 'walks_big');
RESET tfllmer.part_size;
SELECT graph_name, size_bytes > 1024 AS larger_than_a_piece,
       size_bytes = (SELECT size_bytes FROM tfllmer.graphs WHERE graph_name = 'whole') AS same_size
FROM tfllmer.graphs WHERE graph_name = 'pieces';
SELECT count(*) > 1 AS stored_in_pieces FROM tfllmer.object_parts WHERE graph_name = 'pieces';
SELECT (SELECT array_agg((item_a, item_b, weight) ORDER BY item_a, item_b) FROM tfllmer.graph_edges('pieces'))
     = (SELECT array_agg((item_a, item_b, weight) ORDER BY item_a, item_b) FROM tfllmer.graph_edges('whole')) AS same_edges;
-- replacing or dropping it removes its pieces
SET tfllmer.part_size = 1024;
SELECT n_edges FROM tfllmer.build_graph('pieces', 'walks_big', replace => true);
RESET tfllmer.part_size;
SELECT count(*) > 1 AS still_in_pieces FROM tfllmer.object_parts WHERE graph_name = 'pieces';
SELECT tfllmer.drop_graph('pieces'), tfllmer.drop_graph('whole');
SELECT count(*) AS pieces_left FROM tfllmer.object_parts;
DROP TABLE walks_big;

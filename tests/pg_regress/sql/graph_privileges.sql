-- Graphs are private to the role that built them (and roles that inherit
-- its privileges). Reading an interaction table needs SELECT on it.
-- (each file starts from a fresh install)
\i common/fresh_install.sql
CREATE ROLE tfl_alice;
CREATE ROLE tfl_bob;
CREATE ROLE tfl_team;
GRANT tfl_team TO tfl_bob;
GRANT CREATE ON SCHEMA public TO tfl_alice, tfl_bob;

SET ROLE tfl_alice;
CREATE TABLE alice_events (user_id int, item_id int, ts int);
INSERT INTO alice_events VALUES (1, 1, 1), (1, 2, 2), (1, 3, 3), (1, 4, 4), (1, 5, 5);
SELECT graph_name, n_edges FROM tfllmer.build_graph('alice_graph', 'alice_events');
SELECT graph_name, owner FROM tfllmer.graphs;

-- bob cannot read alice's table through tfllmer
SET ROLE tfl_bob;
SELECT * FROM tfllmer.build_graph('bob_graph', 'alice_events');
\echo :LAST_ERROR_SQLSTATE
-- nor see, read, drop or replace alice's graph
SELECT count(*) AS graphs_bob_sees FROM tfllmer.graphs;
SELECT * FROM tfllmer.graph_edges('alice_graph');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_graph('alice_graph');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE bob_events (user_id int, item_id int, ts int);
INSERT INTO bob_events VALUES (7, 1, 1), (7, 2, 2), (7, 3, 3);
SELECT * FROM tfllmer.build_graph('alice_graph', 'bob_events', holdout => 0, replace => true);
\echo :LAST_ERROR_SQLSTATE
-- nor reach the catalog table directly
SELECT count(*) FROM tfllmer.graph_store;
UPDATE tfllmer.graph_store SET n_edges = 0;
DELETE FROM tfllmer.graph_store;

-- with a column grant, bob can build from the columns he may read
RESET ROLE;
GRANT SELECT (user_id, item_id, ts) ON alice_events TO tfl_bob;
SET ROLE tfl_bob;
SELECT graph_name, n_edges FROM tfllmer.build_graph('bob_graph', 'alice_events');

-- a graph built by a group role is visible to its members
RESET ROLE;
GRANT SELECT ON alice_events TO tfl_team;
SET ROLE tfl_team;
SELECT graph_name FROM tfllmer.build_graph('team_graph', 'alice_events');
SET ROLE tfl_bob;
SELECT graph_name, owner FROM tfllmer.graphs ORDER BY graph_name;
SELECT count(*) AS team_edges FROM tfllmer.graph_edges('team_graph');

-- alice still sees only her own
SET ROLE tfl_alice;
SELECT graph_name, owner FROM tfllmer.graphs ORDER BY graph_name;
SELECT tfllmer.drop_graph('alice_graph');

-- embeddings follow the same rules as graphs
SET ROLE tfl_alice;
CREATE TABLE alice_items (item_id int, embedding real[]);
INSERT INTO alice_items VALUES (1, '{1,0,0}'), (2, '{0,1,0}'), (3, '{0,0,1}'), (4, '{1,1,0}');
SELECT embedding_name, n_items FROM tfllmer.rec_pca('alice_emb', 'alice_items', dim => 2);
SELECT graph_name FROM tfllmer.build_graph('alice_graph2', 'alice_events', holdout => 0);
SET ROLE tfl_bob;
SELECT count(*) AS embeddings_bob_sees FROM tfllmer.embeddings;
SELECT * FROM tfllmer.embedding('alice_emb');
\echo :LAST_ERROR_SQLSTATE
SELECT tfllmer.drop_embedding('alice_emb');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM tfllmer.rec_pca('bob_emb', 'alice_items', dim => 2);
\echo :LAST_ERROR_SQLSTATE
-- alice's graph is hers alone, for rec_pca too
CREATE TABLE bob_items (item_id int, embedding real[]);
INSERT INTO bob_items VALUES (1, '{1,0}'), (2, '{0,1}'), (3, '{1,1}');
SELECT * FROM tfllmer.rec_pca('bob_emb', 'bob_items', graph_name => 'alice_graph2', dim => 1);
\echo :LAST_ERROR_SQLSTATE
SET ROLE tfl_alice;
SELECT tfllmer.drop_embedding('alice_emb');
SELECT tfllmer.drop_graph('alice_graph2');

-- graphs of a role that is dropped stay (they are rows, not objects the
-- role owns) but are invisible to others and break nothing
RESET ROLE;
CREATE ROLE tfl_gone;
GRANT SELECT ON alice_events TO tfl_gone;
SET ROLE tfl_gone;
SELECT graph_name FROM tfllmer.build_graph('orphan_graph', 'alice_events');
RESET ROLE;
DROP OWNED BY tfl_gone;
DROP ROLE tfl_gone;
SET ROLE tfl_bob;
SELECT graph_name FROM tfllmer.graphs ORDER BY graph_name;
SELECT * FROM tfllmer.graph_edges('orphan_graph');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT tfllmer.drop_graph('orphan_graph');

RESET ROLE;
DROP OWNED BY tfl_alice, tfl_bob, tfl_team;
DELETE FROM tfllmer.graph_store;
DELETE FROM tfllmer.embedding_store;
DROP ROLE tfl_alice, tfl_bob, tfl_team;

-- Graphs are private to the role that built them (and roles that inherit
-- its privileges). Reading an interaction table needs SELECT on it.
-- (each file starts from a fresh install)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
RESET client_min_messages;
CREATE EXTENSION tfllmer;
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
DROP ROLE tfl_alice, tfl_bob, tfl_team;

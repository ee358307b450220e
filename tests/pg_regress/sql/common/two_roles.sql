-- (shared setup) two login roles, alice and bob, for the privilege tests
SET client_min_messages = warning;
DROP ROLE IF EXISTS tfllmer_alice;
DROP ROLE IF EXISTS tfllmer_bob;
RESET client_min_messages;
CREATE ROLE tfllmer_alice LOGIN;
CREATE ROLE tfllmer_bob LOGIN;

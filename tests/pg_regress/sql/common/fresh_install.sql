-- (shared setup) a fresh install of the extension: every file starts from
-- one, so files can run alone and in any order
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tfllmer CASCADE;
RESET client_min_messages;
CREATE EXTENSION tfllmer;

-- (shared setup) table walks: :walk_users users, each walking through 30
-- items in steps of one from a different start (after item i comes i + 1,
-- after 30 comes 1), one item per time unit for :walk_steps steps. The next
-- item is predictable, which a sequential model learns.
CREATE TABLE walks AS
SELECT u AS user_id, 1 + (u * 7 + k) % 30 AS item_id, k AS ts
FROM generate_series(1, :walk_users) u, generate_series(0, :walk_steps - 1) k;

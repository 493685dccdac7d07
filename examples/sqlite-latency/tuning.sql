-- Tuning applied to a fresh copy of the shop database before the workload runs.
-- Anything that keeps every query's rows exactly as they are: PRAGMAs, indexes, ANALYZE,
-- and query rewrites (a line `-- rewrite: NAME`, then the new SQL of that workload query,
-- with the same :parameters, up to its `;`). The queries are in workload.py.
PRAGMA cache_size = 256;
PRAGMA mmap_size = 1048576;
PRAGMA temp_store = 1;
CREATE INDEX orders_status ON orders(status);

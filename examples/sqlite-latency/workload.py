"""The fixed part of the sqlite-latency task: the database, the workloads and how they run.

The database is a shop: customers, products and orders (1,000,000 orders by default;
AUTORESEARCH_SQLITE_ROWS=N for a small one in tests). It is built once, deterministically,
into $AUTORESEARCH_CACHE/examples/sqlite-latency/ and never changed: every score or
check copies it, applies tuning.sql to the copy (PRAGMAs, indexes, ANALYZE, rewrites),
then runs the workload on that connection.

tuning.sql is run as a script, except blocks that start with a line `-- rewrite: NAME`:
the next statement (up to its `;`) replaces workload query NAME, with the same
`:parameters`. The check holds any rewrite to the reference rows.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

SCHEMA_VERSION = 2  # a new version builds a new database (the build changed)
DEFAULT_ROWS = 1_000_000
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "NL", "SE", "MX", "KR"]
TIERS = ["free", "basic", "pro", "enterprise"]
CATEGORIES = ["books", "games", "garden", "kitchen", "music", "office", "outdoor", "pets", "sports", "toys",
              "tools", "beauty", "baby", "auto", "grocery", "health"]
STATUSES = ["cancelled", "delivered", "pending", "returned", "shipped"]
DAYS = 1460  # four years of orders

QUERIES = {
    "customer_orders": "SELECT id, day, total_cents FROM orders WHERE customer_id = :customer "
                       "ORDER BY day DESC, id DESC LIMIT 20",
    "day_revenue": "SELECT count(*), sum(total_cents) FROM orders WHERE day BETWEEN :lo AND :hi",
    "category_top": "SELECT p.id, sum(o.quantity) AS units FROM orders o JOIN products p ON p.id = o.product_id "
                    "WHERE p.category = :category AND o.day >= :since GROUP BY p.id ORDER BY units DESC, p.id LIMIT 10",
    "country_tiers": "SELECT c.tier, count(DISTINCT c.id), sum(o.total_cents) FROM customers c "
                     "JOIN orders o ON o.customer_id = c.id WHERE c.country = :country AND o.status = 'returned' "
                     "GROUP BY c.tier ORDER BY c.tier",
    "status_counts": "SELECT status, count(*) FROM orders WHERE day >= :since GROUP BY status ORDER BY status",
    "order_lookup": "SELECT * FROM orders WHERE id = :id",
    "product_buyers": "SELECT DISTINCT customer_id FROM orders WHERE product_id = :product "
                      "ORDER BY customer_id LIMIT 50",
}
PARAM_SETS = 2  # parameter sets per query in each workload
REWRITE = re.compile(r"^\s*--\s*rewrite:\s*(\w+)\s*$", re.MULTILINE)


def rows_wanted() -> int:
    return int(os.environ.get("AUTORESEARCH_SQLITE_ROWS", DEFAULT_ROWS))


def cache_dir() -> Path:
    root = Path(os.environ.get("AUTORESEARCH_CACHE", Path.home() / ".cache" / "autoresearch"))
    return root / "examples" / "sqlite-latency"


def base_db(rows: int | None = None) -> Path:
    """The pristine database, built on first use (a few seconds for a million orders)."""
    rows = rows or rows_wanted()
    path = cache_dir() / f"shop-{rows}-v{SCHEMA_VERSION}.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".building")
        os.close(fd)
        os.unlink(tmp)
        build(Path(tmp), rows)
        os.replace(tmp, path)  # whole or absent: a killed build leaves no half database
    return path


def build(path: Path, orders: int) -> None:
    """Columns drawn with numpy's seeded generator (vectorized: the build is bound by SQLite's inserts)."""
    import numpy as np

    rng = np.random.default_rng(20261127)
    customers, products = max(orders // 20, 100), max(min(orders // 500, 2000), 50)
    db = sqlite3.connect(path)
    db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA page_size = 4096;"
                     "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT, signup_day INTEGER,"
                     " tier TEXT);"
                     "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price_cents INTEGER);"
                     "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, product_id INTEGER,"
                     " day INTEGER, quantity INTEGER, total_cents INTEGER, status TEXT);")
    ids = np.arange(1, customers + 1)
    db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", zip(
        ids.tolist(), [f"customer {i}" for i in ids.tolist()], rng.choice(COUNTRIES, customers).tolist(),
        rng.integers(0, DAYS, customers).tolist(), rng.choice(TIERS, customers).tolist()))
    prices = rng.integers(199, 19999, products)
    db.executemany("INSERT INTO products VALUES (?, ?, ?, ?)",
                   ((i, f"product {i}", CATEGORIES[i % len(CATEGORIES)], int(prices[i - 1]))
                    for i in range(1, products + 1)))
    order_ids = np.arange(1, orders + 1)
    product = (rng.pareto(1.2, orders) + 1).astype(np.int64) % products + 1  # a few best sellers
    quantity = rng.integers(1, 5, orders)
    status = rng.choice(STATUSES, orders, p=np.array([3, 60, 5, 4, 28]) / 100)
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", zip(
        order_ids.tolist(), rng.integers(1, customers + 1, orders).tolist(), product.tolist(),
        (order_ids * DAYS // (orders + 1)).tolist(), quantity.tolist(), (quantity * prices[product - 1]).tolist(),
        status.tolist()))
    db.commit()
    db.close()


def workload(name: str, orders: int | None = None) -> list[tuple[str, dict]]:
    """(query name, parameters) pairs: `dev` is what the loop scores, `holdout` other values."""
    orders = orders or rows_wanted()
    customers, products = max(orders // 20, 100), max(min(orders // 500, 2000), 50)
    rng = random.Random({"dev": 1, "holdout": 2}[name])
    items = []
    for _ in range(PARAM_SETS):
        lo = rng.randrange(DAYS - 60)
        items += [("customer_orders", {"customer": rng.randint(1, customers)}),
                  ("day_revenue", {"lo": lo, "hi": lo + rng.randint(7, 60)}),
                  ("category_top", {"category": rng.choice(CATEGORIES), "since": rng.randrange(DAYS // 2, DAYS)}),
                  ("country_tiers", {"country": rng.choice(COUNTRIES)}),
                  ("status_counts", {"since": rng.randrange(DAYS - 90, DAYS)}),
                  ("order_lookup", {"id": rng.randint(1, orders)}),
                  ("product_buyers", {"product": rng.randint(1, products)})]
    return items


def split_tuning(text: str) -> tuple[str, dict[str, str]]:
    """(the setup script, {query name: rewritten SQL})."""
    parts = REWRITE.split(text)
    setup, rewrites = parts[0], {}
    for name, block in zip(parts[1::2], parts[2::2]):
        statement, _, rest = block.partition(";")
        if name not in QUERIES:
            raise SystemExit(f"tuning.sql rewrites {name!r}, which is not a workload query ({', '.join(QUERIES)})")
        rewrites[name] = statement.strip()
        setup += rest
    return setup, rewrites


def open_tuned(tuning: Path, workdir: Path) -> tuple[sqlite3.Connection, dict[str, str]]:
    """A fresh copy of the database with tuning.sql applied, and the queries to run."""
    copy = workdir / "shop.db"
    shutil.copyfile(base_db(), copy)
    db = sqlite3.connect(copy, isolation_level=None)
    setup, rewrites = split_tuning(tuning.read_text())
    db.executescript(setup)
    return db, {**QUERIES, **rewrites}


def run_query(db: sqlite3.Connection, sql: str, params: dict) -> list[list]:
    return [list(row) for row in db.execute(sql, params).fetchall()]


def reference(name: str) -> list[list[list]]:
    """The rows every query of a workload returns on the untuned database (cached as JSON)."""
    path = cache_dir() / f"reference-{name}-{rows_wanted()}-v{SCHEMA_VERSION}.json"
    if path.exists():
        return json.loads(path.read_text())
    db = sqlite3.connect(f"file:{base_db()}?mode=ro", uri=True)
    rows = [run_query(db, QUERIES[query], params) for query, params in workload(name)]
    db.close()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)
    return rows


def timings(db: sqlite3.Connection, queries: dict[str, str], items, repeats: int) -> list[float]:
    """Milliseconds of every execution after one warm-up run of each query."""
    times = []
    for query, params in items:
        run_query(db, queries[query], params)
        for _ in range(repeats):
            start = time.perf_counter()
            run_query(db, queries[query], params)
            times.append((time.perf_counter() - start) * 1000)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]

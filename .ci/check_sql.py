#!/usr/bin/env python3
"""Runs every statement in sql/ on a current ClickHouse engine (chdb) and, when given a URL, on a server (CI's 18.16).

    python3 .ci/check_sql.py [--server http://127.0.0.1:18123]

DDL (sql/schema_migrations.sql, sql/migrations/*.sql) runs in a fresh database, in order, exactly as `pulse migrate`
sends it on one server. The per-tenant analyst views (sql/tenant_views.sql) are created for two tenants, and each
must show its own tenant's rows and no other's. Every table's columns and types (`DESCRIBE TABLE`) must be what
sql/tables.json says: that file is written from the one declaration of each table in crates/pulse-store
(src/table.rs, src/report.rs) and a test there fails when it is stale, so the DDL is checked against the
declarations on both engines; a table the DDL creates that is not declared fails too. Named queries (sql/queries/*.sql) declare example parameters in a `-- example:` line; the
`?` placeholders are replaced by them, left to right, and the query must run. Exits non-zero naming every statement
that failed, and on which engine.
"""
import argparse
import glob
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sql")
DB = "pulse_sql_check"


def statements(path):
    """Statements of a file: comment lines dropped, split on `;` (our DDL has no `;` inside strings)."""
    lines = [l for l in open(path).read().splitlines() if not l.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def bind_example(path):
    text = open(path).read()
    m = re.search(r"^-- example:(.*)$", text, re.M)
    if not m:
        raise SystemExit(f"{path}: a named query needs an `-- example:` line with sample parameters")
    params = split_params(m.group(1).strip())
    sql = statements(path)
    if len(sql) != 1:
        raise SystemExit(f"{path}: a named query file holds exactly one statement")
    parts = sql[0].split("?")
    if len(parts) - 1 != len(params):
        raise SystemExit(f"{path}: {len(parts) - 1} placeholders but {len(params)} example parameters")
    out = parts[0]
    for p, rest in zip(params, parts[1:]):
        out += p + rest
    return out


def split_params(text):
    """Splits `a, (b, c), 'd'` at top-level commas."""
    params, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == "'" :
            quote = not quote
        if not quote and ch in "([":
            depth += 1
        if not quote and ch in ")]":
            depth -= 1
        if not quote and depth == 0 and ch == ",":
            params.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        params.append(cur.strip())
    return params


class Chdb:
    name = "current ClickHouse (chdb)"

    def __init__(self):
        from chdb import session

        self.s = session.Session()
        self.s.query(f"DROP DATABASE IF EXISTS {DB}")
        self.s.query(f"CREATE DATABASE {DB}")
        self.s.query(f"USE {DB}")

    def run(self, sql):
        self.s.query(sql)

    def value(self, sql):
        return str(self.s.query(sql, "TSV")).strip()

    def version(self):
        return str(self.s.query("SELECT version()")).strip()


class Server:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.raw(f"DROP DATABASE IF EXISTS {DB}")
        self.raw(f"CREATE DATABASE {DB}")
        self.name = f"server {self.url} ({self.version()})"

    def raw(self, sql, db=None):
        q = "?" + urllib.parse.urlencode({"database": db}) if db else ""
        req = urllib.request.Request(self.url + "/" + q, data=sql.encode())
        try:
            return urllib.request.urlopen(req, timeout=60).read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode().strip()) from None

    def run(self, sql):
        self.raw(sql, DB)

    def value(self, sql):
        return self.raw(sql + " FORMAT TSV", DB).strip()

    def version(self):
        return self.raw("SELECT version()").strip()


TENANTS = ["north-staffs", "stoke"]


def declared_tables(engine):
    """Problems where the tables the DDL made differ from sql/tables.json (the declarations)."""
    import json

    declared = json.load(open(os.path.join(ROOT, "tables.json")))
    problems = []
    tables = engine.value(
        f"SELECT name FROM system.tables WHERE database = '{DB}' AND engine NOT LIKE '%View%' ORDER BY name"
    ).split()
    for name in tables:
        if name not in declared:
            problems.append(f"table `{name}` is created by the DDL but declared nowhere (crates/pulse-store/src/table.rs)")
    for name, columns in declared.items():
        if name not in tables:
            problems.append(f"table `{name}` is declared but the DDL does not create it")
            continue
        got = [l.split("\t")[:2] for l in engine.value(f"DESCRIBE TABLE {name}").splitlines() if l.strip()]
        if got != columns:
            problems.append(f"table `{name}`: the DDL gives {got}, the declaration {columns}")
    return problems


def tenant_views(engine):
    """Creates both tenants' views, stores rows for both, and checks each view shows only its own tenant's rows."""
    problems = []
    path = os.path.join(ROOT, "tenant_views.sql")
    for tenant in TENANTS:
        for sql in statements(path):
            engine.run(sql.replace("{tenant}", tenant))
    for i, tenant in enumerate(TENANTS):
        for n in range(i + 2):
            engine.run(
                "INSERT INTO page_insights (tenant_id, practice_code, page_id, metric, graph_metric, period, day, "
                f"breakdown, value, api_version, fetched_at, version) VALUES ('{tenant}', 'M8300{n}', '{n + 1}', "
                f"'page_reach', 'page_impressions_unique', 'day', '2018-03-10', '', {n}, 'v2.12', "
                "'2018-03-11 00:00:00', 1)"
            )
    for i, tenant in enumerate(TENANTS):
        rows = engine.value(f"SELECT count() FROM `tenant_{tenant}_page_insights`")
        if rows != str(i + 2):
            problems.append(f"tenant_{tenant}_page_insights shows {rows} rows, expected its own {i + 2}")
        total = engine.value(f"SELECT sum(value) FROM `tenant_{tenant}_page_insights`")
        expected = sum(range(i + 2))
        if float(total) != expected:
            problems.append(f"tenant_{tenant}_page_insights sums to {total}, expected its own {expected}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", help="also run on this ClickHouse HTTP URL")
    args = ap.parse_args()
    engines = [Chdb()]
    if args.server:
        engines.append(Server(args.server))
    ddl = [os.path.join(ROOT, "schema_migrations.sql")] + sorted(glob.glob(os.path.join(ROOT, "migrations", "*.sql")))
    queries = sorted(glob.glob(os.path.join(ROOT, "queries", "*.sql")))
    failures, ran = [], 0
    for engine in engines:
        for path in ddl:
            for sql in statements(path):
                ran += 1
                try:
                    engine.run(sql)
                except Exception as e:  # noqa: BLE001 - report every failure, then fail
                    failures.append(f"{os.path.relpath(path, ROOT)} on {engine.name}: {str(e).strip()[:400]}\n    {sql[:120]}")
        ran += 1
        try:
            failures.extend(f"sql/tenant_views.sql on {engine.name}: {p}" for p in tenant_views(engine))
        except Exception as e:  # noqa: BLE001
            failures.append(f"tenant_views.sql on {engine.name}: {str(e).strip()[:400]}")
        ran += 1
        try:
            failures.extend(f"sql/tables.json on {engine.name}: {p}" for p in declared_tables(engine))
        except Exception as e:  # noqa: BLE001
            failures.append(f"sql/tables.json on {engine.name}: {str(e).strip()[:400]}")
        for path in queries:
            ran += 1
            try:
                engine.run(bind_example(path))
            except Exception as e:  # noqa: BLE001
                failures.append(f"{os.path.relpath(path, ROOT)} on {engine.name}: {str(e).strip()[:400]}")
    names = ", ".join(getattr(e, "name", "") or e.version() for e in engines)
    if failures:
        print(f"SQL check FAILED: {len(failures)} of {ran} statements on {names}:", file=sys.stderr)
        for f in failures:
            print("  " + f, file=sys.stderr)
        sys.exit(1)
    print(f"SQL check passed: {ran} statements ({len(ddl)} DDL files, {len(queries)} named queries) on {names}")


if __name__ == "__main__":
    main()

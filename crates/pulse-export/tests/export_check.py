#!/usr/bin/env python3
"""Checks a Practice Pulse export package from the outside, with the tools a researcher would use:
Frictionless validates it; pyarrow and DuckDB read it with the declared types; no published count is 1-7 and every
published count is a multiple of 5; no group with a published total has exactly one suppressed member (so nothing can
be recovered by differencing); the checksums hold.

    python3 export_check.py <package dir>
"""
import csv, hashlib, json, os, sys
from collections import defaultdict

d = sys.argv[1]
failures = []
pkg = json.load(open(os.path.join(d, "datapackage.json")))

from frictionless import validate
report = validate(os.path.join(d, "datapackage.json"))
if not report.valid:
    failures.append("frictionless: " + json.dumps(report.flatten(["rowNumber", "fieldName", "type", "note"]))[:2000])

for line in open(os.path.join(d, "SHA256SUMS")):
    h, name = line.split()
    if hashlib.sha256(open(os.path.join(d, name), "rb").read()).hexdigest() != h:
        failures.append(f"checksum of {name}")

import duckdb, pyarrow.parquet as pq
for res in pkg["resources"]:
    fields = res["schema"]["fields"]
    counts = [f["name"] for f in fields if f["type"] == "integer" and "disclosure-controlled" in f["description"]]
    rows = list(csv.DictReader(open(os.path.join(d, res["path"]))))
    for r in rows:
        for c in counts:
            v = r[c]
            if v in ("*", "withheld", ""):
                continue
            n = int(v)
            if 1 <= n <= 7 or n % 5 != 0:
                failures.append(f"{res['name']}.{c} = {n}")
    types = {f["name"]: {"string": "VARCHAR", "date": "DATE", "integer": "BIGINT", "number": "DOUBLE"}[f["type"]] for f in fields}
    n = duckdb.sql(f"SELECT count(*) FROM read_csv('{os.path.join(d, res['path'])}', header=true, nullstr=['*', 'withheld', ''], columns={types})").fetchall()[0][0]
    if n != len(rows):
        failures.append(f"duckdb read {res['name']} with another row count")
    table = pq.read_table(os.path.join(d, res["name"] + ".parquet"))
    for f in fields:
        t = str(table.schema.field(f["name"]).type)
        want = {"string": "string", "date": "date32[day]", "integer": "int64", "number": "double"}[f["type"]]
        if t != want:
            failures.append(f"{res['name']}.{f['name']} is {t} in Parquet, declared {f['type']}")
    if table.num_rows != len(rows):
        failures.append(f"{res['name']}: Parquet and CSV row counts differ")
    # Differencing: groups with a published total never have exactly one suppressed member.
    if res["name"] in ("reach_weekly", "reach_daily"):
        when = "week_ending" if res["name"] == "reach_weekly" else "day"
        groups = defaultdict(list)
        for r in rows:
            groups[(r["tenant_id"], r[when])].append(r)
        for key, members in groups.items():
            total = [m for m in members if m["practice"] == "ALL"]
            parts = [m for m in members if m["practice"] != "ALL"]
            for c in counts:
                if total and total[0][c] not in ("*", "withheld") and sum(p[c] == "*" for p in parts) == 1:
                    failures.append(f"{res['name']} {key} {c}: one suppressed cell beside a published total")
    if res["name"] == "age_bands":
        for r in rows:
            if r["people"] not in ("*", "withheld") and sum(r[c] == "*" for c in ("female", "male", "unknown")) == 1:
                failures.append(f"age_bands {r['practice']} {r['age_band']}: one suppressed gender beside a published total")

for f in failures[:20]:
    print("FAIL:", f, file=sys.stderr)
print(f"{len(pkg['resources'])} resources checked; {len(failures)} failures")
sys.exit(1 if failures else 0)

"""The serve benchmark's reference: the same tenant-year practice query run directly in DuckDB (over the lake's report
Parquet files) or ClickHouse (over the report tables serve_bench copied there), one query at a time, round-robin
over the tenants. Prints JSON with p50/p99 in milliseconds.

    python3 serve_reference.py duckdb <lake dir> <from> <to> <config dir>
    python3 serve_reference.py clickhouse <url> <from> <to> <config dir>
"""
import csv, glob, json, os, statistics, sys, time, urllib.parse, urllib.request

engine, where, frm, to, config_dir = sys.argv[1:6]
sizes = {}
tenants = []
for path in sorted(glob.glob(os.path.join(config_dir, "practices-*.csv"))):
    tenants.append(os.path.basename(path)[len("practices-"):-4])
    for row in csv.DictReader(open(path)):
        sizes[row["code"]] = int(row["list_size"])

lat = []
if engine == "duckdb":
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("CREATE TABLE practices (practice_code VARCHAR, list_size DOUBLE)")
    con.executemany("INSERT INTO practices VALUES (?, ?)", list(sizes.items()))
    for i in range(len(tenants) * 3):
        t = tenants[i % len(tenants)]
        d = os.path.join(where, "reports", "report_reach_weekly", f"tenant={t}")
        # Stored by month: the files the slice's manifest names.
        f = [os.path.join(d, name) for _, name in json.load(open(os.path.join(d, "manifest.json")))]
        start = time.perf_counter()
        con.execute(f"""
            SELECT r.practice_code, sum(reach), sum(engaged_users), sum(views), sum(engagements) / sum(views),
                   sum(reach) / count(DISTINCT week_ending) / any_value(p.list_size) * 1000
            FROM read_parquet({f!r}) r JOIN practices p USING (practice_code)
            WHERE week_ending BETWEEN DATE '{frm}' AND DATE '{to}'
            GROUP BY r.practice_code ORDER BY 6 DESC""").fetchall()
        lat.append((time.perf_counter() - start) * 1000)
else:
    for i in range(len(tenants) * 3):
        t = tenants[i % len(tenants)]
        sql = f"""
            SELECT practice_code, sum(reach), sum(engaged_users), sum(views), sum(engagements) / sum(views),
                   sum(reach) / uniqExact(week_ending)
            FROM pulse_serve_bench.report_reach_weekly
            WHERE tenant_id = '{t}' AND version = (SELECT argMax(current_version, version) FROM pulse_serve_bench.report_slices
                                                   WHERE tenant_id = '{t}' AND report = 'report_reach_weekly')
              AND week_ending BETWEEN '{frm}' AND '{to}'
            GROUP BY practice_code ORDER BY 6 DESC FORMAT JSON"""
        start = time.perf_counter()
        with urllib.request.urlopen(where + "/?" + urllib.parse.urlencode({"query": sql})) as r:
            json.load(r)
        lat.append((time.perf_counter() - start) * 1000)
lat.sort()
print(json.dumps({"engine": engine, "queries": len(lat), "p50_ms": statistics.median(lat),
                  "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]}))

#!/usr/bin/env python3
"""Disclosure audit of a Practice Pulse research export: what a researcher with a solver can work out.

For every suppressed (`*`), withheld or rounded count in the package, the auditor computes the range of values
consistent with everything the package publishes, by linear programming (HiGHS) over the relations between its
figures, the way tau-ARGUS and sdcTable compute protection intervals:

- each published figure: a count is a whole number; rounded to the nearest 5 it lies within 2 of the published figure,
  rounded by controlled rounding (the members of a group the package declares in `controlled_rounding`, adding up
  to their total) within 4; a published count other than 0 is at least 8 (1 to 7 are suppressed) and a published 0
  is exactly 0; an estimate lies within half its rounding unit; a suppressed cell is at least 1 and a withheld one
  at least 0 (a whole age-band row our pipeline withheld for having fewer than 10 people: below 10);
- totals: the `ALL` rows are the sum of their practices (reach tables: of the practices not withheld; age bands: of
  all, as the pipeline sums the tenant's pages before withholding); female + male + unknown = people;
- campaigns: observed = counterfactual + effect, and each practice's observed is the sum of its daily figures over
  the campaign window (reach_daily); a figure the package declares derived from other published figures (`derived`,
  `derived_for_metrics`) gets no bounds of its own;
- weeks and days: a practice's weekly views and engagements are the sum of its seven daily ones; weekly reach and
  engaged users lie between the largest daily figure and the sum of the daily ones.

A relation family that the package's figures contradict (the LP is infeasible with it) is reported and left out, so
the audit never rests on a relation the data does not satisfy.

A digest's published figures (`pulse digest preview --out F` writes F.figures.json) are audited the same way: its
counts of people, and the changes, rates and shares it computes, which must come from the published counts.

Goal (README, "Research exports"): no suppressed or withheld cell narrowed to fewer than 7 possible whole values, no
rounded count (other than a published 0) to fewer than 5. Exit code 1 when any cell misses it, 2 on a bad package.

    python3 disclosure_audit.py PACKAGE_DIR|DIGEST.figures.json [--json] [--limit N]
"""
import argparse
import csv
import json
import math
import os
import sys
from collections import defaultdict

import highspy
import numpy as np

INF = highspy.kHighsInf
GOAL_SUPPRESSED = 7
GOAL_ROUNDED = 5
SMALL_CELL = 10  # the pipeline withholds age-band rows of fewer than this many people
REACH_METRICS = ["reach", "engaged_users", "views", "engagements"]
ADDITIVE = ["views", "engagements"]


class Model:
    """Variables with bounds and what they stand for, and linear relations grouped by family."""

    def __init__(self):
        self.lo, self.hi, self.cells = [], [], []
        self.rows = []  # (family, {var: coef}, lo, hi)

    def var(self, cell, lo, hi):
        self.lo.append(lo)
        self.hi.append(hi)
        self.cells.append(cell)
        return len(self.lo) - 1

    def relate(self, family, terms, lo=0.0, hi=0.0):
        merged = defaultdict(float)
        for v, c in terms:
            merged[v] += c
        merged = {v: c for v, c in merged.items() if c != 0.0}
        if len(merged) > 1:
            self.rows.append((family, merged, lo, hi))


def read_package(d):
    pkg = json.load(open(os.path.join(d, "datapackage.json")))
    tables, invalid = {}, []
    for res in pkg["resources"]:
        fields = {f["name"]: f for f in res["schema"]["fields"]}
        rows = list(csv.DictReader(open(os.path.join(d, res["path"]), newline="")))
        for f in fields.values():
            f["_controlled"] = res.get("controlled_rounding")
        tables[res["name"]] = (fields, rows)
        key = res["schema"].get("primaryKey") or []
        seen = {}
        for i, r in enumerate(rows):
            k = tuple(r.get(c, "") for c in key)
            if key and k in seen:
                invalid.append(
                    {"table": res["name"], "row": i + 2, "kind": "invalid", "column": ",".join(key),
                     "published": "|".join(k), "practice": r.get("practice", ""),
                     "why": f"primary key repeats line {seen[k]}"}
                )
            seen.setdefault(k, i + 2)
    return pkg, tables, invalid


class Totals:
    """Groups of practice cells and the `ALL` cell they add up to, related once all are read."""

    def __init__(self):
        self.groups = defaultdict(lambda: {"all": None, "members": []})

    def add(self, key, var, practice):
        g = self.groups[key]
        if practice == "ALL":
            g["all"] = var
        else:
            g["members"].append(var)

    def relate(self, model, family):
        for g in self.groups.values():
            if g["all"] is not None and g["members"]:
                model.relate(family, [(g["all"], 1.0)] + [(v, -1.0) for v in g["members"]])


def is_total(controlled, row, col):
    """Whether a cell is a total of a controlled-rounding group (rounded to the nearest 5, not controlled)."""
    totals = (controlled or {}).get("totals", {})
    return col == totals.get("column") or ("practice" in totals and row.get("practice") == totals["practice"])


def cell_var(model, fields, table, i, row, col, withheld_cap=None, controlled=None):
    """The variable for a published cell (None: empty, no relation can use it).

    Bounds are the whole values the published figure allows: a count rounded to the nearest 5 is within 2 of it, one
    rounded by controlled rounding (a member of a group adding up to its total) within 4; a published count other
    than 0 is at least 8 (1 to 7 are suppressed); a published 0 is exactly 0.
    """
    f = fields.get(col)
    if f is None or col not in row:
        return None
    text = row[col].strip()
    count = "disclosure-controlled" in f.get("description", "")
    rounding = float(f.get("rounding", 5 if count else 1))
    controlled = controlled or f.get("_controlled")
    cell = {"table": table, "row": i + 2, "column": col, "published": text, "practice": row.get("practice", "")}
    if text == "":
        return None
    if f.get("derived") or row.get("metric") in f.get("derived_for_metrics", []):
        # Computed from other published figures only: no bounds of its own (the true figure it stands for is
        # still tied to others by the relations).
        cell["kind"] = "derived"
        return model.var(cell, -INF, INF)
    if text in ("*", "withheld"):
        cell["kind"] = "suppressed" if text == "*" else "withheld"
        # A `*` is never a zero (zeros are published): at least 1 once rounded.
        low = 1.0 if text == "*" else 0.0
        return model.var(cell, low, INF if withheld_cap is None else withheld_cap)
    value = float(text)
    if count:
        cell["kind"] = "rounded"
        if value == 0:
            return model.var(cell, 0.0, 0.0)
        spread = (rounding - 1) if controlled and not is_total(controlled, row, col) else (rounding - 1) // 2
        return model.var(cell, max(8.0, value - spread), value + spread)
    cell["kind"] = "estimate"
    return model.var(cell, value - rounding / 2, value + rounding / 2)


def day_of(text):
    import datetime

    return datetime.date.fromisoformat(text).toordinal()


def build(tables):
    m = Model()
    daily = {}  # (tenant, practice, day, metric) -> var
    weekly = {}
    # reach tables: ALL = sum of the practices not withheld
    for name, key in (("reach_daily", "day"), ("reach_weekly", "week_ending")):
        if name not in tables:
            continue
        fields, rows = tables[name]
        totals = Totals()
        for i, r in enumerate(rows):
            for metric in REACH_METRICS:
                v = cell_var(m, fields, name, i, r, metric)
                if v is None:
                    continue
                if r["practice"] == "ALL" or m.cells[v]["kind"] != "withheld":
                    totals.add((r["tenant_id"], r[key], metric), v, r["practice"])
                if r["practice"] != "ALL":
                    target = daily if name == "reach_daily" else weekly
                    target[(r["tenant_id"], r["practice"], day_of(r[key]), metric)] = v
        totals.relate(m, f"{name}: ALL = sum of practices")
    # weeks and days
    for (tenant, practice, week, metric), w in weekly.items():
        days = [daily.get((tenant, practice, week - k, metric)) for k in range(7)]
        if any(d is None for d in days):
            continue
        if metric in ADDITIVE:
            m.relate("weekly = sum of daily (views, engagements)", [(w, 1.0)] + [(d, -1.0) for d in days])
        else:
            m.relate("weekly unique <= sum of daily", [(w, 1.0)] + [(d, -1.0) for d in days], -INF, 0.0)
            for d in days:
                m.relate("weekly unique >= each daily", [(w, 1.0), (d, -1.0)], 0.0, INF)
    # age bands
    if "age_bands" in tables:
        fields, rows = tables["age_bands"]
        cols = ["female", "male", "unknown", "people"]
        totals = Totals()
        for i, r in enumerate(rows):
            small = all(r.get(c, "") == "withheld" for c in cols)
            vs = {c: cell_var(m, fields, "age_bands", i, r, c, SMALL_CELL if small else None) for c in cols}
            if all(vs[c] is not None for c in cols):
                m.relate(
                    "age bands: female + male + unknown = people",
                    [(vs["female"], 1.0), (vs["male"], 1.0), (vs["unknown"], 1.0), (vs["people"], -1.0)],
                )
            for c in cols:
                if vs[c] is not None:
                    totals.add((r["tenant_id"], r["window_end"], r["age_band"], c), vs[c], r["practice"])
            cell_var(m, fields, "age_bands", i, r, "registered")
        totals.relate(m, "age bands: ALL = sum of practices")
    # campaigns
    if "campaigns" in tables:
        fields, rows = tables["campaigns"]
        # The ALL row's counterfactual carries the estimator's bias correction and its posts every matched post
        # (pages left out for incomplete data included): only these add up.
        summed = ["post_lifetime", "observed"]
        totals = Totals()
        for i, r in enumerate(rows):
            vs = {
                c: cell_var(m, fields, "campaigns", i, r, c)
                for c in summed + ["posts", "counterfactual", "effect", "effect_lo", "effect_hi"]
            }
            if all(vs[c] is not None for c in ("observed", "counterfactual", "effect")):
                m.relate(
                    "campaigns: observed = counterfactual + effect",
                    [(vs["observed"], 1.0), (vs["counterfactual"], -1.0), (vs["effect"], -1.0)],
                )
            for c in summed:
                if vs[c] is not None:
                    totals.add((r["tenant_id"], r["campaign"], r["metric"], c), vs[c], r["practice"])
            if r["practice"] != "ALL" and r["metric"] in REACH_METRICS and vs["observed"] is not None:
                start, end = day_of(r["window_from"]), day_of(r["window_to"])
                days = [daily.get((r["tenant_id"], r["practice"], d, r["metric"])) for d in range(start, end + 1)]
                if days and all(d is not None for d in days):
                    m.relate(
                        "campaigns: observed = sum of the practice's daily figures in the window",
                        [(vs["observed"], 1.0)] + [(d, -1.0) for d in days],
                    )
        totals.relate(m, "campaigns: ALL = sum of practices")
    return m


def components(n, rows):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, terms, _, _ in rows:
        vs = list(terms)
        for v in vs[1:]:
            a, b = find(vs[0]), find(v)
            if a != b:
                parent[a] = b
    out = defaultdict(list)
    for v in range(n):
        out[find(v)].append(v)
    return list(out.values())


def new_highs():
    """A solver without its banner on stdout (the banner would spoil --json)."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    return h


def highs_for(model, cols, rows):
    index = {v: k for k, v in enumerate(cols)}
    h = new_highs()
    lp = highspy.HighsLp()
    lp.num_col_ = len(cols)
    lp.num_row_ = len(rows)
    lp.col_cost_ = np.zeros(len(cols))
    lp.col_lower_ = np.array([model.lo[v] for v in cols], dtype=float)
    lp.col_upper_ = np.array([model.hi[v] for v in cols], dtype=float)
    lp.row_lower_ = np.array([r[2] for r in rows], dtype=float)
    lp.row_upper_ = np.array([r[3] for r in rows], dtype=float)
    # column-wise matrix
    by_col = defaultdict(list)
    for k, (_, terms, _, _) in enumerate(rows):
        for v, c in terms.items():
            by_col[index[v]].append((k, c))
    start, idx, val = [0], [], []
    for j in range(len(cols)):
        for k, c in sorted(by_col[j]):
            idx.append(k)
            val.append(c)
        start.append(len(idx))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(start, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(idx, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(val, dtype=float)
    lp.a_matrix_.num_col_ = len(cols)
    lp.a_matrix_.num_row_ = len(rows)
    h.passModel(lp)
    return h, index


def feasible(model, rows):
    if not rows:
        return True
    cols = sorted({v for _, t, _, _ in rows for v in t})
    h, _ = highs_for(model, cols, rows)
    h.run()
    return h.getModelStatus() == highspy.HighsModelStatus.kOptimal


def bound(h, j, sense):
    h.changeColCost(j, 1.0)
    h.changeObjectiveSense(sense)
    h.run()
    status = h.getModelStatus()
    value = h.getSolution().col_value[j] if status == highspy.HighsModelStatus.kOptimal else None
    h.changeColCost(j, 0.0)
    if status in (highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kUnboundedOrInfeasible):
        return INF if sense == highspy.ObjSense.kMaximize else -INF
    if value is None:
        raise RuntimeError(f"LP status {h.modelStatusToString(status)}")
    return value


def possible_values(lo, hi):
    if hi >= INF or hi > 1e15:
        return math.inf
    return max(0, math.floor(hi + 1e-6) - math.ceil(lo - 1e-6) + 1)


def shown_number(text):
    """A figure as the digest shows it ("12,345", "+18%", "3.4"), or None."""
    try:
        return float(text.replace(",", "").replace("%", ""))
    except ValueError:
        return None


def build_digest(figures):
    """The model of a digest's published figures (`pulse digest preview` writes them as F.figures.json).

    Counts of people are shown rounded to 5 (within 2 of the truth, at least 8) or as "fewer than 8" (1 to 7). A
    change, rate or share declared `"of": "published"` is checked against the published counts it says it comes
    from; one that does not match them is modelled against the true count (it would then narrow it) and reported.
    """
    m = Model()
    ids, problems = {}, []
    for c in figures["counts"]:
        cell = {"table": "digest", "row": 0, "column": c["id"], "published": c["shown"], "practice": ""}
        v = shown_number(c["shown"])
        if c["shown"] == "fewer than 8":
            cell["kind"] = "suppressed"
            ids[c["id"]] = m.var(cell, 1.0, 7.0)
        elif v is not None:
            cell["kind"] = "rounded"
            if v % 5:
                problems.append(dict(cell, why="a count of people shown unrounded"))
            ids[c["id"]] = m.var(cell, 0.0, 0.0) if v == 0 else m.var(cell, max(8.0, v - 2), v + 2)
    published = {c["id"]: shown_number(c["shown"]) for c in figures["counts"]}
    for r in figures.get("rates", []):
        shown, per, scale = float(r["shown"]), float(r["per"]), float(r["scale"])
        decimals = len(r["shown"].split(".")[1]) if "." in r["shown"] else 0
        half = 0.5 * 10 ** -decimals
        base = published.get(r["count"])
        if r.get("of") == "published" and base is not None and abs(scale * base / per - shown) <= half + 1e-9:
            continue
        problems.append({"table": "digest", "row": 0, "column": r["count"], "published": r["shown"], "practice": "",
                         "kind": "rate", "why": "a rate not computed from the published count"})
        if r["count"] in ids:
            # A rate of one count is a bound on it: count in [(shown - half), (shown + half)] x per / scale.
            x = ids[r["count"]]
            m.lo[x] = max(m.lo[x], (shown - half) * per / scale)
            m.hi[x] = min(m.hi[x], (shown + half) * per / scale)
    for c in figures.get("changes", []):
        now, before, shown = published.get(c["now"]), published.get(c["before"]), shown_number(c["shown"])
        if shown is None or not now or not before:
            continue
        if abs(100.0 * (now - before) / before - shown) > 0.5 + 1e-9:
            problems.append({"table": "digest", "row": 0, "column": c["now"], "published": c["shown"], "practice": "",
                             "kind": "change", "why": "a change not computed from the published counts"})
    return m, problems


def audit_digest(path):
    figures = json.load(open(path))
    if figures.get("kind") != "practice-pulse-digest":
        raise ValueError("not a digest's published figures (kind practice-pulse-digest)")
    model, problems = build_digest(figures)
    findings = []
    for v, cell in enumerate(model.cells):
        n = possible_values(model.lo[v], model.hi[v])
        goal = GOAL_ROUNDED if cell["kind"] == "rounded" else GOAL_SUPPRESSED
        if cell["kind"] == "rounded" and model.hi[v] == 0.0:
            continue
        if n < goal:
            findings.append(dict(cell, lo=round(model.lo[v], 3), hi=round(model.hi[v], 3), values=n, goal=goal))
    return {"cells_checked": len(model.cells), "relations": 0, "families": [], "families_contradicted": [],
            "findings": findings + problems, "invalid": []}


def audit(d, limit=None):
    if os.path.isfile(d):
        return audit_digest(d)
    _, tables, invalid = read_package(d)
    model = build(tables)
    families = sorted({r[0] for r in model.rows})
    left_out = []
    # Keep only the relation families the figures satisfy (each alone, then together).
    for fam in families:
        if not feasible(model, [r for r in model.rows if r[0] == fam]):
            left_out.append(fam)
    rows = [r for r in model.rows if r[0] not in left_out]
    for fam in reversed(families):
        if fam in left_out or feasible(model, rows):
            continue
        left_out.append(fam)
        rows = [r for r in rows if r[0] != fam]
    findings, checked = [], 0
    related = {v for _, t, _, _ in rows for v in t}
    for comp in components(len(model.lo), rows):
        targets = [v for v in comp if model.cells[v]["kind"] in ("suppressed", "withheld", "rounded")]
        targets = [v for v in targets if not (model.cells[v]["kind"] == "rounded" and model.hi[v] == 0.0)]
        if not targets:
            continue
        if not any(v in related for v in comp):
            checked += len(targets)  # their own bounds: 5 values for a rounded count, unbounded otherwise
            continue
        members = set(comp)
        comp_rows = [r for r in rows if next(iter(r[1])) in members]
        h, index = highs_for(model, sorted(comp), comp_rows)
        for v in targets:
            if limit is not None and checked >= limit:
                break
            j = index[v]
            lo = bound(h, j, highspy.ObjSense.kMinimize)
            hi = bound(h, j, highspy.ObjSense.kMaximize)
            checked += 1
            cell = model.cells[v]
            n = possible_values(lo, hi)
            goal = GOAL_ROUNDED if cell["kind"] == "rounded" else GOAL_SUPPRESSED
            if n < goal:
                findings.append(dict(cell, lo=round(lo, 3), hi=(None if hi >= INF else round(hi, 3)), values=n, goal=goal))
    return {
        "cells_checked": checked,
        "relations": len(rows),
        "families": [f for f in families if f not in left_out],
        "families_contradicted": left_out,
        "findings": findings,
        "invalid": invalid,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON")
    ap.add_argument("--limit", type=int, help="check at most N cells (a quick look at a large package)")
    a = ap.parse_args()
    try:
        result = audit(a.package, a.limit)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        print(f"error: cannot audit {a.package}: {e}; is it a Practice Pulse export package?", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{a.package}: {result['cells_checked']} cells checked against {result['relations']} relations")
        for fam in result["families_contradicted"]:
            print(f"  relation left out (the package's figures contradict it): {fam}")
        by_kind = defaultdict(int)
        for f in result["findings"]:
            by_kind[(f["table"], f["column"], f["kind"], "why" in f)] += 1
        for (t, c, k, problem), n in sorted(by_kind.items()):
            print(f"  {n} {k} figures of {t}.{c} " + ("not derived as declared" if problem else "narrowed below the goal"))
        for f in result["findings"][:20]:
            if "why" in f:
                print(f"  {f['table']} {f['column']}: published {f['published']!r}: {f['why']}")
                continue
            hi = "inf" if f["hi"] is None else f["hi"]
            print(
                f"  {f['table']} line {f['row']} {f['column']} (practice {f['practice']}): published {f['published']!r}, "
                f"can only be {f['lo']}..{hi} ({f['values']} whole values; goal {f['goal']})"
            )
        for f in result["invalid"][:20]:
            print(f"  invalid: {f['table']} line {f['row']}: {f['why']} ({f['column']} = {f['published']})")
        bad = len(result["findings"]) + len(result["invalid"])
        print("PASS: no cell narrowed below the goal, every key unique" if not bad else
              f"FAIL: {len(result['findings'])} findings (see above), {len(result['invalid'])} repeated keys")
    return 1 if result["findings"] or result["invalid"] else 0


if __name__ == "__main__":
    sys.exit(main())

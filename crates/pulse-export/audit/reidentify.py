#!/usr/bin/env python3
"""Re-identification attack on a pseudonymised Practice Pulse export, with NHS Digital's public registered-patients
file (patients by practice, sex and 5-year age group, `gp-reg-pat-prac-quin-age.csv`).

For every pseudonymised practice in the package, the attacker scores each practice of the public file on everything
the package publishes about it:

- `registered` (when published): the band's registered patients, which the public file gives exactly (a match within
  rounding identifies a practice);
- the engaged people by age band and gender (`age_bands`): their shape against the practice's registered patients by
  age and sex, and their size against its list size;
- the size of its daily and weekly reach (`reach_daily`, `reach_weekly`) against its list size;
- the order of the rows: paired in order with the sorted codes of the practices that have a page (public), rows in
  code order would give every pseudonym back.

A practice is identified when the attacker's best candidate is the right one and no other candidate comes close
(a score at most half the next one's), or when a published exact figure leaves one candidate. The truth comes from
`--truth`, a package of the same spec with practice codes (its reach_daily series are matched to the pseudonymised
ones, which is itself the linkage anyone holding the non-pseudonymised reports can make: reported as such).

    python3 reidentify.py PACKAGE PUBLIC_CSV --truth PACKAGE_WITH_CODES [--candidates PRACTICES_CSV ...] [--json]

Exit 0; the figures are for the caller to judge (the tests assert them).
"""
import argparse
import csv
import json
import math
import os
import sys
from collections import defaultdict

# Meta's age bands over the public file's 5-year groups (13-17 ~ 10_14 x 0.4 + 15_19 x 0.6, as whole groups here).
BANDS = {
    "13-17": ["15_19"],
    "18-24": ["20_24"],
    "25-34": ["25_29", "30_34"],
    "35-44": ["35_39", "40_44"],
    "45-54": ["45_49", "50_54"],
    "55-64": ["55_59", "60_64"],
    "65+": ["65_69", "70_74", "75_79", "80_84", "85_89", "90+"],
}


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def public_file(path):
    """practice -> {(band, sex): patients}, list size."""
    groups = defaultdict(lambda: defaultdict(float))
    for r in read(path):
        groups[r["ORG_CODE"]][(r["AGE_GROUP_5"], r["SEX"].lower())] += float(r["NUMBER_OF_PATIENTS"])
    out = {}
    for code, g in groups.items():
        bands = {}
        for band, quins in BANDS.items():
            for sex in ("female", "male"):
                bands[(band, sex)] = sum(g.get((q, sex), 0.0) for q in quins)
        out[code] = {"bands": bands, "list": sum(g.values())}
    return out


def features(pkg):
    """practice -> what the package publishes about it."""
    f = defaultdict(lambda: {"bands": {}, "registered": {}, "daily": {}, "weekly": []})
    path = os.path.join(pkg, "age_bands.csv")
    if os.path.exists(path):
        for r in read(path):
            if r["practice"] == "ALL":
                continue
            p = f[(r["tenant_id"], r["practice"])]
            for sex in ("female", "male"):
                p["bands"][(r["age_band"], sex)] = number(r[sex])
            if "registered" in r:
                p["registered"][r["age_band"]] = number(r["registered"])
    path = os.path.join(pkg, "reach_daily.csv")
    if os.path.exists(path):
        for r in read(path):
            if r["practice"] != "ALL":
                f[(r["tenant_id"], r["practice"])]["daily"][r["day"]] = tuple(
                    r[c] for c in ("reach", "engaged_users", "views", "engagements"))
    path = os.path.join(pkg, "reach_weekly.csv")
    if os.path.exists(path):
        for r in read(path):
            if r["practice"] != "ALL" and number(r["reach"]) is not None:
                f[(r["tenant_id"], r["practice"])]["weekly"].append(number(r["reach"]))
    return f


def row_order(pkg):
    """tenant -> practices in the order their rows first appear (every table, file order)."""
    order = defaultdict(list)
    for name in ("reach_daily", "reach_weekly", "age_bands", "campaigns"):
        path = os.path.join(pkg, f"{name}.csv")
        if not os.path.exists(path):
            continue
        for r in read(path):
            seen = order[(name, r["tenant_id"])]
            if r["practice"] != "ALL" and r["practice"] not in seen:
                seen.append(r["practice"])
    return order


def order_attack(pkg, truth):
    """Rows in code order would give each pseudonym its code: the attacker sorts the codes of the practices that
    have a page (public) and pairs them with the pseudonyms in row order. The most any table gives back."""
    best = 0
    for (table, tenant), seq in row_order(pkg).items():
        codes = sorted(c for (t, p), c in truth.items() if t == tenant)
        right = sum(1 for p, c in zip(seq, codes) if truth.get((tenant, p)) == c)
        best = max(best, right)
    return best


def truth_map(pseudo, plain):
    """pseudonym -> code, by matching the published daily series (identical figures in both packages)."""
    by_series = {}
    for key, p in plain.items():
        if p["daily"]:
            by_series[(key[0], tuple(sorted(p["daily"].items())))] = key[1]
    out = {}
    for key, p in pseudo.items():
        code = by_series.get((key[0], tuple(sorted(p["daily"].items()))))
        if code:
            out[key] = code
    return out


def score(p, cand, offset):
    """Lower is closer: registered bands (exact), band shape, and size against the list size."""
    if p["registered"]:
        misses = 0.0
        for band, v in p["registered"].items():
            if v is None:
                continue
            public = cand["bands"].get((band, "female"), 0.0) + cand["bands"].get((band, "male"), 0.0)
            misses += abs(v - public)
        return misses
    s = 0.0
    pub = [p["bands"].get(k) for k in sorted(cand["bands"])]
    reg = [cand["bands"][k] for k in sorted(cand["bands"])]
    pairs = [(a, b) for a, b in zip(pub, reg) if a is not None]
    if len(pairs) >= 3:
        ta, tb = sum(a for a, _ in pairs), sum(b for _, b in pairs)
        if ta > 0 and tb > 0:
            s += sum(abs(a / ta - b / tb) for a, b in pairs)
            s += abs(math.log(ta / tb) - offset["bands"])
    if p["weekly"]:
        w = sorted(p["weekly"])[len(p["weekly"]) // 2]
        if w > 0:
            s += abs(math.log(w / cand["list"]) - offset["weekly"])
    return s


def attack(pkg, public, truth_pkg, candidates=None):
    pub = public_file(public)
    if candidates:
        # The attacker knows which practices the tenant commissions (public): only those are candidates.
        codes = {r["code"] for path in candidates for r in read(path)}
        pub = {c: v for c, v in pub.items() if c in codes}
    pseudo = features(pkg)
    truth = truth_map(pseudo, features(truth_pkg))
    # The attacker calibrates sizes on the tenant as a whole: the median log ratio over all pairs.
    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else 0.0

    lists = [c["list"] for c in pub.values()]
    offset = {
        "bands": median([math.log(sum(v for v in p["bands"].values() if v) / l) for p in pseudo.values()
                         if any(p["bands"].values()) for l in lists]),
        "weekly": median([math.log(sorted(p["weekly"])[len(p["weekly"]) // 2] / l) for p in pseudo.values()
                          if p["weekly"] and sorted(p["weekly"])[len(p["weekly"]) // 2] > 0 for l in lists]),
    }
    results = []
    for key, p in pseudo.items():
        if key not in truth:
            continue
        ranked = sorted((score(p, c, offset), code) for code, c in pub.items())
        best, second = ranked[0], ranked[1]
        correct = best[1] == truth[key]
        unique = best[0] <= 0.5 * second[0] if second[0] > 0 else best[0] < second[0]
        rank = next(i for i, (_, code) in enumerate(ranked) if code == truth[key]) + 1
        results.append({"pseudonym": key[1], "top": best[1], "correct": correct, "identified": correct and unique,
                        "rank_of_truth": rank})
    n = len(results)
    return {
        "identified_by_row_order": order_attack(pkg, truth),
        "practices": n,
        "candidates": len(pub),
        "identified": sum(r["identified"] for r in results),
        "top_guess_right": sum(r["correct"] for r in results),
        "chance_top_guess_right": round(n / len(pub), 2) if pub else 0,
        "median_rank_of_truth": sorted(r["rank_of_truth"] for r in results)[n // 2] if n else None,
        "linked_through_reports": len(truth),
        "columns_used": sorted({c for p in pseudo.values() for c, v in
                                (("registered", p["registered"]), ("age_bands", p["bands"]),
                                 ("reach_weekly", p["weekly"]), ("reach_daily", p["daily"])) if v}),
        "results": results,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("package")
    ap.add_argument("public")
    ap.add_argument("--truth", required=True)
    ap.add_argument("--candidates", action="append", help="a CSV with a `code` column: the tenant's practices")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = attack(a.package, a.public, a.truth, a.candidates)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"{a.package}: {r['identified']} of {r['practices']} practices identified against the public file "
              f"({r['candidates']} candidates); the best guess right for {r['top_guess_right']} "
              f"(chance: {r['chance_top_guess_right']}); median rank of the truth {r['median_rank_of_truth']}; "
              f"columns used: {', '.join(r['columns_used'])}")
        print(f"  linked through the non-pseudonymised reports' series: {r['linked_through_reports']} of "
              f"{r['practices']}; identified by row order (codes of the practices with a page, sorted): "
              f"{r['identified_by_row_order']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The mutation score of `make mutation`, per module, from mutmut's own result files.

    python bench/mutation_report.py build/mutation [--json] [--survivors] [--reset-survivors]
    python bench/mutation_report.py bench/mutation_results      (the committed results)

mutmut 3 keeps each mutant's exit code in ``mutants/<path>.meta`` (``exit_code_by_key``); this reads
them with mutmut's own status table, subtracts the mutants judged equivalent in
``bench/mutation_equivalents/<module>.toml`` (``[[equivalent]]`` groups: a ``reason`` and the
``mutants`` it covers), and prints killed of the non-equivalent ones per module. A mutant listed as
equivalent that a test now kills is reported, so the lists stay honest.

``--reset-survivors`` marks the surviving mutants unchecked, so the next ``make mutation`` runs them
again (after tests were added) and nothing else: those of one ``--module``, or whose names match
``--match`` (a glob); not the ones listed as equivalent unless ``--with-equivalents`` (a survivor
costs a full run of its tests, a minute for the account's).

One mutant against some tests, without mutmut (its trampolines read the variable)::

    cd build/mutation/mutants && MUTANT_UNDER_TEST='btperp.margin.x_evaluate__mutmut_7' \
        PYTHONPATH=src ../../../.venv/bin/python -m pytest -x -p no:cacheprovider ../../../tests/test_x.py
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Iterable

HERE = Path(__file__).resolve().parent
EQUIVALENTS = HERE / "mutation_equivalents"

# mutmut's exit codes (mutmut/stats.py, 3.8): 1 and 3 killed, 0 survived, timeouts are kills too.
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 37: "caught by type check"}
SURVIVED = {0: "survived"}


def status(code) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in (5, 33):
        return "no tests"
    return "other"


def load_equivalents(folder: Path = EQUIVALENTS) -> dict[str, str]:
    """mutant name -> the reason it cannot change behaviour."""
    out: dict[str, str] = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
            for group in data.get("equivalent", []):
                for name in group["mutants"]:
                    if name in out:
                        raise SystemExit(f"{path}: {name} is listed twice")
                    out[name] = group["reason"]
        except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}: not a list of [[equivalent]] groups with reason and mutants "
                             f"({exc})") from None
    return out


def reset_survivors(root: Path, module: str | None = None, match: str | None = None,
                    skip: Iterable[str] = ()) -> int:
    """Mark the surviving mutants (of ``module``, e.g. ``account.py``; whose names match the glob
    ``match``; not in ``skip``, the ones listed as equivalent) unchecked (exit code None) in
    mutmut's result files."""
    skip = set(skip)
    count = 0
    for meta in sorted((root / "mutants" / "src").rglob("*.py.meta")):
        if module and meta.name != module + ".meta":
            continue
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        names = [k for k, v in codes.items() if status(v) in ("survived", "no tests")
                 and k not in skip and (match is None or fnmatch.fnmatchcase(k, match))]
        for k in names:
            codes[k] = None
        count += len(names)
        tmp = meta.with_suffix(".meta.tmp")
        tmp.write_text(json.dumps(data, indent=4))
        tmp.replace(meta)
    return count


def collect(root: Path) -> dict[str, dict[str, str]]:
    """module file -> {mutant name: status}, from a mutation folder (build/mutation) or from the
    committed results (bench/mutation_results/*.py.meta.gz)."""
    out = {}
    for saved in sorted(root.glob("*.py.meta.gz")):
        codes = json.loads(gzip.decompress(saved.read_bytes()))["exit_code_by_key"]
        out[saved.name[: -len(".meta.gz")]] = {k: status(v) for k, v in codes.items()}
    if out:
        return out
    metas = sorted((root / "mutants" / "src").rglob("*.py.meta"))
    if not metas:
        raise SystemExit(f"{root}: no mutmut results (mutants/src/**/*.py.meta, or *.py.meta.gz); "
                         f"run `make mutation`")
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out[meta.name[: -len(".meta")]] = {k: status(v) for k, v in codes.items()}
    return out


def table(results, equivalents):
    rows = []
    for module, mutants in results.items():
        counts = Counter(mutants.values())
        equivalent = [m for m, s in mutants.items()
                      if m in equivalents and s not in ("killed", "not checked")]
        surviving = [m for m, s in mutants.items()
                     if s in ("survived", "no tests") and m not in equivalents]
        killed = counts["killed"]
        checked = len(mutants) - counts["not checked"]
        non_equivalent = checked - len(equivalent)
        rows.append({
            "module": module, "mutants": len(mutants), "checked": checked, "killed": killed,
            "equivalent": len(equivalent), "surviving": surviving,
            "not_checked": counts["not checked"],
            "score": killed / non_equivalent if non_equivalent else None,
            "equivalent_but_killed": [m for m, s in mutants.items()
                                      if m in equivalents and s == "killed"],
        })
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="the mutation folder (build/mutation)")
    p.add_argument("--json", action="store_true", help="one JSON document on standard output")
    p.add_argument("--survivors", action="store_true", help="list the surviving mutants by name")
    p.add_argument("--reset-survivors", action="store_true",
                   help="mark the survivors unchecked: the next `make mutation` runs just them")
    p.add_argument("--module", help="with --reset-survivors: only this module's (account.py)")
    p.add_argument("--match", help="with --reset-survivors: only mutants whose names match this "
                                   "glob ('btperp.account.*state_at*')")
    p.add_argument("--with-equivalents", action="store_true",
                   help="with --reset-survivors: the mutants listed as equivalent too (each costs "
                        "a full run of its tests)")
    args = p.parse_args(argv)
    if args.reset_survivors:
        skip = () if args.with_equivalents else load_equivalents()
        count = reset_survivors(args.root, args.module, args.match, skip)
        print(f"{count} surviving mutants marked unchecked")
        return 0
    rows = table(collect(args.root), load_equivalents())
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print("| module | mutants | checked | killed | equivalent | survive | killed of non-equivalent |")
    print("|---|---|---|---|---|---|---|")
    tot = Counter()
    for r in rows:
        score = "–" if r["score"] is None else f"{100 * r['score']:.1f} %"
        print(f"| `{r['module']}` | {r['mutants']:,} | {r['checked']:,} | {r['killed']:,} | "
              f"{r['equivalent']} | {len(r['surviving'])} | {score} |")
        for k in ("mutants", "checked", "killed", "equivalent"):
            tot[k] += r[k]
        tot["surviving"] += len(r["surviving"])
    ne = tot["checked"] - tot["equivalent"]
    print(f"| all | {tot['mutants']:,} | {tot['checked']:,} | {tot['killed']:,} | {tot['equivalent']} | "
          f"{tot['surviving']} | {100 * tot['killed'] / ne:.1f} % |" if ne else "")
    for r in rows:
        if r["equivalent_but_killed"]:
            print(f"\n{r['module']}: listed as equivalent but killed (remove from the list): "
                  + ", ".join(r["equivalent_but_killed"]))
        if args.survivors and r["surviving"]:
            print(f"\n{r['module']} survivors:")
            for m in r["surviving"]:
                print("  " + m)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

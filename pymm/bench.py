"""``pymm bench``: every benchmark section in one run, printed as tables and
optionally written to JSON.  Ratios are computed within one run (the machine
is shared and noisy); absolute figures vary between runs."""
import platform
import re
import sys
import time

from . import benchmarks


_NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+( [a-z/%]+)?")


def format_table(rows):
    """Rows (dicts with the same keys) as a text table: text columns
    left-aligned, columns of numbers (with an optional unit) right-aligned."""
    if not rows:
        return "  (no rows)"
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(_NUMBER.fullmatch(row[i]) for row in cells if row[i] not in ("", "-"))
               and any(row[i] not in ("", "-") for row in cells) for i in range(len(cols))]
    line = lambda vals: ("  " + "  ".join(v.rjust(w) if num else v.ljust(w)
                                          for v, w, num in zip(vals, widths, numeric))).rstrip()
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return "" if v is None else str(v)


def missed_targets(result):
    """[(section, row)] for every row whose target was not met."""
    return [(name, row) for name, sec in result["sections"].items()
            for row in sec["rows"] if row.get("met") == "not met"]


def row_label(row):
    """A row named by its first two cells (e.g. "random off", "page faults ...")."""
    return " ".join(str(v) for v in list(row.values())[:2])


def run(sections=None, quick=False, json_path=None, out=sys.stdout):
    names = sections or benchmarks.SECTIONS
    mods = [benchmarks.load(n) for n in names]   # validate every name before running any
    result = {"version": 1, "python": platform.python_version(), "machine": platform.machine(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": quick, "sections": {}}
    for name, mod in zip(names, mods):
        t0 = time.perf_counter()
        sec = mod.run(quick=quick)
        sec["seconds"] = round(time.perf_counter() - t0, 2)
        result["sections"][name] = sec
        print(f"\n== {sec['title']} ({sec['seconds']} s)", file=out)
        print(format_table(sec["rows"]), file=out)
        for n in sec.get("notes", []):
            print(f"  * {n}", file=out)
        out.flush()
    if json_path:
        from .interrupt import write_json
        write_json(json_path, result)
    return result

"""The benchmark command's sections.  Each module here defines
``run(quick: bool) -> dict`` returning {"title": str, "rows": [dict, ...],
"notes": [str, ...]}; rows are printed as a table and written to JSON.
Register a section by adding its module name to SECTIONS."""
import importlib



def met(ok):
    """A row's verdict on its target, as every section prints it."""
    return "met" if ok else "not met"


# the README's order (vtime, which the README shows as experiments, last)
SECTIONS = ["locking", "sched", "engine", "mm", "mbind", "detection", "campaign", "vtime"]


def load(name):
    if name not in SECTIONS:
        raise ValueError(f"unknown benchmark section {name!r}; expected one of {', '.join(SECTIONS)}")
    return importlib.import_module(f"{__name__}.{name}")

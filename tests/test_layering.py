"""The package's layering: ``current`` and the report plumbing sit at the
bottom, as in the kernel, so that locking, the scheduler, the detectors, mm
and fs never import the system-call layer (task.py), the Kernel (kernel.py)
or anything above them -- not even from inside a function."""
import ast
import pathlib

import pymm

ROOT = pathlib.Path(pymm.__file__).parent
LOW = ["context.py", "stacktrace.py", "rcu.py", "errors.py", "constants.py", "variants.py",
       "locking", "sched", "debug", "mm", "fs"]
ABOVE = ("pymm.task", "pymm.kernel", "pymm.stress", "pymm.cli", "pymm.scenarios",
         "pymm.experiment", "pymm.bench", "pymm.benchmarks", "pymm.pytest_plugin")


def _files(entries):
    for e in entries:
        p = ROOT / e
        yield from (sorted(p.rglob("*.py")) if p.is_dir() else [p])


def _imports(path):
    """Every module ``path`` imports (absolute names), at any nesting level."""
    pkg = ["pymm"] + list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        pkg = ["pymm"] + list(path.relative_to(ROOT).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, mod
            for a in node.names:             # from pymm import task
                yield node.lineno, f"{mod}.{a.name}"


def _below(mod):
    return not any(mod == a or mod.startswith(a + ".") for a in ABOVE)


def test_low_layers_import_nothing_above_them():
    bad = [f"{f.relative_to(ROOT)}:{line}: {mod}"
           for f in _files(LOW) for line, mod in _imports(f) if not _below(mod)]
    assert bad == []


def test_context_imports_only_the_locking_layer():
    mods = {m for _, m in _imports(ROOT / "context.py") if m.startswith("pymm")}
    assert mods and all(m.startswith("pymm.locking") for m in mods), mods


def test_old_names_still_work():
    from pymm import context, task
    from pymm.debug import report
    assert task.current is context.current and task.Task is context.Task
    assert task.current_kernel is context.current_kernel
    assert callable(report.report) and callable(report.current_kernel)

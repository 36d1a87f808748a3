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


# -- imports inside functions ---------------------------------------------------------------
# An import inside a function runs on every call (~1 us: the fault path paid three per
# fault) and hides an import cycle instead of breaking it.  The low layers have none: they
# break their cycles the kernel's way.  Constants and small helpers shared across files sit
# in the lowest file that needs them (vm_fault_t, enum fault_flag and mm_counter in
# mm_types, as include/linux/mm_types.h and mm.h have them).  A function called from a
# file its own module builds on is declared, as a C header declares it, in a module that
# imports nothing, and defined by its owner when the owner is imported: hugetlb's entry
# points in pymm/mm/hugetlb_ops.py (hugetlb.h), defined by hugetlb.py; and the rest in
# pymm/mm/internal.py (mm/internal.h, mm/vma.h, mm.h, rmap.h, swap.h, mempolicy.h,
# maple_tree.h) -- mmap's VMA split/merge and gup's populate for mlock, rmap's
# try_to_munlock for mlock and its folio_add_*_rmap for the swap-in fault, swap_state's
# free_pages_and_swap_cache for the TLB gather, the VMA tree for MmStruct, mempolicy's
# policy lookups for hugetlb and its SharedPolicy for tmpfs, hugetlbfs's inode eviction
# and folio migration for hugetlb.  Callers look them up at call time
# (``internal.mm_populate(...)``).


def _function_level_imports(path):
    """(line, module) of every pymm import inside a function or method of ``path``."""
    rel = str(path.relative_to(ROOT))
    pkg = ["pymm"] + list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        pkg = ["pymm"] + list(path.relative_to(ROOT).parts[:-1])
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            if mod == "pymm" or mod.startswith("pymm."):
                yield rel, node.lineno, mod


def test_no_function_level_imports_below_the_system_call_layer():
    found = [f"{rel}:{line}: {mod}" for f in _files(LOW) for rel, line, mod in _function_level_imports(f)]
    assert found == []


def test_hugetlb_entry_points_are_defined():
    from pymm.mm import hugetlb, hugetlb_ops
    for name in hugetlb_ops.DECLARED:
        assert getattr(hugetlb_ops, name) is getattr(hugetlb, name), name


def test_internal_declarations_are_defined_by_their_owners():
    import importlib
    from pymm.mm import internal
    for owner, names in internal.DECLARED.items():
        mod = importlib.import_module(owner)
        for name in names:
            assert getattr(internal, name) is getattr(mod, name), (owner, name)
    declared = [n for names in internal.DECLARED.values() for n in names]
    assert len(declared) == len(set(declared))


def test_the_fault_path_has_no_function_level_import():
    """The anonymous fault's files: memory, uaccess, page_alloc, rmap, mempolicy, gfp."""
    for name in ("memory", "uaccess", "page_alloc", "rmap", "mempolicy", "gfp", "pgtable"):
        assert list(_function_level_imports(ROOT / "mm" / f"{name}.py")) == [], name

"""One scenario per historical episode (shared/docs/SCENARIOS.md), and the
way to bring one's own.

A scenario is a workload plus the racers that expose its bug, written once
and run two ways (see ``base.Scenario``): *controlled* (the scheduler explores
interleavings of a few operations per thread) and *free* (real threads loop
their operations for a time budget with delay injection).  ``REGISTRY`` maps
the built-in scenarios' names to their classes.

A *scenario reference* (what ``--scenario`` takes) is one of:

- a built-in name (``populate``) or the name of an entry point in the group
  ``pymm.scenarios`` (an installed package's ``name = "pkg.module:Class"``);
- ``path/to/file.py:ClassName``: the file is imported (once per process) and
  the class taken from it;
- ``package.module:ClassName``: the module is imported from ``sys.path``.

``resolve(ref)`` turns a reference into the class, checking the contract
(``check_contract``); every problem is one ``ScenarioError`` line.
"""
import importlib
import importlib.util
import os
import sys
from .. import variants
from .base import Scenario
from ..debug.report import KINDS

SCENARIO_MODULES = {
    "populate": "populate",
    "mbind": "mbind",
    "hugetlb-anon-migrate": "hugetlb_anon_migrate",
    "hugetlb-file-migrate": "hugetlb_file_migrate",
    "hugetlb-mbind-punch": "hugetlb_mbind_punch",
    "hugetlb-pmd-share": "hugetlb_pmd_share",
    "hugetlb-wp": "hugetlb_wp",
    "hugetlb-truncate": "hugetlb_truncate",
    "hugetlb-split": "hugetlb_split",
    "hugetlb-dontneed": "hugetlb_dontneed",
    "hugetlb-zap-reclaim": "hugetlb_zap_reclaim",
    "hugetlb-cow-imap": "hugetlb_cow_imap",
    "hugetlb-fork-dontneed": "hugetlb_fork_dontneed",
    "hugetlb-unmap-private": "hugetlb_unmap_private",
    "hugetlb-fault-truncate": "hugetlb_fault_truncate",
    "rmap-mlock": "rmap_mlock",
    "munmap-stack": "munmap_stack",
    "fuzz": "fuzz",
    "tlb-batch-flush": "tlb_batch_flush",
    "vma-lock-fork": "vma_lock_fork",
    "vma-lock-anon-vma": "vma_lock_anon_vma",
}

# Left out of ``pymm stress``'s default set (run them with --scenario NAME), with why.
NOT_DEFAULT = {}        # (empty: fuzz joined the default set once its campaign was clean)

ENTRY_POINT_GROUP = "pymm.scenarios"

REGISTRY = {}


class ScenarioError(ValueError):
    """A scenario reference that does not resolve, or a class that breaks the
    contract of ``pymm.Scenario``.  The message is one line."""


def get(name):
    """The built-in scenario class called ``name``."""
    if name not in SCENARIO_MODULES:
        raise KeyError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIO_MODULES)}")
    if name not in REGISTRY:
        importlib.import_module(f"{__name__}.{SCENARIO_MODULES[name]}")
    return REGISTRY[name]


def names():
    """The built-in scenarios, in the order of SCENARIOS.md."""
    return list(SCENARIO_MODULES)


def plugin_names():
    """Scenarios contributed by installed packages (entry-point group
    ``pymm.scenarios``), sorted; built-in names win over a plugin's."""
    return sorted(n for n in _entry_points() if n not in SCENARIO_MODULES)


def register(cls):
    REGISTRY[cls.name] = cls
    return cls


def _entry_points():
    from importlib.metadata import entry_points
    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:           # a broken distribution must not break pymm  # noqa: BLE001
        return {}


def is_reference(ref):
    """Is ``ref`` a file or module reference (``X:Class``) rather than a name?"""
    return isinstance(ref, str) and ":" in ref


def resolve(ref):
    """The scenario class ``ref`` names (see the module doc); ScenarioError
    (one line) when it does not resolve or breaks the contract."""
    if isinstance(ref, type):
        return check_contract(ref)
    if not isinstance(ref, str) or not ref:
        raise ScenarioError(f"a scenario reference must be a name or FILE.py:Class or "
                            f"module:Class, got {ref!r}")
    if ref in SCENARIO_MODULES:
        return get(ref)
    if not is_reference(ref):
        eps = _entry_points()
        if ref in eps:
            try:
                cls = eps[ref].load()
            except Exception as e:  # noqa: BLE001 - a plugin's import error, as one line
                raise ScenarioError(f"scenario {ref!r} (entry point {eps[ref].value!r}) "
                                    f"failed to load: {type(e).__name__}: {e}") from None
            return check_contract(cls, ref)
        known = names() + plugin_names()
        raise ScenarioError(f"unknown scenario {ref!r}; expected one of {', '.join(known)}, "
                            f"or path/to/file.py:ClassName, or package.module:ClassName")
    where, _, clsname = ref.rpartition(":")
    if not where or not clsname.isidentifier():
        raise ScenarioError(f"bad scenario reference {ref!r}: expected path/to/file.py:ClassName "
                            f"or package.module:ClassName")
    if where.endswith(".py") or os.sep in where or "/" in where:
        mod = _load_file(where, ref)
    else:
        try:
            mod = importlib.import_module(where)
        except ImportError as e:
            raise ScenarioError(f"scenario {ref!r}: cannot import module {where!r}: {e}") from None
        except Exception as e:  # noqa: BLE001
            raise ScenarioError(f"scenario {ref!r}: importing {where!r} raised "
                                f"{type(e).__name__}: {e}") from None
    cls = getattr(mod, clsname, None)
    if cls is None:
        raise ScenarioError(f"scenario {ref!r}: {where!r} has no class {clsname!r}")
    return check_contract(cls, ref)


def _load_file(path, ref):
    """Import a scenario file once per process (the same module object each
    time, so the variant keys it registers are registered once)."""
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise ScenarioError(f"scenario {ref!r}: no such file {path!r}")
    modname = "pymm_user_scenario_" + "".join(c if c.isalnum() else "_" for c in full)
    mod = sys.modules.get(modname)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(modname, full)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"scenario {ref!r}: cannot import {path!r} as Python")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's import error, as one line
        del sys.modules[modname]
        raise ScenarioError(f"scenario {ref!r}: importing {path!r} raised "
                            f"{type(e).__name__}: {e}") from None
    return mod


def check_contract(cls, ref=None):
    """``cls`` if it keeps the contract of ``pymm.Scenario`` (base.py), else
    ScenarioError naming the first breach."""
    what = f"scenario {ref!r}" if ref else f"scenario class {getattr(cls, '__name__', cls)!r}"
    if not isinstance(cls, type) or not issubclass(cls, Scenario):
        raise ScenarioError(f"{what} is not a subclass of pymm.Scenario")
    if not isinstance(cls.name, str) or not cls.name or cls.name == "?":
        raise ScenarioError(f"{what}: set the class attribute name (a non-empty string)")
    if cls.variant_key not in variants.VARIANTS:
        raise ScenarioError(f"{what}: variant_key {cls.variant_key!r} is not a registered variant "
                            f"key (register it with pymm.variants.register)")
    kinds = cls.caught_kinds
    if not isinstance(kinds, (set, frozenset, tuple, list)) or not kinds or \
            any(k not in KINDS for k in kinds):
        raise ScenarioError(f"{what}: caught_kinds must be a non-empty set of finding kinds "
                            f"({', '.join(KINDS)}), got {kinds!r}")
    steps = cls.controlled_steps
    if type(steps) is not int or steps < 1:
        raise ScenarioError(f"{what}: controlled_steps must be a positive int, got {steps!r}")
    roles = cls.roles
    if not isinstance(roles, (tuple, list)) or not roles or any(
            not isinstance(r, (tuple, list)) or len(r) != 2 or not isinstance(r[0], str)
            or not callable(r[1]) for r in roles):
        raise ScenarioError(f"{what}: roles must be a non-empty sequence of (name, step) pairs, "
                            f"step(self, state, rng) a function")
    if cls.setup is Scenario.setup:
        raise ScenarioError(f"{what}: define setup(self, variant, seed) returning a state with "
                            f".kernel")
    return cls

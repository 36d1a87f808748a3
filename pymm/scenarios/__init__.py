"""One scenario per historical episode (shared/docs/SCENARIOS.md).

A scenario is a workload plus the racers that expose its bug, written once
and run two ways (see ``base.Scenario``): *controlled* (the scheduler explores
interleavings of a few operations per thread) and *free* (real threads loop
their operations for a time budget with delay injection).  ``REGISTRY`` maps
scenario names to their classes."""
import importlib

SCENARIO_MODULES = {
    "populate": "populate",
    "mbind": "mbind",
    "hugetlb-anon-migrate": "hugetlb_anon_migrate",
    "hugetlb-file-migrate": "hugetlb_file_migrate",
    "hugetlb-pmd-share": "hugetlb_pmd_share",
    "hugetlb-wp": "hugetlb_wp",
    "hugetlb-truncate": "hugetlb_truncate",
    "rmap-mlock": "rmap_mlock",
}

REGISTRY = {}


def get(name):
    """The scenario class called ``name``."""
    if name not in SCENARIO_MODULES:
        raise KeyError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIO_MODULES)}")
    if name not in REGISTRY:
        importlib.import_module(f"{__name__}.{SCENARIO_MODULES[name]}")
    return REGISTRY[name]


def names():
    return list(SCENARIO_MODULES)


def register(cls):
    REGISTRY[cls.name] = cls
    return cls

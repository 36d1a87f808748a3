"""The public surface: every name in each package's __all__ exists and is
exported once, and the names the issues pin are there."""
import errno

import pytest

import pymm
import pymm.locking
import pymm.sched


@pytest.mark.parametrize("mod", [pymm, pymm.locking, pymm.sched], ids=lambda m: m.__name__)
def test_all_is_exact(mod):
    assert len(mod.__all__) == len(set(mod.__all__)), "a name exported twice"
    for name in mod.__all__:
        assert hasattr(mod, name), f"{mod.__name__}.__all__ names missing {name!r}"


PINNED = {
    pymm: ["Kernel", "SegmentationFault", "BusError", "PAGE_SIZE", "PROT_NONE", "PROT_READ",
           "PROT_WRITE", "PROT_EXEC", "MAP_PRIVATE", "MAP_SHARED", "MAP_ANONYMOUS", "MAP_FIXED",
           "MAP_FIXED_NOREPLACE", "MAP_POPULATE", "MAP_LOCKED", "MAP_HUGETLB", "MAP_NORESERVE",
           "MADV_DONTNEED", "MADV_POPULATE_READ", "MADV_POPULATE_WRITE", "MADV_REMOVE",
           "MCL_CURRENT", "MCL_FUTURE", "MCL_ONFAULT", "MLOCK_ONFAULT", "FALLOC_FL_PUNCH_HOLE",
           "FALLOC_FL_KEEP_SIZE", "MPOL_DEFAULT", "MPOL_BIND", "MPOL_PREFERRED", "MPOL_INTERLEAVE",
           "MPOL_MF_STRICT", "MPOL_MF_MOVE", "MPOL_MF_MOVE_ALL"],
    pymm.locking: ["SpinLock", "Mutex", "RwSemaphore", "RwLock", "lockdep"],
    pymm.sched: ["explore", "replay", "point"],
}


@pytest.mark.parametrize("mod", list(PINNED), ids=lambda m: m.__name__)
def test_pinned_names(mod):
    for name in PINNED[mod]:
        assert hasattr(mod, name), name


def test_linux_values():
    # a few values from the uapi headers, so a typo cannot slip through
    assert (pymm.PAGE_SIZE, pymm.MAP_ANONYMOUS, pymm.MAP_POPULATE, pymm.MAP_HUGETLB) == \
        (4096, 0x20, 0x8000, 0x40000)
    assert (pymm.MADV_DONTNEED, pymm.MADV_REMOVE, pymm.MADV_POPULATE_WRITE) == (4, 9, 23)
    assert (pymm.MPOL_BIND, pymm.MPOL_MF_MOVE_ALL, pymm.FALLOC_FL_PUNCH_HOLE) == (2, 4, 2)


def test_errors_are_oserrors_with_efault():
    for cls in (pymm.SegmentationFault, pymm.BusError):
        e = cls(0x1000)
        assert isinstance(e, OSError) and isinstance(e, pymm.PymmError) and e.errno == errno.EFAULT


def test_library_does_not_log_by_default():
    from loguru import logger
    seen = []
    hid = logger.add(seen.append, level=0)
    try:
        from pymm.debug.report import report
        k = pymm.Kernel()
        report("assertion", "t", "logged?", kernel=k)
    finally:
        logger.remove(hid)
    assert seen == []            # logger.disable("pymm") at import

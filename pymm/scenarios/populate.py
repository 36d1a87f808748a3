"""A. populate after mmap_lock: drop-and-retake vs downgrade vs revalidate.

Workload: a process with mlockall(MCL_FUTURE) grows its heap with brk (the
new range is VM_LOCKED, so brk populates it) and maps locked anonymous
memory, touching what it mapped; a reader thread of the same mm faults pages
in (mmap_lock readers).  Racer: another thread of the same mm shrinks the
heap and unmaps the mappings (mmap_lock writers) -- between the grower's
unlock and its relock under drop-retake, which frees the VMA it still holds.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

PAGES = 4
MAP_AT = 0x7F00_0000_0000          # the locked mmap goes here (MAP_FIXED), so the racer can hit it


@register
class PopulateScenario(Scenario):
    name = "populate"
    variant_key = "populate"
    caught_kinds = frozenset({"use-after-free"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=1024, variants={"populate": variant}, seed=seed)
        p = k.spawn("populate")
        p.mlockall(C.MCL_FUTURE)
        return SimpleNamespace(kernel=k, p=p, base=p.brk(0))

    def grow(self, st, rng):
        """brk growth with VM_LOCKED in def_flags, then a locked mmap: both
        populate after mmap_write_lock, the way the variant says."""
        p = st.p
        p.brk(st.base + PAGES * C.PAGE_SIZE)
        p.store(st.base, b"heap")
        p.mmap(MAP_AT, PAGES * C.PAGE_SIZE, C.PROT_READ | C.PROT_WRITE,
               C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        p.store(MAP_AT, b"map")

    def shrink(self, st, rng):
        """The racer: mmap_lock writers that free what the grower mapped."""
        p = st.p
        p.brk(st.base)
        p.munmap(MAP_AT, PAGES * C.PAGE_SIZE)

    def fault(self, st, rng):
        """Concurrent page faults (mmap_lock readers)."""
        for a in (st.base, MAP_AT):
            try:
                st.p.load(a, 8)
            except OSError:
                pass                      # unmapped right now

    roles = (("grow", grow), ("shrink", shrink), ("fault", fault))

    def teardown(self, st):
        st.p.munlockall()
        st.p.exit()

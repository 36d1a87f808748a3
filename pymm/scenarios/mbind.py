"""B. mbind / migrate_pages holding mmap_lock across migration.

Workload: a process mbinds a populated range to the other node with
MPOL_MF_MOVE (an interleave policy, so the interleave-index walk runs), then
moves it back with migrate_pages(2).  The range starts with a small
PROT_READ "guard" VMA, never touched, so the VMA walks of the old allocation
callback (new_folio) and of the interleave index pass it before they reach
the data.

Racers (other threads of the same mm): one munmaps the data and then the
guard -- the VMAs, and their policies, that those walks read when the lock
has been dropped too early -- mapping each again; another faults in the data range
(mmap_lock readers, which migration entries make wait for the folio lock).

``hold-mmap-lock`` and ``mpol-alloc`` are clean.  ``early-unlock-vma-callback``
and ``unlock-before-ilx`` walk the VMA tree without mmap_lock: "suspicious RCU
usage" with the validator on, and a use-after-free of the guard VMA (or of
the policy of a freed data VMA) when munmap wins the race.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
GUARD = 0x3000_0000            # 1 page, PROT_READ, never populated
DATA = GUARD + P               # DATA_PAGES pages of private anonymous memory
DATA_PAGES = 4


@register
class MbindScenario(Scenario):
    name = "mbind"
    variant_key = "mbind"
    caught_kinds = frozenset({"rcu", "use-after-free"})
    controlled_steps = 2           # two rounds: the race windows are short

    def setup(self, variant, seed):
        k = Kernel(nodes=2, pages_per_node=128, variants={"mbind": variant}, seed=seed)
        p = k.spawn("mbind")
        st = SimpleNamespace(kernel=k, p=p)
        self._map_guard(st)
        self._map_data(st)
        return st

    @staticmethod
    def _map_guard(st):
        st.p.mmap(GUARD, P, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)

    @staticmethod
    def _map_data(st):
        p = st.p
        p.mmap(DATA, DATA_PAGES * P, C.PROT_READ | C.PROT_WRITE,
               C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        for i in range(DATA_PAGES):
            p.store(DATA + i * P, bytes([i + 1]) * 16)
        p.move_pages([DATA + i * P for i in range(DATA_PAGES)], [0] * DATA_PAGES)

    def bind(self, st, rng):
        """Move the range to node 1 (mbind INTERLEAVE {1}, MOVE) and back
        (mbind BIND {0}, MOVE), then return stragglers with migrate_pages(2)
        and reset the policy."""
        p = st.p
        for mode, node in ((C.MPOL_INTERLEAVE, 1), (C.MPOL_BIND, 0)):
            try:
                p.mbind(GUARD, (1 + DATA_PAGES) * P, mode, {node}, C.MPOL_MF_MOVE)
            except OSError:
                pass                      # EFAULT: a racer unmapped part of the range
        p.migrate_pages({1}, {0})
        try:
            p.mbind(GUARD, (1 + DATA_PAGES) * P, C.MPOL_DEFAULT, None)
        except OSError:
            pass

    def unmap(self, st, rng):
        """The racer: munmap the data, then the guard (freeing their VMAs and
        policies), mapping each again so the next round finds the same layout."""
        p = st.p
        p.munmap(DATA, DATA_PAGES * P)
        self._map_data(st)
        p.munmap(GUARD, P)
        self._map_guard(st)

    def fault(self, st, rng):
        """mmap_lock readers in the data range: the bytes must be intact."""
        p = st.p
        i = rng.randrange(DATA_PAGES)
        try:
            got = p.load(DATA + i * P, 16)
            assert got in (bytes([i + 1]) * 16, bytes(16)), got    # zeros: just remapped
            p.store(DATA + i * P + 16, b"fault")
        except OSError:
            pass                          # unmapped right now

    roles = (("bind", bind), ("unmap", unmap), ("fault", fault))

    def teardown(self, st):
        st.p.exit()

    def check(self, st):
        k = st.kernel
        assert k.lru_disable_count == 0, f"lru_disable_count {k.lru_disable_count} at the end"
        m = k.meminfo()
        assert m["MemFree"] == m["MemTotal"], f"pages leaked: {m['MemFree']} of {m['MemTotal']} kB free"

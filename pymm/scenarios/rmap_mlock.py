"""E. mlock from rmap: mmap_lock trylock vs the pte lock (seed: b87537d9).

Workload: "families" of processes.  An owner maps anonymous memory, writes
it, makes it read-only and forks a witness (which shares those pages and
never locks them) and a locker (which mlocks them at once); the owner also
maps a tmpfs file privately and writes it, getting its own anonymous COW copy.

- owner: mlock the COW copy, truncate the file (unmap_mapping_range with
  even_cows zaps the copy, munlocking it), mlock the shared pages, exit --
  with the munlock of exit_mmap before 5.18: VM_LOCKED cleared and pages
  munlocked in two phases with no mmap_lock held.
- locker: exit; its munlock phase 2 (try_to_munlock) runs try_to_unmap_one
  on the shared pages against the owner's VMA.
- kswapd: ``k.reclaim``: try_to_unmap_one on what it isolated, which mlocks
  a page it finds in a VM_LOCKED VMA.
- touch: a witness reads its pages (swapping them in) and checks the bytes.

``mmap-trylock`` (<= 4.3: drop the ptl, mmap_read_trylock, recheck VM_LOCKED,
mlock) is caught: truncation vs reclaim frees the COW copy with PG_mlocked
("BUG: Bad page state"); exit vs reclaim (or vs the locker's exit) leaves a
witness's page mlocked in no VM_LOCKED VMA, which the invariant check reports.
``pte-lock`` (mlock under the ptl) runs clean.
"""
import itertools
from types import SimpleNamespace

from .. import constants as C
from ..errors import BusError
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
ANON = 0x4000_0000             # the shared read-only pages
ANON_PAGES = 2
COW = 0x5000_0000              # the private file mapping (one COW page)
MAX_WITNESSES = 4              # free mode: older witnesses exit


def _pattern(i):
    return b"shared page %d " % i * 4


@register
class RmapMlockScenario(Scenario):
    name = "rmap-mlock"
    variant_key = "rmap-mlock"
    caught_kinds = frozenset({"bad-page-state"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=256, variants={"rmap-mlock": variant}, seed=seed)
        st = SimpleNamespace(kernel=k, owners=[], lockers=[], witnesses=[], files=[],
                             names=itertools.count())
        self._family(st)
        return st

    def _family(self, st):
        """A new owner with its witness and locker; the owner is queued for
        the owner role, the locker for the locker role."""
        k = st.kernel
        try:
            f = st.files.pop()
        except IndexError:
            f = k.create_file(f"rmap-mlock-{next(st.names)}", P)
        f.ftruncate(P)
        p = k.spawn("owner")
        p.mmap(ANON, ANON_PAGES * P, C.PROT_READ | C.PROT_WRITE,
               C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED)
        for i in range(ANON_PAGES):
            p.store(ANON + i * P, _pattern(i))
        p.mprotect(ANON, ANON_PAGES * P, C.PROT_READ)     # mlock's populate must not COW
        p.mmap(COW, P, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_FIXED, fd=f)
        p.store(COW, b"private copy")
        w = p.fork()
        w.munmap(COW, P)                # the witness keeps only the shared pages
        locker = p.fork()
        locker.munmap(COW, P)
        locker.mlock(ANON, ANON_PAGES * P)
        st.witnesses.append(w)
        st.lockers.append(locker)
        st.owners.append((p, f))

    def owner(self, st, rng):
        """mlock, truncate (race 2), exit (race 1)."""
        try:
            p, f = st.owners.pop(0)
        except IndexError:
            self._family(st)
            return
        try:
            p.mlock(COW, P)
            f.ftruncate(0)
            p.mlock(ANON, ANON_PAGES * P)
        finally:
            f.ftruncate(0)
            p.exit()
            st.files.append(f)
        while len(st.witnesses) > MAX_WITNESSES:
            st.witnesses.pop(0).exit()

    def locker(self, st, rng):
        """The second locker exits: its munlock re-mlocks through the rmap."""
        try:
            st.lockers.pop(0).exit()
        except IndexError:
            pass

    def kswapd(self, st, rng):
        st.kernel.reclaim(4 * ANON_PAGES)

    def touch(self, st, rng):
        """A witness reads the shared pages back; the bytes must be intact."""
        try:
            w = st.witnesses[rng.randrange(len(st.witnesses))]
        except (IndexError, ValueError):
            return
        i = rng.randrange(ANON_PAGES)
        try:
            got = w.load(ANON + i * P, len(_pattern(i)))
        except (BusError, OSError):
            return                        # exited meanwhile (free mode)
        assert got == _pattern(i), f"witness page {i}: {got!r}"

    roles = (("owner", owner), ("locker", locker), ("kswapd", kswapd), ("touch", touch))

    def teardown(self, st):
        # Race 1's evidence is a witness's page left mlocked: look before the
        # witnesses exit (their last unmap would clear it).
        st.kernel.check()
        for p, f in st.owners:
            p.exit()
            f.ftruncate(0)
        for q in st.lockers + st.witnesses:
            if not q.exited:
                q.exit()

    def check(self, st):
        k = st.kernel
        # Swap-cache folios nobody maps any more (a COW break while reclaim
        # held the old one) wait for the next reclaim pass, as in the kernel.
        k.reclaim(sum(n.present_pages for n in k.nodes))
        m = k.meminfo()
        for a, b in (("MemFree", "MemTotal"), ("SwapFree", "SwapTotal")):
            assert m[a] == m[b], f"{a} {m[a]} kB of {m[b]} kB after teardown"
        assert m["Mlocked"] == 0 and m["Unevictable"] == 0, m

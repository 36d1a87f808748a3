"""fork against a page fault under the per-VMA lock (fb49c455323f, 6.4.3 / 6.5-rc1).

History.  6.4 let page faults run under the faulting VMA's own lock
(0bff0aaea03e "x86/mm: try VMA lock-based page fault handling first"), no
longer excluded by a writer of mmap_lock.  dup_mmap holds the parent's
mmap_lock for write while copy_page_range write-protects the parent's
anonymous PTEs and shares the pages with the child; the parent's TLBs are
flushed once, at the end (``flush_tlb_mm(oldmm)`` before mmap_write_unlock).
Until that flush another CPU of the parent may still write through its old
writable TLB entry -- harmless while no fault of the parent could run
before the flush: the write lands in the page the child shares, as if it
had happened before fork.  Under the per-VMA lock a write fault of the
parent could run in that window (the fix names three reports: Jiri
Slaby's, Holger Hoffstaetter's and Jacob Young's bugzilla 217624, crashes
of multithreaded programs that fork, the Go runtime among them).  Suren
Baghdasaryan's commit message: a write fault before the parent's TLB flush
that replaces the COW-shared page in do_wp_page "might lead to some stale
writable TLB entries targeting the wrong (old) page".  In pymm's drawing:

    CPU0 (fork)               CPU1 (parent)            CPU2 (parent)
                              store: writable TLB
    dup_mmap
      copy_page_range:
        PTE write-protected,
        page shared with
        the child
                                                       store: no TLB entry,
                                                       PTE read-only -> fault
                                                       lock_vma_under_rcu
                                                       do_wp_page: shared
                                                       -> wp_page_copy:
                                                          copy the page
                              store through the
                              stale TLB entry: into
                              the old (child's) page
                                                          ptep_clear_flush,
                                                          map the copy
      flush_tlb_mm(oldmm)

CPU1's store is in the child's page and not in the parent's: the parent
lost a write it made, and the child sees a write the parent made after
CPU2's copy.  fb49c455323f write-locks every parent VMA in dup_mmap
(vma_start_write), so lock_vma_under_rcu fails there until
mmap_write_unlock and the fault waits for mmap_lock, after the flush.

Workload.  A process (several threads) with an anonymous page ``ADDR`` and
a second populated mapping after it (its copy is part of the window, as in
a real process with many VMAs).  Roles: ``fork`` forks and the child exits
(as after an exec); ``writer`` stores to its half of the page and reads it
back, again and again, so it usually holds a writable TLB entry;
``faulter`` works through the other mapping (loads) and now and then
stores to the other half -- a CPU with no translation of the page since
fork's last flush, so its store is a fault.  Teardown reads the whole page
in the parent.

Caught: ``unlocked`` as data corruption in the parent (a load misses the
writer's store that went into the child's page).  ``vma-start-write`` runs
clean.  The child does not check the page: with the bug, the parent's
stores after the fault's copy (still during fork) are not in the child
either, which the data-integrity shadow -- it takes the child's copy at
fork's flush -- would also report, though it is not what broke programs.
"""
from types import SimpleNamespace

from .. import constants as C
from ..kernel import Kernel
from . import register
from .base import Scenario

P = C.PAGE_SIZE
RW = C.PROT_READ | C.PROT_WRITE
ADDR = 0x4000_0000                  # the page written during fork
MORE = ADDR + 0x20_0000             # another populated mapping, copied after ADDR's
MORE_PAGES = 8
W_OFF, F_OFF = 0, P // 2            # the writer's and the faulter's halves of the page
FAULTER_STORE = 0.3                 # chance that a faulter step ends with a store
WRITER_ROUNDS = 16
ANON_FIXED = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED


@register
class VmaLockForkScenario(Scenario):
    name = "vma-lock-fork"
    variant_key = "fork-vma-lock"
    caught_kinds = frozenset({"data-corruption"})
    controlled_steps = 2

    def setup(self, variant, seed):
        k = Kernel(nodes=1, pages_per_node=256, variants={"fork-vma-lock": variant}, seed=seed)
        p = k.spawn("go")
        p.mmap(ADDR, P, RW, ANON_FIXED)
        p.store(ADDR, b"setup")
        p.mmap(MORE, MORE_PAGES * P, RW, ANON_FIXED | C.MAP_POPULATE)
        for i in range(MORE_PAGES):
            p.store(MORE + i * P, b"more %d" % i)
        return SimpleNamespace(kernel=k, p=p, n=0)

    def fork(self, st, rng):
        """fork, and the child exits (as after an exec)."""
        st.p.fork().exit()

    def writer(self, st, rng):
        """Store to the writer's half and read it back, a few times."""
        for _ in range(WRITER_ROUNDS):
            st.n += 1
            data = b"writer %d" % st.n
            st.p.store(ADDR + W_OFF, data)
            st.p.load(ADDR + W_OFF, len(data))

    def faulter(self, st, rng):
        """Store to the faulter's half (a fault when this CPU has no
        writable translation and fork has write-protected the PTE)."""
        for i in range(MORE_PAGES):          # work through the other mapping first
            st.p.load(MORE + i * P, 8)
        if rng.random() >= FAULTER_STORE:
            return
        data = b"faulter %d" % rng.randrange(1000)
        st.p.store(ADDR + F_OFF, data)
        st.p.load(ADDR + F_OFF, len(data))

    roles = (("fork", fork), ("writer", writer), ("faulter", faulter))

    def teardown(self, st):
        st.p.load(ADDR, P)              # the parent's page against what it stored
        st.p.exit()

    def check(self, st):
        m = st.kernel.meminfo()
        assert m["MemFree"] == m["MemTotal"], f"MemFree {m['MemFree']} kB of {m['MemTotal']} kB"

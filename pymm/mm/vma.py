"""The VMA tree (the kernel's maple tree, mm->mm_mt) and VMA allocation.

Like the maple tree, a shallow B-tree: the VMAs are kept in order in chunks
of at most 2 * LOAD, each chunk holding parallel lists of starts, ends and
VMAs, with one small list of each chunk's last end above them.  A lookup is
two bisections -- one in the small top list, one in a chunk -- so it stays
O(log n) and touches little memory even at 100,000 VMAs, and it never reads
the VMAs themselves (a freed VMA is never touched by a lookup).
Modifications are O(LOAD + n / LOAD).

Every lookup checks the kernel's rule -- mmap_lock held (read or write) or
an RCU read section -- and reports "WARNING: suspicious RCU usage"
otherwise, as the maple tree's rcu_dereference_check does.  Modifications
require mmap_lock for write.
"""
import sys
from bisect import bisect_right

from ..context import current
from ..debug import stackdepot
from ..debug.kasan import kasan_poison
from ..debug.report import report
from ..locking import lockdep
from ..rcu import rcu_read_lock_held
from ..sched import charge
from ..stacktrace import src_path
from .gfp import GFP_KERNEL, might_alloc
from . import internal
from .mm_types import VmAreaStruct
from .mmap_lock import mmap_assert_write_locked, vma_mark_detached, vma_start_write

LOAD = 64


class VmaTree:
    """Positions are (chunk, index) pairs; ``_maxes[c]`` is chunk c's last end."""

    __slots__ = ("mm", "_maxes", "_starts", "_ends", "_vmas", "_len")

    def __init__(self, mm):
        self.mm = mm
        self._maxes = []
        self._starts = []
        self._ends = []
        self._vmas = []
        self._len = 0

    # -- the locking rule ----------------------------------------------------------
    # Lookups need mmap_lock or an RCU read section.  With the validator off
    # (nobody tracks holders) the rule is not checked: one flag test.  The
    # hot lookups inline the test; the rest call _check.
    def _check(self):
        if lockdep.is_enabled() and not _rule_holds(self.mm):
            _suspicious_rcu_usage(self.mm)

    # -- positions -------------------------------------------------------------------
    def _locate(self, addr):
        """Position of the first VMA with vm_end > addr, or None."""
        c = bisect_right(self._maxes, addr)
        if c == len(self._maxes):
            return None
        return c, bisect_right(self._ends[c], addr)

    def _next(self, pos):
        c, i = pos
        if i + 1 < len(self._vmas[c]):
            return c, i + 1
        return (c + 1, 0) if c + 1 < len(self._vmas) else None

    def _prev(self, pos):
        c, i = pos
        if i > 0:
            return c, i - 1
        return (c - 1, len(self._vmas[c - 1]) - 1) if c > 0 else None

    def _at(self, pos):
        return None if pos is None else self._vmas[pos[0]][pos[1]]

    def _last(self):
        return (len(self._vmas) - 1, len(self._vmas[-1]) - 1) if self._vmas else None

    # -- lookups ---------------------------------------------------------------
    def find_vma(self, addr):
        """The first VMA with vm_end > addr (find_vma)."""
        if lockdep.is_enabled() and not _rule_holds(self.mm):
            _suspicious_rcu_usage(self.mm)
        return self._at(self._locate(addr))

    def vma_lookup(self, addr):
        """The VMA containing addr, or None."""
        if lockdep.is_enabled() and not _rule_holds(self.mm):
            _suspicious_rcu_usage(self.mm)
        maxes = self._maxes
        c = bisect_right(maxes, addr)
        if c == len(maxes):
            return None
        i = bisect_right(self._ends[c], addr)
        return self._vmas[c][i] if self._starts[c][i] <= addr else None

    def lookup_unchecked(self, addr):
        """vma_lookup without the locking check: for the invariant checks,
        which run when the system is quiescent."""
        pos = self._locate(addr)
        if pos is not None and self._starts[pos[0]][pos[1]] <= addr:
            return self._vmas[pos[0]][pos[1]]
        return None

    def lookup_rcu(self, addr):
        """vma_lookup for a lockless reader (mas_walk under rcu_read_lock).
        The maple tree hands RCU readers a consistent node; pymm's chunk
        lists can shift under a concurrent writer, so this reader may see a
        VMA that does not contain ``addr`` (the caller revalidates, as it
        must anyway) or trip over a list that shrank (then it gives up and
        returns None: the fault falls back to mmap_lock, as one that found
        the VMA write-locked does).  Context: rcu_read_lock held."""
        try:
            pos = self._locate(addr)
            if pos is not None and self._starts[pos[0]][pos[1]] <= addr:
                return self._vmas[pos[0]][pos[1]]
        except IndexError:
            pass
        return None

    def find_vma_intersection(self, start, end):
        self._check()
        pos = self._locate(start)
        if pos is not None and self._starts[pos[0]][pos[1]] < end:
            return self._vmas[pos[0]][pos[1]]
        return None

    def find_vma_prev(self, addr):
        """(vma, prev) as find_vma_prev."""
        self._check()
        pos = self._locate(addr)
        prev = self._at(self._prev(pos)) if pos is not None else self._at(self._last())
        return self._at(pos), prev

    def range(self, start, end):
        """VMAs intersecting [start, end), in order (for_each_vma_range)."""
        self._check()
        out = []
        pos = self._locate(start)
        while pos is not None and self._starts[pos[0]][pos[1]] < end:
            out.append(self._vmas[pos[0]][pos[1]])
            pos = self._next(pos)
        return out

    def all(self):
        self._check()
        return self.all_unchecked()

    def all_unchecked(self):
        return [v for chunk in self._vmas for v in chunk]

    def neighbours(self, start, end):
        """(prev, next): the VMAs just below start and at/above end."""
        self._check()
        pos = self._locate(start)
        prev = self._at(self._prev(pos)) if pos is not None else self._at(self._last())
        while pos is not None and self._starts[pos[0]][pos[1]] < end:
            pos = self._next(pos)
        return prev, self._at(pos)

    def __len__(self):
        return self._len

    # -- modification (mmap_lock held for write) -------------------------------
    def insert(self, vma):
        mmap_assert_write_locked(self.mm)
        charge("vma_op")
        start, end = vma.vm_start, vma.vm_end
        pos = self._locate(start)
        prev = self._at(self._prev(pos)) if pos is not None else self._at(self._last())
        if (pos is not None and self._starts[pos[0]][pos[1]] < end) or \
                (prev is not None and prev.vm_end > start):
            raise AssertionError(f"VMA tree: {vma!r} overlaps an existing VMA")
        if not self._vmas:
            self._maxes.append(end)
            self._starts.append([start])
            self._ends.append([end])
            self._vmas.append([vma])
        else:
            c, i = pos if pos is not None else (len(self._vmas) - 1, len(self._vmas[-1]))
            self._starts[c].insert(i, start)
            self._ends[c].insert(i, end)
            self._vmas[c].insert(i, vma)
            self._maxes[c] = self._ends[c][-1]
            if len(self._vmas[c]) > 2 * LOAD:
                self._split(c)
        self._len += 1
        vma_mark_detached(vma, False)
        self.mm.map_count += 1

    def _split(self, c):
        for lst in (self._starts, self._ends, self._vmas):
            lst.insert(c + 1, lst[c][LOAD:])
            del lst[c][LOAD:]
        self._maxes[c] = self._ends[c][-1]
        self._maxes.insert(c + 1, self._ends[c + 1][-1])

    def erase(self, vma):
        mmap_assert_write_locked(self.mm)
        charge("vma_op")
        c, i = self._index(vma)
        del self._starts[c][i], self._ends[c][i], self._vmas[c][i]
        if self._vmas[c]:
            self._maxes[c] = self._ends[c][-1]
        else:
            del self._starts[c], self._ends[c], self._vmas[c], self._maxes[c]
        self._len -= 1
        vma_mark_detached(vma, True)
        self.mm.map_count -= 1

    def update(self, vma):
        """The VMA's range changed (vma_set_range): refresh its keys.  Its
        place in the order cannot change: VMAs only grow into gaps."""
        mmap_assert_write_locked(self.mm)
        self.update_locked(vma)

    def update_locked(self, vma):
        """update() for a stack growing under mmap_lock held for *read*
        (expand_downwards before 6.5), which serialises on
        mm->page_table_lock instead."""
        c, i = self._index(vma)
        self._starts[c][i] = vma.vm_start
        self._ends[c][i] = vma.vm_end
        self._maxes[c] = self._ends[c][-1]

    def _index(self, vma):
        """The position of ``vma`` (by identity).  Its stored keys may be stale
        (update), but its chunk is the one its current start locates; a
        linear scan is the fallback that keeps a corrupted tree diagnosable."""
        c = min(bisect_right(self._maxes, vma.vm_start), len(self._vmas) - 1)
        for cc in (c, c - 1, c + 1):
            if 0 <= cc < len(self._vmas):
                chunk = self._vmas[cc]
                for i in range(len(chunk)):
                    if chunk[i] is vma:
                        return cc, i
        for cc, chunk in enumerate(self._vmas):
            for i, v in enumerate(chunk):
                if v is vma:
                    return cc, i
        raise AssertionError(f"VMA tree: {vma!r} is not in the tree")

    def check(self):
        """Invariants: sorted, non-overlapping, keys and chunk maxima match the VMAs."""
        errs = []
        prev_end = 0
        n = 0
        for c, chunk in enumerate(self._vmas):
            if not chunk:
                errs.append(f"empty chunk {c}")
                continue
            if self._maxes[c] != self._ends[c][-1]:
                errs.append(f"chunk {c}: stale maximum {self._maxes[c]:#x}")
            for s, e, v in zip(self._starts[c], self._ends[c], chunk):
                if s != v.vm_start or e != v.vm_end:
                    errs.append(f"stale key {s:#x}-{e:#x} for {v!r}")
                if s >= e or s < prev_end:
                    errs.append(f"bad order/overlap at {v!r}")
                prev_end = e
                n += 1
        if n != self._len or n != self.mm.map_count:
            errs.append(f"map_count {self.mm.map_count}, tree size {self._len}, {n} VMAs")
        return errs


def vm_area_alloc(mm, start, end, flags, pgoff, file=None):
    might_alloc(GFP_KERNEL)                     # kmem_cache_alloc(vm_area_cachep, GFP_KERNEL)
    if file is not None:
        file.get_file()
    return VmAreaStruct(mm, start, end, flags, pgoff, file)


def vm_area_dup(vma, mm=None):
    might_alloc(GFP_KERNEL)                     # kmem_cache_alloc(vm_area_cachep, GFP_KERNEL)
    new = VmAreaStruct(mm or vma.vm_mm, vma.vm_start, vma.vm_end, vma.vm_flags,
                       vma.vm_pgoff, vma.vm_file)
    new.vm_policy = vma.vm_policy
    if new.vm_policy is not None:
        new.vm_policy.get()
    if new.vm_file is not None:
        new.vm_file.get_file()
    return new


def vm_flags_reset(vma, flags):
    """Change a VMA's flags (include/linux/mm.h vm_flags_reset): a per-VMA-lock
    fault reads them, so the VMA is write-locked first.  Context: mmap_lock
    held for write."""
    vma_start_write(vma)
    vma.vm_flags = flags


def vm_area_free(vma):
    """Free a detached VMA: it is poisoned, later accesses are use-after-free
    (except from inside an RCU read section: the cache is
    SLAB_TYPESAFE_BY_RCU, see VmAreaStruct)."""
    if vma.vm_policy is not None:
        vma.vm_policy.put()
    if vma.vm_file is not None:
        vma.vm_file.fput()
    kasan_poison(vma, skip=3)


def _rule_holds(mm):
    """mmap_lock held (any mode, O(1) from the lock's holders) or inside an
    RCU read section."""
    return mm.mmap_lock.held_by_current() or rcu_read_lock_held()


def _suspicious_rcu_usage(mm):
    import threading
    t = threading.current_thread()
    held = lockdep.held_locks()
    f = sys._getframe(2)         # the lookup that walked the tree unprotected
    lines = [
        "=============================",
        "WARNING: suspicious RCU usage",
        "-----------------------------",
        # lockdep_rcu_suspicious() prints "file:line message"; pymm's tree is the maple tree
        f"{src_path(f.f_code.co_filename)}:{f.f_lineno} suspicious rcu_dereference_check() usage!",
        "",
        "other info that might help us debug this:",
        "",
        "rcu_scheduler_active = 2, debug_locks = 1",
        f"{len(held)} lock{'s' if len(held) != 1 else ''} held by {t.name}/{_pid()}:",
    ]
    lines += [f" #{i}: {h.name}" for i, h in enumerate(held)]
    lines += ["", f"VMA tree of {mm!r} walked with neither mmap_lock nor rcu_read_lock held.",
              "Likely cause: a lookup moved after mmap_read_unlock()/mmap_write_unlock().",
              "", "stack backtrace:", "Call Trace:", stackdepot.format(stackdepot.save(3), " ")]
    report("rcu", "WARNING: suspicious RCU usage", "\n".join(lines))


def _pid():
    t = current()
    return t.pid if t is not None else 0


internal.define(__name__, globals())   # callers across a cycle use these through internal

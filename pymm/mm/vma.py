"""The VMA tree (the kernel's maple tree, mm->mm_mt) and VMA allocation.

Lookups are O(log n): bisect over parallel lists of starts and ends, so a
lookup does not read the VMAs themselves.  Every lookup checks the kernel's
rule -- mmap_lock held (read or write) or an RCU read section -- and reports
"WARNING: suspicious RCU usage" otherwise, as the maple tree's
rcu_dereference_check does.  Modifications require mmap_lock for write.
"""
from bisect import bisect_left, bisect_right

from ..debug import stackdepot
from ..debug.kasan import kasan_poison
from ..debug.report import report
from ..rcu import rcu_read_lock_held
from .mm_types import VmAreaStruct
from .mmap_lock import mmap_assert_write_locked, mmap_lock_is_held


class VmaTree:
    __slots__ = ("mm", "_starts", "_ends", "_vmas")

    def __init__(self, mm):
        self.mm = mm
        self._starts = []
        self._ends = []
        self._vmas = []

    # -- the locking rule ----------------------------------------------------------
    def _check(self):
        if not rcu_read_lock_held() and not mmap_lock_is_held(self.mm):
            _suspicious_rcu_usage(self.mm)

    # -- lookups ---------------------------------------------------------------
    def find_vma(self, addr):
        """The first VMA with vm_end > addr (find_vma)."""
        self._check()
        i = bisect_right(self._ends, addr)
        return self._vmas[i] if i < len(self._vmas) else None

    def vma_lookup(self, addr):
        """The VMA containing addr, or None."""
        self._check()
        i = bisect_right(self._ends, addr)
        if i < len(self._vmas) and self._starts[i] <= addr:
            return self._vmas[i]
        return None

    def find_vma_intersection(self, start, end):
        self._check()
        i = bisect_right(self._ends, start)
        if i < len(self._vmas) and self._starts[i] < end:
            return self._vmas[i]
        return None

    def find_vma_prev(self, addr):
        """(vma, prev) as find_vma_prev."""
        self._check()
        i = bisect_right(self._ends, addr)
        vma = self._vmas[i] if i < len(self._vmas) else None
        prev = self._vmas[i - 1] if i > 0 else None
        return vma, prev

    def range(self, start, end):
        """VMAs intersecting [start, end), in order (for_each_vma_range)."""
        self._check()
        i = bisect_right(self._ends, start)
        j = bisect_left(self._starts, end)
        return self._vmas[i:j]

    def all(self):
        self._check()
        return list(self._vmas)

    def neighbours(self, start, end):
        """(prev, next): the VMAs just below start and at/above end."""
        self._check()
        i = bisect_right(self._ends, start)
        prev = self._vmas[i - 1] if i > 0 and self._ends[i - 1] <= start else None
        j = bisect_left(self._starts, end)
        nxt = self._vmas[j] if j < len(self._vmas) else None
        return prev, nxt

    def __len__(self):
        return len(self._vmas)

    # -- modification (mmap_lock held for write) -------------------------------
    def insert(self, vma):
        mmap_assert_write_locked(self.mm)
        i = bisect_left(self._starts, vma.vm_start)
        if (i < len(self._vmas) and self._starts[i] < vma.vm_end) or \
                (i > 0 and self._ends[i - 1] > vma.vm_start):
            raise AssertionError(f"VMA tree: {vma!r} overlaps an existing VMA")
        self._starts.insert(i, vma.vm_start)
        self._ends.insert(i, vma.vm_end)
        self._vmas.insert(i, vma)
        vma.detached = False
        self.mm.map_count += 1

    def erase(self, vma):
        mmap_assert_write_locked(self.mm)
        i = self._index(vma)
        del self._starts[i], self._ends[i], self._vmas[i]
        vma.detached = True
        self.mm.map_count -= 1

    def update(self, vma):
        """The VMA's range changed (vma_set_range): refresh its keys."""
        mmap_assert_write_locked(self.mm)
        i = self._index(vma)
        self._starts[i] = vma.vm_start
        self._ends[i] = vma.vm_end

    def _index(self, vma):
        for i in range(len(self._vmas)):
            if self._vmas[i] is vma:
                return i
        raise AssertionError(f"VMA tree: {vma!r} is not in the tree")

    def check(self):
        """Invariants: sorted, non-overlapping, keys match the VMAs."""
        errs = []
        prev_end = 0
        for s, e, v in zip(self._starts, self._ends, self._vmas):
            if s != v.vm_start or e != v.vm_end:
                errs.append(f"stale key {s:#x}-{e:#x} for {v!r}")
            if s >= e or s < prev_end:
                errs.append(f"bad order/overlap at {v!r}")
            prev_end = e
        if len(self._vmas) != self.mm.map_count:
            errs.append(f"map_count {self.mm.map_count} != {len(self._vmas)} VMAs")
        return errs


# Index lookups by identity above are O(n); they run only on modifications
# (split/merge/erase), never on lookups.  Kept simple on purpose.


def vm_area_alloc(mm, start, end, flags, pgoff, file=None):
    if file is not None:
        file.get_file()
    return VmAreaStruct(mm, start, end, flags, pgoff, file)


def vm_area_dup(vma, mm=None):
    new = VmAreaStruct(mm or vma.vm_mm, vma.vm_start, vma.vm_end, vma.vm_flags,
                       vma.vm_pgoff, vma.vm_file)
    new.vm_policy = vma.vm_policy
    if new.vm_policy is not None:
        new.vm_policy.get()
    if new.vm_file is not None:
        new.vm_file.get_file()
    return new


def vm_area_free(vma):
    """Free a detached VMA: it is poisoned, later accesses are use-after-free."""
    if vma.vm_policy is not None:
        vma.vm_policy.put()
    if vma.vm_file is not None:
        vma.vm_file.fput()
    kasan_poison(vma, skip=3)


def _suspicious_rcu_usage(mm):
    import threading
    from ..locking import lockdep
    t = threading.current_thread()
    held = lockdep.held_locks()
    lines = [
        "=============================",
        "WARNING: suspicious RCU usage",
        "-----------------------------",
        "lib/maple_tree.c: suspicious rcu_dereference_check() usage!",
        "",
        "other info that might help us debug this:",
        "",
        "rcu_scheduler_active = 2, debug_locks = 1",
        f"{len(held)} lock{'s' if len(held) != 1 else ''} held by {t.name}/{_pid()}:",
    ]
    lines += [f" #{i}: {h.name}" for i, h in enumerate(held)]
    lines += ["", f"VMA tree of {mm!r} walked with neither mmap_lock nor rcu_read_lock held.",
              "Likely cause: a lookup moved after mmap_read_unlock()/mmap_write_unlock().",
              "", "stack backtrace:", stackdepot.format(stackdepot.save(3), "  ")]
    report("rcu", "WARNING: suspicious RCU usage", "\n".join(lines))


def _pid():
    from ..task import current
    t = current()
    return t.pid if t is not None else 0

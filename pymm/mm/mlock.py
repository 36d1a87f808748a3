"""mlock (mm/mlock.c, the 5.18+ design): folio->mlock_count counts the PTE
mappings of a folio in VM_LOCKED VMAs; PG_mlocked is set while it is nonzero
and the folio then lives on the unevictable LRU.  As in the kernel the count
is a heuristic clamped at zero; PG_mlocked and NR_MLOCK are exact.
Everything here runs under the node's lru_lock."""
import errno

from ..constants import (MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT, RLIM_INFINITY,
                         RLIMIT_MEMLOCK, TASK_SIZE)
from ..context import current
from ..debug.report import pymm_checks, pymm_only_title, report_pymm_check
from ..sched import point
from . import internal
from .atomic import clear_bits, set_bits
from .filemap import folio_lock, folio_unlock
from .mm_types import (PG_lru, PG_mlocked, VM_DONTEXPAND, VM_HUGETLB, VM_IO, VM_LOCKED,
                       VM_LOCKED_MASK, VM_LOCKONFAULT, VM_PFNMAP, Folio)
from .mmap_lock import mmap_write_lock, mmap_write_unlock
from .page_alloc import folio_get, folio_put
from .vma import vm_flags_reset
from .pgtable import pte_index, pte_ranges
from .swap import folio_add_lru, folio_move_lru_locked, lruvec_del_folio_locked


def mlock_folio(kernel, folio):
    """One more VM_LOCKED mapping.  Context: any; takes lru_lock."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    folio.mlock_count += 1
    if not folio.flags & PG_mlocked:
        set_bits(folio, "flags", PG_mlocked)
        lruvec.pgdat.vm_stat["NR_MLOCK"].add(folio.nr_pages())
        if folio.flags & PG_lru:
            folio_move_lru_locked(lruvec, folio)
    lruvec.lru_lock.unlock()


def munlock_folio(kernel, folio):
    """One VM_LOCKED mapping fewer; at zero the folio becomes evictable again."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    if folio.mlock_count:
        folio.mlock_count -= 1
    if not folio.mlock_count and folio.flags & PG_mlocked:
        clear_bits(folio, "flags", PG_mlocked)
        lruvec.pgdat.vm_stat["NR_MLOCK"].add(-folio.nr_pages())
        if folio.flags & PG_lru:
            folio_move_lru_locked(lruvec, folio)
    lruvec.lru_lock.unlock()


def mlock_vma_folio(kernel, folio, vma):
    """Called when a PTE mapping ``folio`` is installed in a VM_LOCKED VMA."""
    if vma.vm_flags & VM_LOCKED:
        mlock_folio(kernel, folio)


def munlock_vma_folio(kernel, folio, vma):
    """Called when a PTE mapping ``folio`` in a VM_LOCKED VMA is removed."""
    if vma.vm_flags & VM_LOCKED:
        munlock_folio(kernel, folio)


def mlock_vma_pages_range(vma, start, end, newflags):
    """Set the new flags, then (un)mlock every mapped folio in range under its
    ptl (mlock_pte_range).  Context: mmap_lock held for write."""
    mm = vma.vm_mm
    k = mm.kernel
    lock = newflags & VM_LOCKED
    old = vma.vm_flags & VM_LOCKED
    vm_flags_reset(vma, newflags)
    if bool(lock) == bool(old):
        return
    for pt, addr, nxt in pte_ranges(mm, start, end):
        pt.ptl.lock()
        for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
            f = pt.ptes[i]
            if isinstance(f, Folio) and f is not k.zero_page:
                (mlock_folio if lock else munlock_folio)(k, f)
        pt.ptl.unlock()


VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP


def mlock_fixup(vma, start, end, newflags):
    """Give [start, end) the lock flags ``newflags``; account locked_vm."""
    mm = vma.vm_mm
    oldflags = vma.vm_flags
    if newflags == oldflags or oldflags & (VM_SPECIAL | VM_HUGETLB):
        # as the kernel: VM_IO/VM_PFNMAP/VM_DONTEXPAND and hugetlb VMAs never
        # get VM_LOCKED and are not counted (so they are never split here)
        return vma
    vma = internal.vma_split_range(vma, start, end)
    nr = (end - start) >> 12
    if (newflags & VM_LOCKED) and not (oldflags & VM_LOCKED):
        mm.locked_vm += nr
    elif not (newflags & VM_LOCKED) and (oldflags & VM_LOCKED):
        mm.locked_vm -= nr
    mlock_vma_pages_range(vma, start, end, newflags)
    return internal.vma_try_merge(vma)


def apply_vma_lock_flags(mm, start, length, flags):
    """Context: mmap_lock held for write.  The whole range must be mapped
    (checked first, so a failure changes nothing)."""
    end = start + length
    vmas = mm.mm_mt.range(start, end)
    pos = start
    for v in vmas:
        if v.vm_start > pos:
            return -errno.ENOMEM
        pos = v.vm_end
    if not vmas or pos < end:
        return -errno.ENOMEM
    if not internal.vma_splits_ok(mm, start, end, lambda v: not v.vm_flags & (VM_SPECIAL | VM_HUGETLB) and
                         (v.vm_flags & ~VM_LOCKED_MASK) | flags != v.vm_flags):
        return -errno.ENOMEM            # vm.max_map_count (mlock_fixup skips what it leaves)
    pos = start
    while pos < end:          # by address: fixups split and merge VMAs
        cur = mm.mm_mt.vma_lookup(pos)
        e = min(end, cur.vm_end)
        mlock_fixup(cur, pos, e, (cur.vm_flags & ~VM_LOCKED_MASK) | flags)
        pos = e
    return 0


# -- RLIMIT_MEMLOCK ------------------------------------------------------------------------
#
# pymm's processes run as root: they have CAP_IPC_LOCK, and the limit binds
# only a process that dropped it (``p.capabilities.discard("CAP_IPC_LOCK")``),
# as LTP's tests drop to user nobody.

def capable(task, cap):
    """Kernel threads (no ``capabilities``) are privileged."""
    caps = getattr(task, "capabilities", None)
    return caps is None or cap in caps


def lock_limit_pages(task):
    rlims = getattr(task, "rlimits", None)
    rlim = rlims[RLIMIT_MEMLOCK][0] if rlims is not None else RLIM_INFINITY
    return None if rlim == RLIM_INFINITY else rlim >> 12


def can_do_mlock(task):
    """EPERM unless privileged or RLIMIT_MEMLOCK is not 0."""
    return capable(task, "CAP_IPC_LOCK") or task.rlimits[RLIMIT_MEMLOCK][0] != 0


def count_mm_mlocked_page_nr(mm, start, length):
    """Pages of [start, start+len) already in VM_LOCKED VMAs (they count once)."""
    n = 0
    for v in mm.mm_mt.range(start, start + length):
        if v.vm_flags & VM_LOCKED:
            n += (min(v.vm_end, start + length) - max(v.vm_start, start)) >> 12
    return n


def mlock_future_ok(mm, flags, length):
    """May a new mapping of ``length`` bytes with ``flags`` be locked?
    (mm/mmap.c mlock_future_ok.)  Context: mmap_lock held."""
    t = current()
    if not flags & VM_LOCKED or capable(t, "CAP_IPC_LOCK"):
        return True
    limit = lock_limit_pages(t)
    return limit is None or mm.locked_vm + (length >> 12) <= limit


def do_mlock(mm, start, length, flags):
    """mlock(2)/mlock2(2) after argument checks.  Context: mmap_lock not held."""
    t = current()
    if not can_do_mlock(t):
        return -errno.EPERM
    limit = lock_limit_pages(t)
    mmap_write_lock(mm)
    if limit is not None and not capable(t, "CAP_IPC_LOCK"):
        locked = (length >> 12) + mm.locked_vm
        if locked > limit:
            locked -= count_mm_mlocked_page_nr(mm, start, length)
        if locked > limit:
            mmap_write_unlock(mm)
            return -errno.ENOMEM
    err = apply_vma_lock_flags(mm, start, length, VM_LOCKED | (flags & VM_LOCKONFAULT))
    mmap_write_unlock(mm)
    if err:
        return err
    # MLOCK_ONFAULT too, as the kernel: populate_vma_page_range skips the
    # VM_LOCKONFAULT VMAs, but mlock_fixup gives that flag to no hugetlb (or
    # VM_SPECIAL) VMA, and those are faulted in -- a private writable one
    # for write, breaking COW
    err = internal.__mm_populate(mm, start, length, False)
    if err:
        return __mlock_posix_error_return(err)
    return 0


def __mlock_posix_error_return(err):
    """POSIX says mlock fails with ENOMEM for an unmapped range and EAGAIN
    when the pages cannot be locked: gup's EFAULT and ENOMEM become those."""
    if err == -errno.EFAULT:
        return -errno.ENOMEM
    if err == -errno.ENOMEM:
        return -errno.EAGAIN
    return err


def do_munlock(mm, start, length):
    mmap_write_lock(mm)
    err = apply_vma_lock_flags(mm, start, length, 0)
    mmap_write_unlock(mm)
    return err


def do_mlockall(mm, flags):
    t = current()
    if not can_do_mlock(t):
        return -errno.EPERM
    limit = lock_limit_pages(t)
    mmap_write_lock(mm)
    if flags & MCL_CURRENT and limit is not None and not capable(t, "CAP_IPC_LOCK") and \
            sum(v.vma_pages() for v in mm.mm_mt.all()) > limit:      # mm->total_vm
        mmap_write_unlock(mm)
        return -errno.ENOMEM
    mm.def_flags &= ~VM_LOCKED_MASK
    if flags & MCL_FUTURE:
        mm.def_flags |= VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
        if not flags & MCL_CURRENT:         # apply_mlockall_flags: existing VMAs untouched
            mmap_write_unlock(mm)
            return 0
    to = 0
    if flags & MCL_CURRENT:
        to = VM_LOCKED | (VM_LOCKONFAULT if flags & MCL_ONFAULT else 0)
    pos = 0
    while True:
        cur = mm.mm_mt.find_vma(pos)
        if cur is None:
            break
        pos = cur.vm_end
        mlock_fixup(cur, cur.vm_start, cur.vm_end, (cur.vm_flags & ~VM_LOCKED_MASK) | to)
    mmap_write_unlock(mm)
    if flags & MCL_CURRENT:              # MCL_ONFAULT too (see do_mlock)
        internal.mm_populate(mm, 0, TASK_SIZE)
    return 0


def mlock2_flags_to_vm(flags):
    return VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0


# -- the munlock of exit_mmap, as it was before 5.18 (SCENARIOS.md section E) -----------
#
# exit_mmap of that era took no mmap_lock (the mm has no other users): for each
# VM_LOCKED VMA, munlock_vma_pages_all cleared VM_LOCKED, collected the pages
# under the ptl, then munlocked them in two phases (__munlock_pagevec).  pymm
# keeps this for exit only (mlock/munlock(2) use the 5.18+ design above) and
# fits it to mlock_count: phase 1 clears PG_mlocked and zeroes the count; a
# page still mapped elsewhere is recounted by try_to_munlock in phase 2.

def mlock_vma_page(kernel, folio, vma, count=False):
    """TestSetPageMlocked for a folio the rmap (try_to_unmap_one) found in
    the VM_LOCKED ``vma``: NR_MLOCK and the unevictable LRU follow.  For
    reclaim mlock_count is left alone (the folio is isolated: whoever maps
    it VM_LOCKED counts); for try_to_munlock (``count``) it counts that VMA,
    as mlock_folio does (exit's munlock zeroed the count and the walk
    recounts).  One function for both, as the kernel's mlock_vma_page.
    Context: folio locked; takes lru_lock."""
    point("mlock_vma_page")      # section E's window: VM_LOCKED was seen, PG_mlocked not yet set
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    check_rmap_mlock(kernel, folio, vma)
    if count:
        folio.mlock_count += 1
    if not set_bits(folio, "flags", PG_mlocked) & PG_mlocked:
        lruvec.pgdat.vm_stat["NR_MLOCK"].add(folio.nr_pages())
        if folio.flags & PG_lru:
            folio_move_lru_locked(lruvec, folio)
    lruvec.lru_lock.unlock()


RMAP_MLOCK_TITLE = pymm_only_title("BUG: page mlocked by rmap after its munlock")


def check_rmap_mlock(kernel, folio, vma):
    """pymm's own check (the kernel has none), at the moment the rmap --
    try_to_unmap_one, for reclaim or for try_to_munlock -- sets PG_mlocked
    because it saw ``vma`` VM_LOCKED: that mapping's munlock must not have
    passed the page already, or nothing will ever clear the flag.  Passed
    means either

    - the page has no mapping left: the last unmap, which munlocks it
      (clear_page_mlock), has been (truncation's zap of a COW copy: the copy
      is then freed mlocked, "Bad page state"); or
    - ``vma``'s munlock pass (exit_mmap's munlock_vma_pages_range, which
      cleared VM_LOCKED first) has already done its phase 1 on the page:
      it stays mlocked in VMAs none of which is VM_LOCKED ("mlocked page in
      no VM_LOCKED VMA").

    Both are SCENARIOS.md section E's races: ``mmap-trylock`` drops the ptl
    and mlocks under an mmap_lock trylock, which excludes neither the zap
    nor exit's munlock (it takes no mmap_lock); it reports them at the mlock
    itself, before the Bad page state or the invariant check that would see
    their outcome.  It cannot fire on ``pte-lock``, whose mlock holds the
    ptl it found the PTE under (so the page is mapped) and which exit's
    munlock takes to collect the page after clearing VM_LOCKED (so its
    phase 1 has not run on it).  The zap case reports the race even in the
    rare interleaving where the zap's clear_page_mlock follows and clears
    the flag after all.  Off with pymm_checks.  Context: lru_lock held (phase
    1 records the pages it passed under it too)."""
    if not pymm_checks(kernel):
        return
    passed = vma.munlock_passed
    if folio._mapcount == 0:
        why = "it has no mapping left: its last unmap (clear_page_mlock) was its munlock"
    elif passed is not None and folio in passed:
        why = "exit's munlock of that VMA cleared VM_LOCKED and has already munlocked the page"
    else:
        return
    title = RMAP_MLOCK_TITLE
    report_pymm_check("bad-page-state", title,
                      [f"{folio!r} mlocked through {vma!r}, seen VM_LOCKED before the mlock, but",
                       f"{why}: nobody will clear PG_mlocked."], kernel=kernel)


def clear_page_mlock(kernel, folio):
    """The folio's last mapping is gone: it cannot stay mlocked.  Rechecked
    under lru_lock, where a new VM_LOCKED mapping's mlock_folio (which raises
    _mapcount first) would serialise with us.  Context: ptl held (the
    unmapping one); takes lru_lock."""
    lruvec = kernel.nodes[folio.node].lruvec
    lruvec.lru_lock.lock()
    if folio._mapcount == 0 and clear_bits(folio, "flags", PG_mlocked) & PG_mlocked:
        folio.mlock_count = 0
        lruvec.pgdat.vm_stat["NR_MLOCK"].add(-folio.nr_pages())
        if folio.flags & PG_lru:
            folio_move_lru_locked(lruvec, folio)
    lruvec.lru_lock.unlock()


def munlock_vma_pages_all(vma):
    munlock_vma_pages_range(vma, vma.vm_start, vma.vm_end)


def munlock_vma_pages_range(vma, start, end):
    """Clear VM_LOCKED, then munlock every page mapped in [start, end): pages
    are collected (with a reference) under each table's ptl, then handed to
    __munlock_pagevec.  Context: exit_mmap; no mmap_lock held."""
    mm = vma.vm_mm
    k = mm.kernel
    vma.vm_flags &= ~VM_LOCKED_MASK
    point("munlock_vma_pages_range")
    if pymm_checks(k):
        vma.munlock_passed = set()      # check_rmap_mlock's record of phase 1
    for pt, addr, nxt in pte_ranges(mm, start, end):
        pvec = []
        pt.ptl.lock()
        for i in range(pte_index(addr), pte_index(nxt - 1) + 1):
            f = pt.ptes[i]
            if isinstance(f, Folio) and f is not k.zero_page:
                folio_get(f)
                pvec.append(f)
        pt.ptl.unlock()
        if pvec:
            __munlock_pagevec(k, pvec, vma.munlock_passed)


def __munlock_pagevec(kernel, pvec, passed=None):
    """Phase 1, under the LRU lock (no folio lock, no ptl): TestClearPageMlocked
    (and zero mlock_count); isolate the folios that were mlocked.  Phase 2,
    per isolated folio: folio_lock, recount any other VM_LOCKED mappings
    (__munlock_isolated_page), put it back on the LRU.  Drops the references
    the collection took.  ``passed``: the set phase 1 adds each folio to
    (check_rmap_mlock), or None."""
    isolated, putback = [], []
    for folio in pvec:
        lruvec = kernel.nodes[folio.node].lruvec
        lruvec.lru_lock.lock()
        if passed is not None:
            passed.add(folio)
        if clear_bits(folio, "flags", PG_mlocked) & PG_mlocked:
            folio.mlock_count = 0
            lruvec.pgdat.vm_stat["NR_MLOCK"].add(-folio.nr_pages())
            if folio.flags & PG_lru:
                lruvec_del_folio_locked(lruvec, folio)   # our reference becomes the isolation one
                isolated.append(folio)
            else:
                putback.append(folio)                    # __munlock_isolation_failed
        else:
            putback.append(folio)
        lruvec.lru_lock.unlock()
    point("__munlock_pagevec")
    for folio in putback:
        folio_put(folio, kernel)
    for folio in isolated:
        folio_lock(folio)
        __munlock_isolated_page(kernel, folio)
        folio_unlock(folio)
        folio_put(folio, kernel)


def __munlock_isolated_page(kernel, folio):
    """If others map the folio, let the rmap mlock it again for each VMA that
    is still VM_LOCKED; then back to the LRU (unevictable if so).
    Context: folio locked and isolated."""
    if folio._mapcount > 1:
        internal.try_to_munlock(folio)
    folio_add_lru(kernel, folio)

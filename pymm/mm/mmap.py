"""mmap, munmap, brk, VMA split/merge and exit_mmap (mm/mmap.c, mm/vma.c)."""
import errno
import zlib

from ..constants import MMAP_MIN_ADDR, TASK_SIZE
from ..debug.fault_inject import should_fail
from ..debug.report import report
from ..rcu import rcu_read
from ..sched import point
from .gup import mm_populate_after_write
from .hugetlb import hugetlb_vm_op_close, hugetlb_vm_op_open, hugetlb_vm_op_split
from .memory import unmap_vmas
from .mlock import mlock_future_ok, munlock_vma_pages_all
from .gfp import GFP_KERNEL
from .mm_types import (RSS_NAMES, VM_ACCESS_FLAGS, VM_ACCOUNT, VM_DONTEXPAND, VM_GROWSDOWN, VM_HUGETLB,
                       VM_IO, VM_LOCKED, VM_MAYEXEC, VM_MAYREAD, VM_MAYWRITE, VM_PFNMAP, VM_READ,
                       VM_WRITE)
from .mmu_gather import tlb_finish_mmu, tlb_gather_mmu, tlb_gather_mmu_fullmm

VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP
from .mmap_lock import (mmap_assert_write_locked, mmap_read_lock, mmap_read_unlock,
                        mmap_write_downgrade, mmap_write_lock, mmap_write_lock_killable,
                        mmap_write_unlock, vma_start_write)
from .pgtable import USER_PGTABLES_CEILING, free_pgd_range
from .rmap import (anon_vma_clone, anon_vma_lock_write, anon_vma_prepare, anon_vma_unlock_write, i_mmap_lock_write,
                   i_mmap_unlock_write, unlink_anon_vmas, unlink_file_vma,
                   vma_interval_tree_insert, vma_interval_tree_remove, vma_link_file)
from .vma import vm_area_alloc, vm_area_dup, vm_area_free, vm_flags_reset
from . import hugetlb_ops
from . import internal
from ..fs.hugetlbfs import hugetlb_split_check

PAGE_SIZE = 4096
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC


def page_align(x):
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


# -- changing a VMA's range under the rmap locks ---------------------------------

def vma_set_range(vma, start, end, pgoff, under_locks=None, insert=None):
    """Move/resize ``vma`` (vma_prepare ... vma_complete): rmap walkers read
    vm_start/vm_end/vm_pgoff under i_mmap_rwsem or anon_vma->rwsem, so the VMA
    leaves the interval trees, changes, and goes back, under both locks
    (write), and write-locked against per-VMA-lock faults (vma_prepare).
    ``insert``: split_vma's new VMA, which takes over part of ``vma``'s
    range: it joins the file's interval tree in the same i_mmap_rwsem hold
    (vma_prepare's ``__vma_link_file(vp->insert)``), so that no rmap walk
    finds the range in neither VMA.  (Linked afterwards, a migration's
    remove_migration_ptes in between missed the migration entries of that
    range and left them behind, pointing at a folio it then freed: the
    fuzzer's KASAN use-after-free at exit or on the next fault.  An anon
    VMA's ``insert`` is in the anon_vma trees already: anon_vma_clone.)
    Context: mmap_lock held for write."""
    mmap_assert_write_locked(vma.vm_mm)
    vma_start_write(vma)
    mapping = vma.vm_file.mapping if vma.vm_file is not None else None
    anon_vma = vma.anon_vma
    if mapping is not None:
        i_mmap_lock_write(mapping)
        if insert is not None:
            vma_interval_tree_insert(insert, mapping)
        if under_locks is not None:
            under_locks()               # __split_vma's hugetlb_split, between vma_prepare and the change
        vma_interval_tree_remove(vma, mapping)
    if anon_vma is not None:
        anon_vma_lock_write(anon_vma)
        for avc in vma.anon_vma_chain:
            avc.anon_vma.rb_root.remove(avc)
    vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff
    point("vma_set_range")
    if anon_vma is not None:
        for avc in vma.anon_vma_chain:
            s, last = avc.interval()
            avc.anon_vma.rb_root.insert(avc, s, last)
        anon_vma_unlock_write(anon_vma)
    if mapping is not None:
        vma_interval_tree_insert(vma, mapping)
        i_mmap_unlock_write(mapping)
    if not vma.detached:
        vma.vm_mm.mm_mt.update(vma)


def split_vma(vma, addr):
    """Split at ``addr``; ``vma`` keeps the lower part, the new VMA (returned)
    is the upper part.  Context: mmap_lock held for write."""
    mm = vma.vm_mm
    if vma.vm_flags & VM_HUGETLB:       # vm_ops->may_split: unshare the PMDs around addr first
        if hugetlb_vm_op_split(vma, addr):
            report("assertion", "BUG: hugetlb VMA split off a huge page boundary",
                   f"split_vma({vma!r}, {addr:#x}): the caller should have failed with -EINVAL",
                   data={"pymm_only": True})
    vma_start_write(vma)
    new = vm_area_dup(vma)
    vma_start_write(new)
    new.vm_start = addr
    new.vm_pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> 12)
    if new.vm_flags & VM_HUGETLB:       # vm_ops->open
        hugetlb_vm_op_open(new, vma)
    anon_vma_clone(new, vma)            # (cannot fail: no GFP_KERNEL, see anon_vma_clone)
    hugetlb = bool(vma.vm_flags & VM_HUGETLB)
    vma_set_range(vma, vma.vm_start, addr, vma.vm_pgoff,
                  (lambda: hugetlb_ops.hugetlb_split(vma, addr)) if hugetlb else None, insert=new)
    mm.mm_mt.insert(new)
    if hugetlb:
        hugetlb_ops.hugetlb_check_pmd_share_coverage(vma, "split")
        hugetlb_ops.hugetlb_check_pmd_share_coverage(new, "split")
    return new


def can_vma_merge(a, b):
    """Can ``a`` (below) and ``b`` (just above) become one VMA?"""
    if a.vm_end != b.vm_start or a.vm_flags != b.vm_flags or a.vm_file is not b.vm_file:
        return False
    if a.vm_flags & VM_SPECIAL:          # hugetlb VMAs are VM_DONTEXPAND: never merged
        return False
    # anon VMAs get vm_pgoff = vm_start >> PAGE_SHIFT, so contiguous ones line up
    if a.vm_pgoff + a.vma_pages() != b.vm_pgoff:
        return False
    if not mpol_equal(a.vm_policy, b.vm_policy):
        return False
    if a.vm_private_data is not None or b.vm_private_data is not None:
        return False
    return a.anon_vma is None or b.anon_vma is None or a.anon_vma is b.anon_vma


def mpol_equal(a, b):
    return a is b or (a is not None and b is not None and a == b)


def vma_merge_pair(a, b):
    """Merge ``b`` into ``a`` (they passed can_vma_merge); ``b`` is freed.
    Returns ``a``, or None when the merge was given up (dup_anon_vma could
    not allocate: ENOMEM; nothing has changed).  ``a`` is write-locked by
    dup_anon_vma when it takes b's anon_vma (d8ab9f7b644a; today's
    vma_merge_existing_range and vma_expand lock it before and dup_anon_vma
    asserts it), else by vma_set_range (vma_prepare), as in 6.4's vma_merge.
    Context: mmap_lock held for write."""
    mm = a.vm_mm
    vma_start_write(b)
    if dup_anon_vma(a, b):
        return None
    mm.mm_mt.erase(b)
    vma_set_range(a, a.vm_start, b.vm_end, a.vm_pgoff)
    # b leaves the rmap trees before it is freed (anon_vma_merge; the file
    # side of vma_complete): an rmap walk must never find a freed VMA.
    unlink_anon_vmas(b)
    unlink_file_vma(b)
    remove_vma(b)
    return a


def dup_anon_vma(dst, src):
    """``dst`` expands over ``src``: if only src has an anon_vma, dst takes
    it, with src's anon_vma chains (mm/vma.c dup_anon_vma).

    The variant ``dup-anon-vma-lock`` (d8ab9f7b644a, 6.5-rc4 / 6.4.8, Jann
    Horn; scenario ``vma-lock-anon-vma``):
    ``unlocked`` sets dst->anon_vma before write-locking dst, so a fault
    under dst's per-VMA lock can install pages under that anon_vma while the
    chains are not linked yet -- and if anon_vma_clone then fails (ENOMEM) it
    resets dst->anon_vma to NULL: the pages stay mapped in dst with nothing
    tying dst to their anon_vma, which can be freed under them.
    ``vma-start-write`` (mainline) write-locks dst first.
    Context: mmap_lock held for write."""
    if src.anon_vma is not None and dst.anon_vma is None:
        if dst.vm_mm.kernel.variants["dup-anon-vma-lock"] == "vma-start-write":
            vma_start_write(dst)
        dst.anon_vma = src.anon_vma
        point("dup_anon_vma")
        return anon_vma_clone(dst, src, GFP_KERNEL)    # may fail: the merge is given up
    return 0


def vma_try_merge(vma):
    """Merge ``vma`` with its neighbours where possible; returns the survivor."""
    mm = vma.vm_mm
    prev, nxt = mm.mm_mt.neighbours(vma.vm_start, vma.vm_end)
    if nxt is not None and can_vma_merge(vma, nxt):
        vma = vma_merge_pair(vma, nxt) or vma
    if prev is not None and can_vma_merge(prev, vma):
        vma = vma_merge_pair(prev, vma) or vma
    return vma


def vma_split_range(vma, start, end):
    """Split ``vma`` so that one VMA covers exactly [start, end); return it.
    Context: mmap_lock held for write."""
    if vma.vm_start < start:
        vma = split_vma(vma, start)
    if vma.vm_end > end:
        split_vma(vma, end)
    return vma


def vma_splits_ok(mm, start, end, changes=None):
    """vm.max_map_count: may the VMAs around [start, end) be split at
    ``start`` and ``end``, as changing the range's flags or policy does
    (mprotect, mlock, madvise, mbind)?  split_vma refuses (ENOMEM) once
    map_count >= max_map_count.  ``changes(vma)``, if given, says whether the
    call changes that VMA at all: one it leaves as it is (same flags --
    mprotect_fixup, mlock_fixup; same policy -- mbind_range's mpol_equal) is
    not split.  pymm checks every split an operation needs before it changes
    anything; the kernel finds out at the split and may have changed earlier
    VMAs by then.  (The kernel's vma_modify also tries a merge with a
    neighbour first, which needs no split; pymm splits, then merges, and
    counts the split: so with map_count at the limit, a change that would
    only move the boundary of a VMA that merges is ENOMEM here.)
    Context: mmap_lock held for write."""
    need = 0
    first = mm.mm_mt.vma_lookup(start)
    if first is not None and first.vm_start < start and (changes is None or changes(first)):
        need += 1
    last = mm.mm_mt.vma_lookup(end - 1)
    if last is not None and last.vm_end > end and (changes is None or changes(last)):
        need += 1
    return mm.map_count + need <= mm.kernel.max_map_count


def munmap_splits_ok(mm, start, end):
    """munmap of the middle of one VMA adds a VMA: refused (ENOMEM) when
    map_count >= max_map_count (vms_gather_munmap_vmas); other splits are
    paid for by the VMAs removed.  Context: mmap_lock held for write."""
    v = mm.mm_mt.vma_lookup(start)
    return not (v is not None and v.vm_start < start and v.vm_end > end and
                mm.map_count >= mm.kernel.max_map_count)


def vma_modify_flags(vma, start, end, newflags):
    """Give [start, end) of ``vma`` the flags ``newflags``, splitting as needed
    and merging afterwards (vma_modify_flags).  Returns the VMA now covering
    [start, end).  Context: mmap_lock held for write."""
    vma = vma_split_range(vma, start, end)
    vm_flags_reset(vma, newflags)
    return vma_try_merge(vma)


# -- mmap ------------------------------------------------------------------------------

def get_unmapped_area(mm, addr, length, fixed, align=PAGE_SIZE):
    """Top-down search below mmap_base.  Returns an address or -ENOMEM."""
    if fixed:
        return addr
    tree = mm.mm_mt
    if addr:
        addr = page_align(addr)
        if addr + length <= TASK_SIZE and addr >= MMAP_MIN_ADDR and \
                tree.find_vma_intersection(addr, addr + length) is None:
            return addr
    end = mm.mmap_base
    while True:
        cand = (end - length) & ~(align - 1)
        if cand < MMAP_MIN_ADDR:
            return -errno.ENOMEM
        v = tree.find_vma_intersection(cand, cand + length)
        if v is None:
            return cand
        end = v.vm_start


def mmap_region(mm, addr, length, vm_flags, file, pgoff, call_mmap=None):
    """Map [addr, addr+len) (replacing what is there).  Returns the VMA.
    ``call_mmap(vma)``, if given, is the file's mmap method: it runs before
    the VMA is visible to anyone (in the tree or the file's i_mmap).
    Context: mmap_lock held for write."""
    end = addr + length
    if mm.mm_mt.find_vma_intersection(addr, end) is not None:
        do_vmi_munmap(mm, addr, length)     # MAP_FIXED: under the write lock, never downgraded
    if file is None:
        pgoff = addr >> 12
    vma = vm_area_alloc(mm, addr, end, vm_flags, pgoff, file)
    if call_mmap is not None:
        call_mmap(vma)
    vma_start_write(vma)        # changed after insertion (merge): lock it first, as __mmap_region does
    mm.mm_mt.insert(vma)
    vma_link_file(vma)
    if vm_flags & VM_LOCKED:
        mm.locked_vm += length >> 12
    vma = vma_try_merge(vma)
    point("mmap_region")
    return vma


# -- munmap ------------------------------------------------------------------------

def remove_vma(vma):
    """Free a VMA already out of the tree and the rmap trees."""
    if vma.vm_flags & VM_HUGETLB:       # vma_close -> vm_ops->close
        hugetlb_vm_op_close(vma)
    vm_area_free(vma)


def free_pgtables(mm, vmas, floor, ceiling, tlb=None):
    """Unlink the VMAs from rmap, then free the page tables no VMA needs
    (through ``tlb``: after the TLB flush and an RCU grace period; without a
    gather, one of its own is finished here)."""
    for v in vmas:
        unlink_anon_vmas(v)
        unlink_file_vma(v)
    if vmas:
        own = tlb is None
        if own:
            tlb = tlb_gather_mmu(mm)
        free_pgd_range(tlb, vmas[0].vm_start, vmas[-1].vm_end, floor, ceiling)
        if own:
            tlb_finish_mmu(tlb)


def vmas_may_split(mm, start, end):
    """Would splitting the VMAs at ``start`` and ``end`` be refused?  The
    kernel asks vm_ops->may_split in __split_vma, under the write lock it
    splits with; pymm asks before the first split, under that same lock, so
    that a refused call changes nothing.  Returns 0 or -EINVAL (a hugetlb
    VMA split off a huge page boundary: hugetlb_vm_op_split).
    Context: mmap_lock held for write."""
    mmap_assert_write_locked(mm)
    return hugetlb_split_check(mm, start, end)


def do_vmi_munmap(mm, start, length, unlock=False):
    """Unmap [start, start+len) (do_vmi_munmap / vms_complete_munmap_vmas).

    The VMAs are write-locked and detached under mmap_lock held for write;
    then, since dd2283f2605e (4.20), with ``unlock`` (the munmap system call)
    the lock is downgraded to read for the long part -- zapping the pages and
    freeing the page tables -- and released at the end.  Nobody can reach
    the detached range any more ... except a stack that grows into it: before
    6.5 expand_stack ran under the *read* lock, so a fault could grow a
    VM_GROWSDOWN neighbour into the gap while the downgraded munmap zapped it
    and freed its page tables (Jann Horn's report).  The variant
    ``munmap-downgrade`` says what munmap and the stack do:

    - ``downgrade-always`` (4.20): downgrade; stacks grow under the read lock.
    - ``write-locked`` (before 4.20): never downgrade.
    - ``unless-growsdown`` (5.8, "mm/mmap.c: close race between munmap() and
      expand_upwards()/downwards()"): no downgrade next to a VM_GROWSDOWN
      (or VM_GROWSUP: pymm, as x86, has none) neighbour.
    - ``stack-write-locked`` (8d7071af8907, 6.5, mainline): stacks grow only
      under the write lock, so munmap always downgrades.

    Returns 0 or -EINVAL (a split refused: nothing changed, and the lock is
    still held for write, as __vm_munmap expects).
    Context: mmap_lock held for write; with ``unlock`` it is released here
    (read or write) on success, otherwise still held for write on return."""
    mmap_assert_write_locked(mm)
    end = start + length
    vmas = mm.mm_mt.range(start, end)
    if not vmas:
        if unlock:
            mmap_write_unlock(mm)
        return 0
    err = vmas_may_split(mm, start, end)
    if err:
        return err
    if vmas[0].vm_start < start:
        split_vma(vmas[0], start)
    vmas = mm.mm_mt.range(start, end)
    if vmas[-1].vm_end > end:
        split_vma(vmas[-1], end)
    vmas = mm.mm_mt.range(start, end)
    prev, nxt = mm.mm_mt.neighbours(start, end)
    for v in vmas:
        vma_start_write(v)              # vms_gather_munmap_vmas: before the VMA is detached
        mm.mm_mt.erase(v)
        if v.vm_flags & VM_LOCKED:
            mm.locked_vm -= v.vma_pages()
    # Lock-free stores may go on until the TLB flush: the range is being
    # discarded (loads unchecked) until the gather is finished.
    mm.user_shadow_discard_begin(start, end)
    downgrade = unlock
    how = mm.kernel.variants["munmap-downgrade"]
    if how == "write-locked":
        downgrade = False
    elif how == "unless-growsdown" and nxt is not None and nxt.vm_flags & VM_GROWSDOWN:
        downgrade = False
    if downgrade:
        mmap_write_downgrade(mm)
    point("munmap_detached")
    floor = prev.vm_end if prev else 0
    ceiling = nxt.vm_start if nxt else USER_PGTABLES_CEILING
    tlb = tlb_gather_mmu(mm)
    unmap_vmas(vmas, start, end, tlb)
    free_pgtables(mm, vmas, floor, ceiling, tlb)
    tlb_finish_mmu(tlb)
    mm.user_shadow_discard_end(start, end, False)   # after the flush: no CPU reaches the old pages
    for v in vmas:
        remove_vma(v)
    if downgrade:
        mmap_read_unlock(mm)
    elif unlock:
        mmap_write_unlock(mm)
    return 0


# -- stack growth ----------------------------------------------------------------------

STACK_GUARD_GAP = 256 << 12     # stack_guard_gap: 256 pages (mm/mmap.c)


def stack_expands_under_write_lock(mm):
    """8d7071af8907 (6.5): expand_stack only with mmap_lock held for write."""
    return mm.kernel.variants["munmap-downgrade"] == "stack-write-locked"


def expand_downwards(vma, address):
    """Grow the VM_GROWSDOWN ``vma`` down to ``address`` (mm/mmap.c
    expand_downwards).  Returns 0 or -errno (ENOMEM: it would come within
    stack_guard_gap of the VMA below; EPERM: below mmap_min_addr).

    The VMA's start moves under its anon_vma's lock (rmap walkers read it)
    and mm->page_table_lock (other stack expansions, which before 6.5 ran
    under the read lock side by side), and, with the write lock (6.5+),
    after vma_start_write.
    Context: mmap_lock held -- for write since 6.5 (stack-write-locked),
    for read before."""
    mm = vma.vm_mm
    address &= ~(PAGE_SIZE - 1)
    if address < MMAP_MIN_ADDR:
        return -errno.EPERM
    _, prev = mm.mm_mt.find_vma_prev(vma.vm_start)
    if prev is not None:
        if prev.vm_end > address:
            return -errno.ENOMEM
        if not prev.vm_flags & VM_GROWSDOWN and prev.vm_flags & VM_ACCESS_FLAGS and \
                address - prev.vm_end < STACK_GUARD_GAP:
            return -errno.ENOMEM
    if anon_vma_prepare(vma):
        return -errno.ENOMEM
    if stack_expands_under_write_lock(mm):
        vma_start_write(vma)
    anon_vma = vma.anon_vma
    anon_vma_lock_write(anon_vma)
    if address < vma.vm_start:
        grow = (vma.vm_start - address) >> 12
        mm.page_table_lock.lock()
        if vma.vm_flags & VM_LOCKED:
            mm.locked_vm += grow
        for avc in vma.anon_vma_chain:          # anon_vma_interval_tree_pre_update_vma
            avc.anon_vma.rb_root.remove(avc)
        vma.vm_start = address
        vma.vm_pgoff -= grow
        for avc in vma.anon_vma_chain:          # ... _post_update_vma
            s, last = avc.interval()
            avc.anon_vma.rb_root.insert(avc, s, last)
        mm.mm_mt.update_locked(vma)
        mm.page_table_lock.unlock()
    anon_vma_unlock_write(anon_vma)
    point("expand_downwards")
    return 0


def expand_stack_for_fault(mm, address):
    """The fault path's stack growth (arch/x86/mm/fault.c before 6.5;
    lock_mm_and_find_vma since): ``address`` is in no VMA; if the VMA above
    it grows down, grow it and return it, else return None (SIGSEGV).
    Before 6.5 the stack grows under the read lock the fault holds; since
    8d7071af8907 the fault drops the read lock, takes the write lock, looks
    again, grows the stack and downgrades.
    Context: mmap_lock held for read; held for read again on return."""
    vma = mm.mm_mt.find_vma(address)
    if vma is None or not vma.vm_flags & VM_GROWSDOWN:
        return None
    if stack_expands_under_write_lock(mm):
        mmap_read_unlock(mm)
        mmap_write_lock(mm)
        vma = mm.mm_mt.find_vma(address)
        if vma is not None and vma.vm_start > address:
            if not vma.vm_flags & VM_GROWSDOWN or expand_downwards(vma, address):
                vma = None
        mmap_write_downgrade(mm)
        return vma
    return vma if expand_downwards(vma, address) == 0 else None


# -- brk ------------------------------------------------------------------------------

def do_brk_flags(mm, addr, length, flags):
    """Extend the brk VMA or create one.  Returns the VMA covering the new
    range, or None when a new VMA cannot be allocated.  Context: mmap_lock
    held for write."""
    flags |= VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | mm.def_flags
    if mm.map_count > mm.kernel.max_map_count:
        return None                              # vm.max_map_count
    _, prev = mm.mm_mt.find_vma_prev(addr)
    if prev is not None and prev.vm_end == addr and prev.vm_file is None and \
            prev.vm_flags == flags and prev.vm_private_data is None:
        vma_set_range(prev, prev.vm_start, addr + length, prev.vm_pgoff)
        vma = prev
    else:
        if should_fail(mm.kernel, "slab"):      # vm_area_alloc: brk fails, the break stays
            return None
        vma = vm_area_alloc(mm, addr, addr + length, flags, addr >> 12)
        vma_start_write(vma)
        mm.mm_mt.insert(vma)
    if flags & VM_LOCKED:
        mm.locked_vm += length >> 12
    point("do_brk_flags")
    return vma


def sys_brk(mm, brk):
    """brk(2): returns the new break, or the old one on failure (as Linux does).
    Context: takes mmap_lock for write; shrinking may downgrade it (as munmap)."""
    mmap_write_lock_killable(mm)
    origbrk = mm.brk
    if brk < mm.start_brk or brk > TASK_SIZE:
        mmap_write_unlock(mm)
        return origbrk
    newbrk = page_align(brk)
    oldbrk = page_align(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        mmap_write_unlock(mm)
        return brk
    if brk <= mm.brk:
        # Shrinking unmaps as munmap does (do_vmi_align_munmap(..., unlock =
        # true); 85a06835f6f1, 4.20): detach under the write lock, then the
        # zap under a downgraded one, as ``munmap-downgrade`` says.  mm->brk
        # needs the write lock: set it first.
        mm.brk = brk
        if do_vmi_munmap(mm, newbrk, oldbrk - newbrk, unlock=True):   # e.g. a hugetlb mapping
            mm.brk = origbrk                                          # over the heap
            mmap_write_unlock(mm)
            return origbrk
        return brk
    nxt = mm.mm_mt.find_vma(oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > nxt.vm_start:
        mmap_write_unlock(mm)
        return origbrk
    vma = do_brk_flags(mm, oldbrk, newbrk - oldbrk, 0) if \
        mlock_future_ok(mm, mm.def_flags, newbrk - oldbrk) else None     # RLIMIT_MEMLOCK
    if vma is None:
        mmap_write_unlock(mm)
        return origbrk
    mm.brk = brk
    if mm.def_flags & VM_LOCKED:
        mm_populate_after_write(mm, vma, oldbrk, newbrk)
    else:
        mmap_write_unlock(mm)
    return brk


# -- exit ---------------------------------------------------------------------------------

def exit_mmap(mm):
    """Tear the address space down, then check the rss counters (check_mm).

    First, as exit_mmap did before 5.18, munlock every VM_LOCKED VMA with NO
    mmap_lock held (nothing else uses a dying mm; the VMA list is read under
    RCU): munlock_vma_pages_all clears VM_LOCKED and munlocks the pages in two
    phases.  That is what reclaim's mlock (rmap-mlock, SCENARIOS.md section E)
    races with.

    Then as mainline (since 6.1): the pages are zapped under mmap_lock held
    for read, and the page tables and VMAs are freed under the write lock
    (taken after the zap, so that an OOM reaper -- or any rmap walker holding
    the read side -- is never waited for during the long part)."""
    if mm.locked_vm:
        with rcu_read():
            vmas = mm.mm_mt.all()
        for v in vmas:
            if v.vm_flags & VM_LOCKED:
                munlock_vma_pages_all(v)
    mmap_read_lock(mm)
    vmas = mm.mm_mt.all()
    unmap_vmas(vmas, 0, TASK_SIZE)
    mmap_read_unlock(mm)
    point("exit_mmap_unmapped")
    mmap_write_lock(mm)
    vmas = mm.mm_mt.all()
    for v in vmas:
        vma_start_write(v)              # free_pgtables(..., mm_wr_locked=true)
        mm.mm_mt.erase(v)
    tlb = tlb_gather_mmu_fullmm(mm)
    free_pgtables(mm, vmas, 0, USER_PGTABLES_CEILING, tlb)
    tlb_finish_mmu(tlb)
    for v in vmas:
        remove_vma(v)
    mm.locked_vm = 0
    mm.dead = True
    mmap_write_unlock(mm)
    check_mm(mm)


def _hashed_ptr(mm):
    """How the kernel's %p prints the mm: a hashed value, not the address.
    pymm hashes the owner's pid (not id(mm), which differs from run to run),
    so a replayed finding prints the same report."""
    return f"{zlib.crc32(b'mm:%d' % mm.owner_pid):016x}"


def check_mm(mm):
    for i, name in enumerate(RSS_NAMES):
        val = mm.get_mm_counter(i)
        if val:
            report("rss-counter", "BUG: Bad rss-counter state",
                   f"BUG: Bad rss-counter state mm:{_hashed_ptr(mm)} type:{name} val:{val} "
                   f"Comm:pid{mm.owner_pid}",
                   kernel=mm.kernel)
    pt = mm.pgtables_bytes.sum()
    if pt:
        report("rss-counter", "BUG: non-zero pgtables_bytes on freeing mm",
               f"BUG: non-zero pgtables_bytes on freeing mm: {pt}", kernel=mm.kernel)


internal.define(__name__, globals())   # callers across a cycle use these through internal

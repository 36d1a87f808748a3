"""mremap(2): resize a mapping, or move it with its pages (mm/mremap.c;
copy_vma from mm/vma.c).  Follows mainline (6.16's ``vma_remap_struct``
layout: check_mremap_params, mremap_at / mremap_to, shrink_vma, expand_vma,
move_vma, copy_vma_and_data, move_page_tables, move_ptes).

Locking, as mainline:

- mmap_lock for write for the whole call, except that a shrink in place
  unmaps the tail with ``do_vmi_munmap(..., unlock=true)``: the VMAs are
  detached under the write lock, which is then downgraded for the zap (the
  ``munmap-downgrade`` variant decides, as for munmap(2)) and released.
- ``vma_start_write`` on the source VMA before its pages move (move_vma: "we
  don't want racing faults"), on the new VMA before it is linked (vma_link),
  and on every VMA a split, merge or unmap changes.
- move_ptes takes the old PTE table's lock, then the new one's nested
  (SINGLE_DEPTH_NESTING: the exclusive mmap_lock orders them), does a pending
  batched flush of reclaim first (flush_tlb_batched_pending), moves each
  entry (present, swap or migration entry: the page stays in the same mm, so
  no rmap or rss change), and -- if a present PTE moved -- flushes the old
  range's TLB entries *before* dropping the PTE locks (eb66ae030829, 4.19,
  CVE-2018-18281: with the flush after the unlock, a truncation could free
  the page through the new PTE while another CPU still read or wrote it
  through its old TLB entry).
- ``take_rmap_locks`` (i_mmap_rwsem and the anon_vma lock, both for write)
  around move_ptes only when ``need_rmap_locks``: copy_vma sets it when the
  destination VMA is an existing one (a merge) whose vm_pgoff is not above
  the source's, so an rmap walk could visit the destination *before* the
  source and miss the PTE in both places.  A new VMA is linked after the
  source in the interval trees (its key is not lower, and pymm's trees put
  the later insertion after an equal key, as the kernel's rbtree does), so a
  walk that missed the PTE at the source finds it at the destination
  (38a76013ad80, "mm: avoid taking rmap locks in move_ptes()", 3.7).

Variant key ``mremap-tlb-flush`` (no stress scenario: LTP mremap06's program
in tests/mm2/test_mremap.py, found by a preemption-bounded search): ``deferred-flush``
is 5d1904204c99 .. 4.18 (a dirty PTE flushed under the old PTE lock after
the new one is dropped, a clean one at the end of move_page_tables);
``flush-under-ptl`` is eb66ae030829 and mainline.

pymm's simplifications (also in the README):

- PTEs move one by one: no move_normal_pmd/move_normal_pud (the PMD- and
  PUD-level fast paths that move whole page tables) and no realignment of
  the range to a PMD boundary.
- hugetlb: a hugetlb mapping may be shrunk (its lengths rounded to 2 MiB, as
  mainline's align_hugetlb) or "resized" to its own size, but not moved:
  pymm has no move_hugetlb_page_tables, so MREMAP_MAYMOVE/MREMAP_FIXED/
  MREMAP_DONTUNMAP of a hugetlb mapping fails with EINVAL (mainline moves
  it).  Growing one is EINVAL in mainline too.
- Bad input changes nothing: mainline's mremap_to unmaps the destination
  (MREMAP_FIXED) and shrinks the source before it validates the resize
  (resize_is_valid: EFAULT, EINVAL, EAGAIN); pymm validates first.
- No VM_ACCOUNT/overcommit accounting, no RLIMIT_AS (may_expand_vm),
  no mseal (EPERM), no userfaultfd, no soft-dirty bit.
- MREMAP_DONTUNMAP of a VM_LOCKED mapping: mainline clears VM_LOCKED on the
  old VMA without lowering locked_vm (and without munlocking the pages left
  there); pymm munlocks the old VMA as munlock(2) would (mlock_fixup), so
  that locked_vm keeps matching the VM_LOCKED VMAs (its own check).
"""
import errno

from ..constants import MMAP_MIN_ADDR, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, TASK_SIZE
from ..debug.fault_inject import should_fail
from ..debug.report import report
from ..locking import SINGLE_DEPTH_NESTING
from ..sched import point
from .mm_types import (VM_DONTEXPAND, VM_HUGETLB, VM_LOCKED, VM_LOCKED_MASK, VM_MAYSHARE,
                       VM_PFNMAP, VM_SHARED, Folio)
from .mmap import (do_vmi_munmap, get_unmapped_area, munmap_splits_ok, page_align, vma_set_range,
                   vma_try_merge, vmas_may_split)
from .gup import mm_populate
from .mlock import mlock_fixup, mlock_future_ok
from .mmap_lock import mmap_assert_write_locked, mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from .pgtable import _PAGE_DIRTY, PMD_SIZE, pte_alloc, pte_index, pte_offset
from .rmap import (anon_vma_clone, anon_vma_lock_write, anon_vma_unlock_write, flush_tlb_batched_pending,
                   i_mmap_lock_write, i_mmap_unlock_write, unlink_anon_vmas, vma_link_file)
from .tlb import flush_tlb_range
from .vma import vm_area_dup

PAGE_SIZE = 4096
HPAGE_SIZE = 2 << 20

MREMAP_NO_RESIZE, MREMAP_SHRINK, MREMAP_EXPAND = range(3)     # enum mremap_operation
MREMAP_VALID_FLAGS = MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP


class VmaRemap:
    """``struct vma_remap_struct``: the operation, threaded through it."""

    __slots__ = ("mm", "addr", "old_len", "new_len", "flags", "new_addr", "vma", "delta",
                 "locked", "remap_type", "mmap_locked")

    def __init__(self, mm, addr, old_len, new_len, flags, new_addr):
        self.mm = mm
        self.addr = addr
        self.old_len = old_len
        self.new_len = new_len
        self.flags = flags
        self.new_addr = new_addr
        self.vma = None
        self.delta = 0
        self.locked = False          # the VMA is VM_LOCKED: populate what grew
        self.remap_type = MREMAP_NO_RESIZE
        self.mmap_locked = False

    def set_delta(self):
        self.delta = abs(self.old_len - self.new_len)

    def set_remap_type(self):
        if self.delta == 0:
            self.remap_type = MREMAP_NO_RESIZE
        elif self.old_len > self.new_len:
            self.remap_type = MREMAP_SHRINK
        else:
            self.remap_type = MREMAP_EXPAND

    def implies_new_addr(self):
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))

    def overlaps(self):
        return self.addr + self.old_len > self.new_addr and self.new_addr + self.new_len > self.addr


# -- moving page-table entries ------------------------------------------------------

def take_rmap_locks(vma):
    if vma.vm_file is not None:
        i_mmap_lock_write(vma.vm_file.mapping)
    if vma.anon_vma is not None:
        anon_vma_lock_write(vma.anon_vma)


def drop_rmap_locks(vma):
    if vma.anon_vma is not None:
        anon_vma_unlock_write(vma.anon_vma)
    if vma.vm_file is not None:
        i_mmap_unlock_write(vma.vm_file.mapping)


def move_ptes(vma, old_pt, old_addr, old_end, new_vma, new_pt, new_addr, need_rmap_locks):
    """Move the entries of [old_addr, old_end) -- one PTE table's worth --
    to new_addr.  Context: mmap_lock held for write; takes the rmap locks
    (need_rmap_locks), the old ptl and the new ptl nested."""
    mm = vma.vm_mm
    length = old_end - old_addr
    if need_rmap_locks:
        take_rmap_locks(vma)
    old_pt.ptl.lock()
    if new_pt is not old_pt:
        new_pt.ptl.lock_nested(SINGLE_DEPTH_NESTING)
    flush_tlb_batched_pending(mm)
    deferred = mm.kernel.variant("mremap-tlb-flush") == "deferred-flush"
    force_flush = need_flush = False
    i, j = pte_index(old_addr), pte_index(new_addr)
    for _ in range(length >> 12):
        entry = old_pt.ptes[i]
        if entry is not None:
            bits = old_pt.bits[i]
            old_pt.ptes[i] = None                   # ptep_get_and_clear
            old_pt.bits[i] = 0
            old_pt.nr -= 1
            if isinstance(entry, Folio):            # pte_present (the zero page and PROT_NONE too)
                if not deferred or bits & _PAGE_DIRTY:
                    force_flush = True
                else:
                    need_flush = True               # deferred-flush: a clean PTE, flushed later
            if new_pt.ptes[j] is not None:          # free_pgtables/munmap left the destination empty
                report("assertion", "BUG: mremap: destination PTE not none",
                       f"move_ptes: the PTE at {new_pt.addr + (j << 12):#x} maps {new_pt.ptes[j]!r}",
                       kernel=mm.kernel, data={"pymm_only": True})
            else:
                new_pt.nr += 1
            new_pt.ptes[j] = entry                  # set_pte_at
            new_pt.bits[j] = bits
        i += 1
        j += 1
    point("move_ptes")
    if deferred:
        # 5d1904204c99 .. 4.18: the new PTE lock goes first, a dirty PTE's
        # flush is done under the old one, a clean one's is left to the end
        # of move_page_tables: truncation can zap the new PTE and free the
        # page while another CPU still reads it through the old address.
        if new_pt is not old_pt:
            new_pt.ptl.unlock()
        if force_flush:
            flush_tlb_range(vma, old_end - length, old_end)
        old_pt.ptl.unlock()
    else:
        # eb66ae030829: flush the old translations before the PTE locks go.
        # Until then nobody can unmap (and free) the page through its new
        # PTE -- the new ptl serialises that -- while a CPU still reaches it
        # through the old address.
        if force_flush:
            flush_tlb_range(vma, old_end - length, old_end)
        if new_pt is not old_pt:
            new_pt.ptl.unlock()
        old_pt.ptl.unlock()
    if need_rmap_locks:
        drop_rmap_locks(vma)
    return need_flush


def move_page_tables(vma, old_addr, new_vma, new_addr, length, need_rmap_locks):
    """Move the page-table entries of [old_addr, old_addr + length) in
    ``vma`` to new_addr in ``new_vma``, one PMD extent at a time.  Returns
    how many bytes were done (short when a page table could not be
    allocated).  Context: mmap_lock held for write."""
    mm = vma.vm_mm
    mmap_assert_write_locked(mm)
    if not length:
        return 0
    old_end = old_addr + length
    start = old_addr
    need_flush = False
    while old_addr < old_end:
        extent = min((old_addr & ~(PMD_SIZE - 1)) + PMD_SIZE, old_end) - old_addr
        extent = min(extent, (new_addr & ~(PMD_SIZE - 1)) + PMD_SIZE - new_addr)
        old_pt = pte_offset(mm, old_addr)
        if old_pt is not None:
            new_pt = pte_alloc(mm, new_addr)
            if new_pt is None:
                break                       # ENOMEM: the caller moves back what was done
            if move_ptes(vma, old_pt, old_addr, old_addr + extent, new_vma, new_pt, new_addr,
                         need_rmap_locks):
                need_flush = True
        old_addr += extent
        new_addr += extent
    if need_flush:                          # deferred-flush (before eb66ae030829)
        flush_tlb_range(vma, start, old_addr)
    return old_addr - start


# -- the new VMA ---------------------------------------------------------------------

def copy_vma(vma, addr, length, pgoff):
    """Make the VMA the pages of ``vma`` will move to: [addr, addr + length)
    at ``pgoff``, merged with a neighbour where possible (mm/vma.c copy_vma).
    Returns (vma, new_vma, need_rmap_locks) -- ``vma`` is the source again,
    or the merged VMA if the source was merged into the new one (possible
    only for an anonymous VMA with no anon_vma yet, whose pgoff is reset to
    the new address so that it may merge) -- or None (ENOMEM).
    Context: mmap_lock held for write."""
    mm = vma.vm_mm
    vma_start = vma.vm_start
    if vma.vm_file is None and vma.anon_vma is None:
        pgoff = addr >> 12
    if mm.mm_mt.find_vma_intersection(addr, addr + length) is not None:
        return None                     # "should never get here"
    if should_fail(mm.kernel, "slab"):  # vm_area_dup
        return None
    new = vm_area_dup(vma)              # (takes the file and the policy references)
    new.vm_start, new.vm_end, new.vm_pgoff = addr, addr + length, pgoff
    anon_vma_clone(new, vma)
    vma_start_write(new)                # vma_link
    mm.mm_mt.insert(new)
    vma_link_file(new)
    point("copy_vma")
    # pymm links the new VMA, then merges it (vma_try_merge); mainline
    # merges the range first (vma_merge_new_range) and links a new VMA only
    # when that fails.  Same result.
    merged = vma_try_merge(new)
    if merged is new and merged.vm_start == addr and merged.vm_end == addr + length:
        return vma, new, False
    if merged.vm_start <= vma_start < merged.vm_end:
        vma = merged                    # the source merged with its own copy
    return vma, merged, merged.vm_pgoff <= vma.vm_pgoff


# -- the steps of do_mremap ------------------------------------------------------------

def resize_is_valid(vrm, old_len=None):
    """0, or the errno of a resize the VMA does not allow.  ``old_len``:
    the length the check is for (default vrm.old_len)."""
    vma, mm = vrm.vma, vrm.mm
    old_len = vrm.old_len if old_len is None else old_len
    new_len = vrm.new_len
    if not old_len and not vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        return -errno.EINVAL            # "duplicating" a private mapping
    if vrm.flags & MREMAP_DONTUNMAP and vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -errno.EINVAL
    if old_len > vma.vm_end - vrm.addr:
        return -errno.EFAULT            # across VMA boundaries
    if new_len == old_len:
        return 0
    if vma.vm_flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -errno.EFAULT
    if not mlock_future_ok(mm, vma.vm_flags, new_len - old_len):
        return -errno.EAGAIN            # RLIMIT_MEMLOCK
    return 0


def vrm_set_new_addr(vrm):
    """Find where to move to: MREMAP_FIXED's address, or a free range
    (MREMAP_DONTUNMAP's new_addr is a hint)."""
    hint = vrm.new_addr if vrm.implies_new_addr() else 0
    res = get_unmapped_area(vrm.mm, hint, vrm.new_len, bool(vrm.flags & MREMAP_FIXED))
    if res < 0:
        return res
    vrm.new_addr = res
    return 0


def vrm_stat_account(vrm, nbytes):
    if vrm.vma.vm_flags & VM_LOCKED:
        vrm.mm.locked_vm += nbytes >> 12
        vrm.locked = True


def shrink_vma(vrm, drop_lock):
    """Unmap the tail [addr + new_len, addr + old_len).  With ``drop_lock``
    (a shrink in place) mmap_lock is downgraded and released as munmap(2)
    does (do_vmi_munmap with unlock)."""
    res = do_vmi_munmap(vrm.mm, vrm.addr + vrm.new_len, vrm.delta, unlock=drop_lock)
    vrm.vma = None
    if res:
        return res                      # still held for write
    if drop_lock:
        vrm.mmap_locked = False
    else:
        vrm.vma = vrm.mm.mm_mt.vma_lookup(vrm.addr)
    return 0


def unmap_source_vma(vrm):
    """The copy becomes a move: unmap the source range (with the write lock
    kept: do_vmi_munmap without unlock)."""
    do_vmi_munmap(vrm.mm, vrm.addr, vrm.old_len)
    vrm.vma = None


def dontunmap_complete(vrm, new_vma):
    """MREMAP_DONTUNMAP: the old VMA stays, empty; it is no longer locked,
    and if it was moved whole it leaves its anon_vmas (a later fault there
    gets a fresh one: unlink_anon_vmas clears vma->anon_vma in mainline)."""
    vma = vrm.vma
    if new_vma is not vma and vrm.addr == vma.vm_start and vrm.addr + vrm.old_len == vma.vm_end:
        vma_start_write(vma)
        unlink_anon_vmas(vma)
        vma.anon_vma = None
    if vma.vm_flags & VM_LOCKED_MASK:
        mlock_fixup(vma, vma.vm_start, vma.vm_end, vma.vm_flags & ~VM_LOCKED_MASK)


def move_vma(vrm):
    """Copy the VMA to vrm.new_addr, move the pages, unmap the source.
    Returns the new address or -errno."""
    mm = vrm.mm
    if mm.map_count >= mm.kernel.max_map_count - 3:
        return -errno.ENOMEM            # prep_move_vma: do_munmap may split one VMA into three
    vma = vrm.vma
    vma_start_write(vma)                # no racing (per-VMA-lock) faults
    new_pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> 12)
    r = copy_vma(vma, vrm.new_addr, vrm.new_len, new_pgoff)
    if r is None:
        return -errno.ENOMEM
    vma, new_vma, need_rmap_locks = r
    vrm.vma = vma
    moved = move_page_tables(vma, vrm.addr, new_vma, vrm.new_addr, vrm.old_len, need_rmap_locks)
    err = 0
    if moved < vrm.old_len:
        # Move back what was moved (the old page tables are still there),
        # then unmap the new VMA instead of the old.
        err = -errno.ENOMEM
        move_page_tables(new_vma, vrm.new_addr, vma, vrm.addr, moved, True)
        vrm.vma = new_vma
        vrm.old_len = vrm.new_len
        vrm.addr = vrm.new_addr
    else:
        mm.user_shadow_move(vrm.addr, vrm.new_addr, vrm.old_len)
    vrm_stat_account(vrm, vrm.new_len)
    if not err and vrm.flags & MREMAP_DONTUNMAP:
        dontunmap_complete(vrm, new_vma)
    else:
        unmap_source_vma(vrm)
    return err or vrm.new_addr


def mremap_to(vrm):
    """Move to a given address (MREMAP_FIXED) or keep the old mapping
    (MREMAP_DONTUNMAP)."""
    mm = vrm.mm
    if vrm.new_len > TASK_SIZE or vrm.new_addr > TASK_SIZE - vrm.new_len:
        return -errno.EINVAL
    if vrm.overlaps():
        return -errno.EINVAL
    # pymm: everything that can refuse the call is checked before the
    # destination is unmapped or the source shrunk (see the module doc).
    if vrm.flags & MREMAP_FIXED and vrm.new_addr < MMAP_MIN_ADDR:
        return -errno.EPERM             # get_unmapped_area's security_mmap_addr
    err = resize_is_valid(vrm, min(vrm.old_len, vrm.new_len))
    if err:
        return err
    if vrm.flags & MREMAP_FIXED:
        err = vmas_may_split(mm, vrm.new_addr, vrm.new_addr + vrm.new_len)
        if err:
            return err
    if vrm.remap_type == MREMAP_SHRINK:
        err = vmas_may_split(mm, vrm.addr + vrm.new_len, vrm.addr + vrm.old_len)
        if err:
            return err
    if vrm.flags & MREMAP_FIXED:
        err = do_vmi_munmap(mm, vrm.new_addr, vrm.new_len)
        if err:
            return err
        vrm.vma = mm.mm_mt.vma_lookup(vrm.addr)     # the unmap may have split it
    if vrm.remap_type == MREMAP_SHRINK:
        err = shrink_vma(vrm, False)
        if err:
            return err
        vrm.old_len = vrm.new_len
    err = resize_is_valid(vrm)
    if err:
        return err
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return move_vma(vrm)


def vma_expandable(vma, delta):
    end = vma.vm_end + delta
    if vma.vm_mm.mm_mt.find_vma_intersection(vma.vm_end, end) is not None:
        return False
    return end <= TASK_SIZE             # get_unmapped_area(MAP_FIXED) of [vm_start, end)


def expand_vma_in_place(vrm):
    """Grow the VMA over the free range above it (vma_merge_extend): under
    the rmap locks and the VMA write lock (vma_set_range), then merged with
    the next VMA if they now touch and match."""
    vma = vrm.vma
    vma_set_range(vma, vma.vm_start, vma.vm_end + vrm.delta, vma.vm_pgoff)
    vrm.vma = vma_try_merge(vma)
    vrm_stat_account(vrm, vrm.delta)
    return 0


def expand_vma(vrm):
    err = resize_is_valid(vrm)
    if err:
        return err
    if vrm.vma.vm_end - vrm.addr == vrm.old_len and vma_expandable(vrm.vma, vrm.delta):
        expand_vma_in_place(vrm)
        if vrm.locked:
            vrm.new_addr = vrm.addr     # populate [addr + old_len, addr + new_len)
        return vrm.addr
    if not vrm.flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM            # cannot grow in place
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return move_vma(vrm)


def mremap_at(vrm):
    if vrm.remap_type == MREMAP_NO_RESIZE:
        return vrm.addr
    if vrm.remap_type == MREMAP_SHRINK:
        if not munmap_splits_ok(vrm.mm, vrm.addr + vrm.new_len, vrm.addr + vrm.old_len):
            return -errno.ENOMEM        # munmap's vm.max_map_count check (vms_gather_munmap_vmas)
        res = shrink_vma(vrm, True)
        return res or vrm.addr
    return expand_vma(vrm)


def check_mremap_params(vrm):
    flags = vrm.flags
    if flags & ~MREMAP_VALID_FLAGS:
        return -errno.EINVAL
    if vrm.addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not page_align(vrm.new_len):
        return -errno.EINVAL            # a zero new length (a zero old length is allowed)
    if not vrm.implies_new_addr():
        return 0
    if vrm.new_addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not flags & MREMAP_MAYMOVE:
        return -errno.EINVAL            # a fixed address implies a move
    if flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        return -errno.EINVAL
    if vrm.mm.map_count + 2 >= vrm.mm.kernel.max_map_count - 3:
        return -errno.ENOMEM            # both VMAs may be split in three
    return 0


def align_hugetlb(vrm):
    """Round the lengths to the huge page size; False (EINVAL) for unaligned
    addresses or growth.  pymm also refuses moves (see the module doc)."""
    vrm.old_len = (vrm.old_len + HPAGE_SIZE - 1) & ~(HPAGE_SIZE - 1)
    vrm.new_len = (vrm.new_len + HPAGE_SIZE - 1) & ~(HPAGE_SIZE - 1)
    if vrm.addr & (HPAGE_SIZE - 1) or vrm.new_addr & (HPAGE_SIZE - 1):
        return False
    if vrm.new_len > vrm.old_len:
        return False
    if vrm.implies_new_addr():
        return False                    # pymm: no move_hugetlb_page_tables
    vrm.set_delta()
    return True


def do_mremap(mm, addr, old_len, new_len, flags, new_addr):
    """mremap(2) after the type checks.  Returns the (new) address or -errno.
    Context: takes mmap_lock for write; not held on return."""
    vrm = VmaRemap(mm, addr, old_len, new_len, flags, new_addr)
    ret = check_mremap_params(vrm)
    if ret:
        return ret
    vrm.old_len = page_align(vrm.old_len)
    vrm.new_len = page_align(vrm.new_len)
    vrm.set_delta()
    mmap_write_lock_killable(mm)
    vrm.mmap_locked = True
    try:
        vma = vrm.vma = mm.mm_mt.vma_lookup(vrm.addr)
        if vma is None:
            ret = -errno.EFAULT
        elif vma.vm_flags & VM_HUGETLB and not align_hugetlb(vrm):
            ret = -errno.EINVAL
        else:
            vrm.set_remap_type()
            ret = mremap_to(vrm) if vrm.implies_new_addr() else mremap_at(vrm)
    finally:
        if vrm.mmap_locked:
            mmap_write_unlock(mm)
            vrm.mmap_locked = False
    if ret >= 0 and vrm.locked and vrm.new_len > vrm.old_len:
        mm_populate(mm, vrm.new_addr + vrm.old_len, vrm.delta)      # mlock: the grown part
    return ret

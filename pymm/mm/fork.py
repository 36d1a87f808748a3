"""fork's address-space copy (kernel/fork.c dup_mmap)."""
import errno

from ..debug.fault_inject import should_fail
from ..locking import SINGLE_DEPTH_NESTING
from .hugetlb import hugetlb_vm_op_open
from .memory import copy_page_range
from .mm_types import VM_DONTCOPY, VM_HUGETLB, VM_LOCKED_MASK, VM_WIPEONFORK, MmStruct
from .mmap_lock import mmap_write_lock, mmap_write_lock_nested, mmap_write_unlock, vma_start_write
from .rmap import anon_vma_fork, vma_link_file
from .mmap import exit_mmap
from .tlb import flush_tlb_mm
from .vma import vm_area_dup, vm_area_free


def dup_mm(kernel, oldmm, child_pid):
    """Copy ``oldmm`` for a child: returns the new mm, or -ENOMEM when an
    allocation failed (the partial copy already torn down).
    Context: takes the parent's mmap_lock for write, then the child's nested."""
    mm = MmStruct(kernel, child_pid)
    mmap_write_lock(oldmm)
    mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING)
    mm.start_brk, mm.brk, mm.mmap_base = oldmm.start_brk, oldmm.brk, oldmm.mmap_base
    mm.def_flags = oldmm.def_flags & ~VM_LOCKED_MASK   # mlockall(MCL_FUTURE) is not inherited
    retval = 0
    copied = []                  # the ranges whose shadow the child inherits
    for mpnt in oldmm.mm_mt.all():
        # fb49c455323f (6.5-rc1, 6.4.3): no page fault under mpnt's per-VMA
        # lock until fork is done.  copy_page_range write-protects the
        # parent's PTEs, but the parent's TLBs are flushed only at the end
        # (flush_tlb_mm below): until then another CPU of the parent may still
        # write through its old writable TLB entry.  Under mmap_lock no fault
        # of the parent could run meanwhile; a fault under the per-VMA lock
        # (6.4) could, and its do_wp_page copied the page away from the child
        # while such a CPU kept writing the old one: the parent's write lands
        # in the child's page and is lost to the parent (bugzilla 217624, Go
        # runtime crashes).  The write lock lasts until mmap_write_unlock, after
        # the flush.  (fb49c455323f locked every VMA before the loop; today's
        # dup_mmap locks each as it reaches it, as here: the same for the
        # race, since no lock is released before the flush.)  Variant
        # ``fork-vma-lock``: ``unlocked`` is 6.4.0-6.4.2.
        if kernel.variant("fork-vma-lock") == "vma-start-write":
            vma_start_write(mpnt)
        if mpnt.vm_flags & VM_DONTCOPY:
            # not in the child, and neither is what the parent stored there
            # (the shadow is copied per VMA below; a copy of it over a
            # DONTFORK range once gave a false "data corruption": the fuzzer)
            continue
        if should_fail(kernel, "slab"):                 # vm_area_dup: fail_nomem
            retval = -errno.ENOMEM
            break
        tmp = vm_area_dup(mpnt, mm)
        wipe = bool(tmp.vm_flags & VM_WIPEONFORK)
        if not wipe:
            copied.append((mpnt.vm_start, mpnt.vm_end))
        if wipe:
            # MADV_WIPEONFORK: the child starts with fresh zero-filled memory
            # there (no anon_vma, no pages copied; the flag is inherited)
            tmp.anon_vma = None
            mm.user_shadow_drop(tmp.vm_start, tmp.vm_end)
        elif anon_vma_fork(tmp, mpnt):                   # fail_nomem_anon_vma_fork
            vm_area_free(tmp)
            retval = -errno.ENOMEM
            break
        tmp.vm_flags &= ~VM_LOCKED_MASK                  # nor are memory locks
        if tmp.vm_flags & VM_HUGETLB:                    # hugetlb_dup_vma_private + vm_ops->open
            hugetlb_vm_op_open(tmp, None)
        mm.mm_mt.insert(tmp)
        vma_link_file(tmp)
        retval = copy_page_range(tmp, mpnt) if not wipe else 0
        if retval:
            break
    mmap_write_unlock(mm)
    flush_tlb_mm(oldmm)          # the parent's CPUs may cache now write-protected PTEs
    # The checker's shadow is copied once no CPU can write the shared pages
    # any more: a store that got in before the flush is in the child's copy.
    # Only the copied VMAs' pages (not VM_DONTCOPY ones).
    with oldmm.shadow_lock:
        mm.user_shadow = {a: (bytearray(b) if type(b) is bytearray else b)
                          for a, b in oldmm.user_shadow.items()
                          if any(s <= a < e for s, e in copied)}
    mmap_write_unlock(oldmm)
    if retval:
        # dup_mmap's error path: the half-built mm is torn down like any
        # other (mmput -> exit_mmap) and fork fails with ENOMEM.
        exit_mmap(mm)
        return retval
    return mm

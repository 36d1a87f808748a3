"""msync(2) (mm/msync.c).

pymm's files live in memory (tmpfs, hugetlbfs): there is nothing to write
back, so MS_SYNC's vfs_fsync_range is a no-op, as it is for tmpfs.  What
msync checks and reports is the kernel's: the flags, the alignment, holes in
the range (ENOMEM, after the mapped parts were synced), and MS_INVALIDATE of
locked memory (EBUSY)."""
import errno

from ..constants import MS_ASYNC, MS_INVALIDATE, MS_SYNC, PAGE_SIZE
from .mm_types import VM_LOCKED, VM_SHARED
from .mmap_lock import mmap_read_lock, mmap_read_unlock


def sys_msync(mm, start, length, flags):
    """Returns 0 or -errno.  Context: takes mmap_lock for read (dropped around
    each file's fsync, as the kernel does)."""
    if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC):
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if flags & MS_ASYNC and flags & MS_SYNC:
        return -errno.EINVAL
    if length < 0:
        return -errno.ENOMEM            # end < start
    end = start + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    if end == start:
        return 0
    unmapped_error = 0
    mmap_read_lock(mm)
    vma = mm.mm_mt.find_vma(start)
    while True:
        if vma is None:
            mmap_read_unlock(mm)
            return -errno.ENOMEM
        if start < vma.vm_start:        # a hole before this VMA
            if flags == MS_ASYNC:
                mmap_read_unlock(mm)
                return -errno.ENOMEM
            start = vma.vm_start
            if start >= end:
                mmap_read_unlock(mm)
                return -errno.ENOMEM
            unmapped_error = -errno.ENOMEM
        if flags & MS_INVALIDATE and vma.vm_flags & VM_LOCKED:
            mmap_read_unlock(mm)
            return -errno.EBUSY
        file = vma.vm_file
        start = vma.vm_end
        if flags & MS_SYNC and file is not None and vma.vm_flags & VM_SHARED:
            file.get_file()
            mmap_read_unlock(mm)
            # vfs_fsync_range(file, ...): tmpfs and hugetlbfs have nothing to write
            file.fput()
            if start >= end:
                return unmapped_error
            mmap_read_lock(mm)
            vma = mm.mm_mt.find_vma(start)
        else:
            if start >= end:
                mmap_read_unlock(mm)
                return unmapped_error
            vma = mm.mm_mt.find_vma(vma.vm_end)

"""tmpfs (mm/shmem.c): files whose pages live only in the page cache."""
import errno

from ..constants import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from ..context import task_work_add
from ..mm import filemap
from ..mm.filemap import __folio_set_locked as folio_set_locked_new   # (no mangling in methods)
from ..mm.filemap import filemap_add_folio, filemap_get_folio, folio_lock, folio_trylock, folio_unlock
from ..mm.memory import (FAULT_FLAG_ALLOW_RETRY, FAULT_FLAG_RETRY_NOWAIT, VM_FAULT_LOCKED,
                         VM_FAULT_NOPAGE, VM_FAULT_RETRY, release_fault_lock, vm_fault_oom,
                         vm_fault_sigbus)
from ..mm import internal
from ..mm.atomic import atomic_add_return
from ..mm.mm_types import PG_swapbacked, PG_uptodate
from ..mm.page_alloc import folio_put
from ..mm.swap import folio_add_lru
from ..mm.truncate import ULONG_MAX, truncate_inode_pages_range, truncate_pagecache, unmap_mapping_range
from .inode import AddressSpace, Inode

MAX_LFS_FILESIZE = (1 << 63) - 1


def _beyond_eof(index, inode):
    """Why a fault at page ``index`` of ``inode`` is SIGBUS."""
    return (f"access beyond end of file (shmem_fault: page {index} of a file of "
            f"{inode.i_size} bytes)")


class File:
    """An open tmpfs (or, part 2, hugetlbfs) file: what ``fd=`` refers to."""

    def __init__(self, kernel, name, size, hugetlb=False):
        self.kernel = kernel
        self.name = name
        self.hugetlb = hugetlb
        self.inode = Inode(size)
        self.mapping = AddressSpace(self.inode, hugetlb)
        self.inode.i_mapping = self.mapping
        self.f_count = 0          # VMAs mapping it (atomic); named files also live in kernel.files
        self.unlinked = False     # shmem_zero_setup files die with their last mapping
        self.shared_policy = None if hugetlb else internal.SharedPolicy()  # mbind on its mappings

    @property
    def size(self):
        return self.inode.i_size

    def __repr__(self):
        return f"<File {self.name!r} size {self.inode.i_size}{' hugetlb' if self.hugetlb else ''}>"

    # -- references -------------------------------------------------------------
    def get_file(self):
        atomic_add_return(self, "f_count", 1)

    def fput(self):
        """Drop a VMA's reference.  The last reference to an unlinked file
        frees its pages, deferred to the return to user space as __fput is
        (the caller may hold mmap_lock, which orders after the inode lock)."""
        if atomic_add_return(self, "f_count", -1) == 0 and self.unlinked:
            task_work_add(self._evict)

    def _evict(self):
        """shmem_evict_inode: the file is gone, drop its page cache."""
        if self.f_count == 0:
            truncate_inode_pages_range(self.kernel, self.mapping, 0, ULONG_MAX)
            if self.shared_policy is not None:
                self.shared_policy.free()
            self.kernel.files.pop(self.name, None)

    # -- user API (system calls) -------------------------------------------------
    def ftruncate(self, size):
        if type(size) is not int or size < 0 or size > MAX_LFS_FILESIZE:
            raise OSError(errno.EINVAL, f"ftruncate: invalid size {size!r}")
        return self.kernel.run_syscall(self.shmem_setattr, size)

    def fallocate(self, mode, offset, length):
        if type(mode) is not int or type(offset) is not int or type(length) is not int:
            raise OSError(errno.EINVAL, "fallocate: mode, offset and length must be ints")
        if offset < 0 or length <= 0:
            raise OSError(errno.EINVAL, f"fallocate: invalid range offset={offset} len={length}")
        if offset + length > MAX_LFS_FILESIZE:
            raise OSError(errno.EFBIG, f"fallocate: offset+len {offset + length} beyond the maximum file size")
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
            raise OSError(errno.EOPNOTSUPP, f"fallocate: unsupported mode {mode:#x}")
        if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
            raise OSError(errno.EOPNOTSUPP, "fallocate: FALLOC_FL_PUNCH_HOLE needs FALLOC_FL_KEEP_SIZE")
        err = self.kernel.run_syscall(self.vfs_fallocate, mode, offset, length)
        if err:
            raise OSError(-err, f"fallocate: {errno.errorcode.get(-err, err)}")
        return 0

    # -- inside the kernel ----------------------------------------------------------
    def shmem_setattr(self, size):
        inode, k = self.inode, self.kernel
        inode.i_rwsem.down_write()
        try:
            old = inode.i_size
            inode.i_size = size
            if size <= old:     # also to the same size: pages fallocated beyond EOF go
                truncate_pagecache(k, inode, size)
        finally:
            inode.i_rwsem.up_write()
        return 0

    def vfs_fallocate(self, mode, offset, length):
        """Returns 0 or -errno.  Context: takes i_rwsem (write)."""
        inode, k, mapping = self.inode, self.kernel, self.mapping
        end = offset + length
        inode.i_rwsem.down_write()
        try:
            if mode & FALLOC_FL_PUNCH_HOLE:
                ustart = (offset + 4095) & ~4095
                uend = end & ~4095
                if uend > ustart:
                    unmap_mapping_range(mapping, ustart, uend - ustart, False)
                truncate_inode_pages_range(k, mapping, offset, end - 1)
                return 0
            added = []
            for index in range(offset >> 12, (end + 4095) >> 12):
                folio = filemap_get_folio(mapping, index)
                if folio is not None:
                    folio_put(folio, k)
                    continue
                folio = self._new_folio(index)
                if folio is None:          # ENOSPC: undo what this call added
                    truncate_pages(k, mapping, added)
                    return -errno.ENOSPC
                other = filemap_add_folio(k, mapping, folio, index)
                folio_unlock(folio)
                if other is not None:
                    folio_put(folio, k)
                    folio_put(other, k)
                    continue
                folio_add_lru(k, folio)
                folio_put(folio, k)
                added.append(index)
            if not mode & FALLOC_FL_KEEP_SIZE and end > inode.i_size:
                inode.i_size = end
            return 0
        finally:
            inode.i_rwsem.up_write()

    def _new_folio(self, index):
        folio = self.kernel.alloc_file_folio(self, index)
        if folio is not None:
            folio.flags |= PG_swapbacked | PG_uptodate   # not yet visible to anyone
            folio_set_locked_new(folio)
        return folio

    def fault(self, vmf):
        """shmem_fault: find or create the page-cache folio and return it locked
        and referenced in vmf.folio (VM_FAULT_LOCKED).  If the folio is locked
        by someone else and the fault may retry, drop mmap_lock, wait, and return
        VM_FAULT_RETRY (lock_folio_maybe_drop_mmap)."""
        k, mapping, inode = self.kernel, self.mapping, self.inode
        index = vmf.pgoff
        if index >= (inode.i_size + 4095) >> 12:
            return vm_fault_sigbus(_beyond_eof(index, inode))
        folio = filemap_get_folio(mapping, index)
        if folio is None:
            new = self._new_folio(index)
            if new is None:
                return vm_fault_oom("shmem_fault: no page for the page cache (the page allocation failed)")
            other = filemap_add_folio(k, mapping, new, index)
            if other is None:
                folio_add_lru(k, new)
                vmf.folio = new           # locked; our alloc reference is the caller's
                return self._recheck(vmf, new)
            folio_unlock(new)
            folio_put(new, k)
            folio = other
        if not folio_trylock(folio):
            if vmf.flags & FAULT_FLAG_ALLOW_RETRY:
                if vmf.flags & FAULT_FLAG_RETRY_NOWAIT:
                    folio_put(folio, k)
                    return VM_FAULT_RETRY
                release_fault_lock(vmf)
                filemap.folio_wait_locked(folio)
                folio_put(folio, k)
                return VM_FAULT_RETRY
            folio_lock(folio)
        vmf.folio = folio
        return self._recheck(vmf, folio)

    def _recheck(self, vmf, folio):
        """With the folio locked: was it truncated while we waited?"""
        if folio.mapping is not self.mapping:
            folio_unlock(folio)
            folio_put(folio, self.kernel)
            return VM_FAULT_NOPAGE
        if vmf.pgoff >= (self.inode.i_size + 4095) >> 12:
            folio_unlock(folio)
            folio_put(folio, self.kernel)
            return vm_fault_sigbus(_beyond_eof(vmf.pgoff, self.inode) + ", truncated while we waited")
        return VM_FAULT_LOCKED


def shmem_zero_setup(kernel, size):
    """The tmpfs file behind a MAP_SHARED|MAP_ANONYMOUS mapping ("/dev/zero (deleted)"):
    shared across fork, freed with its last mapping."""
    f = File(kernel, "dev/zero (deleted)", size)
    f.name = f"dev/zero (deleted) #{f.inode.i_ino}"
    f.unlinked = True
    kernel.files[f.name] = f
    return f


def truncate_pages(kernel, mapping, indices):
    for i in indices:
        truncate_inode_pages_range(kernel, mapping, i << 12, (i << 12) + 4095)


__all__ = ["File", "ULONG_MAX"]

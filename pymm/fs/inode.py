"""struct inode, struct address_space and struct file, as far as mm needs them."""
import itertools

from ..locking import RwSemaphore, SpinLock
from ..mm.interval_tree import IntervalTree

_ino = itertools.count(1)


class Inode:
    __slots__ = ("i_ino", "i_rwsem", "i_size", "i_mapping")

    def __init__(self, size):
        self.i_ino = next(_ino)
        self.i_rwsem = RwSemaphore("&sb->s_type->i_mutex_key")
        self.i_size = size          # i_rwsem (write) to change
        self.i_mapping = None


class AddressSpace:
    """``struct address_space``.  hugetlbfs mappings put i_mmap_rwsem in their
    own lockdep class, as hugetlbfs_i_mmap_rwsem_key does."""

    __slots__ = ("host", "i_mmap", "i_mmap_rwsem", "i_pages", "xa_lock", "invalidate_lock",
                 "nrpages")

    def __init__(self, host, hugetlb=False):
        self.host = host
        self.i_mmap = IntervalTree()     # i_mmap_rwsem
        self.i_mmap_rwsem = RwSemaphore("&hugetlbfs_i_mmap_rwsem_key" if hugetlb
                                        else "&mapping->i_mmap_rwsem")
        self.i_pages = {}                # index -> folio; xa_lock
        self.xa_lock = SpinLock("&xa->xa_lock")
        self.invalidate_lock = RwSemaphore("&mapping->invalidate_lock")
        self.nrpages = 0                 # xa_lock

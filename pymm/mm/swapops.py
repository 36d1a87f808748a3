"""Non-present PTE entries (include/linux/swapops.h).

A PTE holds a Folio (present), None, or one of these.  Code that meets a
non-present entry dispatches on it through the three hooks every entry type
implements, so memory.c's fault, zap and fork paths stay one code path:

- ``fault(vmf)``   -- a fault met this entry (do_swap_page)
- ``zap(vma, pt, i, details) -> bool`` -- munmap/truncate met it; True if cleared
- ``copy(dst_vma, src_pt, dst_pt, i, cow)`` -- fork copies it
"""
from .filemap import migration_entry_wait_on_locked
from .mm_types import mm_counter


class SwpEntry:
    __slots__ = ()

    def folio_of(self):
        return None


class MigrationEntry(SwpEntry):
    """Installed by try_to_migrate_one in place of a PTE mapping ``folio``
    while it is being copied; faults wait for the folio lock and retry.
    The entry holds no reference and no mapcount; rss stays counted."""

    __slots__ = ("folio", "writable")

    def __init__(self, folio, writable):
        self.folio = folio
        self.writable = writable

    def folio_of(self):
        return self.folio

    def __repr__(self):
        return f"<migration entry {'W' if self.writable else 'R'} {self.folio!r}>"

    def fault(self, vmf):
        migration_entry_wait(vmf.vma.vm_mm, vmf.pt, vmf.idx)
        return 0

    def zap(self, vma, pt, i, details):
        if details is not None and details.single_folio is not None and \
                self.folio is not details.single_folio:
            return False
        pt.ptes[i] = None
        pt.bits[i] = 0
        pt.nr -= 1
        vma.vm_mm.rss_stat[mm_counter(self.folio)].add(-1)
        return True

    def copy(self, dst_vma, src_pt, dst_pt, i, cow):
        entry = self
        if self.writable and cow:
            entry = MigrationEntry(self.folio, False)
            src_pt.ptes[i] = entry
        dst_pt.ptes[i] = entry
        dst_pt.bits[i] = 0
        dst_pt.nr += 1
        dst_vma.vm_mm.rss_stat[mm_counter(self.folio)].add(1)


def is_migration_entry(e):
    return type(e) is MigrationEntry


def migration_entry_wait(mm, pt, i):
    """Wait until the migration that installed the entry at ``pt[i]`` finishes
    (it holds the folio lock throughout).  Context: mmap_lock held for read."""
    pt.ptl.lock()
    e = pt.ptes[i]
    if type(e) is not MigrationEntry:
        pt.ptl.unlock()
        return
    # no reference: a waiter's reference would make the migration's
    # refcount check fail (-EAGAIN, and -EBUSY after the retries)
    migration_entry_wait_on_locked(e.folio, pt.ptl)

"""Small helpers of mm/util.c."""
from ..sched import charge


def folio_copy(dst, src):
    """Copy ``src``'s contents into ``dst`` (mm/util.c folio_copy): the COW
    break, migration and hugetlb copies.  Virtual time charges the copy of
    every page (a huge page as one ``copy_huge_page``).
    Context: may sleep (the kernel copies page by page with cond_resched)."""
    charge("copy_huge_page" if src.order else "copy_page")
    if src.data is not None:
        dst.write_bytes(0, src.data)

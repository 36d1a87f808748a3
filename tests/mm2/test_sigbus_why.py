"""A SIGBUS says why (issue 16, item 6: "access beyond end of file" was the
message whatever the cause).  One test per cause; each checks the message
names the kernel's view (VM_FAULT_SIGBUS / VM_FAULT_OOM) and the cause."""
import errno

import pytest

import pymm
from pymm import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_HUGETLB, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED,
                  PAGE_SIZE, PROT_READ, PROT_WRITE)
from pymm.constants import HPAGE_SIZE
from pymm.errors import BusError
from pymm.locking import lockdep

P = PAGE_SIZE
HS = HPAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON_HUGE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB


@pytest.fixture(autouse=True)
def fresh_lockdep():
    lockdep.reset()
    yield
    lockdep.reset()


def kern(per_node=1):
    return pymm.Kernel(nodes=1, pages_per_node=256, hugepages_per_node=per_node)


def sigbus(access):
    with pytest.raises(BusError) as e:
        access()
    return str(e.value)


def clean(k):
    for p in k.processes():
        p.exit()
    assert k.check() == []
    assert k.findings() == [], "\n\n".join(f.text for f in k.findings())


def test_beyond_the_end_of_a_tmpfs_file():
    k = kern()
    f = k.create_file("f", P)
    p = k.spawn("p")
    a = p.mmap(0, 2 * P, RW, MAP_SHARED, fd=f)
    msg = sigbus(lambda: p.load(a + P, 1))
    assert msg == (f"[Errno {errno.EFAULT}] bus error at {a + P:#x}: VM_FAULT_SIGBUS: access beyond end "
                   f"of file (shmem_fault: page 1 of a file of {P} bytes)")
    clean(k)


def test_beyond_the_end_of_a_hugetlbfs_file():
    k = kern(per_node=2)
    f = k.create_file("hf", HS, hugetlb=True)
    p = k.spawn("p")
    a = p.mmap(0, 2 * HS, RW, MAP_SHARED, fd=f)
    f.ftruncate(0)
    msg = sigbus(lambda: p.load(a + HS, 1))
    assert "VM_FAULT_SIGBUS: access beyond end of file (hugetlb_no_page: huge page 1 of a file of 0 bytes)" \
        in msg, msg
    clean(k)


def test_an_empty_hugetlb_pool():
    """A MAP_NORESERVE mapping's fault when the pool's only page is taken:
    alloc_hugetlb_folio's -ENOSPC, which vmf_error makes VM_FAULT_SIGBUS."""
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, ANON_HUGE)
    p.store(a, b"x")
    n = p.mmap(0, HS, RW, ANON_HUGE | MAP_NORESERVE)
    msg = sigbus(lambda: p.load(n, 1))
    assert msg.endswith("VM_FAULT_SIGBUS: no huge page for the fault (alloc_hugetlb_folio: -ENOSPC, "
                        "no unreserved page in the pool: HugePages_Free 0, HugePages_Rsvd 0)"), msg
    assert "end of file" not in msg
    clean(k)


def test_the_free_page_is_another_mappings_reservation():
    """Issue 16 item 6's case: the only free page is reserved for another
    mapping (here after its MADV_DONTNEED gave the reservation back)."""
    k = kern()
    a, b = k.spawn("a"), k.spawn("b")
    ha = a.mmap(0, HS, RW, ANON_HUGE)
    a.store(ha, b"a")
    assert a.madvise(ha, HS, MADV_DONTNEED) == 0
    hb = b.mmap(0, HS, RW, ANON_HUGE | MAP_NORESERVE)
    msg = sigbus(lambda: b.store(hb, b"b"))
    assert "VM_FAULT_SIGBUS: no huge page for the fault (alloc_hugetlb_folio: -ENOSPC, no unreserved " \
           "page in the pool: HugePages_Free 1, HugePages_Rsvd 1)" in msg, msg
    a.store(ha, b"A")
    clean(k)


def test_a_private_page_the_owner_took_back():
    """unmap_ref_private: the owner's COW found the pool empty and took the
    page from its child, whose next fault is SIGBUS."""
    k = kern(per_node=2)
    f = k.create_file("f", HS, hugetlb=True)
    f.fallocate(0, 0, HS)
    o = k.spawn("owner")
    a = o.mmap(0, HS, RW, MAP_PRIVATE, fd=f)
    o.store(a, b"owner")
    c = o.fork()
    o.store(a, b"OWNER")
    msg = sigbus(lambda: c.load(a, 1))
    assert "VM_FAULT_SIGBUS: the owner of this private hugetlb mapping took its pages back" in msg, msg
    assert "HPAGE_RESV_UNMAPPED" in msg and "killed due to inadequate hugepage pool" in msg
    clean(k)


def test_fault_injection_at_the_pool():
    k = kern(per_node=2)
    p = k.spawn("p")
    h = p.mmap(0, HS, RW, ANON_HUGE)
    k.fail("hugetlb-dequeue", probability=100)
    msg = sigbus(lambda: p.store(h, b"h"))
    assert msg.endswith("VM_FAULT_SIGBUS: no huge page for the fault (alloc_hugetlb_folio: -ENOSPC, "
                        "fault injection at hugetlb-dequeue)"), msg
    k.fail("hugetlb-dequeue", probability=0)
    p.store(h, b"h")
    clean(k)


def test_vm_fault_oom_says_why_too():
    """VM_FAULT_OOM is ENOMEM (pymm has no OOM killer); its message names it."""
    k = kern(per_node=2)
    p = k.spawn("p")
    h = p.mmap(0, HS, RW, ANON_HUGE)
    k.fail("pgtable-alloc", probability=100)
    with pytest.raises(OSError) as e:
        p.store(h, b"h")
    assert e.value.errno == errno.ENOMEM and not isinstance(e.value, BusError)
    assert "VM_FAULT_OOM: huge_pte_alloc: no page-table page" in str(e.value), str(e.value)
    k.fail("pgtable-alloc", probability=0)
    clean(k)


def test_bus_error_default_names_the_fault_code():
    e = BusError(0x1000)
    assert str(e) == f"[Errno {errno.EFAULT}] bus error at 0x1000: VM_FAULT_SIGBUS" and e.why == "VM_FAULT_SIGBUS"

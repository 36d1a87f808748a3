"""The open 2025 report: "possible deadlock in __hugetlb_zap_begin"
(syzbot 3f5f9a0d292454409ca6).

Since df7a6d1f6405 ("mm/hugetlb: restore the reservation if needed",
2024) the hugetlb zap gives a private owner's reservation back when it
unmaps its anon page, and recording that may allocate (region_chg /
region_del: kmalloc(GFP_KERNEL)) while the zap holds the vma_lock (write)
and i_mmap_rwsem (write): i_mmap_rwsem -> fs_reclaim.  Reclaim can wait on
I/O to a network block device, whose request path takes the socket's
locks (fs_reclaim -> &nsock->tx_lock -> sk_lock-AF_INET), and a sendmsg
holds the socket lock while its user copy faults on hugetlb memory
(sk_lock -> hugetlb_fault_mutex -> vma_lock); the zap itself orders
vma_lock -> i_mmap_rwsem.  Lockdep closes the cycle.

Workload, one step per role:

- ``zap``: the owner of a private hugetlb mapping MADV_DONTNEEDs its
  written page (the restore allocates under the zap's locks) and writes
  it again;
- ``send``: a process MADV_DONTNEEDs its MAP_SHARED hugetlbfs buffer (a
  zap: vma_lock -> i_mmap_rwsem), sends from it over a TCP socket (the
  copy faults the page-cache page back in under the socket lock), and
  mprotects it read-only and back (hugetlb_change_protection: vma_lock ->
  i_mmap_rwsem too);
- ``reclaim``: a process dirties anonymous pages and reclaims them to
  swap on an nbd device connected through that socket.

``hugetlb-zap-alloc``: ``alloc-under-locks`` (mainline) is the report;
``imap-before-vma-lock`` (the reorder posted upstream) trades it for an
AB-BA between the zap and hugetlb_change_protection; ``alloc-before-locks``
(pymm's proposed fix, the default here) preallocates before the locks and
runs clean.
"""
from types import SimpleNamespace

from .. import constants as C
from ..drivers.nbd import nbd_swapon
from ..net.sock import Socket
from . import register
from .base import Scenario
from .hugetlb_common import HS, RW, hugetlb_kernel

PAGE = C.PAGE_SIZE
NR_ANON = 4


def _page_tables_first(p, addr):
    """Touch a base page next to the huge page at ``addr`` (same PUD), so
    that its PMD table exists before the first hugetlb fault there: these
    processes have used that gigabyte before.  (Mainline's hugetlb_fault
    allocates a missing PMD table under the fault mutex and the vma_lock,
    which closes shorter cycles through fs_reclaim: README.)"""
    nxt = addr + HS if (addr + HS) >> C.PUD_SHIFT == addr >> C.PUD_SHIFT else addr - PAGE
    assert nxt >> C.PUD_SHIFT == addr >> C.PUD_SHIFT, "no neighbour page in the same PUD"
    p.mmap(nxt, PAGE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED_NOREPLACE)
    p.store(nxt, b"t")


@register
class HugetlbZapReclaimScenario(Scenario):
    name = "hugetlb-zap-reclaim"
    variant_key = "hugetlb-zap-alloc"
    caught_kinds = frozenset({"lockdep"})
    controlled_steps = 1

    def setup(self, variant, seed):
        k = hugetlb_kernel(self.variant_key, variant, seed, hugepages=4)
        sock = Socket(k)
        nbd_swapon(k, sock)
        f = k.create_file("sendbuf", HS, hugetlb=True)
        f.fallocate(0, 0, HS)                                   # the buffer's page
        s = k.spawn("sender")
        sa = s.mmap(0, HS, RW, C.MAP_SHARED, fd=f)
        _page_tables_first(s, sa)
        s.load(sa, 1)                                           # the buffer was used before
        o = k.spawn("owner")
        oa = o.mmap(0, HS, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_HUGETLB)
        _page_tables_first(o, oa)
        o.store(oa, b"o")                                       # consumes its reservation
        r = k.spawn("reclaimer")
        ra = r.mmap(0, NR_ANON * PAGE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
        return SimpleNamespace(kernel=k, sock=sock, f=f, s=s, sa=sa, o=o, oa=oa, r=r, ra=ra)

    def zap(self, st, rng):
        """DONTNEED the owner's page (the zap restores its reservation),
        then fault it back."""
        st.o.madvise(st.oa, HS, C.MADV_DONTNEED)
        st.o.store(st.oa, b"o")

    def send(self, st, rng):
        st.s.madvise(st.sa, HS, C.MADV_DONTNEED)
        st.sock.sendmsg(st.s, st.sa, 64)
        st.s.mprotect(st.sa, HS, C.PROT_READ)
        st.s.mprotect(st.sa, HS, RW)

    def reclaim(self, st, rng):
        for i in range(NR_ANON):
            st.r.store(st.ra + i * PAGE, b"r")
        st.kernel.reclaim(NR_ANON)

    roles = (("zap", zap), ("send", send), ("reclaim", reclaim))

    def teardown(self, st):
        data = st.o.load(st.oa, 1)
        for p in (st.o, st.s, st.r):
            p.exit()
        if data != b"o":
            raise AssertionError(f"the owner's private huge page lost its contents: {data!r}")

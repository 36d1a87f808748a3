"""A TCP socket as far as its lock goes (net/core/sock.c, net/ipv4/tcp.c).

Why mm cares: ``tcp_sendmsg`` holds the socket lock (``lock_sock``:
lockdep class ``sk_lock-AF_INET``) while it copies the user's buffer into
the socket (``copy_from_iter``), and that copy faults -- on hugetlb memory,
under the hugetlb fault mutex and the vma_lock.  A socket that carries a
block device (nbd, see pymm/drivers/nbd.py) is also written from reclaim.
Together: fs_reclaim -> ... -> sk_lock -> hugetlb_fault_mutex -> vma_lock,
the middle of syzbot's 3f5f9a0d292454409ca6 chain.

Simplification: the data goes nowhere (``bytes_sent`` counts it); there
is no peer, no receive side, no backlog processing in release_sock.
"""
import errno

from ..context import _KernelContext
from ..errors import BusError, SegmentationFault
from ..locking import Mutex
from ..mm.uaccess import user_access


class Socket:
    """``struct sock`` of a connected TCP socket: ``sk_lock`` is the lock
    lock_sock takes (a sleeping owner lock; one lockdep class per family)."""

    def __init__(self, kernel, family="AF_INET"):
        self.kernel = kernel
        self.sk_lock = Mutex(f"sk_lock-{family}")
        self.bytes_sent = 0              # sk_lock

    def __repr__(self):
        return f"<socket {self.sk_lock.name} sent {self.bytes_sent}>"

    def sendmsg(self, task, addr, length):
        """write(2)/sendmsg(2) of ``length`` bytes at ``addr`` of ``task``'s
        memory.  Returns ``length``; raises OSError(EFAULT) if the buffer is
        not mapped or not readable."""
        if type(length) is not int or length < 0 or type(addr) is not int or addr < 0:
            raise OSError(errno.EINVAL, f"sendmsg: bad buffer {addr!r}, {length!r}")
        with _KernelContext(task):
            ret = tcp_sendmsg(self, task, addr, length)
        if ret < 0:
            raise OSError(-ret, f"sendmsg: {errno.errorcode.get(-ret, ret)}")
        return ret


def lock_sock(sk):
    """Context: may sleep."""
    sk.sk_lock.lock()


def release_sock(sk):
    sk.sk_lock.unlock()


def tcp_sendmsg_locked(sk, task, addr, length):
    """Copy the user's data into the socket (skb_copy_to_page_nocache ->
    copy_from_iter): a user copy that may fault.  Context: lock_sock held."""
    try:
        data = user_access(task, addr, length, False, None, carefully=True) if length else b""
    except (SegmentationFault, BusError):
        return -errno.EFAULT
    sk.bytes_sent += len(data)
    return length


def tcp_sendmsg(sk, task, addr, length):
    lock_sock(sk)
    try:
        return tcp_sendmsg_locked(sk, task, addr, length)
    finally:
        release_sock(sk)


def kernel_sendmsg(sk, data):
    """A send from kernel memory (no user copy).  Context: may sleep; takes
    lock_sock."""
    lock_sock(sk)
    sk.bytes_sent += len(data)
    release_sock(sk)

"""A network block device as a swap device (drivers/block/nbd.c).

Swapping to an nbd device puts a socket under reclaim: pageout ->
swap_writepage -> the block layer -> ``nbd_queue_rq``, which takes the
socket's ``tx_lock`` (``&nsock->tx_lock``) and transmits on the socket.
Reclaim holds fs_reclaim throughout, so lockdep records fs_reclaim ->
&nsock->tx_lock -> sk_lock-AF_INET, and anything that holds the socket lock
across a faulting user copy (tcp_sendmsg) is then "below" reclaim.

Simplifications: one socket; requests complete at once.  In the kernel
the tx_lock -> sk_lock dependency comes from nbd_mark_nsock_dead's
inet_shutdown under tx_lock (and the fs_reclaim -> block-layer part goes
through q_usage_counter and the elevator); pymm transmits under lock_sock
directly, which records the same classes in the same order.
"""
from ..locking import Mutex
from ..net.sock import kernel_sendmsg

REQ_OP_READ, REQ_OP_WRITE = 0, 1


class NbdDevice:
    """One nbd device with one connected socket (``struct nbd_sock``)."""

    def __init__(self, sock):
        self.sock = sock
        self.tx_lock = Mutex("&nsock->tx_lock")
        self.requests = 0                # tx_lock

    def __repr__(self):
        return f"<nbd on {self.sock!r}: {self.requests} requests>"

    def submit_bio(self, op, data):
        """Queue and send one request (submit_bio -> nbd_queue_rq).
        Context: may sleep (reclaim calls it with fs_reclaim held)."""
        nbd_queue_rq(self, op, data)


def nbd_queue_rq(nbd, op, data):
    nbd.tx_lock.lock()
    try:
        nbd.requests += 1
        sock_xmit(nbd, data if op == REQ_OP_WRITE else b"")
    finally:
        nbd.tx_lock.unlock()


def sock_xmit(nbd, data):
    """Context: tx_lock held."""
    kernel_sendmsg(nbd.sock, data)


def nbd_swapon(kernel, sock):
    """Make the kernel's swap device an nbd device on ``sock``: swap-out
    I/O (swap_writepage) goes through nbd_queue_rq.  Returns the device."""
    nbd = NbdDevice(sock)
    kernel.swap_info.bdev = nbd
    return nbd

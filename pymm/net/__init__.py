"""Just enough networking for the locks it brings into mm's lockdep graph
(net/core/sock.c's lock_sock, net/ipv4/tcp.c's sendmsg)."""

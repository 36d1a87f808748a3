"""The interval trees of mm/interval_tree.c (i_mmap, anon_vma->rb_root).

Simplification: a list kept sorted by interval start, with bisect for the
upper bound of a query and a linear scan below it -- O(n) worst case instead of
O(log n + k).  The trees pymm builds hold at most a few hundred nodes, and what
matters for the scenarios is *who locks the tree*, not its shape.  Callers
hold the tree's lock (i_mmap_rwsem / anon_vma->rwsem); iteration works on a
snapshot so a walker that forgot the lock still sees (possibly freed) nodes,
as a racing C walker would.
"""
from bisect import bisect_right, insort


class IntervalTree:
    __slots__ = ("_items", "_seq")

    def __init__(self):
        self._items = []     # (start, last, seq, node)
        self._seq = 0

    def insert(self, node, start, last):
        self._seq += 1
        insort(self._items, (start, last, self._seq, node), key=lambda t: (t[0], t[2]))

    def remove(self, node):
        items = self._items
        for i, t in enumerate(items):
            if t[3] is node:
                del items[i]
                return True
        return False

    def iter(self, start, last):
        """Nodes whose interval intersects [start, last] (inclusive), a snapshot."""
        items = self._items[:]
        hi = bisect_right(items, last, key=lambda t: t[0])
        return [t[3] for t in items[:hi] if t[1] >= start]

    def nodes(self):
        return [t[3] for t in self._items]

    def __len__(self):
        return len(self._items)

    def __bool__(self):
        return bool(self._items)

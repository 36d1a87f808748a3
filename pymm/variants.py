"""The variant registry: for each locking design under study, its values
(buggy first) and the default (the current mainline fix).  ``Kernel(variants=)``
selects them; the code reads ``kernel.variant(key)`` exactly where the
designs differ.  ``register`` adds a key of one's own (a user scenario's
code path branches on it the same way)."""

VARIANTS = {
    "populate": {
        "values": ("drop-retake", "downgrade", "revalidate"),
        "default": "revalidate",
        "buggy": ("drop-retake",),
        "doc": "populate after mmap_write_lock (SCENARIOS.md A): drop-retake with a stale "
               "VMA pointer, downgrade, or revalidate the VMA after relocking (mainline)",
    },
    "mbind": {
        "values": ("hold-mmap-lock", "early-unlock-vma-callback", "unlock-before-ilx", "mpol-alloc"),
        "default": "mpol-alloc",
        # hold-mmap-lock is correct, only slow for others
        "buggy": ("early-unlock-vma-callback", "unlock-before-ilx"),
        "doc": "mbind/migrate_pages and mmap_lock across migration (SCENARIOS.md B)",
    },
    "hugetlb-anon-migrate": {
        "values": ("rmap-locked", "anon-vma-lock"),
        "default": "anon-vma-lock",
        "buggy": ("rmap-locked",),
        "doc": "anon hugetlb migration walking the anon_vma tree under i_mmap_rwsem (SCENARIOS.md C)",
    },
    "hugetlb-file-migrate": {
        "values": ("relock-under-folio", "keep-imap"),
        "default": "keep-imap",
        "buggy": ("relock-under-folio",),
        "doc": "file hugetlb migration retaking i_mmap_rwsem under the folio lock (SCENARIOS.md C2)",
    },
    "hugetlb-pmd-share": {
        "values": ("no-vma-lock", "vma-lock"),
        "default": "vma-lock",
        "buggy": ("no-vma-lock",),
        "doc": "hugetlb PMD sharing without/with the hugetlb vma_lock (SCENARIOS.md D)",
    },
    "hugetlb-wp": {
        # fault-mutex-under-folio: 40549ba8f8e0 (6.1) .. 2025; unlock-folio-first: Gavin Guo's
        # v1-v3 (not merged); folio-trylock: 2ae1ab9934c7 (Oscar Salvador, June 2025, mainline)
        "values": ("fault-mutex-under-folio", "unlock-folio-first", "folio-trylock"),
        "default": "folio-trylock",
        "buggy": ("fault-mutex-under-folio",),
        "doc": "hugetlb_wp retaking the fault mutex under the folio lock (SCENARIOS.md D)",
    },
    "hugetlb-truncate": {
        # mapped-check-unlocked: 4aae8d1c051e .. 2025; lock-folio-first: the check under the
        # lock, the unmap unlocked (pymm's earlier fix); lock-folio-across-unmap: 7b7387650dcf
        "values": ("mapped-check-unlocked", "lock-folio-first", "lock-folio-across-unmap"),
        "default": "lock-folio-across-unmap",
        "buggy": ("mapped-check-unlocked",),
        "doc": "remove_inode_single_folio's mapped check without the folio lock (SCENARIOS.md D)",
    },
    "hugetlb-split": {
        # unshare-before-split: vm_ops->may_split unshares ("hugetlb: unshare some PMDs when
        # splitting VMAs", 2023) .. 2025;
        # unshare-in-split: 081056dc00a2 (CVE-2025-38084), hugetlb_split under the rmap lock
        "values": ("unshare-before-split", "unshare-in-split"),
        "default": "unshare-in-split",
        "buggy": ("unshare-before-split",),
        "doc": "hugetlb PMD unsharing before/inside __split_vma",
    },
    "hugetlb-dontneed": {
        # final-zap: 6.1 (40549ba8f8e0 freed the vma_lock in the final hugetlb zap, and
        # MADV_DONTNEED's zap was final); non-final-zap: 04ada095dcfc (mainline)
        "values": ("final-zap", "non-final-zap"),
        "default": "non-final-zap",
        "buggy": ("final-zap",),
        "doc": "hugetlb MADV_DONTNEED deleting the vma_lock of a VMA that stays",
    },
    "hugetlb-fault-imap": {
        # the 5.7-5.18 fault held i_mmap_rwsem for read (c0d0381ade79); imap-held-in-cow:
        # 5.7-5.10, COW's unmap_ref_private takes it for write under the read hold;
        # drop-imap-in-cow: e7dd91c456a8 (Dec 2020).  Only the era's fault (hugetlb-cow-imap)
        # reads it; today's fault takes no i_mmap_rwsem
        "values": ("imap-held-in-cow", "drop-imap-in-cow"),
        "default": "drop-imap-in-cow",
        "buggy": ("imap-held-in-cow",),
        "doc": "hugetlb COW with an empty pool under the 5.7 fault's i_mmap_rwsem",
    },
    "hugetlb-zap-alloc": {
        # alloc-under-locks: mainline since df7a6d1f6405 (2024), syzbot 3f5f9a0d292454409ca6
        # (open); imap-before-vma-lock: the reorder posted upstream (Nov 2025), which syzbot ci
        # answered with new cycles; alloc-before-locks: pymm's proposed fix
        "values": ("alloc-under-locks", "imap-before-vma-lock", "alloc-before-locks"),
        "default": "alloc-before-locks",
        "buggy": ("alloc-under-locks", "imap-before-vma-lock"),
        "doc": "the hugetlb zap's reservation-restore allocation under the vma_lock and "
               "i_mmap_rwsem (README: the open 2025 lockdep report)",
    },
    "hugetlb-no-page-ref": {
        # unlock-unreferenced: mainline since 188a39725ad7 (6.1: the fault no longer holds
        # i_mmap_rwsem, which the zap takes for write); 2820b0f09be9 + bf4916922c60 (6.7)
        # closed the fault/MADV_DONTNEED race only for private VMAs that own a resv_map, not
        # for fork children or MAP_NORESERVE; ref-across-unlock: pymm's proposed fix
        "values": ("unlock-unreferenced", "ref-across-unlock"),
        "default": "ref-across-unlock",
        "buggy": ("unlock-unreferenced",),
        "doc": "hugetlb_no_page unlocking a new anon folio whose only reference is the PTE a "
               "zap may already have taken (README: hugetlb-fork-dontneed)",
    },
    "hugetlb-unmap-private": {
        # resv-map-as-vma-lock: mainline since bf4916922c60 (6.7): hugetlb_unmap_file_folio's
        # failed trylock of a private owner VMA takes vm_private_data (resv_map|HPAGE_RESV_OWNER)
        # for a struct hugetlb_vma_lock; wait-on-resv-map: pymm's proposed fix
        "values": ("resv-map-as-vma-lock", "wait-on-resv-map"),
        "default": "wait-on-resv-map",
        "buggy": ("resv-map-as-vma-lock",),
        "doc": "hugetlb_unmap_file_folio using a private VMA's tagged resv_map pointer as a "
               "vma_lock (README: the private-mapping branch of hugetlb_unmap_file_folio)",
    },
    "hugetlb-fault-truncate": {
        # unsynced: mainline since 188a39725ad7 + fa27759af4a6 (6.1): the fault checks i_size
        # once, under its fault mutex, before alloc_hugetlb_folio; truncation takes a fault
        # mutex only for folios it finds, so a fault that passed the check and holds the index's
        # reservation (map_chg == 0) survives hugetlb_unreserve_pages giving that reservation
        # back, consumes it again and region_adds the entry back; wait-for-faults: pymm's
        # proposed fix
        "values": ("unsynced", "wait-for-faults"),
        "default": "wait-for-faults",
        "buggy": ("unsynced",),
        "doc": "hugetlb_vmtruncate not waiting for faults in flight on the truncated range: "
               "HugePages_Rsvd counted down twice (README: hugetlb-fault-truncate)",
    },
    "rmap-mlock": {
        "values": ("mmap-trylock", "pte-lock"),
        "default": "pte-lock",
        "buggy": ("mmap-trylock",),
        "doc": "mlock from try_to_unmap_one: mmap_lock trylock vs under the pte lock (SCENARIOS.md E)",
    },
    "per-vma-lock": {
        "values": ("off", "on"),
        "default": "on",
        "buggy": (),
        "doc": "CONFIG_PER_VMA_LOCK (6.4+): page faults try the faulting VMA's own lock "
               "(lock_vma_under_rcu) before mmap_lock; off is the kernel before 6.4",
    },
    "fork-vma-lock": {
        # unlocked: 6.4 (per-VMA locks, 0bff0aaea03e) .. 6.4.2; vma-start-write: fb49c455323f
        # "fork: lock VMAs of the parent process when forking" (6.5-rc1, 6.4.3; bugzilla 217624)
        "values": ("unlocked", "vma-start-write"),
        "default": "vma-start-write",
        "buggy": ("unlocked",),
        "doc": "dup_mmap copying the parent's page tables without (unlocked) or after "
               "vma_start_write on each parent VMA (fb49c455323f): a per-VMA-lock fault in the "
               "parent before fork's TLB flush breaks COW",
    },
    "dup-anon-vma-lock": {
        "values": ("unlocked", "vma-start-write"),
        "default": "vma-start-write",
        "buggy": ("unlocked",),
        # unlocked: 6.4 (5e31275cc997 added per-VMA locks) .. 6.4.7; vma-start-write:
        # d8ab9f7b644a (Jann Horn, 6.5-rc4, 6.4.8)
        "doc": "dup_anon_vma setting dst->anon_vma before (unlocked) or after vma_start_write(dst) "
               "(d8ab9f7b644a \"mm: lock VMA in dup_anon_vma() before setting ->anon_vma\", 6.5)",
    },
    "munmap-downgrade": {
        "values": ("downgrade-always", "write-locked", "unless-growsdown", "stack-write-locked"),
        "default": "stack-write-locked",
        "buggy": ("downgrade-always",),
        "doc": "munmap zapping under a downgraded mmap_lock while stacks grow under the read "
               "lock (dd2283f2605e, 4.20), never downgrading (before 4.20), not next to a "
               "VM_GROWSDOWN VMA (5.8), or stacks growing only under the write lock "
               "(8d7071af8907, 6.5)",
    },
    "mremap-tlb-flush": {
        "values": ("deferred-flush", "flush-under-ptl"),
        "default": "flush-under-ptl",
        "buggy": ("deferred-flush",),
        "doc": "mremap's move_ptes flushes the old range under the PTE locks whenever a present "
               "PTE moved (eb66ae030829, 4.19, CVE-2018-18281), or only a dirty one, after "
               "dropping the new PTE lock, and a clean one at the end of move_page_tables "
               "(5d1904204c99, 4.9 .. 4.18)",
    },
    "tlb-batched-pending": {
        "values": ("no-pending-flush", "flush-pending"),
        "default": "flush-pending",
        "buggy": ("no-pending-flush",),
        "doc": "PTE changers flush reclaim's pending batched TLB flush first "
               "(flush_tlb_batched_pending, 3ea277194daa, 4.12) or not (before)",
    },
}


def register(key, values, default, buggy=(), doc=""):
    """Add the variant key ``key``: its ``values`` (buggy first, by
    convention), the ``default`` (the correct design: a Kernel built without
    naming the key gets it), the ``buggy`` values (a scenario on this key is
    expected to catch them; the others to run clean) and a one-line ``doc``.
    Registering the same key again with the same definition is a no-op (a
    module imported twice); a different definition, or a clash with one of
    pymm's own keys, is a ValueError.  Returns ``key``."""
    if not isinstance(key, str) or not key or any(c.isspace() or c in ":=," for c in key):
        raise ValueError(f"variant key must be a non-empty string without spaces, ':', '=' "
                         f"or ',', got {key!r}")
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"variant {key!r}: values must be a non-empty list of strings, got {values!r}")
    values = tuple(values)
    for v in values:
        if not isinstance(v, str) or not v or any(c.isspace() or c in ":=," for c in v):
            raise ValueError(f"variant {key!r}: value {v!r} must be a non-empty string without "
                             f"spaces, ':', '=' or ','")
    if len(set(values)) != len(values):
        raise ValueError(f"variant {key!r}: values repeat: {values!r}")
    if default not in values:
        raise ValueError(f"variant {key!r}: default {default!r} is not one of {', '.join(values)}")
    if isinstance(buggy, str) or not isinstance(buggy, (list, tuple, set, frozenset)):
        raise ValueError(f"variant {key!r}: buggy must be a list of values, got {buggy!r}")
    bad = [b for b in buggy if b not in values]
    if bad:
        raise ValueError(f"variant {key!r}: buggy value {bad[0]!r} is not one of {', '.join(values)}")
    buggy = tuple(v for v in values if v in set(buggy))
    if default in buggy:
        raise ValueError(f"variant {key!r}: the default {default!r} is listed as buggy; the "
                         f"default must be the correct design")
    if not isinstance(doc, str):
        raise ValueError(f"variant {key!r}: doc must be a string")
    entry = {"values": values, "default": default, "buggy": buggy, "doc": doc}
    old = VARIANTS.get(key)
    if old is not None:
        if key in _BUILTIN:
            raise ValueError(f"variant key {key!r} is one of pymm's own; choose another name")
        if old != entry:
            raise ValueError(f"variant key {key!r} is already registered with another definition")
        return key
    VARIANTS[key] = entry
    return key


def resolve(variants):
    """Validate a {key: value} mapping and fill in the defaults."""
    if variants is None:
        variants = {}
    if not isinstance(variants, dict):
        raise ValueError(f"variants must be a dict of key -> value, got {type(variants).__name__}")
    out = {k: v["default"] for k, v in VARIANTS.items()}
    for k, v in variants.items():
        if k not in VARIANTS:
            raise ValueError(f"unknown variant key {k!r}; known keys: {', '.join(VARIANTS)}")
        if v not in VARIANTS[k]["values"]:
            raise ValueError(f"unknown value {v!r} for variant {k!r}; expected one of "
                             f"{', '.join(VARIANTS[k]['values'])}")
        out[k] = v
    return out


_BUILTIN = frozenset(VARIANTS)


def is_buggy(key, value):
    return value in VARIANTS[key]["buggy"]

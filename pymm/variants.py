"""The variant registry: for each locking design under study, its values
(buggy first) and the default (the current mainline fix).  ``Kernel(variants=)``
selects them; the code reads ``kernel.variant(key)`` exactly where the
designs differ."""

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
    "rmap-mlock": {
        "values": ("mmap-trylock", "pte-lock"),
        "default": "pte-lock",
        "buggy": ("mmap-trylock",),
        "doc": "mlock from try_to_unmap_one: mmap_lock trylock vs under the pte lock (SCENARIOS.md E)",
    },
}


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


def is_buggy(key, value):
    return value in VARIANTS[key]["buggy"]

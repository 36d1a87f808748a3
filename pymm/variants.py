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

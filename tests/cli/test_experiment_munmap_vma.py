"""The munmap and per-vma-lock experiments run, in virtual time, clean, with
the figures the README quotes (not asserting their values: that is bench's)."""
from pymm import experiment


class SmallMunmap(experiment.MunmapWorkload):
    """The munmap experiment's workload on 16 MiB instead of 1 GiB (the
    default case takes seconds per design)."""
    pages = 4096


def test_munmap_experiment_default_case_is_a_populated_gib():
    assert experiment.MunmapWorkload.pages * 4096 == 1 << 30


def test_munmap_experiment_compares_the_downgrade_designs():
    """The anchor's shape (Yang Shi's 2018 series): write-locked holds the
    write lock for the whole zap, the downgrade for microseconds, and the
    readers' worst fault drops with it."""
    out = experiment.run_experiment(SmallMunmap, ["write-locked", "stack-write-locked"],
                                    duration_ms=0.8, name="munmap")
    for v in ("write-locked", "stack-write-locked"):
        r = out["variants"][v]
        assert r["findings"] == [] and r["errors"] == {}
        assert {"munmap (large)", "fault (reader)"} <= set(r["latency_us"])
        assert r["latency_us"]["munmap (large)"]["n"] == 1
    wl, dg = out["variants"]["write-locked"], out["variants"]["stack-write-locked"]
    zap_us = wl["latency_us"]["munmap (large)"]["max"]
    assert zap_us > 4096 * 0.118                     # zap_page per page at least
    assert wl["mmap_lock"]["write_hold_max_us"] > 0.9 * zap_us
    assert dg["mmap_lock"]["write_hold_max_us"] < 10
    def readers_worst(r):        # the stall lands in the reader's next madvise or fault
        return max(r["latency_us"][op]["max"] for op in ("madvise (reader)", "fault (reader)"))
    assert readers_worst(wl) > 0.9 * zap_us
    assert readers_worst(dg) < readers_worst(wl) / 10


def test_per_vma_lock_experiment_runs_both_values():
    out = experiment.run("per-vma-lock", duration_ms=0.2)
    assert list(out["variants"]) == ["off", "on"]
    for r in out["variants"].values():
        assert r["findings"] == [] and r["errors"] == {}
        assert r["latency_us"]["fault"]["n"] > 0

"""The munmap and per-vma-lock experiments run, in virtual time, clean, with
the figures the README quotes (not asserting their values: that is bench's)."""
from pymm import experiment


def test_munmap_experiment_compares_the_downgrade_designs():
    out = experiment.run("munmap", variants=["write-locked", "stack-write-locked"], duration_ms=0.8)
    for v in ("write-locked", "stack-write-locked"):
        r = out["variants"][v]
        assert r["findings"] == [] and r["errors"] == {}
        assert {"munmap (large)", "fault (reader)"} <= set(r["latency_us"])
        assert "write_hold_max_us" in r["mmap_lock"]


def test_per_vma_lock_experiment_runs_both_values():
    out = experiment.run("per-vma-lock", duration_ms=0.2)
    assert list(out["variants"]) == ["off", "on"]
    for r in out["variants"].values():
        assert r["findings"] == [] and r["errors"] == {}
        assert r["latency_us"]["fault"]["n"] > 0

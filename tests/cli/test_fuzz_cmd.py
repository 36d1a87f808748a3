"""``pymm stress --scenario fuzz`` and ``--fail``: the fuzzer from the command
line, fault injection options, and their bad input."""
import json


def test_stress_fuzz_runs(cli, tmp_path):
    """Both modes, clean: a few controlled schedules (each does ops) and a
    short free run (which may do few ops on a loaded machine)."""
    res = cli("stress", "--scenario", "fuzz", "--schedules", "4", "--seconds", "1", "--quiet",
              "--json", tmp_path / "r.json")
    assert res.rc == 0, res.out + res.err
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert [(r["scenario"], r["mode"]) for r in runs] == [("fuzz", "controlled"), ("fuzz", "free")]
    assert [r["findings"] for r in runs] == [[], []]
    assert runs[0]["ops"] > 0


def test_stress_with_fault_injection(cli):
    res = cli("stress", "--scenario", "populate", "--variant", "revalidate", "--mode", "controlled",
              "--schedules", "20", "--quiet", "--fail", "all:probability=5", "--fail", "slab:20")
    assert res.rc == 0, res.out + res.err


def test_fail_bad_input(cli):
    for spec, msg in (("nosuch:5", "unknown site"), ("slab:probability=x", "not a valid float"),
                      ("slab:bogus=1", "unknown knob"), ("slab:200", "percentage")):
        res = cli("stress", "--scenario", "populate", "--fail", spec)
        assert res.rc == 2
        assert msg in res.error_line()

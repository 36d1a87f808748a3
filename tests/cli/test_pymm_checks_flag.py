"""``pymm stress --no-pymm-checks``: pymm's own checks off for the run,
the findings' "pymm_only" label in the JSON."""
import json

from pymm.debug import report as R


def test_cli_flag(cli, tmp_path):
    out = tmp_path / "r.json"
    res = cli("stress", "--scenario", "hugetlb-anon-migrate", "--variant", "rmap-locked",
              "--mode", "controlled", "--schedules", "800", "--no-pymm-checks", "--json", str(out))
    assert res.rc == 0, res.out + res.err
    runs = json.loads(out.read_text())["runs"]
    assert runs[0]["findings"][0]["kind"] == "use-after-free"
    assert runs[0]["findings"][0]["pymm_only"] is False
    assert R.pymm_checks_default is True              # put back after the command
    res = cli("stress", "--scenario", "hugetlb-anon-migrate", "--variant", "rmap-locked",
              "--mode", "controlled", "--json", str(out))
    f = json.loads(out.read_text())["runs"][0]["findings"][0]
    assert f["kind"] == "assertion" and f["pymm_only"] is True

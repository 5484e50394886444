"""The PrometheusRule's alerts: `promtool check rules` and `promtool test rules` (one test fires each)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE = ROOT / "manifests" / "components" / "monitoring" / "prometheusrule.yaml"


@pytest.fixture
def promtool():
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: `make test` installs Debian's prometheus package")
        pytest.skip("promtool not installed (make test installs it)")
    return path


@pytest.fixture
def rules_dir(tmp_path):
    spec = yaml.safe_load(RULE.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    shutil.copy(Path(__file__).parent / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    return tmp_path


def test_promtool_check_rules(promtool, rules_dir):
    r = subprocess.run([promtool, "check", "rules", str(rules_dir / "rules.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 4 rules found" in r.stdout + r.stderr


def test_promtool_unit_tests_fire_each_alert(promtool, rules_dir):
    r = subprocess.run([promtool, "test", "rules", str(rules_dir / "alerts_test.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = {rule["alert"] for g in yaml.safe_load(RULE.read_text())["spec"]["groups"] for rule in g["rules"]}
    tested = {
        t["alertname"]
        for case in yaml.safe_load((rules_dir / "alerts_test.yaml").read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    assert alerts == tested  # every alert has a case where it fires

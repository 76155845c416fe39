"""The wrappers around the installed binary, on the demo pair of the source tree."""

import os
import subprocess

import pytest
from conftest import DEMO

import bnaudit

A, B = DEMO / "pretrained.safetensors", DEMO / "finetuned.safetensors"


def test_the_binary_is_the_one_installed_with_the_package():
    import sysconfig

    assert os.path.dirname(bnaudit.binary()) == sysconfig.get_path("scripts")


def test_check_reports_the_frozen_backbone():
    report = bnaudit.check(A, B, frozen=["backbone"])
    assert report.passed is False
    assert report.scope.frozen == ["backbone"]
    assert {v.kind for v in report.violations} == {"frozen_stats_drift"}
    assert all(v.layer.startswith("backbone.") for v in report.violations)
    assert bnaudit.check(A, B, frozen="head", allow_stats=["head"]).passed is False  # head trained
    assert bnaudit.check(A, A, frozen=["backbone", "head"]).passed is True


def test_diff_ls_explain():
    diff = bnaudit.diff(A, B)
    statuses = {layer.name: layer.status for layer in diff.layers}
    assert statuses["backbone.layer1.0.bn1"] == "frozen_stats_drift"
    assert diff["summary"] is diff.summary  # a dict as well
    assert bnaudit.diff(A, B, exit_code=True).summary.changed is True
    listed = bnaudit.ls(A)
    assert len(listed.layers) == 21 and listed.schema_version == 1
    explained = bnaudit.explain(A, B, layer=["backbone.layer1.0.bn1"])
    assert [layer.name for layer in explained.layers] == ["backbone.layer1.0.bn1"]


def test_errors_carry_the_exit_code_and_stderr(tmp_path):
    with pytest.raises(bnaudit.BnauditError) as usage:
        bnaudit.check(A, B, frozen=["no_such_module"])
    assert usage.value.code == 2 and "no_such_module" in usage.value.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(bnaudit.BnauditError) as input_error:
        bnaudit.ls(bad)
    assert input_error.value.code == 3 and str(bad) in input_error.value.stderr
    with pytest.raises(TypeError):
        bnaudit.ls(A, output="x.json")


def test_demo_runs_from_the_root_directory():
    done = subprocess.run([bnaudit.binary(), "demo"], cwd="/", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "backbone: 20/20 BatchNorm layers drifted" in done.stdout


def test_the_wrappers_need_no_torch():
    code = "import sys, bnaudit; bnaudit.ls; bnaudit.check; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

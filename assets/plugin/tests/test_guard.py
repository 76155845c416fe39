import json
import os
import warnings

import pytest
import torch
from conftest import small_model
from torch import nn

import bnaudit

HERE = os.path.relpath(__file__)
ORIGINAL_TRAIN = nn.Module.train


@pytest.fixture(autouse=True)
def no_guard_left_installed():
    """Every test removes its guards, which restores ``Module.train``; a failed test's leftover
    is undone so that it fails alone."""
    yield
    left = nn.Module.train is not ORIGINAL_TRAIN
    nn.Module.train = ORIGINAL_TRAIN
    bnaudit._guard._RECORDER.__init__()
    assert not left, "a guard was left installed"


def at(marker):
    """`file:line` of the line of this file that holds ``marker`` (a comment)."""
    with open(__file__) as f:
        (line,) = [i for i, text in enumerate(f, 1) if text.rstrip().endswith("# " + marker)]
    return f"{HERE}:{line}"


def joint_model():
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model_b = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    joint = nn.Sequential()
    joint.add_module("model_A", model_a)
    joint.add_module("model_B", model_b)
    model_a.requires_grad_(False)
    return joint


def test_raises_before_stats_move_and_names_the_parents_train_call():
    joint = joint_model()
    joint.model_A.eval()
    guard = bnaudit.assert_frozen_bn(joint, ["model_A"])  # installed
    assert bnaudit.assert_frozen_bn(joint, ["model_A"]) is guard
    joint(torch.randn(5, 3))
    joint.train()  # parent
    mean = joint.model_A[1].running_mean.clone()
    with pytest.raises(bnaudit.FrozenBatchNormError) as err:
        joint(torch.randn(5, 3))
    assert str(err.value).startswith("'model_A.1' ran a train-mode forward (frozen scope 'model_A'; num_batches_tracked=0")
    assert f"model_A was put in train mode by `joint.train()  # parent` at {at('parent')}" in str(err.value)
    assert f"(frozen since {at('installed')})" in str(err.value)
    torch.testing.assert_close(joint.model_A[1].running_mean, mean, rtol=0, atol=0)
    assert int(joint.model_A[1].num_batches_tracked) == 0
    # The fix: the frozen part back in eval mode while the rest trains.
    joint.model_A.eval()
    joint(torch.randn(5, 3))
    assert int(joint.model_B[1].num_batches_tracked) == 2
    guard.remove()
    joint.train()
    joint(torch.randn(5, 3))
    assert int(joint.model_A[1].num_batches_tracked) == 1


def test_train_on_the_module_itself():
    joint = joint_model().eval()
    with bnaudit.assert_frozen_bn(joint, ["model_A"]):
        joint.model_A[1].train()  # itself
        with pytest.raises(bnaudit.FrozenBatchNormError, match=r"by `joint\.model_A\[1\]\.train\(\)  # itself` at "):
            joint(torch.randn(5, 3))


def set_train(m):
    m.train()  # inside apply


def test_train_through_apply():
    joint = joint_model().eval()
    with bnaudit.assert_frozen_bn(joint, ["model_A"], on_violation="record") as guard:
        joint.apply(set_train)  # apply
        joint(torch.randn(5, 3))
        joint.eval()
        joint.apply(lambda m: m.train())  # inline apply
        joint(torch.randn(5, 3))
    first, second = guard.events
    assert f"by `m.train()  # inside apply` at {at('inside apply')} via `joint.apply(set_train)  # apply` at {at('apply')}" in first["message"]
    assert first["mode_call"]["via"]["line"] == int(at("apply").rsplit(":", 1)[1])
    # A lambda on the line of the apply call: one site, not the same line twice.
    assert f"by `joint.apply(lambda m: m.train())  # inline apply` at {at('inline apply')} (frozen" in second["message"]


def test_training_assigned_directly():
    joint = joint_model()
    with bnaudit.assert_frozen_bn(joint, ["model_A"], on_violation="record") as guard:
        joint.eval()  # eval
        for m in joint.modules():
            m.training = True
        joint(torch.randn(5, 3))
    (event,) = guard.events
    assert f"model_A was put back in train mode without .train() after `joint.eval()  # eval` at {at('eval')} put it in eval mode" in event["message"]
    assert event["mode_call"]["training"] is False


def test_modules_start_in_train_mode():
    joint = joint_model()  # never put in eval mode
    with bnaudit.assert_frozen_bn(joint, ["model_A"]):
        with pytest.raises(bnaudit.FrozenBatchNormError, match="already in train mode when the guard was installed"):
            joint(torch.randn(5, 3))


def test_warn_once_per_layer_and_training_goes_on():
    joint = joint_model().train()
    joint.model_B.requires_grad_(False)
    with bnaudit.assert_frozen_bn(joint, ["model_A", "model_B"], on_violation="warn"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                joint(torch.randn(5, 3))
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["model_A.1", "model_B.1"]
    assert all(issubclass(w.category, bnaudit.FrozenBatchNormWarning) for w in caught)
    assert int(joint.model_A[1].num_batches_tracked) == 3


def test_record_collects_every_event_and_writes_the_report(tmp_path):
    joint = joint_model().eval()
    guard = bnaudit.assert_frozen_bn(joint, ["model_A"], on_violation="record")
    joint(torch.randn(5, 3))
    joint.train()  # record
    for _ in range(2):
        joint(torch.randn(5, 3))
    path = guard.write_report(str(tmp_path / "guard.json"))
    guard.remove()
    assert not hasattr(joint, "_bnaudit_guard")
    joint(torch.randn(5, 3))  # removed: nothing more recorded
    with open(path) as f:
        report = json.load(f)
    assert report["frozen"] == ["model_A"] and report["on_violation"] == "record"
    assert report["forwards"] == {"model_A.1": 3}
    assert [(e["layer"], e["forward"], e["num_batches_tracked"]) for e in report["events"]] == [
        ("model_A.1", 1, 0),
        ("model_A.1", 2, 1),
    ]
    call = report["events"][0]["mode_call"]
    assert call["training"] is True
    assert (call["code"], f"{os.path.relpath(call['file'])}:{call['line']}") == ("joint.train()  # record", at("record"))
    assert report["events"][0]["frozen_module"] == "model_A"
    assert report["frozen_since"]["line"] == int(at("record").rsplit(":", 1)[1]) - 2


def test_without_patterns_requires_grad_decides():
    m = small_model().train()
    guard = bnaudit.assert_frozen_bn(m)
    m(torch.randn(2, 3, 6, 6))  # nothing frozen yet
    m[1].requires_grad_(False)
    with pytest.raises(bnaudit.FrozenBatchNormError, match=r"'1\.2' ran a train-mode forward \(its parameters have requires_grad=False"):
        m(torch.randn(2, 3, 6, 6))
    # Other patterns replace the installed guard: now only the backbone is frozen.
    m[1].requires_grad_(True)
    assert bnaudit.assert_frozen_bn(m, ["0"]) is not guard
    with pytest.raises(bnaudit.FrozenBatchNormError, match=r"'0\.1' ran a train-mode forward \(frozen scope '0'"):
        m(torch.randn(2, 3, 6, 6))
    m._bnaudit_guard.remove()


def test_untracked_layers_pass_and_bad_options():
    m = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)).train()
    with bnaudit.assert_frozen_bn(m, ["0"]):
        m(torch.randn(4, 3))
    with pytest.raises(ValueError, match="on_violation"):
        bnaudit.assert_frozen_bn(m, ["0"], on_violation="ignore")
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        bnaudit.assert_frozen_bn(m, ["nothing"])


def test_train_is_restored_when_the_last_guard_goes():
    original = ORIGINAL_TRAIN
    m = small_model()
    with bnaudit.assert_frozen_bn(m, ["0"]):
        with bnaudit.assert_frozen_bn(small_model(), ["1"]):
            assert nn.Module.train is not original
        assert nn.Module.train is not original
    assert nn.Module.train is original

import pytest
import torch
from conftest import read_activations, small_model
from torch import nn

import bnaudit


def test_records_inputs_outputs_and_metadata(tmp_path):
    m = small_model().train()
    xs = [torch.randn(6, 3, 6, 6) for _ in range(3)]
    path = tmp_path / "acts.safetensors"
    expected_out = []
    with bnaudit.capture_bn(m, str(path)) as cap:
        for x in xs:
            y = m[0][1](m[0][0](x))
            expected_out.append(y.detach().clone())
            m[1](y.relu_())  # in place, after the layer's hook copied its output
    assert cap.forwards("0.1") == 3
    tensors, meta = read_activations(path)
    assert set(meta) == {"0.1", "1.2"}
    assert meta["0.1"]["momentum"] == 0.1
    assert meta["1.2"]["momentum"] is None
    assert meta["0.1"]["eps"] == 1e-5
    assert meta["0.1"]["training"] and meta["0.1"]["track_running_stats"]
    assert meta["0.1"]["num_batches_tracked"] == 0
    assert meta["0.1"]["training_per_forward"] == [True] * 3
    assert tensors["0.1.input.0"].shape == (6, 4, 4, 4)
    assert tensors["1.2.input.2"].shape == (6, 5)
    for i in range(3):
        torch.testing.assert_close(tensors[f"0.1.output.{i}"], expected_out[i], rtol=0, atol=0)
    # The in-place ReLU after the layer did not alter the recorded output.
    assert (tensors["0.1.output.1"] < 0).any()


def test_patterns_limits_prefix_and_eval(tmp_path):
    m = small_model().eval()
    path = tmp_path / "acts.safetensors"
    xs = [torch.randn(5, 3, 6, 6) for _ in range(4)]
    with bnaudit.capture_bn(m, str(path), ["1"], outputs=False, max_forwards=2, max_samples=3, prefix="module."):
        for x in xs:
            m(x)
    tensors, meta = read_activations(path)
    assert sorted(tensors) == ["module.1.2.input.0", "module.1.2.input.1"]
    assert tensors["module.1.2.input.0"].shape == (3, 5)
    expected = m[1][1](m[1][0](m[0](xs[1])))[:3]
    torch.testing.assert_close(tensors["module.1.2.input.1"], expected, rtol=0, atol=0)
    assert meta["module.1.2"]["training_per_forward"] == [False, False]
    assert not meta["module.1.2"]["training"]


def test_stats_only_equals_torch_batch_statistics(tmp_path):
    """Our f64 batch statistics against the ones PyTorch's own kernel folds into the running
    statistics: with momentum=1 one train forward leaves running_mean = batch mean and
    running_var = unbiased batch variance."""
    torch.manual_seed(1)
    conv_bn = nn.BatchNorm2d(4, momentum=1.0)
    seq_bn = nn.BatchNorm1d(3, momentum=1.0)  # N×C×L input
    path = tmp_path / "stats.safetensors"
    inputs = {"0": torch.randn(8, 4, 5, 5) * 3 + 2, "1": torch.randn(6, 3, 7) - 1}
    model = nn.ModuleDict({"0": conv_bn, "1": seq_bn}).train()
    with bnaudit.capture_bn(model, str(path), stats_only=True):
        for name, x in inputs.items():
            model[name](x)
    tensors, meta = read_activations(path)
    assert sorted(tensors) == sorted(f"{n}.batch_{s}.0" for n in "01" for s in ("count", "mean", "var"))
    for name, x in inputs.items():
        bn = model[name]
        mean, var, count = (tensors[f"{name}.batch_{s}.0"] for s in ("mean", "var", "count"))
        assert mean.dtype == var.dtype == torch.float64 and count.dtype == torch.int64 and count.dim() == 0
        n = x.numel() // x.shape[1]
        assert int(count) == n
        torch.testing.assert_close(mean.float(), bn.running_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close((var * n / (n - 1)).float(), bn.running_var, rtol=1e-6, atol=1e-7)
    assert meta["0"]["training_per_forward"] == [True]


def test_untracked_layers_skipped_unless_named():
    m = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), nn.BatchNorm1d(3))
    assert sorted(bnaudit.BnCapture(m).modules) == ["1"]
    assert sorted(bnaudit.BnCapture(m, None, ["0", "1"]).modules) == ["0", "1"]
    with pytest.raises(ValueError):
        bnaudit.BnCapture(nn.Sequential(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False))), None, ["0"])


def test_written_when_training_raises(tmp_path):
    m = small_model().train()
    path = tmp_path / "acts.safetensors"
    with pytest.raises(RuntimeError, match="diverged"):
        with bnaudit.capture_bn(m, str(path), stats_only=True):
            for step in range(3):
                m(torch.randn(2, 3, 6, 6))
                if step == 1:
                    raise RuntimeError("diverged")
    tensors, meta = read_activations(path)
    assert meta["0.1"]["training_per_forward"] == [True, True]
    assert "0.1.batch_mean.1" in tensors and "0.1.batch_mean.2" not in tensors


def test_options_checked_and_hooks_removed():
    m = small_model()
    with pytest.raises(ValueError):
        bnaudit.BnCapture(m, None, ["nothing"])
    with pytest.raises(ValueError):
        bnaudit.BnCapture(m, None, stats_only=True, outputs=True)
    with pytest.raises(ValueError):
        bnaudit.BnCapture(m, None, max_samples=0)
    cap = bnaudit.BnCapture(m, None).start()
    cap.stop()
    m(torch.randn(2, 3, 6, 6))
    assert cap.tensors == {}

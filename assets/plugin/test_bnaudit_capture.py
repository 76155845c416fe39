"""Tests of bnaudit_capture with real PyTorch (not run by CI, which has no torch).

Run: /work/venv/bin/python assets/plugin/test_bnaudit_capture.py
"""

import json
import os
import sys
import tempfile
import types
import unittest

import torch
from safetensors import safe_open
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bnaudit_capture as bc  # noqa: E402


def model() -> nn.Module:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5, momentum=None))
    return nn.Sequential(backbone, head)


def read(path):
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()[bc.METADATA_KEY])
        return {k: f.get_tensor(k) for k in f.keys()}, meta


class Patterns(unittest.TestCase):
    def test_design_examples(self):
        self.assertTrue(bc.matches("backbone", "backbone.layer1.0.bn1"))
        self.assertTrue(bc.matches("backbone.layer[12]", "backbone.layer2.0.bn1"))
        self.assertFalse(bc.matches("backbone.layer[12]", "backbone.layer3.0.bn1"))
        self.assertTrue(bc.matches("**.bn1", "backbone.layer1.0.bn1"))
        self.assertTrue(bc.matches("**.bn1", "bn1"))
        self.assertFalse(bc.matches("**.bn1", "backbone.bn10"))
        self.assertFalse(bc.matches("back", "backbone.bn"))
        self.assertTrue(bc.matches("*.1", "0.1"))


class Capture(unittest.TestCase):
    def test_records_inputs_outputs_and_metadata(self):
        m = model().train()
        xs = [torch.randn(6, 3, 6, 6) for _ in range(3)]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "acts.safetensors")
            expected_out = []
            with bc.capture_bn(m, path) as cap:
                for x in xs:
                    y = m[0][1](m[0][0](x))
                    expected_out.append(y.detach().clone())
                    m[1](y.relu_())  # in place, after the layer's hook copied its output
            self.assertEqual(cap.forwards("0.1"), 3)
            tensors, meta = read(path)
        self.assertEqual(set(meta), {"0.1", "1.2"})
        self.assertEqual(meta["0.1"]["momentum"], 0.1)
        self.assertIsNone(meta["1.2"]["momentum"])
        self.assertEqual(meta["0.1"]["eps"], 1e-5)
        self.assertTrue(meta["0.1"]["training"])
        self.assertTrue(meta["0.1"]["track_running_stats"])
        self.assertEqual(meta["0.1"]["num_batches_tracked"], 0)
        self.assertEqual(meta["0.1"]["training_per_forward"], [True] * 3)
        self.assertEqual(tensors["0.1.input.0"].shape, (6, 4, 4, 4))
        self.assertEqual(tensors["1.2.input.2"].shape, (6, 5))
        for i in range(3):
            torch.testing.assert_close(tensors[f"0.1.output.{i}"], expected_out[i], rtol=0, atol=0)
        # The in-place ReLU after the layer did not alter the recorded output.
        self.assertTrue((tensors["0.1.output.1"] < 0).any())
        self.assertEqual(len([k for k in tensors if k.startswith("1.2.input.")]), 3)

    def test_patterns_limits_prefix_and_eval(self):
        m = model().eval()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "acts.safetensors")
            with bc.capture_bn(m, path, ["1"], outputs=False, max_forwards=2, prefix="module."):
                for _ in range(4):
                    m(torch.randn(2, 3, 6, 6))
            tensors, meta = read(path)
        self.assertEqual(sorted(tensors), ["module.1.2.input.0", "module.1.2.input.1"])
        self.assertEqual(meta["module.1.2"]["training_per_forward"], [False, False])
        self.assertFalse(meta["module.1.2"]["training"])

    def test_no_match_and_hooks_removed(self):
        m = model()
        with self.assertRaises(ValueError):
            bc.BnCapture(m, None, ["nothing"])
        cap = bc.BnCapture(m, None).start()
        cap.stop()
        m(torch.randn(2, 3, 6, 6))
        self.assertEqual(cap.tensors, {})


class Guard(unittest.TestCase):
    def test_raises_before_stats_move(self):
        m = model()
        m[0].requires_grad_(False)
        guard = bc.assert_frozen_bn(m, ["0"])
        self.assertIs(bc.assert_frozen_bn(m, ["0"]), guard)
        m.eval()
        m(torch.randn(2, 3, 6, 6))
        m.train()
        mean = m[0][1].running_mean.clone()
        with self.assertRaisesRegex(bc.FrozenBatchNormError, r"'0\.1'.*train mode"):
            m(torch.randn(2, 3, 6, 6))
        torch.testing.assert_close(m[0][1].running_mean, mean, rtol=0, atol=0)
        self.assertEqual(int(m[0][1].num_batches_tracked), 0)
        # The fix: the frozen part back in eval mode while the head trains.
        m[0].eval()
        m(torch.randn(2, 3, 6, 6))
        self.assertEqual(int(m[1][2].num_batches_tracked), 1)
        guard.remove()
        m.train()
        m(torch.randn(2, 3, 6, 6))
        self.assertEqual(int(m[0][1].num_batches_tracked), 1)

    def test_without_patterns_requires_grad_decides(self):
        m = model().train()
        guard = bc.assert_frozen_bn(m)
        m(torch.randn(2, 3, 6, 6))  # nothing frozen yet
        m[1].requires_grad_(False)
        with self.assertRaisesRegex(bc.FrozenBatchNormError, r"'1\.2'.*requires_grad=False"):
            m(torch.randn(2, 3, 6, 6))
        # Other patterns replace the installed guard: now only the backbone is frozen.
        m[1].requires_grad_(True)
        self.assertIsNot(bc.assert_frozen_bn(m, ["0"]), guard)
        with self.assertRaisesRegex(bc.FrozenBatchNormError, r"'0\.1' \(frozen scope '0'\)"):
            m(torch.randn(2, 3, 6, 6))

    def test_untracked_layers_pass(self):
        m = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)).train()
        bc.assert_frozen_bn(m, ["0"])
        m(torch.randn(4, 3))


class Lightning(unittest.TestCase):
    """The callback against a stand-in `lightning.pytorch` (Lightning is not installed)."""

    def test_callback(self):
        fake = types.ModuleType("lightning.pytorch")
        fake.Callback = type("Callback", (), {})
        parent = types.ModuleType("lightning")
        parent.pytorch = fake
        saved = {k: sys.modules.get(k) for k in ("lightning", "lightning.pytorch", "bnaudit_capture")}
        sys.modules.update({"lightning": parent, "lightning.pytorch": fake})
        sys.modules.pop("bnaudit_capture", None)
        try:
            import bnaudit_capture as with_lightning

            self.assertTrue(issubclass(with_lightning.BnAuditCallback, fake.Callback))
            m = model().train()
            m[0].requires_grad_(False)
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "acts.safetensors")
                cb = with_lightning.BnAuditCallback(frozen=["0"], capture_path=path, capture_layers=["1"], capture_batches=2)
                cb.on_fit_start(None, m)
                with self.assertRaises(with_lightning.FrozenBatchNormError):
                    m(torch.randn(2, 3, 6, 6))
                m[0].eval()
                for i in range(3):
                    m(torch.randn(2, 3, 6, 6))
                    cb.on_train_batch_end(None, m, None, None, i)
                cb.on_fit_end(None, m)
                tensors, meta = read(path)
            self.assertEqual(sorted(tensors), ["1.2.input.0", "1.2.input.1", "1.2.output.0", "1.2.output.1"])
            self.assertFalse(hasattr(m, "_bnaudit_guard"))
        finally:
            for k, v in saved.items():
                if v is None:
                    sys.modules.pop(k, None)
                else:
                    sys.modules[k] = v

    def test_no_callback_without_lightning(self):
        if "lightning" not in sys.modules and "pytorch_lightning" not in sys.modules:
            self.assertFalse(hasattr(bc, "BnAuditCallback"))


if __name__ == "__main__":
    unittest.main()

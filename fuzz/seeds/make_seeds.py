"""Writes the committed seed corpus of the fuzz targets (small, deterministic).

Run from the repository root: python fuzz/seeds/make_seeds.py
Seeds only give the fuzzer a valid starting shape; they claim no PyTorch behaviour.
"""

import json
import pathlib
import struct

import numpy as np
from safetensors.numpy import save

root = pathlib.Path(__file__).resolve().parent
fixtures = root.parent.parent / "tests" / "fixtures"
rng = np.random.default_rng(13)


def put(target, name, data):
    d = root / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data)


def header_seed(path):
    """The header target's input: data-section length, then the header text."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return struct.pack("<Q", len(raw) - 8 - n) + raw[8 : 8 + n]


a = fixtures / "explain" / "a.safetensors"
put("file", "explain_a.safetensors", a.read_bytes())
# The PyTorch-made partner of the checkpoint whole files are compared with (fuzz/src/lib.rs):
# its layers align, so diff, check and explain go past the alignment.
put("file", "small_b.safetensors", (fixtures / "explain" / "small_b.safetensors").read_bytes())
bn = {
    "bn.weight": np.ones(3, np.float32),
    "bn.bias": np.zeros(3, np.float16),
    "bn.running_mean": rng.standard_normal(3).astype(np.float32),
    "bn.running_var": rng.random(3).astype(np.float64),
    "bn.num_batches_tracked": np.array(7, np.int64),
}
put("file", "bn.safetensors", save(bn, metadata={"format": "pt"}))
put("header", "explain_a", header_seed(a))
put("header", "bn", header_seed(root / "file" / "bn.safetensors"))

index = json.loads((fixtures / "ls" / "sharded" / "model.safetensors.index.json").read_text())
put("index", "sharded.json", json.dumps(index).encode())
small = {"metadata": {"total_size": 8}, "weight_map": dict(list(index["weight_map"].items())[:3])}
put("index", "small.json", json.dumps(small).encode())

meta = {"backbone.1": {"momentum": 0.1, "eps": 1e-5, "training": True, "track_running_stats": True}}
x = rng.standard_normal((2, 6, 2, 2)).astype(np.float32)
put("activations", "inputs.safetensors", save(
    {"backbone.1.input.0": x, "backbone.1.output.0": x * 0.5},
    metadata={"bnaudit": json.dumps(meta)},
))
put("activations", "stats.safetensors", save({
    "backbone.1.batch_mean.0": rng.standard_normal(6),
    "backbone.1.batch_var.0": rng.random(6),
    "backbone.1.batch_count.0": np.array(8, np.int64),
}))

# torch.save archives made by real PyTorch (tests/fixtures/torch/gen.py), copied.
for name in ["plain", "deflated", "hostile", "dtypes"]:
    put("torch", f"{name}.pt", (fixtures / "torch" / f"{name}.pt").read_bytes())

put("config", "bnaudit.toml", b'frozen = ["backbone"]\ntrainable = ["backbone.layer4"]\nallow_stats = ["**.bn1"]\n')
put("config", "pyproject.toml", b'[project]\nname = "x"\n\n[tool.bnaudit]\nfrozen = ["backbone.layer[12]"]\n')

"""`bnaudit explain --activations` against PyTorch doing the same work, and its inputs.

Usage:
  python benches/explain_bench.py gen DIR [big|resnet]   write DIR/{a,b,acts}.safetensors
  python benches/explain_bench.py torch DIR [ITERS] [bn] time PyTorch on them, in-process
                                                         (`bn`: the F.batch_norm calls and the
                                                         replay only, no output statistics)

`big`: one BatchNorm2d(256) and one captured 64×256×56×56 f32 train-mode forward, input and
output (a 392 MiB activation file). `resnet`: 20 BatchNorm2d layers of a resnet-like stack
(64 to 512 channels, 56×56 down to 7×7, batch 8), 4 captured train-mode forwards each.

`torch` does what `bnaudit explain A B --activations F --format json` does: load the three
files (safetensors.torch.load_file), then per layer and forward run F.batch_norm in every mode
(train from A's statistics, which is the replay, train without tracking, eval with A's and
with B's, eval without tracking), each output's mean, std and max |error| against the
recorded output, and compare the replayed statistics with B. The interpreter's start and the
import of torch are excluded; the median and minimum of ITERS runs are printed.
benches/explain.sh runs both in one go.
"""

import os
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "assets", "plugin"))


def resnet_like() -> nn.Module:
    layers = []
    c_in = 3
    # 20 BatchNorm layers: stem, then 4 stages of (conv, bn) pairs with strides between.
    plan = [(64, 2)] + [(64, 1)] * 4 + [(128, 2)] + [(128, 1)] * 4 + [(256, 2)] + [(256, 1)] * 4 + [(512, 2)] + [(512, 1)] * 4
    for c, stride in plan[:20]:
        layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers)


def gen(out: str, kind: str) -> None:
    from bnaudit_capture import capture_bn

    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(out, exist_ok=True)
    if kind == "big":
        model = nn.Sequential(nn.BatchNorm2d(256))
        shape, forwards = (64, 256, 56, 56), 1
    else:
        model = resnet_like()
        shape, forwards = (8, 3, 112, 112), 4
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
        model(torch.randn(*shape))
    save = lambda name: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, name))
    save("a.safetensors")
    with torch.no_grad(), capture_bn(model, os.path.join(out, "acts.safetensors")):
        for _ in range(forwards):
            model(torch.randn(*shape) * 2.0 + 0.5)
    save("b.safetensors")


def explain_like_bnaudit(d: str, bn_only: bool = False) -> dict:
    a = load_file(os.path.join(d, "a.safetensors"))
    b = load_file(os.path.join(d, "b.safetensors"))
    acts = load_file(os.path.join(d, "acts.safetensors"))
    layers = sorted({k.rsplit(".", 2)[0] for k in acts})
    report = {}
    with torch.no_grad():
        for name in layers:
            w, bias = a[f"{name}.weight"], a[f"{name}.bias"]
            rm, rv = a[f"{name}.running_mean"].clone(), a[f"{name}.running_var"].clone()
            i = 0
            modes = {}
            while f"{name}.input.{i}" in acts:
                x, rec = acts[f"{name}.input.{i}"], acts[f"{name}.output.{i}"]
                outs = {
                    "train": F.batch_norm(x, rm, rv, w, bias, True, 0.1, 1e-5),
                    "train_no_track": F.batch_norm(x, None, None, w, bias, True, 0.0, 1e-5),
                    "eval_a": F.batch_norm(x, a[f"{name}.running_mean"], a[f"{name}.running_var"], w, bias, False, 0.0, 1e-5),
                    "eval_b": F.batch_norm(x, b[f"{name}.running_mean"], b[f"{name}.running_var"], b[f"{name}.weight"], b[f"{name}.bias"], False, 0.0, 1e-5),
                    "eval_no_track": F.batch_norm(x, None, None, w, bias, True, 0.0, 1e-5),
                }
                for mode, y in outs.items():
                    if bn_only:
                        continue
                    modes.setdefault(mode, []).append((y.mean().item(), y.std().item(), (y - rec).abs().max().item()))
                    del y
                del outs
                i += 1
            replay = ((rm - b[f"{name}.running_mean"]).abs().max().item(), (rv - b[f"{name}.running_var"]).abs().max().item())
            report[name] = {"modes": modes, "replay": replay}
    return report


def bench(d: str, iters: int, bn_only: bool) -> None:
    torch.set_num_threads(2)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        report = explain_like_bnaudit(d, bn_only)
        times.append(time.perf_counter() - t)
        del report
    times.sort()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(times)} runs")
    print(f"median_ms={times[len(times) // 2] * 1e3:.1f}")
    print(f"min_ms={times[0] * 1e3:.1f}")


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "big")
    else:
        bench(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 5, sys.argv[4:5] == ["bn"])

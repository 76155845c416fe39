#!/usr/bin/env python3
"""Generate the bundled demo pair: pretrained.safetensors and finetuned.safetensors.

    /work/venv/bin/python assets/demo/gen_demo.py      (any venv with torch + safetensors)

A small ResNet-like CNN is "pretrained" on a seeded synthetic classification
task. It is then fine-tuned with the classic bug: the backbone is frozen with
`requires_grad_(False)`, but `model.train()` puts its BatchNorm layers back in
train mode, so every head-training step also moves the backbone's running
statistics (and adds 1 to each num_batches_tracked) while its weights stay
bit-identical. Output is deterministic (byte-identical across runs).
"""

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
SEED = 1234
CLASSES = 6
IMG = 32
BATCH = 32
PRETRAIN_STEPS = 80
FINETUNE_STEPS = 25
WIDTHS = (16, 32, 64, 128)

torch.manual_seed(SEED)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# ---------------------------------------------------------------- model ----

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + idt)


class Stem(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Backbone(nn.Module):
    def __init__(self, widths=WIDTHS):
        super().__init__()
        self.stem = Stem(widths[0])
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.out_channels = cin

    def forward(self, x):
        x = self.stem(x)
        for i in range(len(WIDTHS)):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean((2, 3))


class Head(nn.Module):
    def __init__(self, cin, hidden=64, classes=CLASSES):
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.head = Head(self.backbone.out_channels)

    def forward(self, x):
        return self.head(self.backbone(x))


# ----------------------------------------------------------------- data ----

class Task:
    """Class-dependent low-frequency colour patterns plus noise."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        coarse = torch.randn(CLASSES, 3, 4, 4, generator=self.g)
        self.templates = 0.2 * F.interpolate(coarse, size=(IMG, IMG), mode="bilinear",
                                             align_corners=False)

    def batch(self, domain):
        y = torch.randint(0, CLASSES, (BATCH,), generator=self.g)
        noise = torch.randn(BATCH, 3, IMG, IMG, generator=self.g)
        x = self.templates[y]
        # random translation (wrap-around) and per-image gain: harder than templates
        dy, dx = torch.randint(0, IMG, (2,), generator=self.g).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        x = x * (0.5 + torch.rand(BATCH, 1, 1, 1, generator=self.g))
        if domain == "source":
            x = x + 1.0 * noise
        else:  # target domain: brighter, higher contrast, colour cast, noisier
            cast = torch.tensor([0.6, -0.3, 0.2]).view(1, 3, 1, 1)
            x = 1.7 * x + cast + 1.4 * noise
        return x, y


# ------------------------------------------------------------------ io -----

def state_dict_of(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save(model, path):
    save_file(state_dict_of(model), str(path), metadata={"format": "pt"})


def train(model, params, task, domain, steps, lr, tag):
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    for step in range(steps):
        x, y = task.batch(domain)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            acc = (logits.argmax(1) == y).float().mean().item()
            print(f"{tag} step {step:3d} loss {loss.item():.4f} acc {acc:.2f}")


def main():
    print("torch", torch.__version__)
    task = Task(SEED + 1)
    pre_path, fin_path = HERE / "pretrained.safetensors", HERE / "finetuned.safetensors"

    # (1) pretrain the whole network on the source domain
    model = Net()
    model.train()
    train(model, model.parameters(), task, "source", PRETRAIN_STEPS, 0.05, "pretrain")
    save(model, pre_path)

    # (2) fine-tune the head on the target domain, backbone "frozen"
    model = Net()
    model.load_state_dict(load_file(str(pre_path)))
    model.backbone.requires_grad_(False)
    model.train()  # the bug: backbone BatchNorm is back in train mode
    train(model, model.head.parameters(), task, "target", FINETUNE_STEPS, 0.05, "finetune")
    save(model, fin_path)

    # ---- verify the story the pair must tell ----------------------------
    a, b = load_file(str(pre_path)), load_file(str(fin_path))
    assert a.keys() == b.keys()
    bn_layers = sorted(k[: -len(".running_mean")] for k in a if k.endswith(".running_mean"))
    for k in a:
        same = torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype
        layer = k.rsplit(".", 1)[0]
        leaf = k.rsplit(".", 1)[1]
        if k.startswith("backbone."):
            if leaf in ("running_mean", "running_var"):
                assert not same, k
            elif leaf == "num_batches_tracked":
                assert b[k].item() == a[k].item() + FINETUNE_STEPS, k
            else:
                assert same, k  # weights and BN affine parameters bit-identical
        else:
            assert not same, k  # head: weights and stats all changed
        if leaf == "num_batches_tracked":
            assert layer in bn_layers
    assert all((a[f"{l}.running_mean"] != b[f"{l}.running_mean"]).all() for l in bn_layers)
    n_backbone = sum(l.startswith("backbone.") for l in bn_layers)
    print(f"{len(bn_layers)} BatchNorm layers ({n_backbone} in backbone):")
    for l in bn_layers:
        print(f"  {l:34s} channels {a[l + '.running_mean'].numel():4d} "
              f"nbt {a[l + '.num_batches_tracked'].item()} -> {b[l + '.num_batches_tracked'].item()}")
    for p in (pre_path, fin_path):
        print(f"{p.stat().st_size:9d}  {p.name}")


if __name__ == "__main__":
    main()

"""PyTorch peer of bench/models.ts: the same VQ autoencoder and BART shapes, one Adam step each, the
bench's matmuls, and (bench/peer/generate.py) KV-cached greedy sampling from a DalleBart of the bench's shape.

Run by `npm run bench` through /usr/bin/python3 (Debian's python3-torch) as one long-lived process,
`--serve`: it reads JSON requests from stdin, one a line, and answers each with one JSON line, so the
bench alternates our repetitions with PyTorch's (ABAB…) and the machine's drift lands on both alike:
  {"op": "prepare", "id": "bart", "threads": [1, 2]}  build the workload, warm it up, and keep the faster
                                                      intra-op thread count → {"id", "threads", "ms": {...}}
  {"op": "rep", "id": "bart", "n": 1}                 one timed repetition (the mean of a burst of n) → {"id", "ms"}
  {"op": "drop", "id": "bart"}                        free it → {"id"}
  {"op": "quit"}
Errors answer {"error": "..."} and the process keeps serving. Workload ids: matmul:0 … matmul:5 (the
cases of `MATMULS`), vq, bart, gen:<codes>:<batch>:<condScale> (generate.py), clip:<shapes|b32>:<batch> (clip.py),
mini (mini.py).
Without --serve it times everything once, as before: the last line is {"threads": N, "rows": [...]}.
"""
import argparse
import gc
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def vq_autoencoder(batch=8, size=64, channels=(32, 64, 128), codebook=512, code_dim=64, groups=8):
    c0, c1, c2 = channels

    class Res(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(groups, c), nn.Conv2d(c, c, 3, padding=1)
            self.n2, self.c2 = nn.GroupNorm(groups, c), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.c2(F.silu(self.n2(self.c1(F.silu(self.n1(x))))))

    class VQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(3, c0, 3, padding=1), Res(c0), nn.Conv2d(c0, c1, 4, 2, 1), Res(c1),
                                     nn.Conv2d(c1, c2, 4, 2, 1), Res(c2), nn.Conv2d(c2, code_dim, 1))
            self.codebook = nn.Parameter(torch.rand(codebook, code_dim) * 2 - 1)
            self.dec = nn.Sequential(nn.Conv2d(code_dim, c2, 3, padding=1), Res(c2), nn.Upsample(scale_factor=2),
                                     nn.Conv2d(c2, c1, 3, padding=1), Res(c1), nn.Upsample(scale_factor=2),
                                     nn.Conv2d(c1, c0, 3, padding=1), Res(c0))
            self.out = nn.Sequential(nn.GroupNorm(groups, c0), nn.SiLU(), nn.Conv2d(c0, 3, 3, padding=1))

        def forward(self, x):
            h = self.enc(x)
            n, c, hh, ww = h.shape
            z = h.permute(0, 2, 3, 1).reshape(-1, c)
            d = (z * z).sum(1, keepdim=True) - 2 * z @ self.codebook.t() + (self.codebook ** 2).sum(1)
            q = self.codebook[d.detach().argmin(1)]
            vq = F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())
            st = (z + (q - z).detach()).reshape(n, hh, ww, c).permute(0, 3, 1, 2)
            return F.l1_loss(self.out(self.dec(st)), x) + vq

    images = torch.rand(batch, 3, size, size) * 2 - 1
    model = VQ()
    return "vq-autoencoder Adam step", model, lambda: model(images)


def bart(batch=8, layers=4, d=256, heads=4, ffn=1024, text_len=64, image_len=256, vocab=16384):
    def attention(x, mem, lin, causal):
        b, t, _ = x.shape
        s = mem.shape[1]
        q = lin[0](x).view(b, t, heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = lin[1](mem).view(b, s, heads, -1).transpose(1, 2)
        v = lin[2](mem).view(b, s, heads, -1).transpose(1, 2)
        att = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
        if causal:
            att = att.masked_fill(torch.triu(torch.ones(t, s, dtype=torch.bool), 1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        return lin[3](y)

    def attn_block():
        return nn.ModuleList([nn.Linear(d, d) for _ in range(4)])

    class Bart(nn.Module):
        def __init__(self):
            super().__init__()
            self.etok, self.epos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(text_len, d))
            self.dtok, self.dpos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(image_len, d))
            self.enc = nn.ModuleList([nn.ModuleDict({"att": attn_block(), "ln1": nn.LayerNorm(d), "ffn": nn.Sequential(nn.Linear(d, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, d)), "ln2": nn.LayerNorm(d)}) for _ in range(layers)])
            self.dec = nn.ModuleList([nn.ModuleDict({"self": attn_block(), "ln1": nn.LayerNorm(d), "cross": attn_block(), "ln2": nn.LayerNorm(d), "ffn": nn.Sequential(nn.Linear(d, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, d)), "ln3": nn.LayerNorm(d)}) for _ in range(layers)])
            self.head = nn.Linear(d, vocab)

        def forward(self, text, image):
            x = self.etok(text) + self.epos
            for l in self.enc:
                x = l["ln1"](x + attention(x, x, l["att"], False))
                x = l["ln2"](x + l["ffn"](x))
            y = self.dtok(image) + self.dpos
            for l in self.dec:
                y = l["ln1"](y + attention(y, y, l["self"], True))
                y = l["ln2"](y + attention(y, x, l["cross"], False))
                y = l["ln3"](y + l["ffn"](y))
            return F.cross_entropy(self.head(y).reshape(-1, vocab), image.reshape(-1))

    text = torch.randint(0, vocab, (batch, text_len))
    image = torch.randint(0, vocab, (batch, image_len))
    model = Bart()
    return "bart Adam step", model, lambda: model(text, image)


class Train:
    """One Adam step per repetition."""

    def __init__(self, make):
        self.name, self.model, self.loss_fn = make()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)

    def rep(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss_fn().backward()
        self.opt.step()


MATMULS = [
    ("2-D 1024×1024 @ 1024×1024", (1024, 1024), (1024, 1024), False, False),
    ("weight grad aᵀb 2048×256ᵀ @ 2048×1024", (2048, 256), (2048, 1024), True, False),
    ("input grad abᵀ 2048×1024 @ 256×1024ᵀ", (2048, 1024), (256, 1024), False, True),
    ("attention q·kᵀ 8×4×256×64 @ 8×4×256×64ᵀ", (8, 4, 256, 64), (8, 4, 256, 64), False, True),
    ("attention p·v 8×4×256×256 @ 8×4×256×64", (8, 4, 256, 256), (8, 4, 256, 64), False, False),
    ("shared weight 8×256×256 @ 256×1024", (8, 256, 256), (256, 1024), False, False),
]


class Matmul:
    def __init__(self, case):
        self.name, a_shape, b_shape, self.ta, self.tb = case
        self.a, self.b = torch.rand(a_shape), torch.rand(b_shape)

    def rep(self):
        return (self.a.transpose(-2, -1) if self.ta else self.a) @ (self.b.transpose(-2, -1) if self.tb else self.b)


def make_workload(wid):
    kind, _, rest = wid.partition(":")
    if kind == "matmul":
        return Matmul(MATMULS[int(rest)])
    if kind == "vq":
        return Train(vq_autoencoder)
    if kind == "bart":
        return Train(bart)
    if kind == "gen":
        from generate import Generate  # bench/peer/generate.py
        codes, batch, scale = rest.split(":")
        return Generate(int(codes), int(batch), float(scale))
    if kind == "clip":
        from clip import ClipScore  # bench/peer/clip.py
        size, batch = rest.split(":")
        return ClipScore(size, int(batch))
    if kind == "mini":
        from mini import MiniStep  # bench/peer/mini.py
        return MiniStep()
    raise ValueError(f"unknown workload id {wid!r}")


def timed(w):
    t0 = time.perf_counter()
    w.rep()
    return (time.perf_counter() - t0) * 1000


def serve():
    workloads = {}  # id → (workload, threads)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            op, wid = req.get("op"), req.get("id")
            if op == "quit":
                break
            if op == "prepare":
                torch.manual_seed(0)
                w = make_workload(wid)
                timed(w)  # warm-up (allocator, BLAS buffers, first-call costs)
                # Debian's torch has BLAS threads of its own besides the intra-op ones, which
                # oversubscribe the cores on some workloads and not others: keep the faster count.
                trial = {}
                for n in req.get("threads", [os.cpu_count()]):
                    torch.set_num_threads(n)
                    trial[n] = min(timed(w) for _ in range(int(req.get("trials", 2))))
                best = min(trial, key=trial.get)
                workloads[wid] = (w, best)
                out = {"id": wid, "threads": best, "ms": {str(k): v for k, v in trial.items()}}
                if hasattr(w, "info"):
                    out["info"] = w.info()
            elif op == "rep":
                w, n = workloads[wid]
                torch.set_num_threads(n)
                k = int(req.get("n", 1))  # a burst of k calls, their mean (for short workloads)
                out = {"id": wid, "ms": sum(timed(w) for _ in range(k)) / k}
            elif op == "drop":
                workloads.pop(wid, None)
                gc.collect()
                out = {"id": wid}
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as e:  # answer and keep serving: the bench decides what a failure means
            out = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--serve", action="store_true", help="answer JSON-line requests on stdin (the bench's ABAB mode)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--only", default="matmul,vq,bart")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (default: every core, as our native kernels)")
    args = p.parse_args()
    if args.serve:
        serve()
        return
    # Debian's torch starts with 1 intra-op thread here (its BLAS has its own pthreads); give it every core
    # for convs and elementwise ops too, so the comparison is against PyTorch at its best on this machine.
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    torch.manual_seed(0)
    rows = []
    if "matmul" in only:
        for i, case in enumerate(MATMULS):
            w = Matmul(case)
            timed(w)
            ms = statistics.median(timed(w) for _ in range(5))
            out = w.rep()
            k = case[1][-2] if case[3] else case[1][-1]
            rows.append({"name": w.name, "ms": ms, "gflops": 2 * out.numel() * k / ms / 1e6})
    for kind, make in (("vq", vq_autoencoder), ("bart", bart)):
        if kind in only:
            w = Train(make)
            times = [timed(w) for _ in range(args.steps)]
            rows.append({"name": w.name, "ms": statistics.median(times[1:])})
    print(json.dumps({"threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()

"""PyTorch peer of the bench's `clip` section: CLIP image scoring (the vision tower and projection, unit image
embeddings, cosine with one unit text embedding) for a batch, in plain torch modules written from HF
CLIPModel's computation (as tests/fixtures/clip/reference_forward.py): patch conv, class token, positions,
pre_layrnorm, pre-LN layers with quick_gelu, post_layernorm, visual_projection. Random weights (the speed does
not depend on them). One repetition = one batch of images scored, under torch.no_grad.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {
    # the quickstart's shapes CLIP: 32 px, 8 px patches, width 128, 2 layers, 4 heads, MLP 256, projection 128
    "shapes": dict(image=32, patch=8, width=128, layers=2, heads=4, mlp=256, proj=128),
    # openai/clip-vit-base-patch32's vision tower
    "b32": dict(image=224, patch=32, width=768, layers=12, heads=12, mlp=3072, proj=512),
}


class Layer(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, mlp), nn.Linear(mlp, d)

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.heads
        h = self.ln1(x)
        split = lambda y: y.view(b, t, self.heads, hs).transpose(1, 2)
        q, k, v = split(self.q(h) * hs**-0.5), split(self.k(h)), split(self.v(h))
        y = ((q @ k.transpose(-1, -2)).softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.o(y)
        h = self.fc1(self.ln2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class Vision(nn.Module):
    def __init__(self, s):
        super().__init__()
        n = (s["image"] // s["patch"]) ** 2 + 1
        self.patch = nn.Conv2d(3, s["width"], s["patch"], s["patch"], bias=False)
        self.cls = nn.Parameter(torch.randn(s["width"]) * 0.02)
        self.pos = nn.Parameter(torch.randn(n, s["width"]) * 0.02)
        self.pre, self.post = nn.LayerNorm(s["width"]), nn.LayerNorm(s["width"])
        self.layers = nn.ModuleList(Layer(s["width"], s["heads"], s["mlp"]) for _ in range(s["layers"]))
        self.proj = nn.Linear(s["width"], s["proj"], bias=False)

    def forward(self, px):  # (B, 3, S, S), already normalised
        x = self.patch(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos
        x = self.pre(x)
        for layer in self.layers:
            x = layer(x)
        return self.proj(self.post(x[:, 0]))


class ClipScore:
    def __init__(self, size, batch):
        torch.manual_seed(0)
        s = SIZES[size]
        self.model = Vision(s).eval()
        self.px = torch.rand(batch, 3, s["image"], s["image"])
        self.text = F.normalize(torch.randn(1, s["proj"]), dim=-1)
        self.mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    def rep(self):
        with torch.no_grad():
            img = F.normalize(self.model((self.px - self.mean) / self.std), dim=-1)
            return (100 * (img @ self.text.T).clamp(min=0)).sum().item()

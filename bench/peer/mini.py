"""PyTorch peer of the bench's `mini` section: DalleBart at dalle-mini's mini size (DALLEBART_DEFAULTS: 12 + 12
layers, d 1024, 16 heads, GLU FFN 2730 with exact GELU, no biases on linears, post-LN, text 64 of a 50264
vocabulary, 256 codes of 16384 + BOS), one training step at batch 1 with Adafactor (factored second moments,
update RMS clipped to 1, no momentum — optax's defaults as src/ml/optim/adafactor.ts; torch 1.13 has none).
Random weights and data. One repetition = one step.
"""
import math
import resource

import torch
import torch.nn as nn
import torch.nn.functional as F

C = dict(layers=12, d=1024, heads=16, ffn=2730, text_len=64, text_vocab=50264, image_len=256, image_vocab=16384)


def lin(i, o):
    return nn.Linear(i, o, bias=False)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (lin(d, d) for _ in range(4))

    def forward(self, x, mem, bias):
        b, t, d = x.shape
        s = mem.shape[1]
        hs = d // self.heads
        q = (self.q_proj(x) / math.sqrt(hs)).view(b, t, self.heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(mem).view(b, s, self.heads, hs).transpose(1, 2)
        v = self.v_proj(mem).view(b, s, self.heads, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1) + bias).softmax(-1)  # (B, nh, T, S)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Glu(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.fc0, self.fc1, self.fc2 = lin(d, f), lin(d, f), lin(f, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc0(x)) * self.fc1(x))


class Layer(nn.Module):
    def __init__(self, d, heads, f, cross):
        super().__init__()
        self.self_attn, self.ln1 = Attention(d, heads), nn.LayerNorm(d)
        self.cross = Attention(d, heads) if cross else None
        self.ln2 = nn.LayerNorm(d) if cross else None
        self.ffn, self.ln3 = Glu(d, f), nn.LayerNorm(d)

    def forward(self, x, self_bias, enc=None, enc_bias=None):
        x = self.ln1(x + self.self_attn(x, x, self_bias))
        if self.cross is not None:
            x = self.ln2(x + self.cross(x, enc, enc_bias))
        return self.ln3(x + self.ffn(x))


class DalleBartMini(nn.Module):
    def __init__(self, layers, d, heads, ffn, text_len, text_vocab, image_len, image_vocab):
        super().__init__()
        self.shared, self.enc_pos, self.enc_ln = nn.Embedding(text_vocab, d), nn.Parameter(torch.randn(text_len + 2, d) * 0.02), nn.LayerNorm(d)
        self.enc = nn.ModuleList(Layer(d, heads, ffn, False) for _ in range(layers))
        self.embed_tokens, self.dec_pos, self.dec_ln = nn.Embedding(image_vocab + 1, d), nn.Parameter(torch.randn(image_len + 1, d) * 0.02), nn.LayerNorm(d)
        self.dec = nn.ModuleList(Layer(d, heads, ffn, True) for _ in range(layers))
        self.lm_head = lin(d, image_vocab + 1)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0, 0.02)
        self.image_vocab = image_vocab

    def forward(self, ids, mask, codes):
        b, t = ids.shape
        enc_bias = ((1 - mask.float()) * -1e9)[:, None, None, :]
        x = self.enc_ln(self.shared(ids) + self.enc_pos[2:2 + t])
        for layer in self.enc:
            x = layer(x, enc_bias)
        inp = torch.cat([torch.full((b, 1), self.image_vocab), codes[:, :-1]], 1)  # BOS + codes
        n = inp.shape[1]
        causal = torch.triu(torch.full((n, n), -1e9), 1)
        y = self.dec_ln(self.embed_tokens(inp) + self.dec_pos[:n])
        for layer in self.dec:
            y = layer(y, causal, x, enc_bias)
        return F.cross_entropy(self.lm_head(y).reshape(b * n, -1), codes.reshape(-1))


class Adafactor:
    """optax.adafactor's defaults: β2ₜ = 1 − (t+1)^−0.8, ε1 = 1e-30, factored when the second-largest dim ≥ 128."""

    def __init__(self, params, lr):
        self.params, self.lr, self.t, self.state = list(params), lr, 0, {}

    @torch.no_grad()
    def step(self):
        beta2 = 1 - (self.t + 1) ** -0.8
        for p in self.params:
            g = p.grad
            g2 = g * g + 1e-30
            s = self.state.setdefault(p, {})
            if p.dim() == 2 and min(p.shape) >= 128:
                d0 = 0 if p.shape[0] >= p.shape[1] else 1  # the largest dim
                d1 = 1 - d0
                vr = s["vr"] = s.get("vr", torch.zeros(p.shape[d1])).mul_(beta2).add_(g2.mean(d0), alpha=1 - beta2)
                vc = s["vc"] = s.get("vc", torch.zeros(p.shape[d0])).mul_(beta2).add_(g2.mean(d1), alpha=1 - beta2)
                rf = (vr / vr.mean()).rsqrt_()
                cf = vc.rsqrt()
                u = g * (rf.unsqueeze(d0) * cf.unsqueeze(d1))
            else:
                v = s["v"] = s.get("v", torch.zeros_like(p)).mul_(beta2).add_(g2, alpha=1 - beta2)
                u = g * v.rsqrt()
            u.div_(torch.clamp(u.pow(2).mean().sqrt(), min=1.0))
            p.sub_(u, alpha=self.lr)
        self.t += 1


class MiniStep:
    def __init__(self):
        self.model = DalleBartMini(**C)
        self.opt = Adafactor(self.model.parameters(), 1e-4)
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(3, C["text_vocab"], (1, C["text_len"]), generator=g)
        self.mask = torch.zeros(1, C["text_len"], dtype=torch.long)
        self.mask[:, :24] = 1
        self.codes = torch.randint(0, C["image_vocab"], (1, C["image_len"]), generator=g)

    def rep(self):
        for p in self.model.parameters():
            p.grad = None
        self.model(self.ids, self.mask, self.codes).backward()
        self.opt.step()

    def info(self):
        return {"params": sum(p.numel() for p in self.model.parameters()), "maxRssGiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}

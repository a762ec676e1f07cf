"""PyTorch peer of the bench's `generate` section: a DalleBart of the bench BART's shape (4 + 4 layers,
d 256, 4 heads, FFN 1024 with tanh GELU, biases, post-LN, 64 text positions, 16384 codes + BOS),
written as plain modules with a KV cache, and greedy sampling of image codes as
src/ml/sampling/index.ts does it:

    encode the text (and the empty caption with super-conditioning) once → cross-attention K/V once per
    layer → per position: one decoder step over the cached self-attention K/V → logits of the next code
    (BOS column excluded) → uncond + scale·(cond − uncond) → arg-max → feed it back

Random weights (N(0, 0.02)): the speed does not depend on them, and the codes are not compared with ours.
One repetition = one full generation of `codes` codes for `batch` prompts.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG = dict(layers=4, d=256, heads=4, ffn=1024, text_len=64, text_vocab=16384, image_vocab=16384)
NEG_INF = -1e9


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hs = heads, d // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def split(self, x):  # (B, T, C) → (B, nh, T, hs)
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.hs).transpose(1, 2)

    def kv(self, x):
        return self.split(self.k_proj(x)), self.split(self.v_proj(x))

    def forward(self, x, k, v, bias):
        q = self.split(self.q_proj(x) / math.sqrt(self.hs))  # (B, nh, T, hs)
        att = q @ k.transpose(-2, -1)  # (B, nh, T, S)
        if bias is not None:
            att = att + bias
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)  # (B, T, C)
        return self.out_proj(y)


class Ffn(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, f):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = Attention(d, heads), nn.LayerNorm(d)
        self.ffn, self.final_layer_norm = Ffn(d, f), nn.LayerNorm(d)

    def forward(self, x, bias):
        k, v = self.self_attn.kv(x)
        x = self.self_attn_layer_norm(x + self.self_attn(x, k, v, bias))
        return self.final_layer_norm(x + self.ffn(x))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, f):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = Attention(d, heads), nn.LayerNorm(d)
        self.encoder_attn, self.encoder_attn_layer_norm = Attention(d, heads), nn.LayerNorm(d)
        self.ffn, self.final_layer_norm = Ffn(d, f), nn.LayerNorm(d)

    def step(self, x, cache, cross, cross_bias):
        """x (B, 1, C); cache (k, v) of earlier positions or None → (B, 1, C), the extended cache."""
        k, v = self.self_attn.kv(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)  # (B, nh, t+1, hs)
        x = self.self_attn_layer_norm(x + self.self_attn(x, k, v, None))  # one query: every key is earlier
        x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, cross[0], cross[1], cross_bias))
        return self.final_layer_norm(x + self.ffn(x)), (k, v)


class DalleBart(nn.Module):
    def __init__(self, image_len, layers, d, heads, ffn, text_len, text_vocab, image_vocab):
        super().__init__()
        self.image_vocab = image_vocab
        self.shared = nn.Embedding(text_vocab, d)
        self.enc_pos = nn.Parameter(torch.randn(text_len + 2, d) * 0.02)  # HF BART's offset of 2
        self.enc_ln = nn.LayerNorm(d)
        self.enc = nn.ModuleList(EncoderLayer(d, heads, ffn) for _ in range(layers))
        self.embed_tokens = nn.Embedding(image_vocab + 1, d)  # + BOS
        self.dec_pos = nn.Parameter(torch.randn(image_len + 1, d) * 0.02)
        self.dec_ln = nn.LayerNorm(d)
        self.dec = nn.ModuleList(DecoderLayer(d, heads, ffn) for _ in range(layers))
        self.lm_head = nn.Linear(d, image_vocab + 1, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0, 0.02)

    def encode(self, ids, mask):
        t = ids.shape[1]
        x = self.enc_ln(self.shared(ids) + self.enc_pos[2:2 + t])
        bias = ((1 - mask.float()) * NEG_INF)[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.enc:
            x = layer(x, bias)
        return x, bias

    @torch.inference_mode()
    def generate(self, ids, mask, codes, batch, cond_scale):
        """Greedy codes (batch, codes); with cond_scale ≠ 1 the rows batch… are the unconditional ones."""
        enc, bias = self.encode(ids, mask)
        cross = [layer.encoder_attn.kv(enc) for layer in self.dec]
        caches = [None] * len(self.dec)
        rows = ids.shape[0]
        prev = torch.full((rows, 1), self.image_vocab, dtype=torch.long)  # BOS
        out = torch.empty(batch, codes, dtype=torch.long)
        for t in range(codes):
            h = self.dec_ln(self.embed_tokens(prev) + self.dec_pos[t])  # (rows, 1, C)
            for i, layer in enumerate(self.dec):
                h, caches[i] = layer.step(h, caches[i], cross[i], bias)
            logits = self.lm_head(h[:, 0])[:, : self.image_vocab]  # (rows, V − 1): BOS never drawn
            if cond_scale != 1:
                logits = logits[batch:] + cond_scale * (logits[:batch] - logits[batch:])
            code = logits.argmax(-1)  # (batch,)
            out[:, t] = code
            prev = (torch.cat([code, code]) if cond_scale != 1 else code)[:, None]
        return out


class Generate:
    """`codes` greedy codes for `batch` prompts (with the empty caption's rows when cond_scale ≠ 1)."""

    def __init__(self, codes, batch, cond_scale):
        c = CONFIG
        self.codes, self.batch, self.scale = codes, batch, cond_scale
        self.model = DalleBart(image_len=codes, **c).eval()
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, c["text_vocab"], (batch, c["text_len"]), generator=g)
        mask = torch.zeros(batch, c["text_len"], dtype=torch.long)
        mask[:, :24] = 1  # a 24-token caption, the rest padding (as the TypeScript bench)
        if cond_scale != 1:  # the empty caption: BOS, EOS, padding
            empty = torch.ones(batch, c["text_len"], dtype=torch.long)
            empty[:, 0], empty[:, 1] = 0, 2
            empty_mask = torch.zeros_like(mask)
            empty_mask[:, :2] = 1
            ids, mask = torch.cat([ids, empty]), torch.cat([mask, empty_mask])
        self.ids, self.mask = ids, mask

    def rep(self):
        return self.model.generate(self.ids, self.mask, self.codes, self.batch, self.scale)

    def info(self):
        return {"params": sum(p.numel() for p in self.model.parameters())}

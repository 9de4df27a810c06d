#!/usr/bin/env python3
"""hf-compare.py — node-mend's CPU logits and loss against Hugging Face transformers' GPT2LMHeadModel
on the same weights and batch (the fixtures of scripts/hf-fixture.js), on the CPU and, where torch
sees a GPU, on CUDA (TF32 off, so both are fp32).

    python3 scripts/hf-compare.py FIXTURE_DIR [FIXTURE_DIR ...]

Each FIXTURE_DIR holds batch.json (model_dir: a Hugging Face GPT-2 directory, relative to FIXTURE_DIR;
input_ids, attention_mask, labels, node-mend's loss) and logits.safetensors (node-mend's logits).
Position ids are node-mend's: max(0, cumsum(mask) - 1), passed to transformers explicitly. Logits are
compared where attention_mask = 1 (a padding query sees no key: node-mend gives it output 0,
transformers a uniform row). Without transformers (this is not the device machine), a built-in
PyTorch GPT-2 is the reference instead, and the output says so: that checks this script and the
fixture, not node-mend against Hugging Face. Exit 0 when every comparison is within tolerance.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

TOL_MAX_ABS = 1e-3   # largest |Δlogit| allowed (fp32, different summation orders)
TOL_NMSE = 1e-9      # Σ Δ² / Σ ref²
TOL_LOSS = 1e-4      # |Δloss|


def read_safetensors(path):
    """A small safetensors reader (F32 only), so the script needs no safetensors package."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] != 'F32':
            raise ValueError(f'{path}: {name} is {info["dtype"]}, only F32 is read here')
        a, b = info['data_offsets']
        out[name] = np.frombuffer(data[a:b], dtype='<f4').reshape(info['shape']).copy()
    return out


def reference_gpt2(model_dir):
    """GPT-2 in plain PyTorch (eval mode, gelu_new, pre-LN, tied head): the stand-in for transformers."""
    cfg = json.load(open(os.path.join(model_dir, 'config.json')))
    w = {k[len('transformer.'):] if k.startswith('transformer.') else k: torch.from_numpy(v)
         for k, v in read_safetensors(os.path.join(model_dir, 'model.safetensors')).items()}
    L, H, eps = cfg['n_layer'], cfg['n_head'], cfg.get('layer_norm_epsilon', 1e-5)

    def ln(x, p):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w[p + '.weight'], w[p + '.bias'], eps)

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x.pow(3))))

    def forward(input_ids, attention_mask, position_ids):
        B, T = input_ids.shape
        x = w['wte.weight'][input_ids] + w['wpe.weight'][position_ids]
        C = x.shape[-1]
        hs = C // H
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        allowed = causal[None, None] & (attention_mask[:, None, None, :] != 0)
        for i in range(L):
            p = f'h.{i}.'
            a = ln(x, p + 'ln_1') @ w[p + 'attn.c_attn.weight'] + w[p + 'attn.c_attn.bias']
            q, k, v = a.split(C, dim=-1)
            q, k, v = (t.view(B, T, H, hs).transpose(1, 2) for t in (q, k, v))
            s = (q @ k.transpose(-1, -2)) / (hs ** 0.5)
            s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
            y = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ w[p + 'attn.c_proj.weight'] + w[p + 'attn.c_proj.bias']
            m = gelu_new(ln(x, p + 'ln_2') @ w[p + 'mlp.c_fc.weight'] + w[p + 'mlp.c_fc.bias'])
            x = x + m @ w[p + 'mlp.c_proj.weight'] + w[p + 'mlp.c_proj.bias']
        return ln(x, 'ln_f') @ w['wte.weight'].T

    return forward


def loss_of(logits, labels):
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100).item()


def compare(name, got, want, mask, loss_got, loss_want):
    keep = mask.astype(bool)  # (B, T): the rows compared
    d = (got - want)[keep]
    ref = want[keep]
    max_abs = float(np.abs(d).max())
    nmse = float((d.astype(np.float64) ** 2).sum() / max((ref.astype(np.float64) ** 2).sum(), 1e-30))
    dl = abs(loss_got - loss_want)
    ok = max_abs <= TOL_MAX_ABS and nmse <= TOL_NMSE and dl <= TOL_LOSS
    print(f'  {name:<52} logits max|diff|={max_abs:.2e} nmse={nmse:.2e} (over {int(keep.sum())} rows)  '
          f'loss {loss_want:.6f} (node-mend {loss_got:.6f}) |diff|={dl:.1e}  {"OK" if ok else "FAIL"}')
    return ok


def main(dirs):
    try:
        import transformers
        from transformers import GPT2LMHeadModel
        what = f'transformers {transformers.__version__} GPT2LMHeadModel (eager attention)'
    except ImportError:
        transformers = None
        what = 'the built-in PyTorch GPT-2 (transformers is NOT installed: this is not the check against Hugging Face)'
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    print(f'node-mend CPU logits vs {what}; torch {torch.__version__}; devices {", ".join(devices)}')
    ok = True
    for d in dirs:
        b = json.load(open(os.path.join(d, 'batch.json')))
        mine = read_safetensors(os.path.join(d, 'logits.safetensors'))['logits']
        ids = torch.tensor(b['input_ids'], dtype=torch.long)
        mask = torch.tensor(b['attention_mask'], dtype=torch.long)
        labels = torch.tensor(b['labels'], dtype=torch.long)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        model_dir = os.path.join(d, b.get('model_dir', 'model'))
        for dev in devices:
            with torch.no_grad():
                if transformers is not None:
                    m = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation='eager').float().eval().to(dev)
                    out = m(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), labels=labels.to(dev))
                    logits, loss = out.logits.float().cpu(), float(out.loss)
                else:
                    logits = reference_gpt2(model_dir)(ids, mask, pos)
                    loss = loss_of(logits, labels)
            ok &= compare(f'{os.path.basename(os.path.normpath(d))} {tuple(mine.shape)} on {dev}', mine, logits.numpy(),
                          np.array(b['attention_mask']), b['loss'], loss)
    print('hf-compare: ' + ('all within tolerance' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))

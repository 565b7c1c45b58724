"""Federated LoRA fine-tuning of MiniLM on the Brown corpus with Flower, uploads compressed by fedsoft."""

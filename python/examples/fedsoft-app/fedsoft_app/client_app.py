"""The ClientApp: fedsoft's own client (local training with fedsoft's kernels, error feedback, sparsification)."""

from fedsoft.app import client as app

__all__ = ["app"]

"""The ServerApp: fedsoft's own server (the engine's round, records, checkpoints and export)."""

from fedsoft.app import server as app

__all__ = ["app"]

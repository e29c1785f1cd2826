"""Parley's pure domain layer: schemas, agent loop, providers, store.

Nothing here imports Ray or an HTTP framework, so every piece is unit-testable in milliseconds.
"""

__version__ = "0.1.0"

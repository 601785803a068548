"""The training engine: one epoch loop for every dataset, size and number of processes."""
from .run import run

__all__ = ["run"]

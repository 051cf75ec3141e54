"""Checkpoints: discovery, validation, memory-mapped loading, MXFP4, random writers."""

from gptoss.weights.checkpoint import Checkpoint, open_checkpoint, validate
from gptoss.weights.safetensors_io import CheckpointError

__all__ = ["Checkpoint", "CheckpointError", "open_checkpoint", "validate"]

"""Test helpers: random NLD checkpoints in the exact Hugging Face layout (numpy + stdlib only), and
`testing.server`: nld-server as a subprocess for tests and benchmarks."""

from .checkpoints import CheckpointSpec, make_checkpoint, real_3b_spec

__all__ = ["CheckpointSpec", "make_checkpoint", "real_3b_spec"]

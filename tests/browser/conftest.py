"""The browser test trains the same tiny Llama as the panel and training tests."""

from training.conftest import smollm2_dir, tiny_llama_dir
from widgets.conftest import tiny_model

__all__ = ["smollm2_dir", "tiny_llama_dir", "tiny_model"]

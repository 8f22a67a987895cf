"""The browser test trains the same tiny Llama as the panel tests."""

from widgets.conftest import tiny_model

__all__ = ["tiny_model"]

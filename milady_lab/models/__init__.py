"""What happens to a trained model: import into Ollama (``ollama``), activation in the
agent's config (``activation``), the benchmark (``benchmark``, scores in ``scores``) and
export as a standalone model (``export``). ``loopback`` holds the ``ollamaUrl`` rule."""

"""Handing a trained model to the agent: import into Ollama (``ollama``, with its chat
format in ``chat_format`` and GGUF writing in ``gguf``), export as a standalone model
(``export``), and activation in the agent's config (``activation``, editing it with
``json_edit``). ``loopback`` holds the ``ollamaUrl`` rule."""

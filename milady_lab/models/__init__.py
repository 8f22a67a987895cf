"""What happens to a trained model, by what it does: ``evaluation`` (benchmark, scores,
chat) and ``handoff`` to the agent (Ollama import, export, activation). ``artifacts``
says which files a registered model is; ``auto`` runs the whole loop by itself."""

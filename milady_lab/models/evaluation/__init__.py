"""Judging a trained model before it reaches the agent: the benchmark against its base
(``benchmark``), the scores it reports (``scores``) and a chat to try it (``chat``)."""

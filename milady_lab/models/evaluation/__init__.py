"""Judging a trained model before it reaches the agent: the benchmark against its base
(``benchmark``), the scores it reports (``scores``), a benchmark as a tracked run that a
client starts and polls (``runs``) and a chat to try it (``chat``)."""

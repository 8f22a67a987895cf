"""Training: options and job lifecycle (``jobs``), the worker process (``worker``),
the events a run reports (``callbacks``) and the backends that train (``backends``)."""

"""Datasets: from trajectories to chat-format ``train.jsonl``/``valid.jsonl`` folders.

- ``request``: the build/preview body (``BuildDatasetRequest``) and its filters;
- ``build``: the builder (temp folder renamed into place, record in one transaction);
- ``preferences``: the DPO ``pairs`` and KTO ``labelled`` formats;
- ``files``: the one reader of a dataset's lines (training, benchmark, widgets).
"""

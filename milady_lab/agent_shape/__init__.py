"""Agent-shaped demo data: trajectories that read like a real elizaOS 2.x agent's.

The regular demo (``milady_lab.demo``) is short and regular, so every figure measured on
it looks perfect. This package writes the same table from elizaOS's published prompt
templates (``prompts``, vendored from ``@elizaos/prompts``), real characters
(``characters``) and core's action names (``cast``), filled the way the runtime fills
them (``compose``), with TOON replies and the mistakes strong models make (``replies``),
several call purposes per turn (``turns``) and rewarded rollouts of shared scenarios
(``writer``). It is the default demo data (``write_demo_db``, ``milady-lab demo-data``,
``make lab``, the tutorials); ``shape="regular"`` / ``--shape regular`` selects the other.
"""

from __future__ import annotations

from .writer import AgentWriter

__all__ = ["AgentWriter"]

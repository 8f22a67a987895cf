"""The shape of Milady's ``trajectories`` table (spec): the DDL, its column order and
the listing index, shared by the export, the demo generator and the tests."""

from __future__ import annotations

#: The columns of Milady's ``trajectories`` table as the agent package creates it (spec;
#: ``scenario_id``/``batch_id`` came with @elizaos/agent 2.x and sit last here).
TABLE_DDL = """
CREATE TABLE IF NOT EXISTS trajectories (
  id TEXT PRIMARY KEY,
  trajectory_id TEXT,
  agent_id TEXT NOT NULL,
  source TEXT NOT NULL DEFAULT 'runtime',
  status TEXT NOT NULL DEFAULT 'completed',
  start_time INTEGER NOT NULL,
  end_time INTEGER,
  duration_ms INTEGER,
  step_count INTEGER NOT NULL DEFAULT 0,
  llm_call_count INTEGER NOT NULL DEFAULT 0,
  provider_access_count INTEGER NOT NULL DEFAULT 0,
  total_prompt_tokens INTEGER NOT NULL DEFAULT 0,
  total_completion_tokens INTEGER NOT NULL DEFAULT 0,
  total_reward REAL NOT NULL DEFAULT 0,
  steps_json TEXT NOT NULL DEFAULT '[]',
  metadata TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  episode_length INTEGER,
  ai_judge_reward REAL,
  ai_judge_reasoning TEXT,
  archetype TEXT,
  scenario_id TEXT,
  batch_id TEXT
)
"""
#: The listing index: pages in (start_time DESC, id) order without a sort. Milady's own
#: database may lack it; readers stay correct without it, only slower.
LISTING_INDEX_DDL = (
    "CREATE INDEX IF NOT EXISTS trajectories_listing ON trajectories (start_time DESC, id)"
)
COLUMNS = (
    "id", "trajectory_id", "agent_id", "source", "status", "start_time", "end_time",
    "duration_ms", "step_count", "llm_call_count", "provider_access_count",
    "total_prompt_tokens", "total_completion_tokens", "total_reward", "steps_json",
    "metadata", "created_at", "updated_at", "episode_length", "ai_judge_reward",
    "ai_judge_reasoning", "archetype", "scenario_id", "batch_id",
)  # fmt: skip
INSERT_SQL = (
    f"INSERT INTO trajectories ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)

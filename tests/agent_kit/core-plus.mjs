// The published @elizaos/core, plus the three names the agent imports from its unpublished
// beta.1 (see shim.mjs). serializeTrajectoryExport follows the agent's documented export
// rows (one `eliza_native_v1` row per LLM call, or the detail records for
// jsonShape "legacy"); it is a stand-in and is never used to write a database.
export * from "@elizaos/core";

export const TRAJECTORY_STEP_SCRIPT_MAX_CHARS = 16000;
export const observationExtractionTemplate = "";

function nativeRows(trajectory) {
  const rows = [];
  for (const step of trajectory.steps ?? []) {
    for (const call of step.llmCalls ?? []) {
      rows.push({
        format: "eliza_native_v1",
        boundary: "runtime.useModel",
        trajectoryId: trajectory.trajectoryId,
        agentId: trajectory.agentId,
        source: trajectory.source,
        status: trajectory.status,
        scenarioId: trajectory.scenarioId ?? null,
        batchId: trajectory.batchId ?? null,
        stepId: call.stepId ?? step.stepId,
        callId: call.callId,
        timestamp: call.timestamp,
        purpose: call.purpose,
        actionType: call.actionType,
        model: call.model,
        request: {
          ...(call.systemPrompt ? { system: call.systemPrompt } : {}),
          ...(call.userPrompt ? { prompt: call.userPrompt } : {}),
          ...(Array.isArray(call.messages) ? { messages: call.messages } : {}),
          ...(call.tools ? { tools: call.tools } : {}),
          settings: { temperature: call.temperature, maxTokens: call.maxTokens },
        },
        response: {
          text: call.response ?? "",
          ...(Array.isArray(call.toolCalls) ? { toolCalls: call.toolCalls } : {}),
          ...(call.finishReason ? { finishReason: call.finishReason } : {}),
          usage: { promptTokens: call.promptTokens, completionTokens: call.completionTokens },
        },
        latencyMs: call.latencyMs,
      });
    }
  }
  return rows;
}

export function serializeTrajectoryExport(trajectories, options = {}) {
  const legacy = options.jsonShape === "legacy";
  const body = legacy ? trajectories : trajectories.flatMap(nativeRows);
  return {
    filename: `trajectories.${options.format ?? "json"}`,
    mimeType: "application/json",
    data: JSON.stringify(body),
  };
}

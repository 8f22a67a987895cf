// Writes the trajectories a JSON plan on stdin describes with the agent's own writer code,
// then prints {"ids": [...]} (the trajectory ids the writer chose). Run with
// `node --import ./shim.mjs write.mjs`.
//
// plan = {target: {pglite: dir} | {postgres: url}, writer: "agent" | "core", agentId,
//         workspace?: dir (the agent's archive goes to <workspace>/trajectory-archive),
//         prune?: true (run the agent's 30-day prune after writing), hold?: true (keep the
//         database open until SIGTERM, like a running agent),
//         trajectories: [{id?, source, status, scenarioId?, batchId?, daysAgo?,
//                         steps: [{calls: [llm call params], accesses: [...], reward?}]}]}
import { rmSync, writeFileSync } from "node:fs";
import { openRuntime } from "./runtime.mjs";

const agentDir = "./node_modules/@elizaos/agent/packages/agent/src/runtime/";
const DAY = 24 * 60 * 60 * 1000;

async function readStdin() {
  let text = "";
  for await (const chunk of process.stdin) text += chunk;
  return JSON.parse(text);
}

async function writeAgent(runtime, plan) {
  const storage = await import(`${agentDir}trajectory-storage.js`);
  const logger = new storage.DatabaseTrajectoryLogger(runtime);
  logger.setEnabled(true);
  await logger.initialize();
  const ids = [];
  for (const [i, t] of plan.trajectories.entries()) {
    const id = t.id ?? `traj-${i}-${Math.random().toString(36).slice(2, 10)}`;
    const metadata = { scenarioId: t.scenarioId, batchId: t.batchId, ...(t.metadata ?? {}) };
    const base = t.daysAgo ? Date.now() - t.daysAgo * DAY : undefined;
    // An old trajectory cannot be started "now": its first call creates it at its time.
    if (!base) await logger.startTrajectory(id, { agentId: plan.agentId, source: t.source, metadata });
    let n = 0;
    for (const step of t.steps) {
      for (const call of step.calls ?? []) {
        n += 1;
        logger.logLlmCall({ ...call, stepId: id, ...(base ? { timestamp: base + n * 1000 } : {}) });
      }
      for (const access of step.accesses ?? []) logger.logProviderAccess({ ...access, stepId: id });
    }
    await storage.flushTrajectoryWrites(runtime);
    await storage.completeTrajectoryStepInDatabase({
      runtime, stepId: id, status: t.status ?? "completed", source: t.source, metadata,
    });
    ids.push(id);
  }
  await storage.flushTrajectoryWrites(runtime);
  if (plan.prune) {
    const pruned = await storage.pruneOldTrajectories(runtime, 30);
    if (pruned === null) throw new Error("the agent's prune failed");
  }
  return ids;
}

async function writeCore(runtime, plan) {
  const { TrajectoriesService } = await import("@elizaos/core");
  const svc = new TrajectoriesService(runtime);
  await svc.initialize();
  const ids = [];
  for (const t of plan.trajectories) {
    const tid = await svc.startTrajectory(plan.agentId, {
      source: t.source, scenarioId: t.scenarioId, batchId: t.batchId, metadata: t.metadata,
    });
    for (const step of t.steps) {
      const sid = svc.startStep(tid, svc.defaultEnvironmentState());
      await svc.flushWriteQueue(tid);
      for (const call of step.calls ?? []) {
        svc.logLlmCall({ ...call, stepId: sid });
        await svc.flushWriteQueue(tid);
      }
      for (const access of step.accesses ?? []) {
        svc.logProviderAccess({ ...access, stepId: sid });
        await svc.flushWriteQueue(tid);
      }
      const action = { actionType: "respond", actionName: "REPLY", parameters: {}, success: true };
      svc.completeStep(tid, sid, action, step.reward === undefined ? {} : { reward: step.reward });
      await svc.flushWriteQueue(tid);
    }
    await svc.endTrajectory(tid, t.status ?? "completed");
    ids.push(tid);
  }
  return ids;
}

const plan = await readStdin();
if (plan.workspace) process.env.ELIZA_WORKSPACE_DIR = plan.workspace;
process.env.NODE_ENV = "production";
const { runtime, close } = await openRuntime(plan.target, plan.agentId ?? "agent-1");
const ids = plan.writer === "core" ? await writeCore(runtime, plan) : await writeAgent(runtime, plan);
process.stdout.write(`${JSON.stringify({ ids })}\n`);
if (plan.hold) {
  // Like a running agent: the database stays open, and its folder holds the lock file
  // naming this process (PGlite 0.4.6 itself writes none; the agent's is described in
  // the spec), until the test sends SIGTERM.
  const lock = plan.target.pglite ? `${plan.target.pglite}/postmaster.pid` : null;
  if (lock) writeFileSync(lock, `${process.pid}\n${plan.target.pglite}\n`);
  process.stdout.write("holding\n");
  await new Promise((resolve) => process.once("SIGTERM", resolve));
  if (lock) rmSync(lock, { force: true });
}
await close();
// The agent's logger leaves timers behind (observation buffering); the plan is done.
process.exit(0)

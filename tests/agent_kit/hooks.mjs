// Module resolution hooks for shim.mjs (they run on Node's loader thread).
const here = new URL("./", import.meta.url);
const agentDir = new URL("node_modules/@elizaos/agent/", here).href;
const corePlus = new URL("core-plus.mjs", here).href;
const sharedGuards = new URL("node_modules/@elizaos/shared/dist/type-guards.js", here).href;

export async function resolve(specifier, context, next) {
  const fromAgent = context.parentURL?.startsWith(agentDir);
  if (fromAgent && specifier === "@elizaos/core") return { url: corePlus, shortCircuit: true };
  if (fromAgent && specifier === "@elizaos/shared") return { url: sharedGuards, shortCircuit: true };
  return next(specifier, context);
}

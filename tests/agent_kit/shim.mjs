// Loaded with `node --import ./shim.mjs`: lets the published @elizaos/agent@2.0.0-beta.2
// load against the published @elizaos/core@2.0.0-alpha.537.
//
// The agent was built against @elizaos/core@2.0.0-beta.1 and @elizaos/shared@2.0.0-beta.1;
// that core was never published to npm, and the newest published one lacks three names the
// agent's trajectory modules import: TRAJECTORY_STEP_SCRIPT_MAX_CHARS (a length cap on step
// scripts), observationExtractionTemplate (used only by observation extraction, which the
// kit never runs) and serializeTrajectoryExport (the export route's serializer). Only those
// three are added here (core-plus.mjs); every line of writer and schema code is the
// agent's own. @elizaos/shared's index re-exports beta.1-only core names, so the agent's
// one import from it (asRecord) is resolved to the module that defines it.
import { register } from "node:module";

register("./hooks.mjs", import.meta.url);

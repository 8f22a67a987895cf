// The agent's trajectory REST routes, answered by the agent's own code over a database
// the kit wrote: listing (DatabaseTrajectoryLogger.listTrajectories), detail
// (getTrajectoryDetail) and export (exportTrajectories). The routes themselves live in
// @elizaos/app-training, which is not on npm; this file does what they do with those
// answers: Bearer auth, the listing page, the detail's `source` taken from
// `metadata.source ?? "chat"`, and the export body as the serializer writes it.
//
//   node --import ./shim.mjs serve.mjs '{"target": {...}, "token": "t", "export": true}'
// prints {"port": N}; GET /__requests lists the requests served (for the tests).
import http from "node:http";
import { openRuntime } from "./runtime.mjs";

const opts = JSON.parse(process.argv[2]);
process.env.NODE_ENV = "production";
const storage = await import(
  "./node_modules/@elizaos/agent/packages/agent/src/runtime/trajectory-storage.js"
);
const { runtime } = await openRuntime(opts.target, opts.agentId ?? "agent-1");
const logger = new storage.DatabaseTrajectoryLogger(runtime);
const requests = [];

function send(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
}

async function readBody(req) {
  let text = "";
  for await (const chunk of req) text += chunk;
  return text ? JSON.parse(text) : {};
}

async function route(req, res) {
  const url = new URL(req.url, "http://agent");
  if (url.pathname === "/__requests") return send(res, 200, requests);
  requests.push(`${req.method} ${url.pathname}${url.search}`);
  if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
    return send(res, 401, { error: "Unauthorized" });
  }
  if (req.method === "GET" && url.pathname === "/api/trajectories") {
    const limit = Number(url.searchParams.get("limit") ?? 50);
    const offset = Number(url.searchParams.get("offset") ?? 0);
    return send(res, 200, await logger.listTrajectories({ limit, offset }));
  }
  if (req.method === "POST" && url.pathname === "/api/trajectories/export" && opts.export) {
    const body = await readBody(req);
    const result = await logger.exportTrajectories({ ...body, format: body.format ?? "json" });
    res.writeHead(200, { "content-type": result.mimeType });
    return res.end(result.data);
  }
  const m = url.pathname.match(/^\/api\/trajectories\/([^/]+)$/);
  if (req.method === "GET" && m && m[1] !== "export") {
    const detail = await logger.getTrajectoryDetail(decodeURIComponent(m[1]));
    if (!detail) return send(res, 404, { error: "Trajectory not found" });
    return send(res, 200, { trajectory: { ...detail, source: detail.metadata?.source ?? "chat" } });
  }
  return send(res, 404, { error: "Not found" });
}

const server = http.createServer((req, res) => {
  route(req, res).catch((err) => send(res, 500, { error: String(err?.message ?? err) }));
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});

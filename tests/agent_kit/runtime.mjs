// A database and the slice of an elizaOS runtime the trajectory writers touch
// (`runtime.adapter.db.execute`, `agentId`, a logger, the service registry), opened the
// way the agent opens it: PGlite with the extensions plugin-sql loads, or node-postgres.
import { PGlite } from "@electric-sql/pglite";
import { fuzzystrmatch } from "@electric-sql/pglite/contrib/fuzzystrmatch";
import { vector } from "@electric-sql/pglite/vector";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import pg from "pg";

const quiet = { info() {}, warn() {}, debug() {}, error() {}, trace() {}, log() {} };

export async function openRuntime(target, agentId) {
  let db;
  let close;
  if (target.pglite) {
    const client = new PGlite(target.pglite, { extensions: { vector, fuzzystrmatch } });
    await client.waitReady;
    await client.exec("CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;");
    db = drizzlePglite(client);
    close = () => client.close();
  } else {
    const pool = new pg.Pool({ connectionString: target.postgres, max: 2 });
    db = drizzlePg(pool);
    close = () => pool.end();
  }
  const runtime = {
    agentId,
    adapter: { db },
    logger: quiet,
    services: new Map(),
    character: { name: "Milady" },
    getService: () => null,
    getServicesByType: () => [],
    getSetting: () => undefined,
  };
  return { runtime, close };
}

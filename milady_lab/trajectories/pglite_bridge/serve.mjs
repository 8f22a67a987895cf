// Serves one PGlite data directory (a snapshot milady-lab made; never the agent's own) on
// a loopback port with the PostgreSQL wire protocol, so milady-lab reads it with the same
// SQL and driver (psycopg) as an agent's PostgreSQL server.
//
//   node serve.mjs <dataDir>   → prints {"port": N} once listening; exits when stdin closes
//
// PGlite is pinned to the agent's version (0.4.6) and loads the extensions the agent's
// plugin-sql loads (vector, fuzzystrmatch), so a directory the agent wrote always opens.
// The listing index is created in the snapshot (it is ours to change), so reading every
// trajectory page by page stays fast on a table the agent never indexed that way.
import { PGlite } from "@electric-sql/pglite";
import { fuzzystrmatch } from "@electric-sql/pglite/contrib/fuzzystrmatch";
import { vector } from "@electric-sql/pglite/vector";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

const dataDir = process.argv[2];
if (!dataDir) {
  process.stderr.write("usage: node serve.mjs <dataDir>\n");
  process.exit(2);
}

let db;
try {
  db = await PGlite.create(dataDir, { extensions: { vector, fuzzystrmatch } });
} catch (err) {
  process.stderr.write(`${err?.message ?? err}\n`);
  process.exit(1);
}

const table = await db.query(
  "SELECT 1 FROM information_schema.tables WHERE table_name = 'trajectories' AND table_schema = ANY (current_schemas(false))",
);
if (table.rows.length > 0) {
  await db.exec(
    'CREATE INDEX IF NOT EXISTS milady_lab_listing ON trajectories (start_time DESC NULLS LAST, id COLLATE "C")',
  );
}

const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 16 });
await server.start();
const port = Number(server.getServerConn().split(":").pop());
process.stdout.write(`${JSON.stringify({ port })}\n`);

// The parent holds our stdin: when it exits (even killed), stdin closes and so do we.
process.stdin.on("end", async () => {
  await server.stop();
  await db.close();
  process.exit(0);
});
process.stdin.resume();

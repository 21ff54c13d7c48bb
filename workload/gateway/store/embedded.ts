import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { AddressInfo } from "node:net";
import { DynamoStore } from "./dynamo";

// dynalite ships no types; its factory returns an http.Server.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dynalite = require("dynalite") as (opts: { path?: string; createTableMs?: number; deleteTableMs?: number; updateTableMs?: number }) => import("node:http").Server;

/**
 * The embedded DynamoDB-compatible server of local mode and tests: dynalite on loopback (LevelDB under
 * `dbPath`, or in memory), with the same DynamoStore code that runs against AWS.
 */
export async function startEmbeddedStore(opts: { dbPath?: string; table?: string }): Promise<{ store: DynamoStore; endpoint: string; close(): Promise<void> }> {
  const server = dynalite({ path: opts.dbPath, createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // The embedded server checks no signatures; these are not secrets, just the shape the SDK requires.
  const client = new DynamoDBClient({ endpoint, region: "local", credentials: { accessKeyId: "local", secretAccessKey: "local" }, maxAttempts: 2 });
  const store = new DynamoStore({ table: opts.table ?? "comfyui-gateway", client });
  await store.ensureTable();
  let closing: Promise<void> | undefined;
  return {
    store,
    endpoint,
    close() {
      closing ??= (async () => {
        await store.close();
        client.destroy();
        // dynalite's close() also closes its LevelDB (the lock a restarted process needs). A request still
        // in flight (a timed-out call the client gave up on) must not hold the close open.
        await new Promise<void>((r) => {
          server.close(() => r());
          server.closeAllConnections();
        });
      })();
      return closing;
    },
  };
}

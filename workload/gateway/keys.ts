/**
 * API keys and sign-in revocation, from the command line:
 *
 *   npm run keys -- create --owner alice [--name NAME] [--scope submit,read] [--days 90] [--admin] STORE
 *   npm run keys -- list STORE
 *   npm run keys -- revoke KEY_ID STORE
 *   npm run keys -- revoke-user USER_ID STORE        every session of that user ends (they sign in again)
 *   npm run keys -- revoke-session SESSION_ID STORE  one session ends (its id: GET /api/gateway/me)
 *
 * STORE is `--table NAME --region REGION` (the stack's output `gatewayTable`; your AWS credentials) or
 * `--data-dir DIR` (a local gateway's, while it is stopped). A created key is printed once; only its hash
 * is kept. Send it as `Authorization: Bearer <key>`.
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import * as path from "node:path";
import { mintKey } from "./auth/keys";
import { SCOPES, type AuthStore, type Scope } from "./auth/types";
import { DynamoStore } from "./store/dynamo";
import { startEmbeddedStore } from "./store/embedded";

class UsageError extends Error {}

function parse(argv: string[]): { cmd: string; pos: string[]; flags: Map<string, string | true> } {
  const flags = new Map<string, string | true>();
  const pos: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      pos.push(a);
      continue;
    }
    const name = a.slice(2);
    if (name === "admin") flags.set(name, true);
    else {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, v);
    }
  }
  const cmd = pos.shift();
  if (!cmd) throw new UsageError("a command: create, list, revoke, revoke-user, revoke-session");
  return { cmd, pos, flags };
}

async function openStore(flags: Map<string, string | true>): Promise<{ store: AuthStore; close(): Promise<void> }> {
  const table = flags.get("table");
  const dataDir = flags.get("data-dir");
  if (typeof table === "string") {
    const region = flags.get("region");
    if (typeof region !== "string") throw new UsageError("--table needs --region");
    const client = new DynamoDBClient({ region });
    const store = new DynamoStore({ table, client });
    return { store: store.authStore(), close: async () => client.destroy() };
  }
  if (typeof dataDir === "string") {
    const db = await startEmbeddedStore({ dbPath: path.join(path.resolve(dataDir), "db") });
    return { store: db.store.authStore(), close: () => db.close() };
  }
  throw new UsageError("which store: --table NAME --region REGION, or --data-dir DIR");
}

export async function run(argv: string[], out: (line: string) => void): Promise<void> {
  const { cmd, pos, flags } = parse(argv);
  const known = new Set(["table", "region", "data-dir", "owner", "name", "scope", "days", "admin"]);
  for (const f of flags.keys()) if (!known.has(f)) throw new UsageError(`unknown flag --${f}`);
  const { store, close } = await openStore(flags);
  try {
    if (cmd === "create") {
      const owner = flags.get("owner");
      if (typeof owner !== "string") throw new UsageError("create needs --owner USER (the user or service the key acts for)");
      const scopes = String(flags.get("scope") ?? SCOPES.join(",")).split(",").map((s) => s.trim()) as Scope[];
      const days = Number(flags.get("days") ?? 90);
      const { token, record } = mintKey({ owner, name: String(flags.get("name") ?? owner), scopes, days, admin: flags.get("admin") === true });
      await store.putKey(record);
      out(`key ${record.id} for ${record.owner} (${record.scopes.join(", ")}${record.admin ? ", admin" : ""}), expires ${new Date(record.validUntil).toISOString()}`);
      out(`  ${token}`);
      out("This is the only time the key is shown; it is stored as a hash. Send it as: Authorization: Bearer <key>");
    } else if (cmd === "list") {
      const now = Date.now();
      for (const k of (await store.listKeys()).sort((a, b) => a.createdAt - b.createdAt)) {
        const state = k.revokedAt !== undefined ? `revoked ${new Date(k.revokedAt).toISOString()}` : k.validUntil <= now ? "expired" : `expires ${new Date(k.validUntil).toISOString()}`;
        out(`${k.id}\t${k.owner}\t${k.name}\t${k.scopes.join(",")}${k.admin ? ",admin" : ""}\t${state}`);
      }
    } else if (cmd === "revoke") {
      const id = pos[0];
      if (!id) throw new UsageError("revoke needs the key's id (from list)");
      if (!(await store.revokeKey(id, Date.now()))) throw new UsageError(`no key ${id}`);
      out(`key ${id} revoked: it is refused from now on`);
    } else if (cmd === "revoke-user") {
      const user = pos[0];
      if (!user) throw new UsageError("revoke-user needs the user's id (the IdP's subject)");
      await store.revokeUser(user, Date.now());
      out(`every session of ${user} ended; they sign in again (disable them at the IdP to keep them out)`);
    } else if (cmd === "revoke-session") {
      const id = pos[0];
      if (!id) throw new UsageError("revoke-session needs the session's id");
      await store.deleteSession(id);
      out(`session ${id} ended`);
    } else throw new UsageError(`unknown command ${cmd}`);
  } finally {
    await close();
  }
}

if (require.main === module) {
  run(process.argv.slice(2), (l) => console.log(l)).catch((err: unknown) => {
    console.error(err instanceof UsageError ? `keys: ${err.message}\nusage: npm run keys -- create|list|revoke|revoke-user|revoke-session … (--table NAME --region REGION | --data-dir DIR)` : err);
    process.exit(2);
  });
}

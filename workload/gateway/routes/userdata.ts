import type { FastifyInstance } from "fastify";
import type { GatewayContext } from "../context";
import { GatewayError } from "../protocol/errors";
import { both, safeRelPath } from "./common";

// Single user "default", ComfyUI's layout user/default/… (app/user_manager.py, app/app_settings.py).
const ROOT = "default/";
const SETTINGS = "default/comfy.settings.json";

function userPath(p: string): string {
  if (!p || !safeRelPath(p)) throw new GatewayError("GW_ERR_BAD_PATH", p);
  return ROOT + p;
}

export function userRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  const u = ctx.files.user;
  const readSettings = async () => JSON.parse((await u.get(SETTINGS))?.toString("utf8") ?? "{}") as Record<string, unknown>;

  both(app, "GET", "/users", async () => ({ storage: "server", migrated: true }));
  both(app, "GET", "/settings", async () => readSettings());
  both(app, "GET", "/settings/:id", async (req, reply) => reply.type("application/json").send(JSON.stringify((await readSettings())[(req.params as { id: string }).id] ?? null)));
  both(app, "POST", "/settings", async (req, reply) => {
    const body = JSON.parse((req.body as Buffer).toString("utf8"));
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new GatewayError("GW_ERR_INVALID_JSON", "settings must be an object");
    await u.put(SETTINGS, Buffer.from(JSON.stringify({ ...(await readSettings()), ...body }, null, 4)));
    return reply.code(200).send("");
  });
  both(app, "POST", "/settings/:id", async (req, reply) => {
    const value = JSON.parse((req.body as Buffer).toString("utf8"));
    await u.put(SETTINGS, Buffer.from(JSON.stringify({ ...(await readSettings()), [(req.params as { id: string }).id]: value }, null, 4)));
    return reply.code(200).send("");
  });

  both(app, "GET", "/userdata", async (req, reply) => {
    const q = req.query as Record<string, string>;
    const dir = q.dir;
    if (!dir || !safeRelPath(dir)) return reply.code(400).send({ error: "invalid dir" });
    const base = `${ROOT}${dir.replace(/\/$/, "")}/`;
    const files = (await u.list(base)).map((o) => ({ ...o, rel: o.key.slice(base.length) }));
    if (files.length === 0) return reply.code(404).send("");
    const recurse = q.recurse === "true";
    const chosen = files.filter((f) => recurse || !f.rel.includes("/"));
    return chosen.map((f) => {
      if (q.full_info === "true") return { path: f.rel, size: f.size, modified: f.modified / 1000 };
      return q.split === "true" ? [f.rel, ...f.rel.split("/")] : f.rel;
    });
  });

  both(app, "GET", "/v2/userdata", async (req) => {
    const p = (req.query as Record<string, string>).path ?? "";
    if (p && !safeRelPath(p)) throw new GatewayError("GW_ERR_BAD_PATH", p);
    const base = p ? `${ROOT}${p.replace(/\/$/, "")}/` : ROOT;
    const entries = new Map<string, Record<string, unknown>>();
    for (const o of await u.list(base)) {
      const rel = o.key.slice(base.length);
      const [first, ...rest] = rel.split("/");
      const path = p ? `${p.replace(/\/$/, "")}/${first}` : first;
      if (rest.length) entries.set(first, { name: first, path, type: "directory" });
      else entries.set(first, { name: first, path, type: "file", size: o.size, modified: o.modified / 1000 });
    }
    return [...entries.values()];
  });

  both(app, "GET", "/userdata/:file", async (req, reply) => {
    const body = await u.get(userPath((req.params as { file: string }).file));
    if (!body) return reply.code(404).send("");
    return reply.type((req.params as { file: string }).file.endsWith(".json") ? "application/json" : "application/octet-stream").send(body);
  });
  both(app, "POST", "/userdata/:file", async (req, reply) => {
    const file = (req.params as { file: string }).file;
    const key = userPath(file);
    const q = req.query as Record<string, string>;
    if (q.overwrite === "false" && (await u.get(key))) return reply.code(409).send("");
    const body = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
    await u.put(key, body);
    return reply.type("application/json").send(JSON.stringify(q.full_info === "true" ? { path: file, size: body.length, modified: Date.now() / 1000 } : file));
  });
  both(app, "DELETE", "/userdata/:file", async (req, reply) => {
    const key = userPath((req.params as { file: string }).file);
    if (!(await u.get(key))) return reply.code(404).send("");
    await u.delete(key);
    return reply.code(204).send();
  });
  both(app, "POST", "/userdata/:file/move/:dest", async (req, reply) => {
    const { file, dest } = req.params as { file: string; dest: string };
    const src = userPath(file);
    const dst = userPath(dest);
    const body = await u.get(src);
    if (!body) return reply.code(404).send("");
    if ((req.query as Record<string, string>).overwrite === "false" && (await u.get(dst))) return reply.code(409).send("");
    await u.put(dst, body);
    await u.delete(src);
    return reply.type("application/json").send(JSON.stringify(dest));
  });
}

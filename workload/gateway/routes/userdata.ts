import type { FastifyPluginAsync } from "fastify";
import { GatewayError } from "../protocol/errors";
import { jsonBody, safeRelPath } from "./common";

// Single user "default", ComfyUI's layout user/default/… (app/user_manager.py, app/app_settings.py).
const ROOT = "default/";
const SETTINGS = "default/comfy.settings.json";

function userPath(p: string): string {
  if (!p || !safeRelPath(p)) throw new GatewayError("GW_ERR_BAD_PATH", p);
  return ROOT + p;
}

/** ComfyUI's user state (settings, saved workflows, user files) in the user bucket (every replica). */
export const userRoutes: FastifyPluginAsync = async (app) => {
  const u = app.gw.files.user;
  const parse = (b: Buffer | undefined) => JSON.parse(b?.toString("utf8") ?? "{}") as Record<string, unknown>;
  const readSettings = async () => parse(await u.get(SETTINGS));
  // One conditional read-modify-write per change: concurrent saves of different keys all land.
  const changeSettings = (patch: Record<string, unknown>) => u.update(SETTINGS, (cur) => Buffer.from(JSON.stringify({ ...parse(cur), ...patch }, null, 4)));

  app.get("/users", async () => ({ storage: "server", migrated: true }));
  app.get("/settings", async () => readSettings());
  app.get("/settings/:id", async (req, reply) => reply.type("application/json").send(JSON.stringify((await readSettings())[(req.params as { id: string }).id] ?? null)));
  app.post("/settings", async (req, reply) => {
    const body = jsonBody<unknown>(req);
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new GatewayError("GW_ERR_INVALID_JSON", "settings must be an object");
    await changeSettings(body as Record<string, unknown>);
    return reply.code(200).send("");
  });
  app.post("/settings/:id", async (req, reply) => {
    const value = jsonBody<unknown>(req);
    await changeSettings({ [(req.params as { id: string }).id]: value });
    return reply.code(200).send("");
  });

  app.get("/userdata", async (req, reply) => {
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

  app.get("/v2/userdata", async (req) => {
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

  app.get("/userdata/:file", async (req, reply) => {
    const body = await u.get(userPath((req.params as { file: string }).file));
    if (!body) return reply.code(404).send("");
    return reply.type((req.params as { file: string }).file.endsWith(".json") ? "application/json" : "application/octet-stream").send(body);
  });
  app.post("/userdata/:file", async (req, reply) => {
    const file = (req.params as { file: string }).file;
    const key = userPath(file);
    const q = req.query as Record<string, string>;
    if (q.overwrite === "false" && (await u.get(key))) return reply.code(409).send("");
    const body = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
    await u.put(key, body);
    return reply.type("application/json").send(JSON.stringify(q.full_info === "true" ? { path: file, size: body.length, modified: Date.now() / 1000 } : file));
  });
  app.delete("/userdata/:file", async (req, reply) => {
    const key = userPath((req.params as { file: string }).file);
    if (!(await u.get(key))) return reply.code(404).send("");
    await u.delete(key);
    return reply.code(204).send();
  });
  app.post("/userdata/:file/move/:dest", async (req, reply) => {
    const { file, dest } = req.params as { file: string; dest: string };
    const src = userPath(file);
    const dst = userPath(dest);
    const body = await u.get(src);
    if (!body) return reply.code(404).send("");
    if ((req.query as Record<string, string>).overwrite === "false" && (await u.get(dst))) return reply.code(409).send("");
    // ComfyUI's os.replace(src, dst) onto itself changes nothing; writing then deleting would lose the file.
    if (src !== dst) {
      await u.put(dst, body);
      await u.delete(src);
    }
    return reply.type("application/json").send(JSON.stringify(dest));
  });
};

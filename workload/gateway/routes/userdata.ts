import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import { GatewayError } from "../protocol/errors";
import { ownerPrefix } from "../protocol/outputs";
import { jsonBody, safeRelPath } from "./common";

/**
 * ComfyUI's multi-user layout (app/user_manager.py, app/app_settings.py): each user's files under
 * `user/<user>/…`, settings in `user/<user>/comfy.settings.json`. The user is the signed-in caller, never
 * a header the client sends (ComfyUI's `Comfy-User`). Local mode's user, and everything saved before
 * sign-in existed, is `default`: readable by everyone as a shared, read-only layer under each user's own
 * files (a user's own file of the same name wins; writes, moves and deletes touch only their own).
 */
const LEGACY = "default";
const SETTINGS = "comfy.settings.json";

export function userDir(userId: string): string {
  return userId === LEGACY ? LEGACY : ownerPrefix(userId);
}

function rel(p: string): string {
  if (!p || !safeRelPath(p)) throw new GatewayError("GW_ERR_BAD_PATH", p);
  return p;
}

/** ComfyUI's user state (settings, saved workflows, user files) in the user bucket (every replica). */
export const userRoutes: FastifyPluginAsync = async (app) => {
  const u = app.gw.files.user;
  const own = (req: FastifyRequest) => `${userDir(req.caller.userId)}/`;
  const layers = (req: FastifyRequest) => (req.caller.userId === LEGACY ? [`${LEGACY}/`] : [own(req), `${LEGACY}/`]);
  const parse = (b: Buffer | undefined) => JSON.parse(b?.toString("utf8") ?? "{}") as Record<string, unknown>;
  const readSettings = async (req: FastifyRequest) => {
    const [mine, shared] = await Promise.all([u.get(own(req) + SETTINGS), req.caller.userId === LEGACY ? undefined : u.get(`${LEGACY}/${SETTINGS}`)]);
    return { ...parse(shared), ...parse(mine) };
  };
  // One conditional read-modify-write per change: concurrent saves of different keys all land.
  const changeSettings = (req: FastifyRequest, patch: Record<string, unknown>) => u.update(own(req) + SETTINGS, (cur) => Buffer.from(JSON.stringify({ ...parse(cur), ...patch }, null, 4)));
  /** A user's file, else the shared legacy one. */
  const read = async (req: FastifyRequest, p: string) => {
    for (const l of layers(req)) {
      const b = await u.get(l + p);
      if (b) return b;
    }
    return undefined;
  };
  /** Files under `dir` of every layer, a user's own shadowing the shared ones of the same path. */
  const list = async (req: FastifyRequest, dir: string) => {
    const seen = new Map<string, { key: string; size: number; modified: number; rel: string }>();
    for (const l of layers(req)) {
      const base = `${l}${dir}`;
      for (const o of await u.list(base)) {
        const r = o.key.slice(base.length);
        if (!seen.has(r)) seen.set(r, { ...o, rel: r });
      }
    }
    return [...seen.values()].sort((a, b) => (a.rel < b.rel ? -1 : 1));
  };

  // Single-user shape: the frontend asks no one to pick a user (the gateway knows who signed in).
  app.get("/users", async () => ({ storage: "server", migrated: true }));
  app.get("/settings", async (req) => readSettings(req));
  app.get("/settings/:id", async (req, reply) => reply.type("application/json").send(JSON.stringify((await readSettings(req))[(req.params as { id: string }).id] ?? null)));
  app.post("/settings", async (req, reply) => {
    const body = jsonBody<unknown>(req);
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new GatewayError("GW_ERR_INVALID_JSON", "settings must be an object");
    await changeSettings(req, body as Record<string, unknown>);
    return reply.code(200).send("");
  });
  app.post("/settings/:id", async (req, reply) => {
    const value = jsonBody<unknown>(req);
    await changeSettings(req, { [(req.params as { id: string }).id]: value });
    return reply.code(200).send("");
  });

  app.get("/userdata", async (req, reply) => {
    const q = req.query as Record<string, string>;
    const dir = q.dir;
    if (!dir || !safeRelPath(dir)) return reply.code(400).send({ error: "invalid dir" });
    const files = await list(req, `${dir.replace(/\/$/, "")}/`);
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
    const dir = p ? `${p.replace(/\/$/, "")}/` : "";
    const entries = new Map<string, Record<string, unknown>>();
    for (const o of await list(req, dir)) {
      const [first, ...rest] = o.rel.split("/");
      const path = p ? `${p.replace(/\/$/, "")}/${first}` : first;
      if (rest.length) entries.set(first, { name: first, path, type: "directory" });
      else entries.set(first, { name: first, path, type: "file", size: o.size, modified: o.modified / 1000 });
    }
    return [...entries.values()];
  });

  app.get("/userdata/:file", async (req, reply) => {
    const file = rel((req.params as { file: string }).file);
    const body = await read(req, file);
    if (!body) return reply.code(404).send("");
    return reply.type(file.endsWith(".json") ? "application/json" : "application/octet-stream").send(body);
  });
  app.post("/userdata/:file", async (req, reply) => {
    const file = rel((req.params as { file: string }).file);
    const key = own(req) + file;
    const q = req.query as Record<string, string>;
    if (q.overwrite === "false" && (await u.get(key))) return reply.code(409).send("");
    const body = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
    await u.put(key, body);
    return reply.type("application/json").send(JSON.stringify(q.full_info === "true" ? { path: file, size: body.length, modified: Date.now() / 1000 } : file));
  });
  app.delete("/userdata/:file", async (req, reply) => {
    const key = own(req) + rel((req.params as { file: string }).file);
    if (!(await u.get(key))) return reply.code(404).send("");
    await u.delete(key);
    return reply.code(204).send();
  });
  app.post("/userdata/:file/move/:dest", async (req, reply) => {
    const { file, dest } = req.params as { file: string; dest: string };
    const src = own(req) + rel(file);
    const dst = own(req) + rel(dest);
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

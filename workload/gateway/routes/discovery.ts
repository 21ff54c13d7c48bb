import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from "fastify";
import { metadataKey, staticKey } from "../discovery";
import { GatewayError } from "../protocol/errors";
import type { ObjectInfo } from "../protocol/validate";
import type { Services } from "../services";
import { ACCOUNT_EXTENSION } from "../auth";
import { safeRelPath } from "./common";

export const GPU_STATUS_EXTENSION = "/extensions/comfyui-gateway/gpu-status.js";
/** The gateway's own web UI extensions, added to the pod's list. */
const GATEWAY_EXTENSIONS = [GPU_STATUS_EXTENSION, ACCOUNT_EXTENSION] as const;
/** What the extension polls: ready GPU pods and the cold-start estimate (public; the /gateway/* routes are internal). */
export const GPU_STATUS_PATH = "/extensions/comfyui-gateway/status";

// A small frontend extension: while no GPU pod is ready the queue still accepts prompts; say so in
// the UI, with how long a start takes here (the median of measured cold starts once the gateway has
// a few, the documented budget before: /gateway/pods `coldStart`).
export function gpuStatusText(s: { ready?: number; coldStart?: { seconds?: number; basis?: string; samples?: number; waitingSeconds?: number } }): string {
  if ((s.ready ?? 0) > 0) return "";
  const c = s.coldStart ?? {};
  if (typeof c.seconds !== "number" || !Number.isFinite(c.seconds)) return "GPU starting: queued prompts run as soon as it is ready";
  const basis = c.basis === "measured" ? `median of the last ${c.samples} starts` : "estimate, none measured yet";
  const left = c.seconds - (c.waitingSeconds ?? 0);
  if (c.waitingSeconds !== undefined && left < 0) return `GPU starting, taking longer than usual (${basis}: ${Math.max(1, Math.round(c.seconds / 60))} min); queued prompts run as soon as it is ready`;
  return `GPU starting \u2014 about ${Math.max(1, Math.round(left / 60))} minute${Math.round(left / 60) > 1 ? "s" : ""} (${basis}); queued prompts run as soon as it is ready`;
}

const GPU_STATUS_JS = `// comfyui-gateway: tells the user that a GPU is starting while prompts wait, and for about how long.
(function () {
  const gpuStatusText = ${gpuStatusText.toString()};
  let el;
  async function poll() {
    try {
      const r = await fetch(${JSON.stringify(GPU_STATUS_PATH)});
      const s = await r.json();
      if (!el) { el = document.createElement("div"); el.style.cssText = "position:fixed;bottom:8px;left:8px;z-index:9999;padding:4px 8px;border-radius:4px;background:#333;color:#fff;font:12px sans-serif"; document.body.appendChild(el); }
      const text = gpuStatusText(s);
      el.textContent = text;
      el.style.display = text ? "block" : "none";
    } catch (e) { /* gateway restarting */ }
    setTimeout(poll, 5000);
  }
  poll();
})();
`;

/**
 * A read-only discovery answer: from a ready pod when this replica leads one (and cached), else from the
 * cache, else from the leader (a follower has no pod of its own), else 503 no_pod.
 */
async function cached(gw: Services, reply: FastifyReply, name: string, podPath: string, transform?: (v: unknown) => unknown | Promise<unknown>) {
  const w = gw.readyWorker();
  let body: Buffer | undefined;
  if (w) {
    const r = await w.client.request("GET", podPath).catch(() => undefined);
    if (r?.status === 200) {
      body = r.body;
      await gw.discovery.put(name, body).catch(() => undefined);
    } else if (r?.status === 404) throw new GatewayError("GW_ERR_NOT_FOUND", podPath);
  }
  body ??= await gw.discovery.get(name);
  if (!body && !gw.leading) {
    const r = await gw.askLeader<{ status: number; type: string; body: string }>("GET", `/gateway/leader/passthrough?path=${encodeURIComponent(podPath)}`);
    if (r?.status === 200) body = Buffer.from(r.body, "base64");
  }
  if (!body) throw new GatewayError("GW_ERR_NO_POD", podPath);
  const value = JSON.parse(body.toString("utf8"));
  return reply.send(transform ? await transform(value) : value);
}

/** A model folder's files as a node holding the whole library would list them (the pod's own first, as it has them). */
function libraryNames(gw: Services, folder: string, listed: unknown): unknown {
  const lib = gw.discovery.library;
  if (!lib?.ready || !Array.isArray(listed)) return listed;
  return [...new Set([...lib.names(folder), ...listed.filter((x) => typeof x === "string")])].sort();
}

/** model_manager.py's entries ({name, pathIndex, modified, size}) for library files the pod has not. */
function libraryEntries(gw: Services, folder: string, listed: unknown): unknown {
  const lib = gw.discovery.library;
  if (!lib?.ready || !Array.isArray(listed)) return listed;
  const have = new Set(listed.map((e) => (e as { name?: unknown }).name));
  const extra = lib.names(folder).filter((n) => !have.has(n)).map((n) => {
    const f = lib.resolve(folder, n)!;
    return { name: n, pathIndex: 0, modified: f.modified / 1000, created: f.modified / 1000, size: f.bytes };
  });
  return [...listed, ...extra];
}

/** A model folder's listing: 404 for a folder the pods do not have (server.py / model_manager.py), else cached. */
async function folderListing(gw: Services, reply: FastifyReply, folder: string, list: string, name: string, podPath: string, transform?: (v: unknown) => unknown) {
  if (!safeRelPath(folder) || folder.includes("/")) throw new GatewayError("GW_ERR_NOT_FOUND", folder);
  const known = await gw.discovery.get(list);
  if (known) {
    const folders = (JSON.parse(known.toString("utf8")) as unknown[]).map((f) => (typeof f === "string" ? f : (f as { name?: unknown }).name));
    if (!folders.includes(folder)) throw new GatewayError("GW_ERR_NOT_FOUND", folder);
  }
  return cached(gw, reply, name, podPath, transform);
}

/**
 * ComfyUI's read-only discovery routes: object_info, models, embeddings, extensions, system_stats, features,
 * and what the web frontend's panels read (i18n, workflow_templates, experiment/models), all from the cache
 * with no pod running (discovery.ts).
 */
export const discoveryRoutes: FastifyPluginAsync = async (app) => {
  const gw = app.gw;
  // Every loader lists the whole model library (the bucket), not only what this pod's node holds (issue 19).
  app.get("/object_info", async (_req, reply) => cached(gw, reply, "object_info.json", "/object_info", (v) => gw.discovery.withLibrary(v as ObjectInfo)));
  app.get("/object_info/:cls", async (req, reply) => {
    const { cls } = req.params as { cls: string };
    const info = await gw.discovery.objectInfo();
    // Unknown classes answer {} with 200 (the saintno SDK's probe relies on it).
    if (info) return reply.send(cls in info ? { [cls]: info[cls] } : {});
    return cached(gw, reply, "object_info.json", "/object_info", (v) => ((v as Record<string, unknown>)[cls] ? { [cls]: (v as Record<string, unknown>)[cls] } : {}));
  });
  app.get("/embeddings", async (_req, reply) => cached(gw, reply, "embeddings.json", "/embeddings"));
  app.get("/models", async (_req, reply) => cached(gw, reply, "models.json", "/models"));
  app.get("/models/:folder", async (req, reply) => {
    const { folder } = req.params as { folder: string };
    return folderListing(gw, reply, folder, "models.json", `models/${folder}.json`, `/models/${encodeURIComponent(folder)}`, (v) => libraryNames(gw, folder, v));
  });
  // app/model_manager.py: the model library panel's folders and their files (name, pathIndex, times, size).
  app.get("/experiment/models", async (_req, reply) => cached(gw, reply, "experiment/models.json", "/experiment/models"));
  app.get("/experiment/models/:folder", async (req, reply) => {
    const { folder } = req.params as { folder: string };
    return folderListing(gw, reply, folder, "experiment/models.json", `experiment/models/${folder}.json`, `/experiment/models/${encodeURIComponent(folder)}`, (v) => libraryEntries(gw, folder, v));
  });
  // server.py view_metadata: a safetensors model's __metadata__, 404 when it has none. With no pod, a model
  // whose answer is not cached had none when its pod was last read (the refresh reads every model's).
  app.get("/view_metadata/:folder", async (req, reply) => {
    const { folder } = req.params as { folder: string };
    const { filename } = req.query as { filename?: unknown };
    if (typeof filename !== "string") throw new GatewayError("GW_ERR_NOT_FOUND", folder);
    return cached(gw, reply, metadataKey(folder, filename), `/view_metadata/${encodeURIComponent(folder)}?filename=${encodeURIComponent(filename)}`).catch((err: unknown) => {
      if (err instanceof GatewayError && err.code === "GW_ERR_NO_POD") throw new GatewayError("GW_ERR_NOT_FOUND", folder);
      throw err;
    });
  });
  // app/custom_node_manager.py: custom nodes' translations and example workflows (the templates browser).
  app.get("/i18n", async (_req, reply) => cached(gw, reply, "i18n.json", "/i18n"));
  app.get("/workflow_templates", async (_req, reply) => cached(gw, reply, "workflow_templates.json", "/workflow_templates"));
  app.get("/extensions", async (_req, reply) =>
    cached(gw, reply, "extensions.json", "/extensions", (v) => [...(Array.isArray(v) ? v : []), ...GATEWAY_EXTENSIONS]).catch((err: unknown) => {
      if (err instanceof GatewayError && err.code === "GW_ERR_NO_POD") return reply.send([...GATEWAY_EXTENSIONS]);
      throw err;
    }));
  app.get("/system_stats", async (_req, reply) => cached(gw, reply, "system_stats.json", "/system_stats"));
  app.get("/features", async (_req, reply) => cached(gw, reply, "features.json", "/features", (v) => ({ ...(v as object), max_upload_size: gw.maxUploadBytes })));
};

/** The gateway's own routes outside ComfyUI's /api twins: the GPU-status extension, /internal/*, and the frontend's static files. */
export function staticRoutes(app: FastifyInstance): void {
  const gw = app.gw;
  app.get(GPU_STATUS_EXTENSION, async (_req, reply) => reply.type("application/javascript").header("cache-control", "no-cache").send(GPU_STATUS_JS));
  app.get(GPU_STATUS_PATH, async () => gw.gpuStatus());
  // /internal/* has no /api twin (protocol §2.4); logs are not relayed, subscribing is a no-op.
  app.patch("/internal/logs/subscribe", async (_req, reply) => reply.code(200).send(""));
  // The model folders' paths on the pods (the frontend's model library reads them at start).
  app.get("/internal/folder_paths", async (_req, reply) => cached(gw, reply, "internal/folder_paths.json", "/internal/folder_paths"));

  // The frontend's static files: from a ready pod (and cached), else from the cache, else from the leader.
  app.setNotFoundHandler(async (req, reply) => {
    if (req.method !== "GET" && req.method !== "HEAD") return reply.code(404).send({ error: "not found" });
    const url = new URL(req.url, "http://x");
    const p = url.pathname === "/" ? "/index.html" : url.pathname;
    if (!safeRelPath(decodeURIComponent(p.slice(1)))) return reply.code(404).send({ error: "not found" });
    // Keyed by path and query: one path can answer differently per query string.
    const name = staticKey(url.pathname, url.search);
    const w = gw.readyWorker();
    if (w) {
      const r = await w.client.request("GET", url.pathname + url.search).catch(() => undefined);
      if (r && r.status === 200) {
        await gw.discovery.put(name, r.body).catch(() => undefined);
        await gw.discovery.put(`${name}.type`, Buffer.from(r.headers.get("content-type") ?? "application/octet-stream")).catch(() => undefined);
        return reply.type(r.headers.get("content-type") ?? "application/octet-stream").send(r.body);
      }
      if (r) return reply.code(r.status).type(r.headers.get("content-type") ?? "text/plain").send(r.body);
    }
    let body = await gw.discovery.get(name);
    let type = (await gw.discovery.get(`${name}.type`))?.toString("utf8");
    if (!body && !gw.leading) {
      const r = await gw.askLeader<{ status: number; type: string; body: string }>("GET", `/gateway/leader/passthrough?path=${encodeURIComponent(url.pathname + url.search)}&cache=${encodeURIComponent(name)}`);
      if (r?.status === 200) {
        body = Buffer.from(r.body, "base64");
        type = r.type;
      }
    }
    if (!body) return reply.code(404).send({ error: "not found" });
    return reply.type(type ?? "application/octet-stream").send(body);
  });
}

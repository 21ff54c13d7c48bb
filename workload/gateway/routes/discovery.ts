import type { FastifyInstance, FastifyReply } from "fastify";
import type { GatewayContext } from "../context";
import { GatewayError } from "../protocol/errors";
import { both, safeRelPath } from "./common";

export const GPU_STATUS_EXTENSION = "/extensions/comfyui-gateway/gpu-status.js";

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
      const r = await fetch("/gateway/pods");
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

function readyWorker(ctx: GatewayContext) {
  return [...(ctx.dispatcher?.workers.values() ?? [])].find((w) => w.ready);
}

async function cached(ctx: GatewayContext, reply: FastifyReply, name: string, podPath: string, transform?: (v: unknown) => unknown) {
  const w = readyWorker(ctx);
  let body: Buffer | undefined;
  if (w) {
    const r = await w.client.request("GET", podPath).catch(() => undefined);
    if (r?.status === 200) {
      body = r.body;
      await ctx.discovery.put(name, body).catch(() => undefined);
    } else if (r?.status === 404) throw new GatewayError("GW_ERR_NOT_FOUND", podPath);
  }
  body ??= await ctx.discovery.get(name);
  if (!body) throw new GatewayError("GW_ERR_NO_POD", podPath);
  const value = JSON.parse(body.toString("utf8"));
  return reply.send(transform ? transform(value) : value);
}

export function discoveryRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  both(app, "GET", "/object_info", async (_req, reply) => cached(ctx, reply, "object_info.json", "/object_info"));
  both(app, "GET", "/object_info/:cls", async (req, reply) => {
    const { cls } = req.params as { cls: string };
    const info = await ctx.discovery.objectInfo();
    // Unknown classes answer {} with 200 (the saintno SDK's probe relies on it).
    if (info) return reply.send(cls in info ? { [cls]: info[cls] } : {});
    return cached(ctx, reply, "object_info.json", "/object_info", (v) => ((v as Record<string, unknown>)[cls] ? { [cls]: (v as Record<string, unknown>)[cls] } : {}));
  });
  both(app, "GET", "/embeddings", async (_req, reply) => cached(ctx, reply, "embeddings.json", "/embeddings"));
  both(app, "GET", "/models", async (_req, reply) => cached(ctx, reply, "models.json", "/models"));
  both(app, "GET", "/models/:folder", async (req, reply) => {
    const { folder } = req.params as { folder: string };
    if (!safeRelPath(folder) || folder.includes("/")) throw new GatewayError("GW_ERR_NOT_FOUND", folder);
    return cached(ctx, reply, `models/${folder}.json`, `/models/${encodeURIComponent(folder)}`);
  });
  both(app, "GET", "/extensions", async (_req, reply) =>
    cached(ctx, reply, "extensions.json", "/extensions", (v) => [...(Array.isArray(v) ? v : []), GPU_STATUS_EXTENSION]).catch((err: unknown) => {
      if (err instanceof GatewayError && err.code === "GW_ERR_NO_POD") return reply.send([GPU_STATUS_EXTENSION]);
      throw err;
    }));
  both(app, "GET", "/system_stats", async (_req, reply) => cached(ctx, reply, "system_stats.json", "/system_stats"));
  both(app, "GET", "/features", async (_req, reply) => cached(ctx, reply, "features.json", "/features", (v) => ({ ...(v as object), max_upload_size: ctx.maxUploadBytes })));
  app.get(GPU_STATUS_EXTENSION, async (_req, reply) => reply.type("application/javascript").header("cache-control", "no-cache").send(GPU_STATUS_JS));
  // /internal/* has no /api twin (protocol §2.4); logs are not relayed, subscribing is a no-op.
  app.patch("/internal/logs/subscribe", async (_req, reply) => reply.code(200).send(""));

  // The frontend's static files: from a ready pod (and cached), else from the cache.
  app.setNotFoundHandler(async (req, reply) => {
    if (req.method !== "GET" && req.method !== "HEAD") return reply.code(404).send({ error: "not found" });
    const url = new URL(req.url, "http://x");
    const p = url.pathname === "/" ? "/index.html" : url.pathname;
    if (!safeRelPath(decodeURIComponent(p.slice(1)))) return reply.code(404).send({ error: "not found" });
    const name = `static${p}`;
    const w = readyWorker(ctx);
    if (w) {
      const r = await w.client.request("GET", url.pathname + url.search).catch(() => undefined);
      if (r && r.status === 200) {
        await ctx.discovery.put(name, r.body).catch(() => undefined);
        await ctx.discovery.put(`${name}.type`, Buffer.from(r.headers.get("content-type") ?? "application/octet-stream")).catch(() => undefined);
        return reply.type(r.headers.get("content-type") ?? "application/octet-stream").send(r.body);
      }
      if (r) return reply.code(r.status).type(r.headers.get("content-type") ?? "text/plain").send(r.body);
    }
    const body = await ctx.discovery.get(name);
    if (!body) return reply.code(404).send({ error: "not found" });
    const type = (await ctx.discovery.get(`${name}.type`))?.toString("utf8") ?? "application/octet-stream";
    return reply.type(type).send(body);
  });
}

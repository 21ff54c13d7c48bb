import { randomUUID } from "node:crypto";
import type { FastifyInstance } from "fastify";
import type { GatewayContext } from "../context";
import { GatewayError, UUID_RE } from "../protocol/errors";
import { validatePrompt, type ApiPrompt, type CustomValidator } from "../protocol/validate";
import type { PromptRecord } from "../store/types";
import { both, emptyOk, jsonBody, safeRelPath } from "./common";

// API keys for ComfyUI's paid API nodes are not stored durably nor shown (protocol §2.1: not kept in history).
const SENSITIVE = ["auth_token_comfy_org", "api_key_comfy_org"];

const item = (r: PromptRecord) => [r.number, r.id, r.prompt, r.extraData, r.outputs];

export function promptRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  both(app, "GET", "/prompt", async () => ({ exec_info: { queue_remaining: await ctx.queueRemaining() } }));

  both(app, "POST", "/prompt", async (req, reply) => {
    ctx.requireLeader();
    const body = jsonBody(req);
    if (!body || typeof body !== "object" || !("prompt" in body)) throw new GatewayError("GW_ERR_NO_PROMPT");
    let id: string | undefined;
    if (body.prompt_id !== undefined && body.prompt_id !== null) {
      if (typeof body.prompt_id !== "string" || !UUID_RE.test(body.prompt_id)) throw new GatewayError("GW_ERR_INVALID_PROMPT_ID", JSON.stringify(body.prompt_id));
      id = body.prompt_id;
      const existing = await ctx.store.get(id);
      // Safe retries: the same id again answers with that prompt and never queues it twice.
      if (existing) return { prompt_id: existing.id, number: existing.number, node_errors: {} };
    }
    const prompt = body.prompt as ApiPrompt;
    if (!prompt || typeof prompt !== "object" || Array.isArray(prompt)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "prompt must be an object of nodes");
    let outputs: string[] = [];
    let nodeErrors = {};
    const info = await ctx.discovery.objectInfo();
    if (info) {
      const custom = await imageValidators(ctx, prompt);
      const partial = Array.isArray(body.partial_execution_targets) ? (body.partial_execution_targets as unknown[]).map(String) : undefined;
      const v = validatePrompt(prompt, info, { custom, partialTargets: partial });
      if (!v.ok) {
        req.log.info({ type: v.error?.type }, "prompt refused");
        return reply.code(400).send({ error: v.error, node_errors: v.nodeErrors });
      }
      outputs = v.outputs;
      nodeErrors = v.nodeErrors;
    }
    const n = await ctx.store.nextNumber();
    const number = typeof body.number === "number" || typeof body.number === "string" ? Number(body.number) : body.front ? -n : n;
    if (!Number.isFinite(number)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "number must be a number");
    const extraData: Record<string, unknown> = { ...((body.extra_data as Record<string, unknown>) ?? {}) };
    for (const k of SENSITIVE) delete extraData[k];
    if (typeof body.client_id === "string") extraData.client_id = body.client_id;
    extraData.create_time = Date.now();
    const rec: PromptRecord = {
      id: id ?? randomUUID(), number, seq: n, clientId: typeof body.client_id === "string" ? body.client_id : null,
      prompt: prompt as Record<string, unknown>, extraData, outputs, state: "queued", attempt: 0, createdAt: Date.now(),
    };
    const { created, record } = await ctx.store.create(rec);
    if (created) {
      ctx.onAccepted();
      ctx.dispatcher?.submitted(record);
    }
    return { prompt_id: record.id, number: record.number, node_errors: created ? nodeErrors : {} };
  });

  both(app, "GET", "/queue", async () => {
    const open = await ctx.openPrompts();
    const running = open.filter((r) => r.state === "dispatched").map(item);
    const pending = open.filter((r) => r.state === "queued").sort((a, b) => a.number - b.number || a.seq - b.seq).map(item);
    return { queue_running: running, queue_pending: pending };
  });

  both(app, "POST", "/queue", async (req, reply) => {
    ctx.requireLeader();
    const body = jsonBody(req);
    if (body.clear) ctx.dispatcher?.deleted(await ctx.store.deleteQueued());
    if (Array.isArray(body.delete)) ctx.dispatcher?.deleted(await ctx.store.deleteQueued(body.delete.map(String)));
    return emptyOk(reply);
  });

  both(app, "GET", "/history", async (req) => {
    const q = req.query as Record<string, string>;
    const all = await ctx.store.listHistory();
    const maxItems = q.max_items !== undefined ? parseInt(q.max_items, 10) : undefined;
    let offset = q.offset !== undefined ? parseInt(q.offset, 10) : -1;
    if (maxItems !== undefined && Number.isNaN(maxItems)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "max_items must be an integer");
    if (Number.isNaN(offset)) offset = -1;
    // ComfyUI PromptQueue.get_history: a negative offset with max_items means "the newest max_items".
    if (offset < 0 && maxItems !== undefined) offset = all.length - maxItems;
    const slice = all.slice(Math.max(0, offset), maxItems !== undefined ? Math.max(0, offset) + maxItems : undefined);
    return Object.fromEntries(slice.map((r) => [r.id, r.history]));
  });

  both(app, "GET", "/history/:id", async (req) => {
    const { id } = req.params as { id: string };
    const r = await ctx.store.get(id);
    // ComfyUI answers {} both for unknown and for unfinished prompts.
    return r && r.state === "done" && !r.hidden ? { [id]: r.history } : {};
  });

  both(app, "POST", "/history", async (req, reply) => {
    ctx.requireLeader();
    const body = jsonBody(req);
    if (body.clear) await ctx.store.hideHistory();
    if (Array.isArray(body.delete)) await ctx.store.hideHistory(body.delete.map(String));
    return emptyOk(reply);
  });

  both(app, "POST", "/interrupt", async (req, reply) => {
    ctx.requireLeader();
    const body = jsonBody(req, { allowEmpty: true });
    const clientId = (req.query as Record<string, string>).clientId ?? (typeof body.client_id === "string" ? body.client_id : undefined);
    // Only a named prompt, or the caller's own running prompts: never another client's by accident.
    const targets = typeof body.prompt_id === "string" ? [body.prompt_id] : clientId ? (await ctx.openPrompts()).filter((r) => r.clientId === clientId && r.state === "dispatched").map((r) => r.id) : [];
    for (const id of targets) {
      const w = ctx.dispatcher?.workerOf(id);
      if (w) await w.client.request("POST", "/interrupt", { prompt_id: id }, 5000).catch((err: unknown) => req.log.warn({ err: (err as Error).message }, "interrupt failed"));
    }
    return emptyOk(reply);
  });

  both(app, "POST", "/free", async (req, reply) => {
    ctx.requireLeader();
    const body = jsonBody(req);
    await Promise.all([...(ctx.dispatcher?.workers.values() ?? [])].filter((w) => w.ready).map((w) => w.client.request("POST", "/free", body, 5000).catch(() => undefined)));
    return emptyOk(reply);
  });
}

/** ComfyUI's LoadImage VALIDATE_INPUTS: the file must exist in the input store ("x.png [output]" allowed). */
async function imageValidators(ctx: GatewayContext, prompt: ApiPrompt): Promise<Record<string, CustomValidator>> {
  const known = new Map<string, boolean>();
  for (const node of Object.values(prompt)) {
    if (!node || (node.class_type !== "LoadImage" && node.class_type !== "LoadImageMask")) continue;
    const v = node.inputs?.image;
    if (typeof v !== "string" || known.has(v)) continue;
    known.set(v, await ctx.fileExists(v));
  }
  const check: CustomValidator = (v) => (known.get(String(v)) ? true : `Invalid image file: ${String(v)}`);
  return { "LoadImage.image": check, "LoadImageMask.image": check };
}

export function annotatedFile(v: string): { type: "input" | "output" | "temp"; name: string } | undefined {
  const m = /^(.*) \[(input|output|temp)\]$/.exec(v);
  const type = (m?.[2] ?? "input") as "input" | "output" | "temp";
  const name = m ? m[1] : v;
  return safeRelPath(name) && name !== "" ? { type, name } : undefined;
}

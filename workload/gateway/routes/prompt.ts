import { randomUUID } from "node:crypto";
import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import { Readable } from "node:stream";
import type { Caller } from "../auth/types";
import type { Services } from "../services";
import { GatewayError, UUID_RE } from "../protocol/errors";
import { validatePrompt, type ApiPrompt, type CustomValidator } from "../protocol/validate";
import type { PromptRecord } from "../store/types";
import { emptyOk, jsonBody, safeRelPath } from "./common";

// API keys for ComfyUI's paid API nodes are not stored durably nor shown (protocol §2.1: not kept in history).
const SENSITIVE = ["auth_token_comfy_org", "api_key_comfy_org"];

/** ComfyUI's prompt routes: queueing, the queue, history, interrupt, free — served by every replica. */
export const promptRoutes: FastifyPluginAsync = async (app) => {
  const gw = app.gw;
  app.get("/prompt", async () => ({ exec_info: { queue_remaining: await gw.queueRemaining() } }));

  app.post("/prompt", async (req, reply) => {
    const body = jsonBody(req);
    if (!body || typeof body !== "object" || !("prompt" in body)) throw new GatewayError("GW_ERR_NO_PROMPT");
    let id: string | undefined;
    if (body.prompt_id !== undefined && body.prompt_id !== null) {
      if (typeof body.prompt_id !== "string" || !UUID_RE.test(body.prompt_id)) throw new GatewayError("GW_ERR_INVALID_PROMPT_ID", JSON.stringify(body.prompt_id));
      id = body.prompt_id;
    }
    const prompt = body.prompt as ApiPrompt;
    if (!prompt || typeof prompt !== "object" || Array.isArray(prompt)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "prompt must be an object of nodes");
    let outputs: string[] = [];
    let nodeErrors = {};
    const info = await gw.discovery.objectInfo();
    if (info) {
      const custom = await imageValidators(gw, prompt, req.caller);
      const partial = Array.isArray(body.partial_execution_targets) ? (body.partial_execution_targets as unknown[]).map(String) : undefined;
      const v = validatePrompt(prompt, info, { custom, partialTargets: partial });
      if (!v.ok) {
        req.log.info({ type: v.error?.type }, "prompt refused");
        return reply.code(400).send({ error: v.error, node_errors: v.nodeErrors });
      }
      outputs = v.outputs;
      nodeErrors = v.nodeErrors;
    }
    // Acceptance order from this replica's clock: no store call (replicas agree to the millisecond).
    const n = gw.clock.next();
    const number = typeof body.number === "number" || typeof body.number === "string" ? Number(body.number) : body.front ? -n : n;
    if (!Number.isFinite(number)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "number must be a number");
    const extraData: Record<string, unknown> = { ...((body.extra_data as Record<string, unknown>) ?? {}) };
    for (const k of SENSITIVE) delete extraData[k];
    if (typeof body.client_id === "string") extraData.client_id = body.client_id;
    extraData.create_time = Date.now();
    const rec: PromptRecord = {
      id: id ?? randomUUID(), number, seq: n, clientId: typeof body.client_id === "string" ? body.client_id : null, owner: req.caller.userId,
      prompt: prompt as Record<string, unknown>, extraData, outputs, state: "queued", attempt: 0, createdAt: Date.now(),
    };
    // One conditional write: a retry with the same prompt_id answers with the stored prompt, never queues it twice.
    const { created, record } = await gw.store.create(rec);
    // Another user's id (a collision, or a guess): not theirs to see or answer for.
    if (!created && record.owner !== rec.owner) throw new GatewayError("GW_ERR_INVALID_PROMPT_ID", "already used");
    if (created) gw.submitted(record);
    req.auditTarget = record.id;
    return { prompt_id: record.id, number: record.number, node_errors: created ? nodeErrors : {} };
  });

  // Everything below acts on the caller's own prompts; an admin's reach everyone's.
  const scope = (req: FastifyRequest) => (req.caller.admin ? undefined : req.caller.userId);

  app.get("/queue", async (req) => gw.queue(scope(req)));

  app.post("/queue", async (req, reply) => {
    const body = jsonBody(req);
    if (body.clear) await gw.deleteFromQueue(undefined, scope(req));
    if (Array.isArray(body.delete)) await gw.deleteFromQueue(body.delete.map(String), scope(req));
    req.auditTarget = body.clear ? "clear" : Array.isArray(body.delete) ? `delete ${body.delete.join(" ")}` : undefined;
    return emptyOk(reply);
  });

  app.get("/history", async (req, reply) => {
    const q = req.query as Record<string, string>;
    const maxItems = q.max_items !== undefined ? parseInt(q.max_items, 10) : undefined;
    let offset = q.offset !== undefined ? parseInt(q.offset, 10) : -1;
    if (maxItems !== undefined && Number.isNaN(maxItems)) throw new GatewayError("GW_ERR_INVALID_PROMPT", "max_items must be an integer");
    if (Number.isNaN(offset)) offset = -1;
    if (maxItems !== undefined || offset >= 0) {
      // Only the page asked for is read (the store's completion order), as ComfyUI's get_history slices it.
      const page = await gw.store.listHistory({ maxItems, offset, owner: scope(req) });
      return Object.fromEntries(page.map((r) => [r.id, r.history]));
    }
    // Everything: streamed a page at a time, so a long history never sits in memory whole.
    return reply.type("application/json; charset=utf-8").send(Readable.from(historyJson(gw.store.historyPages(200, scope(req)))));
  });

  app.get("/history/:id", async (req) => {
    const { id } = req.params as { id: string };
    const r = await gw.store.get(id);
    // ComfyUI answers {} both for unknown and for unfinished prompts; another user's is unknown here.
    return r && r.state === "done" && !r.hidden && (scope(req) === undefined || r.owner === scope(req)) ? { [id]: r.history } : {};
  });

  app.post("/history", async (req, reply) => {
    const body = jsonBody(req);
    if (body.clear) await gw.store.hideHistory(undefined, scope(req));
    if (Array.isArray(body.delete)) await gw.store.hideHistory(body.delete.map(String), scope(req));
    req.auditTarget = body.clear ? "clear" : Array.isArray(body.delete) ? `delete ${body.delete.join(" ")}` : undefined;
    return emptyOk(reply);
  });

  app.post("/interrupt", async (req, reply) => {
    const body = jsonBody(req, { allowEmpty: true });
    const clientId = (req.query as Record<string, string>).clientId ?? (typeof body.client_id === "string" ? body.client_id : undefined);
    // Only a named prompt, or the caller's own running prompts: never another client's by accident.
    req.auditTarget = typeof body.prompt_id === "string" ? body.prompt_id : clientId;
    if (typeof body.prompt_id === "string") await gw.interrupt({ ids: [body.prompt_id], owner: scope(req) });
    else if (clientId) await gw.interrupt({ clientId, owner: req.caller.userId });
    return emptyOk(reply);
  });

  // Unloading models on every pod slows everyone's next prompt: admins only.
  app.post("/free", async (req, reply) => {
    if (!req.caller.admin) throw new GatewayError("GW_ERR_FORBIDDEN", "/free unloads models on every GPU: admins only");
    await gw.free(jsonBody(req));
    return emptyOk(reply);
  });
};

async function* historyJson(pages: AsyncIterable<PromptRecord[]>): AsyncGenerator<string> {
  yield "{";
  let first = true;
  for await (const page of pages) {
    for (const r of page) {
      yield `${first ? "" : ","}${JSON.stringify(r.id)}:${JSON.stringify(r.history)}`;
      first = false;
    }
  }
  yield "}";
}

/** ComfyUI's LoadImage VALIDATE_INPUTS: the file must exist in the input store ("x.png [output]" allowed). */
async function imageValidators(gw: Services, prompt: ApiPrompt, caller: Caller): Promise<Record<string, CustomValidator>> {
  const known = new Map<string, boolean>();
  for (const node of Object.values(prompt)) {
    if (!node || (node.class_type !== "LoadImage" && node.class_type !== "LoadImageMask")) continue;
    const v = node.inputs?.image;
    if (typeof v !== "string" || known.has(v)) continue;
    known.set(v, await gw.fileExists(v, caller));
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

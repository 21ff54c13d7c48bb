/**
 * The agent's HTTP API (paths, shapes and errors: contracts/modelsAgent.ts) over one ModelCache.
 * Two listeners can serve it: TCP for the gateway (every path but /healthz needs the shared token),
 * and a Unix socket in the agent's root-only private folder for the node's SSM command (no token:
 * only root on the node can reach the socket).
 */
import Fastify, { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { timingSafeEqual } from "node:crypto";
import {
  AGENT_ERRORS,
  AGENT_PATHS,
  AgentErrorBody,
  AgentErrorCode,
  AgentMetrics,
  ApplyChange,
  ApplyResponse,
  EnsureResponse,
  EnsureRequest,
  HoldRequest,
  PinsRequest,
  TOKEN_HEADER,
  checkModelPath,
  parseChangeLines,
} from "../../../contracts/modelsAgent";
import type { ModelCache } from "./cache";
import { AgentError } from "./fetcher";

export interface ServerOptions {
  /** Required on every path but /healthz; undefined: no token (local mode on loopback only, or the Unix socket). */
  token?: string;
}

function errorBody(code: AgentErrorCode, message: string, path?: string): AgentErrorBody {
  return { error: { code, message, ...(path ? { path } : {}), retryable: AGENT_ERRORS[code].retryable } };
}

function send(reply: FastifyReply, err: AgentError): FastifyReply {
  return reply.code(AGENT_ERRORS[err.code].status).send(errorBody(err.code, err.message, err.path));
}

function bad(message: string): AgentError {
  return new AgentError("bad_request", message);
}

/** Every path is checked before anything else happens; the first refused one answers 400. */
function paths(value: unknown, field: string): string[] {
  if (!Array.isArray(value)) throw bad(`${field} must be an array of model paths`);
  if (value.length > 10_000) throw bad(`${field}: at most 10000 entries`);
  for (const p of value) {
    const c = checkModelPath(p);
    if (!c.ok) throw new AgentError("path_refused", `${c.path}: ${c.reason}; model paths are relative, inside one of ComfyUI's model folders`, c.path);
  }
  return value as string[];
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("the body must be a JSON object");
  return body as Record<string, unknown>;
}

/** The counters and gauges in Prometheus' text format (one family per line pair). */
export function prometheusText(m: AgentMetrics, g: { usedBytes: number; capacityBytes: number; quotaBytes: number; freeBytes: number; files: number; fetching: number }): string {
  const lines: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string, value: number) => {
    lines.push(`# HELP comfyui_models_agent_${name} ${help}`, `# TYPE comfyui_models_agent_${name} ${type}`, `comfyui_models_agent_${name} ${value}`);
  };
  family("fetches_total", "counter", "Downloads started.", m.fetches);
  family("fetches_completed_total", "counter", "Downloads verified and renamed into place.", m.fetchesCompleted);
  family("fetches_failed_total", "counter", "Downloads that failed.", m.fetchesFailed);
  family("fetched_bytes_total", "counter", "Bytes of completed downloads.", m.bytesFetched);
  family("hits_total", "counter", "Files an ensure found present.", m.hits);
  family("misses_total", "counter", "Files an ensure had to fetch.", m.misses);
  family("evictions_total", "counter", "Files removed to make room.", m.evictions);
  family("evicted_bytes_total", "counter", "Bytes removed to make room.", m.evictedBytes);
  family("applied_total", "counter", "Bucket changes handled.", m.applied);
  family("applied_changes_total", "counter", "Bucket changes that replaced, fetched or removed a local file.", m.appliedChanges);
  family("used_bytes", "gauge", "Bytes of complete files in the model folders.", g.usedBytes);
  family("capacity_bytes", "gauge", "What the cache may hold now.", g.capacityBytes);
  family("quota_bytes", "gauge", "The configured quota.", g.quotaBytes);
  family("free_bytes", "gauge", "Free bytes of the filesystem.", g.freeBytes);
  family("files", "gauge", "Complete files in the model folders.", g.files);
  family("fetching", "gauge", "Downloads in flight.", g.fetching);
  return lines.join("\n") + "\n";
}

export function buildAgentServer(cache: ModelCache, opts: ServerOptions = {}): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: 4 * 1024 * 1024, return503OnClosing: true });
  const expected = opts.token === undefined ? undefined : Buffer.from(opts.token);

  app.addHook("onRequest", async (req, reply) => {
    if (expected === undefined || req.url === AGENT_PATHS.health) return;
    const got = Buffer.from(String(req.headers[TOKEN_HEADER] ?? ""));
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      return reply.code(401).send(errorBody("unauthorized", `missing or wrong ${TOKEN_HEADER} header`));
    }
  });

  app.setErrorHandler((err: FastifyError | AgentError, _req, reply) => {
    if (err instanceof AgentError) return send(reply, err);
    const status = (err as FastifyError).statusCode ?? 500;
    if (status >= 400 && status < 500) return reply.code(400).send(errorBody("bad_request", err.message));
    return reply.code(500).send({ error: { code: "internal", message: err.message, retryable: true } });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: { code: "not_found", message: `no route ${req.method} ${req.url}`, retryable: false } }));

  app.get(AGENT_PATHS.health, async () => ({ ok: true }));

  app.get(AGENT_PATHS.inventory, async () => cache.inventory());

  app.get(AGENT_PATHS.metrics, async (_req, reply) => {
    const inv = await cache.inventory();
    reply.type("text/plain; version=0.0.4");
    return prometheusText(inv.metrics, { ...inv, files: inv.files.length, fetching: inv.fetching.length });
  });

  app.post(AGENT_PATHS.ensure, async (req, reply) => {
    const body = object(req.body) as Partial<EnsureRequest>;
    const files = paths(body.files, "files");
    if (files.length === 0) throw bad("files must name at least one model path");
    let hold: EnsureRequest["hold"];
    if (body.hold !== undefined) {
      const h = object(body.hold);
      if (typeof h.id !== "string" || typeof h.ttlSeconds !== "number") throw bad("hold must be {id: string, ttlSeconds: number}");
      hold = { id: h.id, ttlSeconds: h.ttlSeconds };
    }
    if (body.wait !== undefined && typeof body.wait !== "boolean") throw bad("wait must be a boolean");
    const results = await cache.ensure(files, hold, body.wait ?? true);
    const failed = results.find((r) => r.status === "failed");
    const out: EnsureResponse = { files: results };
    if (failed && failed.status === "failed") {
      out.error = errorBody(failed.code, failed.message, failed.path).error;
      return reply.code(AGENT_ERRORS[failed.code].status).send(out);
    }
    return reply.code(results.some((r) => r.status === "fetching") ? 202 : 200).send(out);
  });

  app.put(AGENT_PATHS.pins, async (req, reply) => {
    const body = object(req.body) as Partial<PinsRequest>;
    if (!Array.isArray(body.entries)) throw bad("entries must be an array of model paths or folders ending in '/'");
    const r = cache.setPins(body.entries as string[]);
    return reply.code(r.fetching.length > 0 ? 202 : 200).send(r);
  });

  app.put<{ Params: { id: string } }>(`${AGENT_PATHS.holds}/:id`, async (req) => {
    const body = object(req.body) as Partial<HoldRequest>;
    const files = paths(body.files, "files");
    if (typeof body.ttlSeconds !== "number") throw bad("ttlSeconds must be a number");
    cache.setHold(req.params.id, files, body.ttlSeconds);
    return { id: req.params.id, files, ttlSeconds: body.ttlSeconds };
  });

  app.delete<{ Params: { id: string } }>(`${AGENT_PATHS.holds}/:id`, async (req, reply) => {
    return reply.code(cache.deleteHold(req.params.id) ? 200 : 404).send({ id: req.params.id });
  });

  app.post(AGENT_PATHS.apply, async (req, reply) => {
    let changes: ApplyChange[];
    if (typeof req.body === "string") {
      // The sync Lambda's change lines, piped by the SSM command (contract.ts nodeApplyCommand).
      try {
        changes = parseChangeLines(req.body);
      } catch (err) {
        throw bad(`change lines: ${(err as Error).message}`);
      }
    } else {
      const body = object(req.body);
      if (!Array.isArray(body.changes)) throw bad("changes must be an array of {action: put|delete, key}");
      changes = body.changes as ApplyChange[];
    }
    for (const c of changes) {
      if (typeof c !== "object" || c === null || (c.action !== "put" && c.action !== "delete")) throw bad(`each change must be {action: "put"|"delete", key}`);
    }
    paths(
      changes.map((c) => c.key),
      "key",
    );
    const results = await cache.apply(changes);
    const failed = results.filter((r) => r.outcome === "failed");
    const out: ApplyResponse = { results, failed: failed.length };
    if (failed.length > 0) {
      const f = failed[0];
      out.error = errorBody(f.code ?? "fetch_failed", `${failed.length} of ${results.length} change(s) failed; first: ${f.message ?? f.key}`, f.key).error;
      // A failed key fails the SSM invocation (curl --fail-with-body), so the Lambda sends the batch again.
      return reply.code(502).send(out);
    }
    return out;
  });

  return app;
}

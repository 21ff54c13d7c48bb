/**
 * ComfyUI's jobs API (`/api/jobs`: list, one job, cancel) served studio-wide: the queue is the gateway's
 * (every pod's running prompts and everything waiting, from the leader or the store), the history is the
 * store's, so a browser sees every job of every pod, not one pod's. Per user as /queue and /history are:
 * an artist sees and cancels their own jobs, an admin everyone's.
 *
 * Shapes, status values, validation messages, sorting and paging are ComfyUI's: server.py `get_jobs`,
 * `get_job_by_id`, `cancel_job_by_id`, `cancel_jobs_batch` and comfy_execution/jobs.py, as stored for
 * Comfy-Org/ComfyUI server.py @002c3fb9 and @5e14d797 (identical there) and jobs.py @172be438 — the
 * v0.38 series (v0.38.1 = 20ca544e). The routes are declared with their `/api` prefix upstream (there is
 * no bare `/jobs`), so only `/api/jobs…` is served.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { UUID_RE } from "../protocol/errors";
import type { QueueItem } from "../services";
import type { HistoryEntry } from "../store/types";

/** jobs.py `JobStatus.ALL`, in its order (the 400 message lists them so). */
export const JOB_STATUSES = ["pending", "in_progress", "completed", "failed", "cancelled"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export type Job = Record<string, unknown> & { id: string; status: JobStatus };

const PREVIEWABLE_MEDIA_TYPES = new Set(["images", "video", "audio", "3d", "text"]);
const THREE_D_EXTENSIONS = [".obj", ".fbx", ".gltf", ".glb", ".usdz"];
const TEXT_EXTENSIONS = [".txt", ".md", ".json"];
const TEXT_PREVIEW_MAX_LENGTH = 1024;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
/** comfy_api.internal `prune_dict`: keys whose value is None are left out. */
const prune = (o: Obj): Obj => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== null));
const lowerName = (item: Obj) => (typeof item.filename === "string" ? item.filename.toLowerCase() : "");

/** jobs.py `normalize_output_item`: a 3D file named by a bare string becomes a file dict; other strings are not files. */
function normalizeOutputItem(item: unknown): Obj | undefined {
  if (typeof item === "string") {
    return THREE_D_EXTENSIONS.some((e) => item.toLowerCase().endsWith(e)) ? { filename: item, type: "output", subfolder: "", mediaType: "3d" } : undefined;
  }
  return isObj(item) ? item : undefined;
}

/** jobs.py `normalize_outputs` (the single job's `outputs`). */
export function normalizeOutputs(outputs: Obj): Obj {
  const out: Obj = {};
  for (const [nodeId, node] of Object.entries(outputs)) {
    if (!isObj(node)) {
      out[nodeId] = node;
      continue;
    }
    const n: Obj = {};
    for (const [mediaType, items] of Object.entries(node)) {
      if (mediaType === "animated" || !Array.isArray(items)) {
        n[mediaType] = items;
        continue;
      }
      n[mediaType] = items.filter((i) => i !== null && i !== undefined).map((i: unknown) => normalizeOutputItem(i) ?? i);
    }
    out[nodeId] = n;
  }
  return out;
}

/** jobs.py `is_previewable`. */
function isPreviewable(mediaType: string, item: Obj): boolean {
  if (PREVIEWABLE_MEDIA_TYPES.has(mediaType)) return true;
  const fmt = typeof item.format === "string" ? item.format : "";
  if (fmt.startsWith("video/") || fmt.startsWith("audio/")) return true;
  const name = lowerName(item);
  return THREE_D_EXTENSIONS.some((e) => name.endsWith(e)) || TEXT_EXTENSIONS.some((e) => name.endsWith(e));
}

/** jobs.py `is_text_preview`. */
const isTextPreview = (mediaType: string, item: Obj) => mediaType === "text" || TEXT_EXTENSIONS.some((e) => lowerName(item).endsWith(e));

/**
 * jobs.py `get_outputs_summary`: (outputs_count, preview_output). The preview is the first saved visual
 * output (type "output"), else the first other visual one, else a saved text file, else raw text. A list
 * item under "text" came from a Python tuple (JSON has no tuples): its first element is the text.
 */
export function outputsSummary(outputs: Obj): [number, Obj | undefined] {
  let count = 0;
  let preview: Obj | undefined;
  let fallback: Obj | undefined;
  let textFile: Obj | undefined;
  let text: Obj | undefined;
  for (const [nodeId, node] of Object.entries(outputs)) {
    if (!isObj(node)) continue;
    for (const [mediaType, items] of Object.entries(node)) {
      if (mediaType === "animated" || !Array.isArray(items)) continue;
      for (const raw of items as unknown[]) {
        let item: Obj;
        if (!isObj(raw)) {
          const n = normalizeOutputItem(raw);
          if (n === undefined) {
            if (mediaType === "text" && preview === undefined && text === undefined && raw !== null && raw !== undefined) {
              const value = Array.isArray(raw) ? String(raw[0] ?? "") : String(raw);
              const content = value.length <= TEXT_PREVIEW_MAX_LENGTH ? { content: value } : { content: value.slice(0, TEXT_PREVIEW_MAX_LENGTH), truncated: true };
              text = { ...content, nodeId, mediaType };
            }
            continue;
          }
          item = n;
        } else item = raw;
        count++;
        if (preview !== undefined || !isPreviewable(mediaType, item)) continue;
        const enriched: Obj = { ...item, nodeId };
        if (!("mediaType" in item)) enriched.mediaType = mediaType;
        if (isTextPreview(mediaType, item)) textFile ??= enriched;
        else if (item.type === "output") preview = enriched;
        else fallback ??= enriched;
      }
    }
  }
  return [count, preview ?? fallback ?? textFile ?? text];
}

/** jobs.py `count_previewable_outputs`. */
export function previewableCount(outputs: Obj): number {
  let n = 0;
  for (const node of Object.values(outputs)) {
    if (!isObj(node)) continue;
    for (const [mediaType, items] of Object.entries(node)) {
      if (mediaType === "animated" || !Array.isArray(items)) continue;
      for (const raw of items as unknown[]) {
        const item = isObj(raw) ? raw : normalizeOutputItem(raw);
        if (item && isPreviewable(mediaType, item)) n++;
      }
    }
  }
  return n;
}

/** jobs.py `_extract_job_metadata`: create_time and the UI workflow's id. */
function metadata(extraData: unknown): { create_time?: unknown; workflow_id?: unknown } {
  const e = isObj(extraData) ? extraData : {};
  const png = isObj(e.extra_pnginfo) ? e.extra_pnginfo : {};
  const wf = isObj(png.workflow) ? png.workflow : {};
  return { create_time: e.create_time, workflow_id: wf.id };
}

/** jobs.py `normalize_queue_item`: a running or pending prompt (with its workflow for the single-job view). */
export function queueJob(item: QueueItem, status: "in_progress" | "pending", withWorkflow = false): Job {
  const [priority, id, prompt, extraData] = item;
  const m = metadata(extraData);
  const job = prune({ id, status, priority, create_time: m.create_time, outputs_count: 0, previewable_outputs_count: 0, workflow_id: m.workflow_id }) as Job;
  if (withWorkflow) job.workflow = { prompt, extra_data: extraData };
  return job;
}

/** jobs.py `normalize_history_item`: a finished prompt; an interrupted one is "cancelled", any other error "failed". */
export function historyJob(id: string, h: HistoryEntry, withOutputs = false): Job {
  const [priority, , prompt, extraData] = h.prompt as [number, string, unknown, unknown, unknown];
  const m = metadata(extraData);
  const outputs = isObj(h.outputs) ? h.outputs : {};
  const [outputsCount, previewOutput] = outputsSummary(outputs);
  let start: unknown;
  let end: unknown;
  let error: unknown;
  let interrupted = false;
  for (const entry of h.status?.messages ?? []) {
    if (!Array.isArray(entry) || entry.length < 2 || !isObj(entry[1])) continue;
    const [event, data] = entry as [string, Obj];
    if (event === "execution_start") start = data.timestamp;
    else if (event === "execution_success" || event === "execution_error" || event === "execution_interrupted") {
      end = data.timestamp;
      if (event === "execution_error") error = data;
      else if (event === "execution_interrupted") interrupted = true;
    }
  }
  const status: JobStatus = h.status?.status_str === "error" ? (interrupted ? "cancelled" : "failed") : "completed";
  const job = prune({
    id, status, priority, create_time: m.create_time, execution_start_time: start, execution_end_time: end, execution_error: error,
    outputs_count: outputsCount, previewable_outputs_count: previewableCount(outputs), preview_output: previewOutput, workflow_id: m.workflow_id,
  }) as Job;
  if (withOutputs) {
    job.outputs = normalizeOutputs(outputs);
    job.execution_status = h.status;
    job.workflow = { prompt, extra_data: extraData };
  }
  return job;
}

/** A number as Python's sort key sees it (missing → 0). */
const num = (v: unknown) => (typeof v === "number" ? v : 0);

/**
 * jobs.py `apply_sorting`: by create_time, or by execution_end_time − execution_start_time (0 unless both
 * are set), descending by default; a stable sort, equal keys keep their order (running, pending, history).
 */
export function sortJobs(jobs: Job[], sortBy: "created_at" | "execution_duration", order: "asc" | "desc"): Job[] {
  const key = sortBy === "execution_duration"
    ? (j: Job) => (num(j.execution_end_time) && num(j.execution_start_time) ? num(j.execution_end_time) - num(j.execution_start_time) : 0)
    : (j: Job) => num(j.create_time);
  return [...jobs].sort((a, b) => (order === "desc" ? key(b) - key(a) : key(a) - key(b)));
}

/** Python's `int(str)`: optional sign and surrounding spaces, digits with single underscores between them. */
export function pyInt(s: string): number | undefined {
  const m = /^\s*([+-]?)(\d+(?:_\d+)*)\s*$/.exec(s);
  return m ? Number(`${m[1]}${m[2].replace(/_/g, "")}`) : undefined;
}

/** Python's `repr()` of a JSON value (how the batch cancel names an id that is not a string). */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "string") return `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  if (typeof v === "number") return String(v);
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(", ")}]`;
  return `{${Object.entries(v as Obj).map(([k, x]) => `${pyRepr(k)}: ${pyRepr(x)}`).join(", ")}}`;
}

const err = (reply: FastifyReply, status: number, body: Obj) => reply.code(status).send(body);

export const jobRoutes: FastifyPluginAsync = async (app) => {
  const gw = app.gw;
  // As /queue and /history: an artist's own jobs, an admin's everyone's.
  const scope = (req: FastifyRequest) => (req.caller.admin ? undefined : req.caller.userId);

  app.get("/api/jobs", async (req, reply) => {
    const q = req.query as Record<string, string | undefined>;
    const sortBy = (q.sort_by ?? "created_at").toLowerCase();
    const sortOrder = (q.sort_order ?? "desc").toLowerCase();
    let statuses: string[] = [...JOB_STATUSES];
    if (q.status) {
      statuses = q.status.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
      const invalid = statuses.filter((s) => !(JOB_STATUSES as readonly string[]).includes(s));
      if (invalid.length) return err(reply, 400, { error: `Invalid status value(s): ${invalid.join(", ")}. Valid values: ${JOB_STATUSES.join(", ")}` });
    }
    if (sortBy !== "created_at" && sortBy !== "execution_duration") return err(reply, 400, { error: "sort_by must be 'created_at' or 'execution_duration'" });
    if (sortOrder !== "asc" && sortOrder !== "desc") return err(reply, 400, { error: "sort_order must be 'asc' or 'desc'" });
    let limit: number | null = null;
    if (q.limit !== undefined) {
      const n = pyInt(q.limit);
      if (n === undefined) return err(reply, 400, { error: "limit must be an integer" });
      if (n <= 0) return err(reply, 400, { error: "limit must be a positive integer" });
      limit = n;
    }
    let offset = 0;
    if (q.offset !== undefined) {
      const n = pyInt(q.offset);
      if (n === undefined) return err(reply, 400, { error: "offset must be an integer" });
      offset = Math.max(0, n);
    }
    const owner = scope(req);
    const jobs: Job[] = [];
    const queue = await gw.queue(owner);
    if (statuses.includes("in_progress")) for (const i of queue.queue_running) jobs.push(queueJob(i, "in_progress"));
    if (statuses.includes("pending")) for (const i of queue.queue_pending) jobs.push(queueJob(i, "pending"));
    const fromHistory = new Set<string>(statuses.filter((s) => s === "completed" || s === "failed" || s === "cancelled"));
    if (fromHistory.size) {
      // The whole visible history, a page at a time, kept as summaries only (ComfyUI's is in memory, ≤ 10 000).
      for await (const page of gw.store.historyPages(200, owner)) {
        for (const r of page) {
          if (!r.history) continue;
          const job = historyJob(r.id, r.history);
          if (fromHistory.has(job.status)) jobs.push(job);
        }
      }
    }
    const filtered = q.workflow_id ? jobs.filter((j) => j.workflow_id === q.workflow_id) : jobs;
    const sorted = sortJobs(filtered, sortBy, sortOrder);
    const page = sorted.slice(offset, limit === null ? undefined : offset + limit);
    return { jobs: page, pagination: { offset, limit, total: sorted.length, has_more: offset + page.length < sorted.length } };
  });

  app.get("/api/jobs/:id", async (req, reply) => {
    const { id } = req.params as { id: string };
    const owner = scope(req);
    // The gateway stores prompts under canonical UUIDs only: anything else is no job of it.
    const r = UUID_RE.test(id) ? await gw.store.get(id) : undefined;
    if (r && r.state === "done" && !r.hidden && r.history && (owner === undefined || r.owner === owner)) return historyJob(id, r.history, true);
    const queue = await gw.queue(owner);
    const running = queue.queue_running.find((i) => i[1] === id);
    if (running) return queueJob(running, "in_progress", true);
    const pending = queue.queue_pending.find((i) => i[1] === id);
    if (pending) return queueJob(pending, "pending", true);
    return err(reply, 404, { error: "Job not found" });
  });

  /**
   * server.py `_cancel_job_by_id` / jobs.py `cancel_job`: a running job is interrupted, a pending one taken
   * off the queue (and interrupted should it have started meanwhile); a finished or unknown id is a no-op.
   * True when a cancel was sent.
   */
  const cancel = async (id: string, owner: string | undefined): Promise<boolean> => {
    const queue = await gw.queue(owner);
    if (queue.queue_running.some((i) => i[1] === id)) {
      await gw.interrupt({ ids: [id], owner });
      return true;
    }
    if (!queue.queue_pending.some((i) => i[1] === id)) return false;
    await gw.deleteFromQueue([id], owner);
    const after = await gw.queue(owner);
    if (after.queue_running.some((i) => i[1] === id)) await gw.interrupt({ ids: [id], owner });
    return true;
  };

  app.post("/api/jobs/:id/cancel", async (req) => {
    const { id } = req.params as { id: string };
    req.auditTarget = id;
    return { cancelled: await cancel(id, scope(req)) };
  });

  app.post("/api/jobs/cancel", async (req, reply) => {
    let body: unknown;
    try {
      body = JSON.parse((req.body as Buffer | undefined)?.toString("utf8") ?? "");
    } catch {
      return err(reply, 400, { error: "Request body must be valid JSON" });
    }
    const ids = isObj(body) ? body.job_ids : undefined;
    if (!Array.isArray(ids)) return err(reply, 400, { error: "job_ids must be a list" });
    // jobs.py validate_job_id: a string in canonical lowercase hyphenated UUID form; all checked before any cancel.
    const invalid = ids.filter((i) => typeof i !== "string" || !UUID_RE.test(i)).map((i) => (typeof i === "string" ? i : pyRepr(i)));
    if (invalid.length) return err(reply, 400, { error: "job_ids contains invalid id(s)", invalid_ids: invalid });
    req.auditTarget = `cancel ${ids.join(" ")}`;
    let cancelled = false;
    for (const id of ids as string[]) if (await cancel(id, scope(req))) cancelled = true;
    return { cancelled };
  });
};

// The prompt queue and the executor: execution.py PromptQueue / PromptExecutor / execute() and
// main.py prompt_worker() of ComfyUI 0.3.64 (Comfy-Org/ComfyUI@a125cd84), with comfy_execution/
// graph.py ExecutionList (order), caching.py CacheKeySetInputSignature + HierarchicalCache ("classic"
// cache) and progress.py (progress_state). Only one prompt runs at a time; nodes are fake (nodes.ts).
import { createHash } from "crypto";
import * as fs from "fs";
import * as path from "path";
import { PNG } from "pngjs";
import { FakeImage, FakeLatent, FakeMask, NODE_CLASSES, NodeContext, NodeDef, RunContext, Token, isSampler } from "./nodes";
import { encodePng, pngSize } from "./png";
import { PyError, PyFloat, pyJsonDumps } from "./py";

export type Fault =
  | { kind: "crash"; afterSteps?: number }
  | { kind: "hang"; afterSteps?: number }
  | { kind: "execution_error"; nodeId?: string };

type Prompt = Record<string, { class_type: string; inputs: Record<string, unknown> } & Record<string, unknown>>;
/** [number, prompt_id, prompt, extra_data, outputs_to_execute] — ComfyUI's queue item. */
export type QueueTuple = [number, string, Prompt, Record<string, unknown>, string[]];
export interface QueueItem {
  tuple: QueueTuple;
  /** constants validation coerced to FLOAT ("<node>\0<input>"), so PNG metadata prints 8.0 and not 8 */
  floats: Set<string>;
}

export interface Hub {
  /** sid null = every socket; otherwise only the socket registered under that (string) sid (server.py send_json). */
  send(event: string, data: unknown, sid: unknown): void;
  /** a binary frame: 4-byte big-endian event type, then `payload` (server.py send_bytes) */
  sendBinary(type: number, payload: Buffer, sid: unknown): void;
  /** feature_flags.supports_feature(sockets_metadata, sid, name) */
  supports(sid: unknown, feature: string): boolean;
}

export interface Dirs {
  output: string;
  input: string;
  temp: string;
}

const SENSITIVE_EXTRA_DATA_KEYS = ["auth_token_comfy_org", "api_key_comfy_org"];
const MAXIMUM_HISTORY_SIZE = 10000;
/** Engine.nodeOutputs keeps the outputs of this many prompts (the newest). */
const NODE_OUTPUTS_KEPT = 32;

class Interrupted extends Error {}
class Stopped extends Error {}

function deepCopy<T>(v: T): T {
  return structuredClone(v);
}

// heapq on (number, prompt_id): the pending list is exposed by GET /queue in heap order, as ComfyUI's is.
function less(a: QueueItem, b: QueueItem): boolean {
  const [x, y] = [a.tuple, b.tuple];
  return x[0] !== y[0] ? x[0] < y[0] : x[1] < y[1];
}
function siftDown(h: QueueItem[], start: number, pos: number): void {
  const item = h[pos];
  while (pos > start) {
    const parent = (pos - 1) >> 1;
    if (less(item, h[parent])) {
      h[pos] = h[parent];
      pos = parent;
      continue;
    }
    break;
  }
  h[pos] = item;
}
function siftUp(h: QueueItem[], pos: number): void {
  const end = h.length;
  const start = pos;
  const item = h[pos];
  let child = 2 * pos + 1;
  while (child < end) {
    const right = child + 1;
    if (right < end && !less(h[child], h[right])) child = right;
    h[pos] = h[child];
    pos = child;
    child = 2 * pos + 1;
  }
  h[pos] = item;
  siftDown(h, start, pos);
}
function heappush(h: QueueItem[], item: QueueItem): void {
  h.push(item);
  siftDown(h, 0, h.length - 1);
}
function heappop(h: QueueItem[]): QueueItem {
  const last = h.pop() as QueueItem;
  if (h.length === 0) return last;
  const ret = h[0];
  h[0] = last;
  siftUp(h, 0);
  return ret;
}
function heapify(h: QueueItem[]): void {
  for (let i = (h.length >> 1) - 1; i >= 0; i--) siftUp(h, i);
}

const isLink = (v: unknown): v is [string, number] => Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "number";

/** comfy_execution/graph.py ExecutionList without lazy inputs, async nodes or subgraph expansion. */
class ExecutionList {
  pending = new Map<string, true>();
  blockCount = new Map<string, number>();
  blocking = new Map<string, Map<string, Set<number>>>();
  constructor(
    private prompt: Prompt,
    private isCached: (id: string) => boolean,
  ) {}

  addNode(id: string): void {
    const ids = [id];
    const links: [string, number, string][] = [];
    while (ids.length > 0) {
      const u = ids.pop() as string;
      if (this.pending.has(u)) continue;
      this.pending.set(u, true);
      this.blockCount.set(u, 0);
      this.blocking.set(u, new Map());
      for (const v of Object.values(this.prompt[u].inputs)) {
        if (isLink(v) && !this.isCached(v[0])) {
          ids.push(v[0]);
          links.push([v[0], v[1], u]);
        }
      }
    }
    for (const [from, socket, to] of links) this.addStrongLink(from, socket, to);
  }

  addStrongLink(from: string, socket: number, to: string): void {
    if (this.isCached(from)) return;
    this.addNode(from);
    const b = this.blocking.get(from) as Map<string, Set<number>>;
    if (!b.has(to)) {
      b.set(to, new Set());
      this.blockCount.set(to, (this.blockCount.get(to) as number) + 1);
    }
    (b.get(to) as Set<number>).add(socket);
  }

  isEmpty(): boolean {
    return this.pending.size === 0;
  }

  /** ux_friendly_pick_node: an output node first, then one feeding an output, then one two steps away. */
  stage(): string {
    const ready = [...this.pending.keys()].filter((id) => this.blockCount.get(id) === 0);
    const isOutput = (id: string) => NODE_CLASSES.get(this.prompt[id].class_type)?.outputNode === true;
    const blocked = (id: string) => [...(this.blocking.get(id) as Map<string, Set<number>>).keys()];
    for (const id of ready) if (isOutput(id)) return id;
    for (const id of ready) for (const b of blocked(id)) if (isOutput(b)) return id;
    for (const id of ready) for (const b of blocked(id)) for (const b1 of blocked(b)) if (isOutput(b1)) return id;
    if (ready.length === 0) throw new PyError("graph.DependencyCycleError", "Dependency cycle detected");
    return ready[0];
  }

  complete(id: string): void {
    this.pending.delete(id);
    for (const to of (this.blocking.get(id) as Map<string, Set<number>>).keys()) this.blockCount.set(to, (this.blockCount.get(to) as number) - 1);
    this.blocking.delete(id);
  }
}

interface UiEntry {
  meta: { node_id: string; display_node: string; parent_node: null; real_node_id: string };
  output: Record<string, unknown[]>;
}

export interface EngineOptions {
  stepMs: number;
  /** In-process only: awaited before each sampler step (a test holds a prompt at a known point). */
  beforeStep?: (promptId: string, step: number) => Promise<void>;
  /** --preview-method: "none" (ComfyUI's default) sends no preview frames */
  previewMethod: "none" | "auto" | "latent2rgb" | "taesd";
  dirs: Dirs;
  ctx: NodeContext;
  hub: Hub;
  /** in-process crash: the server drops every socket and stops listening */
  onCrash: () => void;
}

export class Engine {
  number = 0;
  private queue: QueueItem[] = [];
  private running = new Map<number, QueueTuple>();
  private taskCounter = 0;
  readonly history = new Map<string, Record<string, unknown>>();
  private flags: Record<string, unknown> = {};
  /** extra_data.client_id of the running prompt (any JSON value; null = none → some events broadcast) */
  clientId: unknown = null;
  lastNodeId: string | null = null;
  fault: Fault | undefined;
  readonly started: string[] = [];
  /** What each node of the last prompts output (from the run or the cache), by prompt id: for tests only. */
  readonly nodeOutputs = new Map<string, Record<string, unknown[]>>();
  private interrupted = false;
  private outputsCache = new Map<string, unknown[]>();
  private uiCache = new Map<string, UiEntry>();
  private wake: (() => void) | undefined;
  private stopped = false;
  private stopWaiters = new Set<() => void>();
  private loop: Promise<void> | undefined;

  constructor(private opts: EngineOptions) {}

  start(): void {
    this.loop = this.worker();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    for (const w of this.stopWaiters) w();
    await this.loop;
  }

  // ---- PromptQueue ----
  put(item: QueueItem): void {
    heappush(this.queue, item);
    this.queueUpdated();
    this.wake?.();
  }

  queueInfo(): { exec_info: { queue_remaining: number } } {
    return { exec_info: { queue_remaining: this.queue.length + this.running.size } };
  }

  currentQueue(): [QueueTuple[], QueueTuple[]] {
    return [[...this.running.values()], this.queue.map((q) => q.tuple)];
  }

  wipeQueue(): void {
    this.queue = [];
    this.queueUpdated();
  }

  deleteQueueItem(promptId: unknown): boolean {
    for (let x = 0; x < this.queue.length; x++) {
      if (this.queue[x].tuple[1] === promptId) {
        if (this.queue.length === 1) this.wipeQueue();
        else {
          this.queue.splice(x, 1);
          heapify(this.queue);
        }
        this.queueUpdated();
        return true;
      }
    }
    return false;
  }

  getHistory(opts: { promptId?: string; maxItems?: number; offset?: number }): Record<string, unknown> {
    if (opts.promptId !== undefined) {
      const p = this.history.get(opts.promptId);
      return p ? { [opts.promptId]: deepCopy(p) } : {};
    }
    const out: Record<string, unknown> = {};
    let offset = opts.offset ?? -1;
    const max = opts.maxItems;
    if (offset < 0 && max !== undefined) offset = this.history.size - max;
    let i = 0;
    for (const [k, v] of this.history) {
      if (i >= offset) {
        out[k] = v;
        if (max !== undefined && Object.keys(out).length >= max) break;
      }
      i++;
    }
    return out;
  }

  wipeHistory(): void {
    this.history.clear();
  }

  deleteHistoryItem(id: unknown): void {
    if (typeof id === "string") this.history.delete(id);
  }

  setFlag(name: string, value: unknown): void {
    this.flags[name] = value;
    this.wake?.();
  }

  runningIds(): string[] {
    return [...this.running.values()].map((t) => t[1]);
  }

  interrupt(): void {
    this.interrupted = true;
  }

  private queueUpdated(): void {
    this.opts.hub.send("status", { status: this.queueInfo() }, null);
  }

  // ---- prompt_worker ----
  private async worker(): Promise<void> {
    while (!this.stopped) {
      if (this.queue.length === 0) {
        await new Promise<void>((r) => (this.wake = r));
        this.wake = undefined;
      }
      if (this.stopped) break;
      // The worker is another thread in ComfyUI: let the request that queued the prompt be answered first.
      await new Promise((r) => setImmediate(r));
      if (this.stopped) break;
      if (this.queue.length > 0) {
        const item = heappop(this.queue);
        const i = this.taskCounter++;
        this.running.set(i, deepCopy(item.tuple));
        this.queueUpdated();
        try {
          const { success, messages, historyResult } = await this.execute(item);
          this.taskDone(i, historyResult, { status_str: success ? "success" : "error", completed: success, messages });
          if (this.clientId !== null) this.opts.hub.send("executing", { node: null, prompt_id: item.tuple[1] }, this.clientId);
        } catch (e) {
          if (e instanceof Stopped) return;
          throw e;
        }
      }
      const flags = this.flags;
      this.flags = {};
      // free_memory also drops the node-output cache (PromptExecutor.reset()); there are no models to unload.
      if (flags.free_memory) {
        this.outputsCache.clear();
        this.uiCache.clear();
      }
    }
  }

  private taskDone(i: number, historyResult: { outputs: unknown; meta: unknown }, status: Record<string, unknown>): void {
    const prompt = this.running.get(i) as QueueTuple;
    this.running.delete(i);
    if (this.history.size > MAXIMUM_HISTORY_SIZE) this.history.delete(this.history.keys().next().value as string);
    for (const k of SENSITIVE_EXTRA_DATA_KEYS) delete prompt[3][k];
    this.history.set(prompt[1], { prompt, outputs: historyResult.outputs, status: deepCopy(status), meta: historyResult.meta });
    this.queueUpdated();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(t);
        this.stopWaiters.delete(done);
        if (this.stopped) reject(new Stopped());
        else resolve();
      };
      const t = setTimeout(done, ms);
      this.stopWaiters.add(done);
    });
  }

  /** Reaching a fault point: crash drops everything at once, hang waits until the stand-in is closed. */
  private async faultPoint(stepsDone: number): Promise<void> {
    const f = this.fault;
    if (!f || (f.kind !== "crash" && f.kind !== "hang") || (f.afterSteps ?? 0) !== stepsDone) return;
    if (f.kind === "crash") {
      // What the event loop had already queued still goes out (the process dies after the step, not during it).
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      this.stopped = true;
      this.opts.onCrash();
      throw new Stopped();
    }
    await new Promise<void>((r) => {
      this.stopWaiters.add(r);
      this.hangRelease = r;
    });
    this.hangRelease = undefined;
    if (this.stopped) throw new Stopped();
    // recover(): the stuck GPU comes back and the interrupt it was sent takes effect.
    throw new Interrupted();
  }

  private hangRelease: (() => void) | undefined;

  /** A hung prompt gives up: it ends as interrupted, and the stand-in is idle again. */
  recover(): void {
    this.hangRelease?.();
  }

  private signatures(prompt: Prompt): Map<string, string> {
    // CacheKeySetInputSignature: [class, IS_CHANGED, sorted inputs (links as ancestor index + socket)] of
    // the node, then of each ancestor in a deterministic order; node ids do not matter.
    const isChanged = new Map<string, unknown>();
    const immediate = (id: string, order: Map<string, number>): unknown[] => {
      if (!(id in prompt)) return [NaN];
      const node = prompt[id];
      const def = NODE_CLASSES.get(node.class_type) as NodeDef;
      if (!isChanged.has(id)) {
        let v: unknown = false;
        if (def.isChanged) {
          try {
            const consts = Object.fromEntries(Object.entries(node.inputs).map(([k, x]) => [k, isLink(x) ? null : x]));
            v = [def.isChanged(this.opts.ctx, consts)];
            node.is_changed = v; // IsChangedCache stores it on the prompt node (visible in the PNG's prompt chunk)
          } catch {
            v = "NaN";
          }
        }
        isChanged.set(id, v);
      }
      const sig: unknown[] = [node.class_type, isChanged.get(id)];
      for (const key of Object.keys(node.inputs).sort()) {
        const v = node.inputs[key];
        sig.push(isLink(v) ? [key, ["ANCESTOR", order.get(v[0]), v[1]]] : [key, v]);
      }
      return sig;
    };
    const out = new Map<string, string>();
    for (const id of Object.keys(prompt)) {
      const ancestors: string[] = [];
      const order = new Map<string, number>();
      const walk = (n: string) => {
        if (!(n in prompt)) return;
        for (const key of Object.keys(prompt[n].inputs).sort()) {
          const v = prompt[n].inputs[key];
          if (isLink(v) && !order.has(v[0])) {
            ancestors.push(v[0]);
            order.set(v[0], ancestors.length - 1);
            walk(v[0]);
          }
        }
      };
      walk(id);
      const sig = [immediate(id, order), ...ancestors.map((a) => immediate(a, order))];
      out.set(id, createHash("sha256").update(JSON.stringify(sig, (_k, v) => (typeof v === "number" && Number.isNaN(v) ? "NaN" : v))).digest("hex"));
    }
    return out;
  }

  private async execute(item: QueueItem): Promise<{ success: boolean; messages: [string, unknown][]; historyResult: { outputs: unknown; meta: unknown } }> {
    const [, promptId, prompt, extraData, executeOutputs] = item.tuple;
    const hub = this.opts.hub;
    this.interrupted = false;
    this.clientId = extraData.client_id ?? null;
    const messages: [string, unknown][] = [];
    const addMessage = (event: string, data: Record<string, unknown>, broadcast: boolean) => {
      const d = { ...data, timestamp: Date.now() };
      messages.push([event, d]);
      if (this.clientId !== null || broadcast) hub.send(event, d, this.clientId);
    };
    this.started.push(promptId);
    const outputsOfNodes: Record<string, unknown[]> = {};
    this.nodeOutputs.set(promptId, outputsOfNodes);
    for (const old of this.nodeOutputs.keys()) if (this.nodeOutputs.size > NODE_OUTPUTS_KEPT) this.nodeOutputs.delete(old);
    addMessage("execution_start", { prompt_id: promptId }, false);
    await this.faultPoint(0);

    const keys = this.signatures(prompt);
    const used = new Set(keys.values());
    for (const k of [...this.outputsCache.keys()]) if (!used.has(k)) this.outputsCache.delete(k);
    for (const k of [...this.uiCache.keys()]) if (!used.has(k)) this.uiCache.delete(k);
    const cachedOutput = (id: string) => this.outputsCache.get(keys.get(id) as string);
    const cachedNodes = Object.keys(prompt).filter((id) => cachedOutput(id) !== undefined);
    addMessage("execution_cached", { nodes: cachedNodes, prompt_id: promptId }, false);

    // progress.py ProgressRegistry + WebUIProgressHandler: every change sends the non-pending nodes.
    const progress = new Map<string, { state: string; value: number; max: number }>();
    const sendProgressState = () => {
      const nodes: Record<string, unknown> = {};
      for (const [id, s] of progress) {
        nodes[id] = { value: s.value, max: s.max, state: s.state, node_id: id, prompt_id: promptId, display_node_id: id, parent_node_id: null, real_node_id: id };
      }
      hub.send("progress_state", { prompt_id: promptId, nodes }, this.clientId);
    };

    const executed = new Set<string>();
    const currentOutputs = Object.keys(prompt);
    const list = new ExecutionList(prompt, (id) => cachedOutput(id) !== undefined);
    for (const o of executeOutputs) list.addNode(o);
    let success = true;
    let stepsDone = 0;
    let failed = false;

    while (!list.isEmpty()) {
      const id = list.stage();
      const node = prompt[id];
      const def = NODE_CLASSES.get(node.class_type) as NodeDef;
      const key = keys.get(id) as string;
      if (cachedOutput(id) !== undefined) {
        outputsOfNodes[id] = cachedOutput(id) as unknown[];
        if (this.clientId !== null) hub.send("executed", { node: id, display_node: id, output: this.uiCache.get(key)?.output ?? null, prompt_id: promptId }, this.clientId);
        progress.set(id, { state: "finished", value: progress.get(id)?.max ?? 1, max: progress.get(id)?.max ?? 1 });
        sendProgressState();
        list.complete(id);
        continue;
      }
      progress.set(id, { state: "running", value: 0, max: 1 });
      sendProgressState();
      const inputData: Record<string, unknown> = {};
      const spec = def.inputTypes(this.opts.ctx);
      for (const [name, v] of Object.entries(node.inputs)) {
        if (isLink(v)) inputData[name] = cachedOutput(v[0])?.[v[1]] ?? null;
        else if ((spec.required && name in spec.required) || (spec.optional && name in spec.optional) || (spec.hidden && name in spec.hidden)) inputData[name] = v;
      }
      for (const [name, kind] of Object.entries(spec.hidden ?? {})) {
        if (kind === "PROMPT") inputData[name] = prompt;
        if (kind === "EXTRA_PNGINFO") inputData[name] = extraData.extra_pnginfo ?? null;
        if (kind === "UNIQUE_ID") inputData[name] = id;
      }
      if (this.clientId !== null) {
        this.lastNodeId = id;
        hub.send("executing", { node: id, display_node: id, prompt_id: promptId }, this.clientId);
      }
      let error: { node_id: string; exception_message?: string; exception_type?: string; traceback?: string[]; current_inputs?: Record<string, unknown[]> } | undefined;
      let interrupted = false;
      try {
        if (this.interrupted) throw new Interrupted();
        const f = this.fault;
        // Default target: the first sampler or output node that actually runs.
        if (f?.kind === "execution_error" && (f.nodeId === undefined ? def.outputNode || isSampler(node.class_type) : f.nodeId === id)) {
          throw new PyError("RuntimeError", `stand-in fault: execution_error in node ${id} (${node.class_type})`);
        }
        const rc: RunContext = {
          ...this.opts.ctx,
          nodeId: id,
          step: async (value, max, latent) => {
            await this.faultPoint(stepsDone);
            await this.opts.beforeStep?.(promptId, stepsDone);
            await this.sleep(this.opts.stepMs);
            stepsDone++;
            // main.py hijack_progress hook: interrupt check, progress_state (+ a type-4 preview for clients
            // that negotiated supports_preview_metadata), progress, then a type-1 preview for the others.
            if (this.interrupted) throw new Interrupted();
            const preview = this.opts.previewMethod !== "none" && latent ? this.previewPng(latent, value) : undefined;
            const metadataClient = preview !== undefined && hub.supports(this.clientId, "supports_preview_metadata");
            progress.set(id, { state: "running", value, max });
            sendProgressState();
            if (preview && metadataClient) {
              const meta = Buffer.from(pyJsonDumps({ node_id: id, prompt_id: promptId, display_node_id: id, parent_node_id: null, real_node_id: id, image_type: "image/png" }));
              const len = Buffer.alloc(4);
              len.writeUInt32BE(meta.length);
              hub.sendBinary(4, Buffer.concat([len, meta, preview]), this.clientId);
            }
            hub.send("progress", { value, max, prompt_id: promptId, node: id }, this.clientId);
            if (preview && !metadataClient) {
              // send_image: a 4-byte format word (1 = JPEG, 2 = PNG) before the image; the stand-in encodes PNG.
              const fmt = Buffer.alloc(4);
              fmt.writeUInt32BE(2);
              hub.sendBinary(1, Buffer.concat([fmt, preview]), this.clientId);
            }
          },
          saveImages: (images, prefix, kind, p, extra) => this.saveImages(item, images, prefix, kind, p, extra),
          loadImage: (name) => this.loadImage(name),
          loadAlphaMask: (name) => this.loadAlphaMask(name),
        };
        const r = await def.run(rc, inputData);
        if (r.ui && Object.keys(r.ui).length > 0) {
          this.uiCache.set(key, { meta: { node_id: id, display_node: id, parent_node: null, real_node_id: id }, output: r.ui });
          if (this.clientId !== null) hub.send("executed", { node: id, display_node: id, output: r.ui, prompt_id: promptId }, this.clientId);
        }
        this.outputsCache.set(key, r.outputs);
        outputsOfNodes[id] = r.outputs;
      } catch (ex) {
        if (ex instanceof Stopped) throw ex;
        if (ex instanceof Interrupted) {
          interrupted = true;
          error = { node_id: id };
        } else {
          const e = ex instanceof PyError ? ex : new PyError("Exception", String(ex));
          const current: Record<string, unknown[]> = {};
          for (const [k, v] of Object.entries(inputData)) current[k] = [v === null || ["number", "string", "boolean"].includes(typeof v) ? v : String(v)];
          error = {
            node_id: id,
            exception_message: `${e.message}\n`,
            exception_type: e.pyType,
            traceback: [`  File "/comfyui/execution.py", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(...)\n`],
            current_inputs: current,
          };
        }
      }
      if (error) {
        success = false;
        failed = true;
        if (interrupted) {
          addMessage("execution_interrupted", { prompt_id: promptId, node_id: id, node_type: node.class_type, executed: [...executed] }, true);
        } else {
          addMessage(
            "execution_error",
            {
              prompt_id: promptId,
              node_id: id,
              node_type: node.class_type,
              executed: [...executed],
              exception_message: error.exception_message,
              exception_type: error.exception_type,
              traceback: error.traceback,
              current_inputs: error.current_inputs,
              current_outputs: currentOutputs,
            },
            false,
          );
        }
        break;
      }
      const p = progress.get(id) as { state: string; value: number; max: number };
      progress.set(id, { state: "finished", value: p.max, max: p.max });
      sendProgressState();
      executed.add(id);
      list.complete(id);
    }
    if (!failed) addMessage("execution_success", { prompt_id: promptId }, false);

    const outputs: Record<string, unknown> = {};
    const meta: Record<string, unknown> = {};
    for (const id of Object.keys(prompt)) {
      const ui = this.uiCache.get(keys.get(id) as string);
      if (ui) {
        outputs[id] = ui.output;
        meta[id] = { ...ui.meta, node_id: id, display_node: id, real_node_id: id };
      }
    }
    this.lastNodeId = null;
    return { success, messages, historyResult: { outputs, meta } };
  }

  private saveImages(item: QueueItem, images: FakeImage, filenamePrefix: string, kind: "output" | "temp", prompt: unknown, extra: unknown) {
    // folder_paths.get_save_image_path + SaveImage.save_images.
    const outputDir = kind === "output" ? this.opts.dirs.output : this.opts.dirs.temp;
    const now = new Date();
    const two = (n: number) => String(n).padStart(2, "0");
    let prefix = filenamePrefix;
    if (prefix.includes("%")) {
      prefix = prefix
        .replace(/%width%/g, String(images.width))
        .replace(/%height%/g, String(images.height))
        .replace(/%year%/g, String(now.getFullYear()))
        .replace(/%month%/g, two(now.getMonth() + 1))
        .replace(/%day%/g, two(now.getDate()))
        .replace(/%hour%/g, two(now.getHours()))
        .replace(/%minute%/g, two(now.getMinutes()))
        .replace(/%second%/g, two(now.getSeconds()));
    }
    const norm = path.posix.normalize(prefix);
    const subfolder = path.posix.dirname(norm) === "." ? "" : path.posix.dirname(norm);
    const filename = path.posix.basename(norm);
    const full = path.join(outputDir, subfolder);
    const abs = path.resolve(full);
    if (abs !== outputDir && !abs.startsWith(outputDir + path.sep)) {
      throw new PyError("Exception", `**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: ${abs}\n         output_dir: ${outputDir}`);
    }
    let counter = 1;
    if (fs.existsSync(full)) {
      const n = filename.length;
      let best: [number, string] | undefined;
      for (const f of fs.readdirSync(full)) {
        const pre = f.slice(0, n + 1);
        const d = Number.parseInt(f.slice(n + 1).split("_")[0], 10);
        const digits = /^\s*[+-]?\d+\s*$/.test(f.slice(n + 1).split("_")[0]) && Number.isFinite(d) ? d : 0;
        if (pre.slice(0, -1) === filename && pre.slice(-1) === "_") {
          if (!best || digits > best[0] || (digits === best[0] && pre > best[1])) best = [digits, pre];
        }
      }
      if (best) counter = best[0] + 1;
    } else {
      fs.mkdirSync(full, { recursive: true });
    }
    const texts: [string, string][] = [];
    if (prompt !== null && prompt !== undefined) texts.push(["prompt", pyJsonDumps(withFloats(prompt, item.floats))]);
    if (extra !== null && extra !== undefined && typeof extra === "object") {
      for (const [k, v] of Object.entries(extra as Record<string, unknown>)) texts.push([k, pyJsonDumps(v)]);
    }
    const results: { filename: string; subfolder: string; type: string }[] = [];
    for (let b = 0; b < images.batch; b++) {
      const file = `${filename.replace(/%batch_num%/g, String(b))}_${String(counter).padStart(5, "0")}_.png`;
      const tag = createHash("sha256").update(`${images.tag}/${b}`).digest("hex");
      fs.writeFileSync(path.join(full, file), encodePng(images.width, images.height, tag, texts, kind === "output" ? 4 : 1));
      results.push({ filename: file, subfolder, type: kind });
      counter++;
    }
    return results;
  }

  private previewPng(latent: FakeLatent, step: number): Buffer {
    // latent previews are latent-sized (one pixel per latent cell), capped at --preview-size 512
    const w = Math.min(512, Math.max(1, Math.floor(latent.width / 8)));
    const h = Math.min(512, Math.max(1, Math.floor(latent.height / 8)));
    return encodePng(w, h, createHash("sha256").update(`${latent.tag}/${step}`).digest("hex"), [], 1);
  }

  private loadImage(name: string): FakeImage {
    const file = this.annotated(name);
    const buf = fs.readFileSync(file);
    const size = pngSize(buf) ?? { width: 8, height: 8 };
    return new FakeImage(size.width, size.height, 1, createHash("sha256").update(buf).digest("hex"));
  }

  private loadAlphaMask(name: string): FakeMask {
    // nodes.py LoadImage: `'A' in i.getbands()` (or a palette image with 'transparency') gives
    // `1. - alpha.astype(np.float32) / 255.0`; any other image a zeros((64, 64)) mask. The stand-in decodes PNG
    // only: other formats count as having no alpha.
    const buf = fs.readFileSync(this.annotated(name));
    let width = 64;
    let height = 64;
    let values = new Float32Array(width * height);
    if (pngHasAlpha(buf)) {
      const png = PNG.sync.read(buf);
      width = png.width;
      height = png.height;
      values = new Float32Array(width * height);
      for (let i = 0; i < values.length; i++) values[i] = 1 - Math.fround(png.data[i * 4 + 3] / 255);
    }
    const tag = createHash("sha256").update(`MASK/${width}x${height}/`).update(new Uint8Array(values.buffer)).digest("hex");
    return new FakeMask(width, height, values, tag);
  }

  /** folder_paths.get_annotated_filepath: "x.png [output]" etc., else the input folder. */
  annotated(name: string): string {
    const d = this.opts.dirs;
    if (name.endsWith("[output]")) return path.join(d.output, name.slice(0, -9));
    if (name.endsWith("[input]")) return path.join(d.input, name.slice(0, -8));
    if (name.endsWith("[temp]")) return path.join(d.temp, name.slice(0, -7));
    return path.join(d.input, name);
  }
}

/** PIL would give the image an alpha band: PNG colour type 4 or 6, or a palette (3) with a tRNS chunk. */
function pngHasAlpha(buf: Buffer): boolean {
  if (pngSize(buf) === undefined) return false;
  const colourType = buf[25];
  if (colourType === 4 || colourType === 6) return true;
  if (colourType !== 3) return false;
  for (let off = 8; off + 8 <= buf.length; off += 12 + buf.readUInt32BE(off)) {
    const type = buf.toString("latin1", off + 4, off + 8);
    if (type === "tRNS") return true;
    if (type === "IDAT" || type === "IEND") return false;
  }
  return false;
}

function withFloats(prompt: unknown, floats: Set<string>): unknown {
  if (floats.size === 0 || prompt === null || typeof prompt !== "object") return prompt;
  const out: Record<string, unknown> = {};
  for (const [id, node] of Object.entries(prompt as Record<string, Record<string, unknown>>)) {
    const inputs = node?.inputs as Record<string, unknown> | undefined;
    if (!inputs || typeof inputs !== "object") {
      out[id] = node;
      continue;
    }
    const ni: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(inputs)) ni[k] = floats.has(`${id}\0${k}`) && typeof v === "number" ? new PyFloat(v) : v;
    out[id] = { ...node, inputs: ni };
  }
  return out;
}

export { Token };

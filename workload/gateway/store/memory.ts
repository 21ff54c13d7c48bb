import { historyWindow, metaOf, type Fence, type HistoryEntry, type HistoryQuery, type PromptBody, type PromptRecord, type Store } from "./types";

const clone = <T>(v: T): T => structuredClone(v);

/** In-process Store (unit tests, benchmarks): the DynamoDB adapter's semantics, fences included; nothing durable. */
export class MemoryStore implements Store {
  private readonly prompts = new Map<string, PromptRecord>();
  private readonly meta = new Map<string, number>();
  /** Calls per method, for tests that count store round trips. */
  readonly calls = new Map<string, number>();

  private count(name: string): void {
    this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
  }

  /** The fence rule every leader write passes: no record is written by an epoch older than the last that wrote it. */
  private fenced(r: PromptRecord, fence: Fence): boolean {
    if ((r.fence ?? 0) > fence.epoch) return false;
    r.fence = fence.epoch;
    return true;
  }

  async create(rec: PromptRecord) {
    this.count("create");
    const existing = this.prompts.get(rec.id);
    if (existing) return { created: false, record: clone(existing) };
    this.prompts.set(rec.id, clone(rec));
    return { created: true, record: clone(rec) };
  }
  async get(id: string) {
    this.count("get");
    const r = this.prompts.get(id);
    return r ? clone(r) : undefined;
  }
  async getBodies(ids: readonly string[]) {
    this.count("getBodies");
    const out = new Map<string, PromptBody>();
    for (const id of ids) {
      const r = this.prompts.get(id);
      if (r) out.set(id, clone({ prompt: r.prompt, extraData: r.extraData, outputs: r.outputs }));
    }
    return out;
  }
  async listOpen(opts: { sinceSeq?: number } = {}) {
    this.count("listOpen");
    return [...this.prompts.values()]
      .filter((r) => r.state !== "done" && r.seq >= (opts.sinceSeq ?? -Infinity))
      .sort((a, b) => a.seq - b.seq)
      .map((r) => metaOf(r));
  }
  async claim(id: string, expectedAttempt: number, pod: string, podClient: string, now: number, fence: Fence) {
    this.count("claim");
    const r = this.prompts.get(id);
    if (!r || r.state !== "queued" || r.attempt !== expectedAttempt || (r.fence ?? 0) > fence.epoch) return undefined;
    this.fenced(r, fence);
    Object.assign(r, { state: "dispatched", attempt: r.attempt + 1, pod, podClient, dispatchedAt: now });
    return clone(r);
  }
  async requeue(id: string, attempt: number, reason: string, countAttempt: boolean, fence: Fence) {
    this.count("requeue");
    const r = this.prompts.get(id);
    if (!r || r.state !== "dispatched" || r.attempt !== attempt || (r.fence ?? 0) > fence.epoch) return false;
    this.fenced(r, fence);
    r.state = "queued";
    delete r.pod;
    delete r.podClient;
    if (!countAttempt) r.attempt -= 1;
    r.lastError = reason;
    return true;
  }
  async complete(id: string, attempt: number, history: HistoryEntry, now: number, _ttl: number, fence: Fence) {
    this.count("complete");
    const r = this.prompts.get(id);
    if (!r || r.state === "done" || r.attempt !== attempt || (r.fence ?? 0) > fence.epoch) return false;
    this.fenced(r, fence);
    // As the DynamoDB adapter does: the entry's `prompt` array is the record's own, not the writer's copy.
    Object.assign(r, { state: "done", history: { ...clone(history), prompt: [r.number, r.id, r.prompt, r.extraData, r.outputs] }, completedAt: now });
    delete r.pod;
    delete r.podClient;
    return true;
  }
  async cancel(id: string, attempt: number, fence: Fence) {
    this.count("cancel");
    const r = this.prompts.get(id);
    if (!r || r.state !== "dispatched" || r.attempt !== attempt || (r.fence ?? 0) > fence.epoch) return false;
    this.prompts.delete(id);
    return true;
  }
  async adopt(id: string, fence: Fence) {
    this.count("adopt");
    const r = this.prompts.get(id);
    if (!r || r.state === "done" || (r.fence ?? 0) > fence.epoch) return undefined;
    this.fenced(r, fence);
    return metaOf(r);
  }
  async deleteQueued(ids?: readonly string[], owner?: string) {
    this.count("deleteQueued");
    const out: string[] = [];
    for (const r of [...this.prompts.values()]) {
      if (r.state === "queued" && (!ids || ids.includes(r.id)) && (owner === undefined || r.owner === owner)) {
        this.prompts.delete(r.id);
        out.push(r.id);
      }
    }
    return out;
  }
  private finished(owner?: string): PromptRecord[] {
    return [...this.prompts.values()].filter((r) => r.state === "done" && !r.hidden && (owner === undefined || r.owner === owner)).sort((a, b) => a.completedAt! - b.completedAt! || (a.id < b.id ? -1 : 1));
  }
  async listHistory(q: HistoryQuery = {}) {
    this.count("listHistory");
    const all = this.finished(q.owner);
    const { start, end } = historyWindow(all.length, q);
    return all.slice(start, end).map(clone);
  }
  async *historyPages(pageSize = 100, owner?: string) {
    this.count("historyPages");
    const all = this.finished(owner);
    for (let i = 0; i < all.length; i += pageSize) yield all.slice(i, i + pageSize).map(clone);
  }
  async hideHistory(ids?: readonly string[], owner?: string) {
    this.count("hideHistory");
    for (const r of this.prompts.values()) if (r.state === "done" && (!ids || ids.includes(r.id)) && (owner === undefined || r.owner === owner)) r.hidden = true;
  }
  async counts() {
    this.count("counts");
    let waiting = 0;
    let running = 0;
    for (const r of this.prompts.values()) {
      if (r.state === "queued") waiting++;
      else if (r.state === "dispatched") running++;
    }
    return { waiting, running };
  }
  async getMeta(key: string) {
    this.count("getMeta");
    return this.meta.get(key);
  }
  async setMetaMax(key: string, value: number) {
    this.count("setMetaMax");
    this.meta.set(key, Math.max(value, this.meta.get(key) ?? -Infinity));
  }
  async takeEpoch() {
    this.count("takeEpoch");
    const e = (this.meta.get("epoch") ?? 0) + 1;
    this.meta.set("epoch", e);
    return e;
  }
  async close() {}
}


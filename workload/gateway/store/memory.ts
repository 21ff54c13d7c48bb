import type { HistoryEntry, PromptRecord, Store } from "./types";

const clone = <T>(v: T): T => structuredClone(v);

/** In-process Store (tests, benchmarks): same semantics as the DynamoDB adapter, nothing durable. */
export class MemoryStore implements Store {
  private readonly prompts = new Map<string, PromptRecord>();
  private readonly meta = new Map<string, number>();
  private counter = 0;

  async create(rec: PromptRecord) {
    const existing = this.prompts.get(rec.id);
    if (existing) return { created: false, record: clone(existing) };
    this.prompts.set(rec.id, clone(rec));
    return { created: true, record: clone(rec) };
  }
  async nextNumber() {
    return this.counter++;
  }
  async get(id: string) {
    const r = this.prompts.get(id);
    return r ? clone(r) : undefined;
  }
  async listOpen() {
    return [...this.prompts.values()].filter((r) => r.state !== "done").sort((a, b) => a.seq - b.seq).map(clone);
  }
  async claim(id: string, expectedAttempt: number, pod: string, now: number) {
    const r = this.prompts.get(id);
    if (!r || r.state !== "queued" || r.attempt !== expectedAttempt) return false;
    Object.assign(r, { state: "dispatched", attempt: r.attempt + 1, pod, dispatchedAt: now });
    return true;
  }
  async requeue(id: string, attempt: number, reason: string, countAttempt: boolean) {
    const r = this.prompts.get(id);
    if (!r || r.state !== "dispatched" || r.attempt !== attempt) return false;
    r.state = "queued";
    delete r.pod;
    if (!countAttempt) r.attempt -= 1;
    r.lastError = reason;
    return true;
  }
  async complete(id: string, attempt: number, history: HistoryEntry, now: number) {
    const r = this.prompts.get(id);
    if (!r || r.state === "done" || r.attempt !== attempt) return false;
    Object.assign(r, { state: "done", history: clone(history), completedAt: now });
    delete r.pod;
    return true;
  }
  async deleteQueued(ids?: string[]) {
    const out: string[] = [];
    for (const r of [...this.prompts.values()]) {
      if (r.state === "queued" && (!ids || ids.includes(r.id))) {
        this.prompts.delete(r.id);
        out.push(r.id);
      }
    }
    return out;
  }
  async listHistory() {
    return [...this.prompts.values()]
      .filter((r) => r.state === "done" && !r.hidden)
      .sort((a, b) => (a.completedAt! - b.completedAt!) || a.seq - b.seq)
      .map(clone);
  }
  async hideHistory(ids?: string[]) {
    for (const r of this.prompts.values()) if (r.state === "done" && (!ids || ids.includes(r.id))) r.hidden = true;
  }
  async counts() {
    let waiting = 0;
    let running = 0;
    for (const r of this.prompts.values()) {
      if (r.state === "queued") waiting++;
      else if (r.state === "dispatched") running++;
    }
    return { waiting, running };
  }
  async getMeta(key: string) {
    return this.meta.get(key);
  }
  async setMetaMax(key: string, value: number) {
    this.meta.set(key, Math.max(value, this.meta.get(key) ?? -Infinity));
  }
  async close() {}
}

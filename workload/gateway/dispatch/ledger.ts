import type { Logger } from "pino";
import { metaOf, type Fence, type HistoryEntry, type PromptBody, type PromptMeta, type PromptRecord, type Store } from "../store/types";

/**
 * Prompt bodies in memory, least recently used first out, within a byte budget: the leader's mirror holds
 * only the small part of each open prompt, so 10,000 waiting workflows cost their metadata, not their JSON.
 */
export class BodyCache {
  private readonly items = new Map<string, { body: PromptBody; bytes: number }>();
  private used = 0;
  constructor(readonly maxBytes: number) {}

  get(id: string): PromptBody | undefined {
    const hit = this.items.get(id);
    if (!hit) return undefined;
    this.items.delete(id);
    this.items.set(id, hit);
    return hit.body;
  }

  set(id: string, body: PromptBody): void {
    this.delete(id);
    const bytes = Buffer.byteLength(JSON.stringify(body));
    if (bytes > this.maxBytes) return;
    this.items.set(id, { body, bytes });
    this.used += bytes;
    for (const [k, v] of this.items) {
      if (this.used <= this.maxBytes) break;
      this.items.delete(k);
      this.used -= v.bytes;
    }
  }

  delete(id: string): void {
    const hit = this.items.get(id);
    if (!hit) return;
    this.items.delete(id);
    this.used -= hit.bytes;
  }

  get bytes(): number {
    return this.used;
  }
  get size(): number {
    return this.items.size;
  }
}

/** Longer than a sweep's look-back (60 s) plus a slow listing: how long an ended prompt stays remembered. */
const ENDED_MEMORY_MS = 5 * 60_000;

export interface LedgerOptions {
  store: Store;
  fence: Fence;
  log: Logger;
  historyTtlSeconds: number;
  /** Budget of the body cache. @defaultValue 64 MiB */
  bodyCacheBytes?: number;
  /** A record carries a newer leader's epoch: this process is no longer the leader. */
  onFencedOut?: (id: string, epoch: number) => void;
  now?: () => number;
}

/** What the store said after it refused a write: its record now, or undefined (finished, deleted, or unreadable). */
export type Refused = { ok: false; now: PromptMeta | undefined };
export type Written<T = true> = { ok: true; value: T } | Refused;

/**
 * The one owner of prompt state on the leader: the mirror of open prompts and every write to the store.
 * Each transition (claim, requeue, complete, fail, cancel, adopt) is one conditional write carrying the
 * leader's fence plus one mirror update; a refused write always follows one rule — re-read the record and
 * take the store's word (finished or gone leaves the mirror, anything else replaces it). Placement and
 * routing stay in the Dispatcher; this is BullMQ's Job to the Dispatcher's Worker.
 */
export class Ledger {
  /** Open prompts (queued and dispatched), without bodies. */
  readonly open = new Map<string, PromptMeta>();
  readonly bodies: BodyCache;
  private readonly now: () => number;
  /** When prompts left the open set here: a sweep's snapshot older than that does not resurrect them. */
  private readonly ended = new Map<string, number>();

  constructor(private readonly o: LedgerOptions) {
    this.bodies = new BodyCache(o.bodyCacheBytes ?? 64 * 1024 * 1024);
    this.now = o.now ?? Date.now;
  }

  get fence(): Fence {
    return this.o.fence;
  }

  /**
   * Take-over: every open prompt, stamped with this leader's fence before it is acted on, so a write of the
   * previous leader still in flight is refused by the store instead of landing behind this one's back.
   */
  async load(concurrency = 16): Promise<void> {
    const listed = await this.o.store.listOpen();
    let next = 0;
    const work = async () => {
      while (next < listed.length) {
        const m = listed[next++];
        const stamped = await this.o.store.adopt(m.id, this.o.fence);
        if (stamped) this.open.set(stamped.id, stamped);
        else await this.resync(m.id);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, listed.length) }, work));
  }

  /**
   * Prompts accepted by any replica since the last look (a notification lost in a hand-over): added, not
   * stamped until acted on. The listing is a snapshot: a prompt this leader ended while it was being read
   * is not brought back (`ended`).
   */
  async sweep(sinceSeq: number): Promise<PromptMeta[]> {
    const fresh: PromptMeta[] = [];
    const asOf = this.now();
    for (const m of await this.o.store.listOpen({ sinceSeq })) {
      if (this.open.has(m.id) || (this.ended.get(m.id) ?? -Infinity) >= asOf - ENDED_MEMORY_MS) continue;
      this.open.set(m.id, m);
      fresh.push(m);
    }
    for (const [id, t] of this.ended) if (t < asOf - ENDED_MEMORY_MS) this.ended.delete(id);
    return fresh;
  }

  /** A prompt accepted by this or another replica (already durable). */
  add(r: PromptRecord): boolean {
    if (this.open.has(r.id) || r.state === "done") return false;
    this.open.set(r.id, metaOf(r));
    this.bodies.set(r.id, { prompt: r.prompt, extraData: r.extraData, outputs: r.outputs });
    return true;
  }

  /** Prompts that left the open set (finished, deleted): out of the mirror, and not brought back by a sweep. */
  forget(ids: readonly string[]): void {
    const now = this.now();
    for (const id of ids) {
      this.open.delete(id);
      this.bodies.delete(id);
      this.ended.set(id, now);
    }
  }

  async body(id: string): Promise<PromptBody | undefined> {
    const hit = this.bodies.get(id);
    if (hit) return hit;
    const got = (await this.o.store.getBodies([id])).get(id);
    if (got && this.open.has(id)) this.bodies.set(id, got);
    return got;
  }

  /** Bodies of several open prompts: the cache first, one batched read for the rest. */
  async bodiesOf(ids: readonly string[]): Promise<Map<string, PromptBody>> {
    const out = new Map<string, PromptBody>();
    const missing: string[] = [];
    for (const id of ids) {
      const b = this.bodies.get(id);
      if (b) out.set(id, b);
      else missing.push(id);
    }
    if (missing.length) for (const [id, b] of await this.o.store.getBodies(missing)) out.set(id, b);
    return out;
  }

  /** queued → dispatched on `pod`; the record comes back with its body (the store's answer to the write). */
  async claim(id: string, pod: string, podClient: string): Promise<Written<PromptRecord>> {
    const m = this.open.get(id);
    if (!m || m.state !== "queued") return { ok: false, now: m };
    const rec = await this.write(id, () => this.o.store.claim(id, m.attempt, pod, podClient, this.now(), this.o.fence));
    if (!rec) return this.refused(id);
    this.open.set(id, metaOf(rec));
    this.bodies.set(id, { prompt: rec.prompt, extraData: rec.extraData, outputs: rec.outputs });
    return { ok: true, value: rec };
  }

  /** dispatched(attempt) → queued; `countAttempt=false` gives the attempt back (taken back unstarted). */
  async requeue(id: string, attempt: number, reason: string, countAttempt: boolean): Promise<Written> {
    const ok = await this.write(id, () => this.o.store.requeue(id, attempt, reason, countAttempt, this.o.fence));
    if (!ok) return this.refused(id);
    const m = this.open.get(id);
    if (m) {
      Object.assign(m, { state: "queued", lastError: reason, attempt: countAttempt ? attempt : attempt - 1 });
      delete m.pod;
      delete m.podClient;
    }
    return { ok: true, value: true };
  }

  /** The prompt's one ending: its history entry, written once by the attempt that holds it. */
  async complete(id: string, attempt: number, history: HistoryEntry): Promise<Written> {
    const ok = await this.write(id, () => this.o.store.complete(id, attempt, history, this.now(), this.o.historyTtlSeconds, this.o.fence));
    if (!ok) return this.refused(id);
    this.forget([id]);
    return { ok: true, value: true };
  }

  /** An ending by the gateway itself (attempts used up, no pod in time, a pod refused it): an error entry naming why. */
  fail(id: string, attempt: number, reason: string): Promise<Written> {
    return this.complete(id, attempt, this.errorEntry(id, reason));
  }

  /** A buffered prompt the client deleted, taken back from its pod before it started. */
  async cancel(id: string, attempt: number): Promise<Written> {
    const ok = await this.write(id, () => this.o.store.cancel(id, attempt, this.o.fence));
    if (!ok) return this.refused(id);
    this.forget([id]);
    return { ok: true, value: true };
  }

  /** Stamps a record this leader learned of from the store (a refused claim showed another writer placed it). */
  async adopt(id: string): Promise<PromptMeta | undefined> {
    const m = await this.write(id, () => this.o.store.adopt(id, this.o.fence));
    if (!m) return (await this.refused(id)).now;
    this.open.set(id, m);
    return m;
  }

  errorEntry(id: string, reason: string): HistoryEntry {
    const ts = this.now();
    const err = { prompt_id: id, node_id: null, node_type: null, executed: [], exception_message: reason, exception_type: "GatewayError", traceback: [], current_inputs: {}, current_outputs: {}, timestamp: ts };
    // The store rebuilds `prompt` from the record on read.
    return { prompt: [], outputs: {}, status: { status_str: "error", completed: false, messages: [["execution_error", err]] }, meta: {} };
  }

  /** A store error is a refusal too: nothing was written that this process knows of. */
  private async write<T>(id: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err: unknown) {
      this.o.log.error({ err: (err as Error).message, promptId: id }, "store write failed");
      return undefined;
    }
  }

  /** The one rule for a refused write: re-read, and take the store's word. */
  private async refused(id: string): Promise<Refused> {
    return { ok: false, now: await this.resync(id) };
  }

  async resync(id: string): Promise<PromptMeta | undefined> {
    let fresh: PromptRecord | undefined;
    try {
      fresh = await this.o.store.get(id);
    } catch (err: unknown) {
      // Unreachable store: keep the mirror as it is; the periodic checks try again.
      this.o.log.warn({ promptId: id, err: (err as Error).message }, "store re-read failed");
      return this.open.get(id);
    }
    if (!fresh || fresh.state === "done") {
      this.forget([id]);
      return undefined;
    }
    if ((fresh.fence ?? 0) > this.o.fence.epoch) this.o.onFencedOut?.(id, fresh.fence!);
    const m = metaOf(fresh);
    this.open.set(id, m);
    this.o.log.info({ promptId: id, state: m.state, attempt: m.attempt, pod: m.pod }, "prompt re-read from the store after a refused write");
    return m;
  }
}

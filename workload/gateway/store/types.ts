/**
 * The gateway's durable state: one record per prompt, from acceptance to history. Every transition is a
 * conditional write (state + attempt), and every write the leader makes also carries its fencing token
 * (`Fence`): a record remembers the highest epoch that wrote it and refuses a lower one, so a leader that
 * lost its Lease can neither dispatch, re-queue nor complete a prompt the new leader holds.
 */

export type PromptState = "queued" | "dispatched" | "done";

export interface HistoryEntry {
  prompt: unknown[];
  outputs: Record<string, unknown>;
  status: { status_str: "success" | "error"; completed: boolean; messages: [string, unknown][] };
  meta: Record<string, unknown>;
}

/** What the dispatcher keeps in memory of an open prompt: everything but the body. */
export interface PromptMeta {
  id: string;
  /** ComfyUI's priority: lower first (front = negative). */
  number: number;
  /** Acceptance order (epoch milliseconds, strictly increasing per replica): a tie-breaker and the fair-share clock. */
  seq: number;
  clientId: string | null;
  /** Who submitted it (the signed-in user or the key's owner): who may see it, and the fair-share unit. */
  owner: string;
  state: PromptState;
  /** Runs started so far (dispatches). */
  attempt: number;
  pod?: string;
  /** The client_id the current run was submitted to its pod with (whose socket hears its events). */
  podClient?: string;
  createdAt: number;
  dispatchedAt?: number;
  /** Why the last run ended without completing (pod gone, stall …). */
  lastError?: string;
  /** The highest leadership epoch that wrote this record. */
  fence?: number;
}

/** The body ComfyUI was sent: large (a workflow rides in extra_data), so kept in the store, cached in memory. */
export interface PromptBody {
  prompt: Record<string, unknown>;
  extraData: Record<string, unknown>;
  outputs: string[];
}

export interface PromptRecord extends PromptMeta, PromptBody {
  completedAt?: number;
  history?: HistoryEntry;
  /** History entry deleted by the client: kept only so a retried prompt_id is not run again. */
  hidden?: boolean;
}

/** A leader's fencing token: taken from the store when it becomes leader, higher than every earlier one. */
export interface Fence {
  readonly epoch: number;
}

/** ComfyUI's `get_history(max_items, offset)`: offset counts from the oldest; a negative one with max_items means "the newest max_items". */
export interface HistoryQuery {
  maxItems?: number;
  offset?: number;
  /** Only this user's (undefined: everyone's, for admins). */
  owner?: string;
}

export interface Store {
  /** Stores a new prompt unless one with its id exists; returns the stored one either way (one call when new). */
  create(rec: PromptRecord): Promise<{ created: boolean; record: PromptRecord }>;
  get(id: string): Promise<PromptRecord | undefined>;
  /** Bodies of several prompts (missing ids are left out). */
  getBodies(ids: readonly string[]): Promise<Map<string, PromptBody>>;
  /** Queued and dispatched prompts, without bodies; `sinceSeq`: only those accepted at or after it. */
  listOpen(opts?: { sinceSeq?: number }): Promise<PromptMeta[]>;
  /** queued(attempt) → dispatched(attempt+1, pod); returns the record with its body, or undefined when refused. */
  claim(id: string, expectedAttempt: number, pod: string, podClient: string, now: number, fence: Fence): Promise<PromptRecord | undefined>;
  /** dispatched(attempt, pod) → queued; `countAttempt=false` gives the attempt back (taken back unstarted). */
  requeue(id: string, attempt: number, reason: string, countAttempt: boolean, fence: Fence): Promise<boolean>;
  /** queued|dispatched(attempt) → done with its history entry; false if already done, the attempt moved on or the fence is stale. */
  complete(id: string, attempt: number, history: HistoryEntry, now: number, ttlSeconds: number, fence: Fence): Promise<boolean>;
  /** Deletes a dispatched prompt that was taken back from its pod before it started (queue delete of a buffered prompt). */
  cancel(id: string, attempt: number, fence: Fence): Promise<boolean>;
  /** Stamps an open prompt with the fence (a new leader's take-over); undefined when it is done, gone or a newer leader holds it. */
  adopt(id: string, fence: Fence): Promise<PromptMeta | undefined>;
  /** Deletes queued prompts among `ids` (all queued ones when undefined), only `owner`'s when given; returns those deleted. */
  deleteQueued(ids?: readonly string[], owner?: string): Promise<string[]>;
  /** Finished, visible prompts in completion order, reading only the page asked for. */
  listHistory(q?: HistoryQuery): Promise<PromptRecord[]>;
  /** Every finished, visible prompt (only `owner`'s when given), oldest first, a page at a time. */
  historyPages(pageSize?: number, owner?: string): AsyncIterable<PromptRecord[]>;
  /** Hides history entries (all when undefined), only `owner`'s when given. */
  hideHistory(ids?: readonly string[], owner?: string): Promise<void>;
  /** waiting = queued, running = dispatched. */
  counts(): Promise<{ waiting: number; running: number }>;
  getMeta(key: string): Promise<number | undefined>;
  setMetaMax(key: string, value: number): Promise<void>;
  /** A new fencing epoch, higher than every one handed out before (one atomic increment). */
  takeEpoch(): Promise<number>;
  close(): Promise<void>;
}

/** The fields of a record that are not its body. */
export function metaOf(r: PromptMeta): PromptMeta {
  const m: PromptMeta = { id: r.id, number: r.number, seq: r.seq, clientId: r.clientId, owner: r.owner, state: r.state, attempt: r.attempt, createdAt: r.createdAt };
  if (r.pod !== undefined) m.pod = r.pod;
  if (r.podClient !== undefined) m.podClient = r.podClient;
  if (r.dispatchedAt !== undefined) m.dispatchedAt = r.dispatchedAt;
  if (r.lastError !== undefined) m.lastError = r.lastError;
  if (r.fence !== undefined) m.fence = r.fence;
  return m;
}

/** The page of `all` (oldest first) that ComfyUI's get_history(max_items, offset) answers. */
export function historyWindow(total: number, q: HistoryQuery = {}): { start: number; end: number } {
  let offset = q.offset ?? -1;
  if (offset < 0 && q.maxItems !== undefined) offset = total - q.maxItems;
  const start = Math.max(0, offset);
  const end = q.maxItems !== undefined ? Math.min(total, start + Math.max(0, q.maxItems)) : total;
  return { start, end: Math.max(start, end) };
}

/**
 * Prompt numbers and acceptance order without a store call: epoch milliseconds, strictly increasing in
 * this process. Replicas accept in wall-clock order (a tie between replicas is broken by the prompt id),
 * which is what ComfyUI's counter gives one process.
 */
export class PromptClock {
  private last = 0;
  constructor(private readonly now: () => number = Date.now) {}
  next(): number {
    this.last = Math.max(this.last + 1, Math.floor(this.now()));
    return this.last;
  }
}

/**
 * The gateway's durable state: one record per prompt, from acceptance to history. Every transition is a
 * conditional write (state + attempt), so two gateway processes overlapping during a hand-over can never
 * dispatch or complete a prompt twice.
 */

export type PromptState = "queued" | "dispatched" | "done";

export interface HistoryEntry {
  prompt: unknown[];
  outputs: Record<string, unknown>;
  status: { status_str: "success" | "error"; completed: boolean; messages: [string, unknown][] };
  meta: Record<string, unknown>;
}

export interface PromptRecord {
  id: string;
  /** ComfyUI's priority: lower first (front = negative). */
  number: number;
  /** Acceptance order, a tie-breaker and the fair-share clock. */
  seq: number;
  clientId: string | null;
  prompt: Record<string, unknown>;
  extraData: Record<string, unknown>;
  outputs: string[];
  state: PromptState;
  /** Runs started so far (dispatches). */
  attempt: number;
  pod?: string;
  createdAt: number;
  dispatchedAt?: number;
  completedAt?: number;
  /** Why the last run ended without completing (pod gone, stall …). */
  lastError?: string;
  history?: HistoryEntry;
  /** History entry deleted by the client: kept only so a retried prompt_id is not run again. */
  hidden?: boolean;
}

export interface Store {
  /** Stores a new prompt unless one with its id exists; returns the stored one either way. */
  create(rec: PromptRecord): Promise<{ created: boolean; record: PromptRecord }>;
  /** ComfyUI's `number` counter (monotonic across processes). */
  nextNumber(): Promise<number>;
  get(id: string): Promise<PromptRecord | undefined>;
  /** All queued and dispatched prompts. */
  listOpen(): Promise<PromptRecord[]>;
  /** queued(attempt) → dispatched(attempt+1, pod). */
  claim(id: string, expectedAttempt: number, pod: string, now: number): Promise<boolean>;
  /** dispatched(attempt, pod) → queued; `countAttempt=false` gives the attempt back (taken back unstarted). */
  requeue(id: string, attempt: number, reason: string, countAttempt: boolean): Promise<boolean>;
  /** queued|dispatched(attempt) → done with its history entry; false if already done or attempt moved on. */
  complete(id: string, attempt: number, history: HistoryEntry, now: number, ttlSeconds: number): Promise<boolean>;
  /** Deletes queued prompts among `ids` (all queued ones when undefined); returns those deleted. */
  deleteQueued(ids?: string[]): Promise<string[]>;
  /** Finished, visible prompts in completion order. */
  listHistory(): Promise<PromptRecord[]>;
  /** Hides history entries (all when undefined). */
  hideHistory(ids?: string[]): Promise<void>;
  /** waiting = queued, running = dispatched. */
  counts(): Promise<{ waiting: number; running: number }>;
  getMeta(key: string): Promise<number | undefined>;
  setMetaMax(key: string, value: number): Promise<void>;
  close(): Promise<void>;
}

export class StoreConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StoreConflict";
  }
}

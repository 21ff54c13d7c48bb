import type { Logger } from "pino";
import type { ObjectStore } from "../store/objects";

/** One measured cold start: when it ended (epoch ms) and how long it took (s). */
export interface ColdStartSample { at: number; seconds: number }

export interface ColdStartEstimate {
  /** Expected seconds from the first waiting prompt to the first running one. */
  seconds: number;
  /** "measured": the median of `samples` recent cold starts; "budget": the documented budget (too few measured). */
  basis: "measured" | "budget";
  samples: number;
  /** While a cold start is under way: seconds it has lasted so far. */
  waitingSeconds?: number;
}

const KEY = "cold-starts.json";

/**
 * Cold starts as artists see them: from the first prompt that waits while no GPU pod is ready to
 * the first prompt that starts running. The leader measures each one, keeps the last `window`
 * in the gateway's object store (so a restart or a hand-over keeps the history) and answers the
 * estimate the UI shows: their median once `minSamples` exist, the documented budget before.
 * The episode's start is the oldest waiting prompt's acceptance time, so a new leader that finds
 * prompts waiting resumes the same episode.
 */
export class ColdStarts {
  private samples: ColdStartSample[] = [];
  private since: number | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly budgetSeconds: number,
    private readonly log: Logger,
    private readonly window = 20,
    private readonly minSamples = 3,
  ) {}

  async load(): Promise<void> {
    try {
      const raw = await this.store.get(KEY);
      if (!raw) return;
      const parsed = JSON.parse(raw.toString("utf8")) as { samples?: unknown };
      if (Array.isArray(parsed.samples)) {
        this.samples = parsed.samples
          .filter((s): s is ColdStartSample => typeof s?.at === "number" && typeof s?.seconds === "number" && Number.isFinite(s.seconds) && s.seconds >= 0)
          .slice(-this.window);
      }
    } catch (err: unknown) {
      this.log.warn({ err: (err as Error).message }, "cold-start history unreadable; starting from the documented budget");
    }
  }

  /** Prompts wait and no GPU pod is ready: a cold start is under way since the oldest waiting prompt's acceptance. */
  waiting(oldestAcceptedAt: number): void {
    if (this.since === undefined || oldestAcceptedAt < this.since) this.since = oldestAcceptedAt;
  }

  /** Nothing waits any more without a prompt having run (deleted, or failed past the deadline): no measurement. */
  cancel(): void {
    this.since = undefined;
  }

  get underWay(): boolean {
    return this.since !== undefined;
  }

  /** A prompt started running: ends the cold start under way, if any, and returns its seconds. */
  async started(now: number): Promise<number | undefined> {
    if (this.since === undefined) return undefined;
    const seconds = Math.max(0, (now - this.since) / 1000);
    this.since = undefined;
    this.samples = [...this.samples, { at: now, seconds }].slice(-this.window);
    await this.store.put(KEY, Buffer.from(JSON.stringify({ samples: this.samples }))).catch((err: unknown) =>
      this.log.warn({ err: (err as Error).message }, "cold-start history not saved"));
    return seconds;
  }

  estimate(now: number): ColdStartEstimate {
    const waitingSeconds = this.since !== undefined ? Math.max(0, (now - this.since) / 1000) : undefined;
    const base = { samples: this.samples.length, ...(waitingSeconds !== undefined ? { waitingSeconds } : {}) };
    if (this.samples.length < this.minSamples) return { seconds: this.budgetSeconds, basis: "budget", ...base };
    return { seconds: median(this.samples.map((s) => s.seconds)), basis: "measured", ...base };
  }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of nothing");
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

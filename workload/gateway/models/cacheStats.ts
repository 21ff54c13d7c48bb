/**
 * The model cache's figures for the leader's minute snapshot (contracts/metrics.ts ModelCacheFigures):
 * what the GPU nodes' model agents counted since the previous snapshot, summed over the agents, and the
 * model loads the router's placements avoided.
 *
 * An agent's counters (contract.ts AgentMetrics) are totals since the agent process started, kept in
 * memory, so the snapshot reports differences between two reads of the same agent. Pure bookkeeping: the
 * router feeds it the inventories it reads anyway (every 2 s per pod) and the snapshot takes the sums.
 */
import type { AgentMetrics } from "../../../contracts/modelsAgent";
import type { ModelCacheFigures } from "../../../contracts/metrics";

/** The agent counters the snapshot reports (evictedBytes and the apply counters are the sync path's, not the cache's). */
const COUNTERS = ["fetches", "fetchesFailed", "bytesFetched", "hits", "misses", "evictions"] as const;
type Counter = (typeof COUNTERS)[number];
type Counts = Record<Counter, number>;

/**
 * An agent first read this soon after the leadership began may have run long before it, and the previous
 * leader reported what it counted then: only what it counts from here on is reported. An agent first read
 * later is one that started since (a new node): everything it counted is new, including the files it
 * fetched ahead while its node's ComfyUI pod was starting. The first reads of every agent a leader inherits
 * come within a few seconds (the router reads each pod's agent every 2 s).
 */
export const FIRST_ROUND_MS = 30_000;
/** An agent not read for this long is forgotten (its node is gone); were it read again, the first-read rule applies. */
export const FORGET_AGENT_MS = 6 * 3600_000;

const zero = (): Counts => ({ fetches: 0, fetchesFailed: 0, bytesFetched: 0, hits: 0, misses: 0, evictions: 0 });

export class CacheStats {
  /** Per agent (its URL): the counters of the read accepted last, and when that read was started. */
  private readonly agents = new Map<string, { counts: Counts; readAt: number }>();
  private sums = zero();
  private loadsAvoided = 0;

  /** `since`: when this leadership began (epoch ms, the clock `readAt` is on). */
  constructor(private readonly since: number, private readonly firstRoundMs = FIRST_ROUND_MS) {}

  /**
   * One read of an agent's inventory, started at `readAt`. A read that started no later than the one
   * accepted last is dropped: two pods on one node read the same agent, and an older answer arriving after
   * a newer one would otherwise look like counters going down.
   */
  observe(agent: string, metrics: AgentMetrics | undefined, readAt: number): void {
    const counts = zero();
    for (const k of COUNTERS) {
      const v = metrics?.[k];
      // An agent that answers something else is not counted (nor is it taken as a restart).
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) return;
      counts[k] = v;
    }
    const prev = this.agents.get(agent);
    if (prev && readAt <= prev.readAt) return;
    this.agents.set(agent, { counts, readAt });
    if (!prev && readAt - this.since < this.firstRoundMs) return;
    const base = prev?.counts ?? zero();
    // Any counter below its last value means the agent restarted (they all start again from zero): all it
    // counted since then is new. Counter by counter would take a restarted counter that has already
    // passed its old value for a small increase.
    const restarted = COUNTERS.some((k) => counts[k] < base[k]);
    for (const k of COUNTERS) this.sums[k] += restarted ? counts[k] : counts[k] - base[k];
  }

  /** A prompt was placed on a pod whose previous prompt had the same main model: ComfyUI has it loaded. */
  loadAvoided(): void {
    this.loadsAvoided++;
  }

  /** The figures since the previous call, which start again from zero; agents not read for long are forgotten. */
  take(now: number): ModelCacheFigures {
    for (const [agent, a] of this.agents) if (now - a.readAt > FORGET_AGENT_MS) this.agents.delete(agent);
    const s = this.sums;
    const out: ModelCacheFigures = {
      fetches: s.fetches, fetchesFailed: s.fetchesFailed, bytesFetched: s.bytesFetched,
      hits: s.hits, misses: s.misses, evictions: s.evictions, loadsAvoided: this.loadsAvoided,
    };
    this.sums = zero();
    this.loadsAvoided = 0;
    return out;
  }
}

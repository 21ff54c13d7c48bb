/**
 * Cold-start prefetch (issue 19: "the first waiting prompt's files are fetched first"). When GPU pods scale
 * from zero, the model agent (a DaemonSet pod) on a new node is ready well before the ComfyUI pod there (image
 * pull, then ComfyUI's own start: a minute or more, docs/scaling.md), and until now the node's NIC idled
 * meanwhile: the gateway asked for a prompt's files only once it had placed the prompt on a Ready pod. The
 * leader now asks such an agent at once for the files of a waiting prompt, so that when the pod turns Ready
 * the router finds them on its node (routing.ts, preference (b)) and the prompt runs with nothing to fetch.
 *
 * - A cold agent: one whose node has no Ready ComfyUI pod (none yet, or one still starting).
 * - Each cold agent is asked for one prompt's files, in fair-share order (the order the dispatcher will place
 *   them): the first waiting prompt's to the first agent listed, the next prompt with another main model to
 *   the next agent, and so on. A model goes to one node only (one fetch of it is enough; the other nodes
 *   are worth more fetching other models), and a prompt whose files a Ready pod's node already holds (or is
 *   fetching) is left to that pod.
 * - The ensure does not wait (the agent answers 202 and fetches as a prompt's download, ahead of pins) and
 *   holds the files for `prefetch:<prompt id>` for PREFETCH_HOLD_SECONDS, asked again at half that while
 *   the prompt waits and the node is cold (which also retries a fetch that failed), so the LRU cannot evict
 *   them before the pod starts. The hold is released once the prompt has ended or runs on another node;
 *   on the same node the dispatcher's own hold (the prompt id) takes over at placement.
 *
 * No I/O here: `plan` turns what the leader knows into calls for it to make, so it is tested without
 * Kubernetes or agents.
 */
import type { ModelNeeds } from "./inputs";

/** A model agent and the node it runs on (Kubernetes: the agents' EndpointSlices, `nodeName`). */
export interface AgentInfo {
  node: string;
  url: string;
}

/** What the planner needs of a ComfyUI pod (dispatch/dispatcher.ts PodInfo). */
export interface PrefetchPod {
  key: string;
  node?: string;
  ready: boolean;
  terminating: boolean;
}

/** Long enough for a node's ComfyUI pod to start (image pull plus start); renewed while the prompt waits. */
export const PREFETCH_HOLD_SECONDS = 600;
/** A cold agent whose ensure failed is asked again after this. */
export const PREFETCH_RETRY_MS = 10_000;
/** Waiting prompts looked at per plan at most (the queue may hold thousands; a few cold nodes need a few). */
const LOOK_AHEAD = 256;

export interface PrefetchState {
  agents: readonly AgentInfo[];
  pods: readonly PrefetchPod[];
  /** The queued prompts in the order the dispatcher will place them (fair share), lazily. */
  queue: Iterable<{ id: string }>;
  needsOf(id: string): ModelNeeds | undefined;
  /** Where an open prompt is: undefined while queued, its pod's key once dispatched, null when it has ended. */
  whereIs(id: string): string | undefined | null;
  /** A Ready pod's node holds (or is fetching) every file of `needs`. */
  heldByReady(needs: ModelNeeds): boolean;
  now: number;
}

export type PrefetchAction =
  | { kind: "ensure"; node: string; url: string; promptId: string; files: string[]; holdId: string; ttlSeconds: number }
  | { kind: "release"; node: string; url: string; promptId: string; holdId: string };

interface Asked {
  url: string;
  promptId: string;
  model: string;
  files: { key: string; bytes: number }[];
  at: number;
}

export const prefetchHoldId = (promptId: string) => `prefetch:${promptId}`;

/** What one node is asked for per prompt: its main model, or (none) its set of files. */
const modelKey = (needs: ModelNeeds) => needs.main ?? needs.files.map((f) => f.key).sort().join("\n");

export class Prefetcher {
  /** Cold node → what its agent was asked to fetch. */
  private readonly asked = new Map<string, Asked>();
  /** Prompt → the node whose agent holds its prefetched files (one node per prompt). */
  private readonly holds = new Map<string, { node: string; url: string }>();
  /** Node → not asked again before (its last ensure failed). */
  private readonly retryAt = new Map<string, number>();

  constructor(private readonly ttlSeconds = PREFETCH_HOLD_SECONDS) {}

  /** The files a node's agent was asked to fetch ahead (the router counts them as on that node until it reads the inventory). */
  filesOn(node: string): { key: string; bytes: number }[] {
    return this.asked.get(node)?.files ?? [];
  }

  /** The cold node whose agent fetches this model ahead (for another waiting prompt, maybe), if any. */
  aheadFor(needs: ModelNeeds | undefined): string | undefined {
    if (!needs || needs.files.length === 0) return undefined;
    const model = modelKey(needs);
    for (const [node, a] of this.asked) if (a.model === model) return node;
    return undefined;
  }

  /** An ensure failed (agent unreachable, refused): the node is asked again, for whatever waits first then, later. */
  failed(node: string, now: number): void {
    const a = this.asked.get(node);
    if (a) {
      this.asked.delete(node);
      this.holds.delete(a.promptId);
    }
    this.retryAt.set(node, now + PREFETCH_RETRY_MS);
  }

  plan(s: PrefetchState): PrefetchAction[] {
    const out: PrefetchAction[] = [];
    const agents = new Map<string, AgentInfo>();
    for (const a of s.agents) if (!agents.has(a.node)) agents.set(a.node, a);
    const readyNodes = new Set<string>();
    const nodeOfPod = new Map<string, string | undefined>();
    for (const p of s.pods) {
      nodeOfPod.set(p.key, p.node);
      if (p.node && p.ready && !p.terminating) readyNodes.add(p.node);
    }
    for (const node of [...this.retryAt.keys()]) if (!agents.has(node) || (this.retryAt.get(node) ?? 0) <= s.now) this.retryAt.delete(node);

    // Holds: released when the prompt ended or runs on another node; forgotten with their agent.
    for (const [id, h] of [...this.holds]) {
      const agent = agents.get(h.node);
      if (!agent || agent.url !== h.url) {
        this.holds.delete(id);
        continue;
      }
      const where = s.whereIs(id);
      if (where === null || (where !== undefined && nodeOfPod.get(where) !== h.node)) {
        this.holds.delete(id);
        out.push({ kind: "release", node: h.node, url: h.url, promptId: id, holdId: prefetchHoldId(id) });
      }
    }
    // Assignments end when the node's pod is Ready (the router takes over), the prompt left the queue, or the agent went.
    for (const [node, a] of [...this.asked]) {
      const agent = agents.get(node);
      if (!agent || agent.url !== a.url || readyNodes.has(node) || s.whereIs(a.promptId) !== undefined) this.asked.delete(node);
    }
    // Still waiting on a still cold node: keep the hold (and the fetch, should it have failed) alive.
    for (const [node, a] of this.asked) {
      if (s.now - a.at < (this.ttlSeconds * 1000) / 2) continue;
      a.at = s.now;
      out.push(this.ensure(node, a));
    }

    const cold = [...agents.values()].filter((a) => !readyNodes.has(a.node) && !this.asked.has(a.node) && !this.retryAt.has(a.node));
    if (cold.length === 0) return out;
    const models = new Set([...this.asked.values()].map((a) => a.model));
    let looked = 0;
    for (const q of s.queue) {
      if (cold.length === 0 || ++looked > LOOK_AHEAD) break;
      if (this.holds.has(q.id)) continue;
      const needs = s.needsOf(q.id);
      if (!needs || needs.files.length === 0) continue;
      const model = modelKey(needs);
      if (models.has(model)) continue;
      // Either way this model is taken care of: the next prompts needing it go where it is.
      models.add(model);
      if (s.heldByReady(needs)) continue;
      const agent = cold.shift()!;
      const a: Asked = { url: agent.url, promptId: q.id, model, files: needs.files.map((f) => ({ key: f.key, bytes: f.bytes })), at: s.now };
      this.asked.set(agent.node, a);
      this.holds.set(q.id, { node: agent.node, url: agent.url });
      out.push(this.ensure(agent.node, a));
    }
    return out;
  }

  private ensure(node: string, a: Asked): PrefetchAction {
    return { kind: "ensure", node, url: a.url, promptId: a.promptId, files: a.files.map((f) => f.key), holdId: prefetchHoldId(a.promptId), ttlSeconds: this.ttlSeconds };
  }
}

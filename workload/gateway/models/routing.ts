/**
 * Dispatch by model (issue 19): what each open prompt needs, what each pod's node holds and which model each
 * pod loaded last, and from that the pod a prompt should go to. The Dispatcher asks `choose` for the prompt
 * fair share picked (scheduler.ts pickNext decides *who* goes next; this decides only *where*, or "not yet").
 *
 * Preference among ready pods with a free slot, lexicographic:
 *   (a) the pod whose last placed prompt had the same checkpoint / diffusion model (ComfyUI keeps it loaded:
 *       no reload from NVMe, 4-7 s for SDXL and longer for a 16 GB Flux, docs/models.md),
 *   (b) a pod whose node holds every file (agent inventory; a download in flight there counts: the ensure joins it),
 *   (c) the fewest bytes to fetch, then the emptiest pod.
 * Bounded affinity: when only a busy pod has the prompt's model loaded, the prompt waits for it at most
 * `affinityMs`; meanwhile the next prompt in fair-share order may take the free pod (a waiting prompt never
 * holds back another), so a GPU idles at most that long for it.
 */
import type { Logger } from "pino";
import type { InventoryResponse } from "../../../contracts/modelsAgent";
import type { PromptMeta } from "../store/types";
import type { Worker } from "../dispatch/worker";
import { CacheStats } from "./cacheStats";
import { modelNeeds, type ModelInputs, type ModelNeeds } from "./inputs";
import type { ModelLibrary } from "./library";

export interface NodeView {
  /** Complete files on the node, by path → bytes. */
  files: Map<string, number>;
  /** Files its agent is downloading (a prompt's, a prefetch's, a pin's): a prompt placed there joins the download. */
  fetching?: Map<string, number>;
  capacityBytes: number;
  at: number;
}

export interface RouterOptions {
  library: ModelLibrary;
  /** Which inputs name model files (the discovery cache's, ComfyUI's own loaders before any pod was read). */
  inputs: () => Promise<ModelInputs>;
  affinityMs: number;
  /** false: model-blind placement (the emptiest pod), fetches still happen on the chosen node. */
  routing: boolean;
  log: Logger;
}

/** How many affinity bounds a prompt whose model no pod has loaded may let switch-free prompts go first. */
export const SWITCH_PATIENCE = 6;

export type Choice = { pod: Worker } | { wait: true } | { switch: true };

export class ModelRouter {
  /** The files each open prompt needs (computed from its body when it is seen). */
  private readonly needs = new Map<string, ModelNeeds>();
  /** Main model of the last prompt placed on each pod (what it will have loaded once that prompt runs). */
  readonly lastModel = new Map<string, string>();
  readonly nodes = new Map<string, NodeView>();
  /** Since when a prompt has been waiting for a busy pod with its model loaded. */
  private readonly waitingSince = new Map<string, number>();
  /** Prompts sent back after a retryable fetch failure: not placed again before this time. */
  private readonly notBefore = new Map<string, number>();
  private inputs: ModelInputs | undefined;
  private inputsVersion = -1;
  private readonly polling = new Set<string>();
  /** The cache figures of the leader's snapshot: the agents' counters from the reads below, and loads avoided at placement. */
  readonly cache = new CacheStats(Date.now());

  constructor(readonly o: RouterOptions) {}

  /** Re-reads the model inputs (cheap: the discovery cache memoizes them); needs computed before are kept. */
  async refreshInputs(): Promise<void> {
    this.inputs = await this.o.inputs();
    if (this.inputsVersion !== this.o.library.version) {
      this.inputsVersion = this.o.library.version;
      // A library change can make a value resolvable that was not: compute again on next use.
      this.needs.clear();
    }
  }

  /** What the prompt needs, from its body (undefined: not known yet; the prompt is placed model-blind). */
  learn(id: string, prompt: Record<string, unknown> | undefined): ModelNeeds | undefined {
    const hit = this.needs.get(id);
    if (hit || !prompt || !this.inputs) return hit;
    const n = modelNeeds(prompt, this.inputs, this.o.library);
    this.needs.set(id, n);
    return n;
  }

  /** As learn, reading the model inputs first if they were never read (a prompt placed before the first tick). */
  async needsFor(id: string, prompt: Record<string, unknown>): Promise<ModelNeeds | undefined> {
    if (!this.inputs) await this.refreshInputs();
    return this.learn(id, prompt);
  }

  needsOf(id: string): ModelNeeds | undefined {
    return this.needs.get(id);
  }

  forget(id: string): void {
    this.needs.delete(id);
    this.waitingSince.delete(id);
    this.notBefore.delete(id);
  }

  /** Keeps only what open prompts and present pods need. */
  prune(open: ReadonlySet<string>, pods: ReadonlySet<string>): void {
    for (const id of [...this.needs.keys()]) if (!open.has(id)) this.forget(id);
    for (const id of [...this.waitingSince.keys()]) if (!open.has(id)) this.waitingSince.delete(id);
    for (const id of [...this.notBefore.keys()]) if (!open.has(id)) this.notBefore.delete(id);
    for (const k of [...this.nodes.keys()]) if (!pods.has(k)) this.nodes.delete(k);
    for (const k of [...this.lastModel.keys()]) if (!pods.has(k)) this.lastModel.delete(k);
  }

  deferred(id: string, now: number): boolean {
    return (this.notBefore.get(id) ?? 0) > now;
  }

  backOff(id: string, until: number): void {
    this.notBefore.set(id, until);
  }

  /** Reads each agent's inventory (one read per pod at a time; a failed read leaves the pod's view unknown). */
  pollInventories(workers: Iterable<Worker>, now: number): void {
    for (const w of workers) {
      if (!w.agent || this.polling.has(w.key)) continue;
      this.polling.add(w.key);
      const agent = w.agent;
      const readAt = Date.now();
      agent.inventory().then(
        (inv) => {
          this.setInventory(w.key, inv, Date.now());
          // Keyed by the agent, not the pod: the pods of one node share its agent and must count it once.
          this.cache.observe(agent.baseUrl, inv.metrics, readAt);
        },
        () => this.nodes.delete(w.key),
      ).finally(() => this.polling.delete(w.key));
    }
    void now;
  }

  setInventory(podKey: string, inv: InventoryResponse, now: number): void {
    this.nodes.set(podKey, { files: new Map(inv.files.map((f) => [f.path, f.bytes])), fetching: new Map((inv.fetching ?? []).map((f) => [f.path, f.bytes])), capacityBytes: inv.capacityBytes, at: now });
  }

  /**
   * Files the pod's node's agent was asked to fetch ahead (cold-start prefetch, prefetch.ts), counted as on
   * their way there until its inventory is read: a pod that has just turned Ready is placed by them at once.
   */
  expect(podKey: string, files: { key: string; bytes: number }[]): void {
    if (files.length === 0) return;
    const n = this.nodes.get(podKey) ?? { files: new Map<string, number>(), capacityBytes: 0, at: 0 };
    n.fetching ??= new Map();
    for (const f of files) if (!n.files.has(f.key)) n.fetching.set(f.key, f.bytes);
    this.nodes.set(podKey, n);
  }

  /** Some pod of `pods` holds or is fetching every file the prompt needs (placed there, it fetches nothing new). */
  fetchFree(id: string, pods: Iterable<Worker>): boolean {
    const needs = this.needs.get(id);
    if (!needs || needs.files.length === 0) return false;
    for (const w of pods) if (this.missingBytes(needs, w.key, true) === 0) return true;
    return false;
  }

  /** Files an ensure made present (the next inventory read confirms). */
  present(podKey: string, files: { key: string; bytes: number }[]): void {
    const n = this.nodes.get(podKey);
    if (n) for (const f of files) n.files.set(f.key, f.bytes);
  }

  /** Bytes `needs` lacks on the pod's node (Infinity when the node's holdings are unknown); `inFlight`: downloads count as there. */
  missingBytes(needs: ModelNeeds, podKey: string, inFlight = false): number {
    const n = this.nodes.get(podKey);
    if (!n) return Number.POSITIVE_INFINITY;
    let b = 0;
    for (const f of needs.files) if (!n.files.has(f.key) && !(inFlight && n.fetching?.has(f.key))) b += f.bytes;
    return b;
  }

  missing(needs: ModelNeeds, podKey: string): { key: string; bytes: number }[] {
    const n = this.nodes.get(podKey);
    return needs.files.filter((f) => !n?.files.has(f.key));
  }

  /** How many of `queued` need each main model (a pod whose loaded model nobody waits for is the one to switch). */
  demand(queued: Iterable<PromptMeta>): Map<string, number> {
    const d = new Map<string, number>();
    for (const r of queued) {
      const m = this.needs.get(r.id)?.main;
      if (m) d.set(m, (d.get(m) ?? 0) + 1);
    }
    return d;
  }

  /**
   * Where the prompt fair share picked goes now. `{ pod }`: a free pod with its model loaded, or the best pod to
   * switch to it; `{ wait }`: a busy pod has its model loaded, it waits for that one (at most affinityMs);
   * `{ switch }`: no pod has its model loaded — it waits while other prompts can use the free pods without a
   * model switch (the Dispatcher then places it with `force`, also once it has waited affinityMs).
   */
  choose(r: PromptMeta, free: Worker[], all: Iterable<Worker>, now: number, demand: ReadonlyMap<string, number>, force = false): Choice {
    const needs = this.needs.get(r.id);
    const emptiest = () => free.reduce((a, b) => (b.load < a.load ? b : a));
    if (!this.o.routing || !needs || needs.files.length === 0) return { pod: emptiest() };
    const main = needs.main;
    const affine = main ? free.filter((w) => this.lastModel.get(w.key) === main) : [];
    if (affine.length) {
      this.waitingSince.delete(r.id);
      return { pod: this.best(needs, affine, demand) };
    }
    const since = this.waitingSince.get(r.id) ?? now;
    const patient = now - since < this.o.affinityMs;
    if (main && patient && [...all].some((w) => w.ready && w.free === 0 && this.lastModel.get(w.key) === main)) {
      this.waitingSince.set(r.id, since);
      return { wait: true };
    }
    // Letting switch-free prompts go first idles no GPU (it is forced as soon as none is left), so its bound
    // is only against starvation: SWITCH_PATIENCE × the affinity bound.
    if (main && !force && now - since < this.o.affinityMs * SWITCH_PATIENCE) {
      this.waitingSince.set(r.id, since);
      return { switch: true };
    }
    this.waitingSince.delete(r.id);
    return { pod: this.best(needs, free, demand) };
  }

  /** (b) a node that holds every file, then the pod whose loaded model the fewest waiting prompts need, (c) fewest bytes, then the emptiest. */
  private best(needs: ModelNeeds, pods: Worker[], demand: ReadonlyMap<string, number>): Worker {
    const score = (w: Worker) => {
      // A file already downloading there (a prefetch while the pod started) is as good as held: the ensure joins it.
      const missing = this.missingBytes(needs, w.key, true);
      const loaded = this.lastModel.get(w.key);
      const wanted = loaded === undefined || loaded === needs.main ? 0 : (demand.get(loaded) ?? 0);
      return [missing === 0 ? 0 : 1, wanted, missing, w.load];
    };
    let best = pods[0];
    let bestScore = score(best);
    for (const w of pods.slice(1)) {
      const sc = score(w);
      if (less(sc, bestScore)) {
        best = w;
        bestScore = sc;
      }
    }
    return best;
  }

  /** A prompt was placed on a pod: that pod will have its model loaded next. */
  placed(id: string, podKey: string): void {
    const m = this.needs.get(id)?.main;
    if (m) {
      if (this.lastModel.get(podKey) === m) this.cache.loadAvoided();
      this.lastModel.set(podKey, m);
    }
    this.waitingSince.delete(id);
  }

  /**
   * Scale-in hint: for each pod, the bytes of what waiting prompts need that its node already holds, fewest
   * first (the best pod to remove is the first). KEDA cannot pick victims; the ReplicaSet takes the lowest
   * pod-deletion-cost, which the gateway sets from load and, among pods of equal load, from this (deletionCost.ts).
   */
  scaleInHint(workers: Iterable<Worker>, waiting: Iterable<PromptMeta>): { pod: string; bytesForWaiting: number; known: boolean }[] {
    const wanted = new Map<string, number>();
    for (const r of waiting) for (const f of this.needs.get(r.id)?.files ?? []) wanted.set(f.key, f.bytes);
    const out = [...workers].map((w) => {
      const n = this.nodes.get(w.key);
      let b = 0;
      if (n) for (const [k, bytes] of wanted) if (n.files.has(k)) b += bytes;
      return { pod: w.key, bytesForWaiting: b, known: n !== undefined };
    });
    return out.sort((a, b) => a.bytesForWaiting - b.bytesForWaiting || (a.pod < b.pod ? -1 : 1));
  }
}

function less(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

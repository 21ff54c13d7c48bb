/**
 * The `controller.kubernetes.io/pod-deletion-cost` the gateway's leader keeps on every ComfyUI pod.
 *
 * KEDA only lowers the Deployment's replica count; which pods go is the ReplicaSet controller's choice.
 * Kubernetes docs, Concepts › Workloads › ReplicaSet, "Scaling a ReplicaSet" and "Pod deletion cost" (and
 * Reference › Well-Known Labels, Annotations and Taints): pending pods go first, then pods with the lower
 * deletion cost (an int32), then pods on nodes with more replicas, then the newer ones; the annotation is
 * best effort, and updating it often (e.g. from a metric) loads the API server with pod updates. So:
 *
 *   cost = 1000 × load (prompts in the pod's queue, running or buffered) + cache part (0 … 999)
 *
 * The load term dominates: an idle pod always goes before a busy one, whatever its cache. The cache part
 * orders pods of equal load by what their node's model cache is worth to the prompts waiting now: the bytes
 * of the files those prompts need that the node holds (ModelRouter.scaleInHint), as a share of the largest
 * such holding, rounded to one of ten levels (0, 111, … 999). Proportional and coarse rather than a rank:
 * pods whose holdings are within about a ninth of the largest of each other tie, so the ReplicaSet's own
 * order decides between them (pods doubled up on a node first, which empties nodes for Karpenter), and a
 * waiting set that changes a little re-patches no pod. With nothing waiting every cache part is 0.
 */

/** What one prompt in a pod's queue adds; the cache part stays below it. */
export const COST_PER_PROMPT = 1000;
export const CACHE_PART_MAX = 999;
const CACHE_STEPS = 9;
/** The cache parts are recomputed this often at most (the waiting set and the inventories change all the time). */
export const CACHE_PART_REFRESH_MS = 5000;

export function deletionCost(load: number, cachePart: number): number {
  return Math.max(0, Math.round(load)) * COST_PER_PROMPT + Math.min(CACHE_PART_MAX, Math.max(0, Math.round(cachePart)));
}

/** Each pod's cache part from the scale-in hint (bytes of waiting prompts' files its node holds). */
export function cacheParts(hint: readonly { pod: string; bytesForWaiting: number }[]): Map<string, number> {
  const max = hint.reduce((m, h) => Math.max(m, h.bytesForWaiting), 0);
  const step = CACHE_PART_MAX / CACHE_STEPS;
  return new Map(hint.map((h) => [h.pod, max > 0 ? Math.round((CACHE_STEPS * h.bytesForWaiting) / max) * step : 0]));
}

/**
 * Each pod's cost from its load (told at every change: a pod that just took a prompt must not look idle to
 * the ReplicaSet) and its cache part (refreshed every CACHE_PART_REFRESH_MS); `emit` hears a pod's cost only
 * when it differs from what it last heard for that pod, or when its promise for the last one was rejected
 * (a failed patch is tried again at the next refresh). One per leadership: a new leader writes every pod's
 * cost once, since the one before may have left a stale value.
 */
export class DeletionCosts {
  private readonly loads = new Map<string, number>();
  private parts = new Map<string, number>();
  private readonly sent = new Map<string, number>();

  constructor(private readonly emit: (pod: string, cost: number) => void | Promise<void>) {}

  load(pod: string, load: number): void {
    this.loads.set(pod, load);
    this.send(pod);
  }

  /** New cache parts for the pods present now (a pod not listed has part 0); pods not present are forgotten. */
  refresh(pods: Iterable<string>, parts: ReadonlyMap<string, number>): void {
    const present = new Set(pods);
    for (const m of [this.loads, this.sent]) for (const pod of [...m.keys()]) if (!present.has(pod)) m.delete(pod);
    this.parts = new Map([...parts].filter(([pod]) => present.has(pod)));
    for (const pod of present) this.send(pod);
  }

  /** The cost last handed to `emit` (undefined: none yet). */
  current(pod: string): number | undefined {
    return this.sent.get(pod);
  }

  private send(pod: string): void {
    const cost = deletionCost(this.loads.get(pod) ?? 0, this.parts.get(pod) ?? 0);
    if (this.sent.get(pod) === cost) return;
    this.sent.set(pod, cost);
    const done = this.emit(pod, cost);
    done?.catch(() => {
      if (this.sent.get(pod) === cost) this.sent.delete(pod);
    });
  }
}

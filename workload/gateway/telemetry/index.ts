import type { Logger } from "pino";
import { coldStartEmf, gatewaySnapshotEmf, gpuFleetEmf, nodeReadyEmf, promptOutcomeEmf, type ModelCacheFigures } from "../../../contracts/metrics";
import type { DispatchObserver } from "../dispatch/dispatcher";
import { fileRefs } from "../protocol/outputs";
import type { HistoryEntry, PromptMeta } from "../store/types";
import type { ColdStarts } from "./coldStarts";
import type { MetricsSink } from "./sink";

export { ColdStarts, median, type ColdStartEstimate } from "./coldStarts";
export { CloudWatchLogsSink, metricsSinkFor, NO_METRICS, type MetricsSink } from "./sink";

/** A GPU node as the gateway sees it when its first ComfyUI pod turns Ready (times in epoch ms). */
export interface NodeStart {
  node: string;
  instanceType?: string;
  capacityType?: string;
  /** Kernel start, from the node's comfyui.studio/boot-at label (written by its boot). */
  bootAt?: number;
  /** The Node object's creation: kubelet registered. */
  registeredAt: number;
  /** The pod's Ready condition. */
  readyAt: number;
}

/** A node is "new" for the cold-start figures only if its pod turned Ready this recently (a restarted gateway must not count old nodes again). */
const FRESH_MS = 10 * 60_000;

/**
 * The gateway's figures, named in contracts/metrics.ts: one snapshot a minute (leader), one
 * line per finished prompt, one per cold start, one per new GPU node. Everything goes to `sink`
 * (CloudWatch Logs in AWS); cold starts also feed the estimate the UI shows.
 */
export class Telemetry implements DispatchObserver {
  private acceptedSinceLast = 0;
  private http5xxSinceLast = 0;
  private readonly seenNodes = new Set<string>();
  /** Each ready pod's node, as read when it turned Ready (for the by-type figures). */
  private readonly podNodes = new Map<string, { node: string; instanceType: string; capacityType: string }>();

  constructor(
    private readonly o: { clusterName: string; sink: MetricsSink; coldStarts: ColdStarts; log: Logger; now?: () => number },
  ) {}

  get coldStarts(): ColdStarts {
    return this.o.coldStarts;
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  private put(make: () => Parameters<MetricsSink["put"]>[0]): void {
    try {
      this.o.sink.put(make());
    } catch (err: unknown) {
      this.o.log.warn({ err: (err as Error).message }, "metric line not written");
    }
  }

  resetCounters(): void {
    this.acceptedSinceLast = 0;
    this.http5xxSinceLast = 0;
  }

  promptAccepted(): void {
    this.acceptedSinceLast++;
  }

  response(statusCode: number): void {
    if (statusCode >= 500) this.http5xxSinceLast++;
  }

  /**
   * `readyPods`: the keys of the pods ready now; their nodes (as read at Ready) give the by-type lines.
   * `modelCache`: the model cache since the last snapshot (models/cacheStats.ts), only with a model library.
   */
  snapshot(s: { waiting: number; running: number; websocketClients: number; readyPods: readonly string[]; modelCache?: ModelCacheFigures }): void {
    const now = this.now();
    const line = {
      clusterName: this.o.clusterName, waiting: s.waiting, running: s.running, websocketClients: s.websocketClients, podsReady: s.readyPods.length,
      acceptedSinceLast: this.acceptedSinceLast, http5xxSinceLast: this.http5xxSinceLast,
      ...(s.modelCache ? { modelCache: s.modelCache } : {}),
    };
    this.acceptedSinceLast = 0;
    this.http5xxSinceLast = 0;
    this.put(() => gatewaySnapshotEmf(line, now));
    const ready = new Set(s.readyPods);
    for (const pod of [...this.podNodes.keys()]) if (!ready.has(pod)) this.podNodes.delete(pod);
    const groups = new Map<string, { instanceType: string; capacityType: string; nodes: Set<string>; pods: number }>();
    for (const pod of s.readyPods) {
      const n = this.podNodes.get(pod);
      if (!n) continue;
      const key = `${n.instanceType}\0${n.capacityType}`;
      const g = groups.get(key) ?? { instanceType: n.instanceType, capacityType: n.capacityType, nodes: new Set<string>(), pods: 0 };
      g.nodes.add(n.node);
      g.pods++;
      groups.set(key, g);
    }
    for (const g of groups.values()) {
      this.put(() => gpuFleetEmf({ clusterName: this.o.clusterName, instanceType: g.instanceType, capacityType: g.capacityType, nodes: g.nodes.size, pods: g.pods }, now));
    }
  }

  // ---- DispatchObserver ----

  queueState(s: { anyReady: boolean; oldestQueuedAt: number | undefined; open: number }): void {
    if (!s.anyReady && s.oldestQueuedAt !== undefined) this.o.coldStarts.waiting(s.oldestQueuedAt);
    else if (s.open === 0 && this.o.coldStarts.underWay) this.o.coldStarts.cancel();
  }

  started(r: PromptMeta, now: number): void {
    void this.o.coldStarts.started(now).then((seconds) => {
      if (seconds === undefined) return;
      this.o.log.info({ promptId: r.id, coldStartSeconds: seconds }, "cold start: first prompt running");
      this.put(() => coldStartEmf(this.o.clusterName, seconds, now));
    });
  }

  finished(r: PromptMeta, history: HistoryEntry, startedAt: number | undefined, now: number): void {
    const waitSeconds = Math.max(0, ((startedAt ?? now) - r.createdAt) / 1000);
    const runSeconds = startedAt !== undefined ? Math.max(0, (now - startedAt) / 1000) : undefined;
    const outcome = history.status.status_str === "success" ? "success" : "error";
    const outputs = Object.values(history.outputs ?? {}).reduce<number>((n, o) => n + fileRefs(o).filter((f) => f.type === "output").length, 0);
    this.put(() => promptOutcomeEmf({ clusterName: this.o.clusterName, outcome, waitSeconds, outputs, ...(runSeconds !== undefined ? { runSeconds } : {}) }, now));
  }

  /** A ComfyUI pod turned Ready on `n.node`: remembers where it runs; the node's registration and readiness, once per new node. */
  nodeStarted(n: NodeStart, pod?: string): void {
    if (pod) this.podNodes.set(pod, { node: n.node, instanceType: n.instanceType ?? "unknown", capacityType: n.capacityType ?? "unknown" });
    if (this.seenNodes.has(n.node)) return;
    this.seenNodes.add(n.node);
    if (this.now() - n.readyAt > FRESH_MS) return;
    const phases = {
      node: n.node,
      instanceType: n.instanceType,
      capacityType: n.capacityType,
      bootAt: n.bootAt !== undefined ? new Date(n.bootAt).toISOString() : undefined,
      registeredAt: new Date(n.registeredAt).toISOString(),
      readyAt: new Date(n.readyAt).toISOString(),
      registeredSeconds: n.bootAt !== undefined ? (n.registeredAt - n.bootAt) / 1000 : undefined,
      readySeconds: n.bootAt !== undefined ? (n.readyAt - n.bootAt) / 1000 : undefined,
    };
    this.o.log.info(phases, "gpu node cold start");
    if (n.bootAt === undefined || n.registeredAt < n.bootAt || n.readyAt < n.registeredAt) return;
    this.put(() => nodeReadyEmf({ clusterName: this.o.clusterName, registeredSeconds: phases.registeredSeconds!, readySeconds: phases.readySeconds! }, n.readyAt));
  }
}

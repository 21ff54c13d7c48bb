/* eslint-disable @typescript-eslint/no-explicit-any -- Kubernetes API objects are untyped JSON here; only the few fields read are checked. */
import type { Logger } from "pino";
import type { PodInfo } from "../dispatch/dispatcher";
import type { NodeStart } from "../telemetry";
import type { KubeClient } from "./client";

/**
 * ComfyUI pods from the EndpointSlices of one Service (label kubernetes.io/service-name, discovery.k8s.io/v1):
 * list, then watch from the list's resourceVersion; on a watch end or error, list again.
 * An endpoint is dispatchable when conditions.ready; `terminating` means take its buffered prompt back.
 */
export class EndpointSliceSource {
  private readonly slices = new Map<string, any>();
  private stopped = false;
  private current: { stop(): void } | undefined;

  constructor(private readonly kube: KubeClient, private readonly ns: string, private readonly service: string, private readonly portName: string, private readonly onPods: (pods: PodInfo[]) => void, private readonly log: Logger) {}

  private base() {
    return `/apis/discovery.k8s.io/v1/namespaces/${encodeURIComponent(this.ns)}/endpointslices?labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${this.service}`)}`;
  }

  pods(): PodInfo[] {
    const out: PodInfo[] = [];
    for (const s of this.slices.values()) {
      const port = (s.ports ?? []).find((p: any) => p.name === this.portName)?.port;
      if (!port) continue;
      for (const e of s.endpoints ?? []) {
        if (e.targetRef?.kind !== "Pod" || !e.addresses?.length) continue;
        const addr = e.addresses[0].includes(":") ? `[${e.addresses[0]}]` : e.addresses[0];
        out.push({ key: e.targetRef.name, url: `http://${addr}:${port}`, ready: e.conditions?.ready === true, terminating: e.conditions?.terminating === true, ...(e.nodeName ? { node: e.nodeName } : {}) });
      }
    }
    return out;
  }

  async start(): Promise<void> {
    void this.loop(await this.listOnce());
  }

  private async listOnce(): Promise<string> {
    const res = await this.kube.request("GET", this.base());
    if (res.status !== 200) throw new Error(`listing EndpointSlices answered ${res.status}`);
    this.slices.clear();
    for (const s of res.json.items ?? []) this.slices.set(s.metadata.name, s);
    this.onPods(this.pods());
    return res.json.metadata?.resourceVersion ?? "";
  }

  private async loop(from: string): Promise<void> {
    let rv = from;
    while (!this.stopped) {
      try {
        if (!rv) rv = await this.listOnce();
        const w = this.kube.watch(`${this.base()}&watch=true&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(rv)}`, (ev) => {
          if (ev.type === "BOOKMARK") {
            rv = ev.object.metadata.resourceVersion;
            return;
          }
          if (ev.type === "ERROR") {
            rv = ""; // e.g. 410 Gone: list again
            return;
          }
          rv = ev.object.metadata?.resourceVersion ?? rv;
          if (ev.type === "DELETED") this.slices.delete(ev.object.metadata.name);
          else this.slices.set(ev.object.metadata.name, ev.object);
          this.onPods(this.pods());
        });
        this.current = w;
        await w.done;
      } catch (err: unknown) {
        this.log.warn({ err: (err as Error).message }, "EndpointSlice watch failed; listing again");
        rv = "";
        if (!this.stopped) await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  stop(): void {
    this.stopped = true;
    this.current?.stop();
  }
}

/**
 * controller.kubernetes.io/pod-deletion-cost, as the leader computes it (models/deletionCost.ts: 1000 per
 * prompt in the pod's queue plus 0-999 for its node's cache): the ReplicaSet removes the lowest first.
 */
export async function patchDeletionCost(kube: KubeClient, ns: string, pod: string, cost: number): Promise<void> {
  // The API server accepts an int32 only (and rejects the whole patch otherwise).
  if (!Number.isInteger(cost) || cost < -(2 ** 31) || cost >= 2 ** 31) throw new Error(`pod-deletion-cost ${cost} is not an int32`);
  const res = await kube.request("PATCH", `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`,
    { metadata: { annotations: { "controller.kubernetes.io/pod-deletion-cost": String(cost) } } }, { contentType: "application/merge-patch+json" });
  if (res.status !== 200) throw new Error(`patching pod ${pod} answered ${res.status}`);
}

/** The pod's ComfyUI container image id (digest): the discovery cache key. */
export async function podImageId(kube: KubeClient, ns: string, pod: string): Promise<string | undefined> {
  const res = await kube.request("GET", `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`);
  if (res.status !== 200) return undefined;
  const statuses: any[] = res.json.status?.containerStatuses ?? [];
  return (statuses.find((c) => c.name === "comfyui") ?? statuses[0])?.imageID || undefined;
}

/** Written by the GPU node's boot (karpenter/userdata/comfyui-models.sh): its kernel start, epoch seconds. */
export const BOOT_AT_LABEL = "comfyui.studio/boot-at";

/**
 * The node of a pod that just turned Ready, with the times a cold start is measured by: the pod's
 * Ready condition, the Node's creation (kubelet registered) and the node's boot-at label. Kubernetes
 * timestamps are RFC 3339 with second precision. Undefined when the pod or its node is gone.
 */
export async function podNodeStart(kube: KubeClient, ns: string, pod: string): Promise<NodeStart | undefined> {
  const p = await kube.request("GET", `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`);
  if (p.status !== 200) return undefined;
  const nodeName: string | undefined = p.json.spec?.nodeName;
  const ready = (p.json.status?.conditions ?? []).find((c: any) => c.type === "Ready" && c.status === "True");
  if (!nodeName || !ready?.lastTransitionTime) return undefined;
  const n = await kube.request("GET", `/api/v1/nodes/${encodeURIComponent(nodeName)}`);
  if (n.status !== 200) return undefined;
  const labels: Record<string, string> = n.json.metadata?.labels ?? {};
  const registeredAt = Date.parse(n.json.metadata?.creationTimestamp ?? "");
  const readyAt = Date.parse(ready.lastTransitionTime);
  if (!Number.isFinite(registeredAt) || !Number.isFinite(readyAt)) return undefined;
  const boot = /^\d{1,12}$/.test(labels[BOOT_AT_LABEL] ?? "") ? Number(labels[BOOT_AT_LABEL]) * 1000 : undefined;
  return {
    node: nodeName,
    instanceType: labels["node.kubernetes.io/instance-type"],
    capacityType: labels["karpenter.sh/capacity-type"],
    ...(boot !== undefined ? { bootAt: boot } : {}),
    registeredAt,
    readyAt,
  };
}

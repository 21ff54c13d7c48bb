/**
 * How many ComfyUI pods there should be, as a KEDA ScaledObject spec (pure data, validated in tests
 * against KEDA's schema). Three triggers, the largest wins:
 *  - the sum of `exec_info.queue_remaining` over the ComfyUI pods (metrics-api, aggregated over the
 *    comfyui-queue Service's endpoints) against a per-pod target — scale out on queues;
 *  - the waker's demand signal (1 while requests arrived recently and no GPU pod runs) — the only
 *    trigger that can wake from zero, since with zero ComfyUI pods the first one has no endpoint;
 *  - optionally a cron floor for working hours in the studio's time zone.
 */
export const KEDA_CHART = { chart: "keda", version: "2.20.2", repo: "https://kedacore.github.io/charts" } as const;

export interface AutoscalingArgs {
  namespace: string;
  deployment: string;
  minReplicas: number;
  maxReplicas: number;
  queuePerPod: number;
  idleMinutes: number;
  workingHours?: { start: string; end: string; timezone: string; replicas: number };
}

export function scaledObjectSpec(a: AutoscalingArgs): Record<string, unknown> {
  const svc = (name: string, port: number, p: string) => `http://${name}.${a.namespace}.svc.cluster.local:${port}${p}`;
  const triggers: Record<string, unknown>[] = [
    {
      type: "metrics-api",
      name: "comfyui-queue",
      metadata: {
        url: svc("comfyui-queue", 8848, "/prompt"),
        format: "json",
        valueLocation: "exec_info.queue_remaining",
        aggregateFromKubeServiceEndpoints: "true",
        aggregationType: "sum",
        targetValue: String(a.queuePerPod),
        activationTargetValue: "0",
      },
    },
    {
      type: "metrics-api",
      name: "waker-demand",
      metadata: {
        url: svc("comfyui-waker", 9090, "/demand"),
        format: "json",
        valueLocation: "demand",
        // Each waker replica only knows the requests it served: take the max over them.
        aggregateFromKubeServiceEndpoints: "true",
        aggregationType: "max",
        targetValue: "1",
        activationTargetValue: "0",
      },
    },
  ];
  if (a.workingHours) {
    triggers.push({
      type: "cron",
      name: "working-hours",
      metadata: { timezone: a.workingHours.timezone, start: a.workingHours.start, end: a.workingHours.end, desiredReplicas: String(a.workingHours.replicas) },
    });
  }
  const idle = a.idleMinutes * 60;
  return {
    scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: a.deployment },
    minReplicaCount: a.minReplicas,
    maxReplicaCount: a.maxReplicas,
    pollingInterval: 10,
    // Applies to the last step, 1 → 0: the idle period before the GPU goes away.
    cooldownPeriod: idle,
    advanced: {
      horizontalPodAutoscalerConfig: {
        behavior: {
          scaleUp: { stabilizationWindowSeconds: 0, policies: [{ type: "Pods", value: 2, periodSeconds: 30 }] },
          // Scale in slowly and one pod at a time; pod-deletion-cost picks the idle pod.
          scaleDown: { stabilizationWindowSeconds: Math.min(idle, 3600), policies: [{ type: "Pods", value: 1, periodSeconds: 120 }] },
        },
      },
    },
    triggers,
  };
}

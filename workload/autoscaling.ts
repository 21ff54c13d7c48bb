/**
 * How many ComfyUI pods there should be, as a KEDA ScaledObject spec (pure data, validated in tests
 * against KEDA's real CRD). The gateway's figure (prompts waiting + running, from its durable store)
 * drives it: it is 0 when idle and never an error, so the ScaledObject can wake ComfyUI from zero and
 * always returns to zero after the idle window — also when pods never became Ready (KEDA v2.20.2
 * pkg/scaling/executor/scale_scaledobjects.go takes its "trigger error, no fallback" branch before
 * scale-to-zero, which the per-pod queue trigger this replaces ran into with no Ready pod).
 * Optionally a cron floor keeps pods warm during working hours.
 */
import { gatewayScalingTrigger } from "./gatewayDeployment";


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
  // Each pod holds one running + one buffered prompt: queuePerPod prompts per pod before another starts.
  const triggers: Record<string, unknown>[] = [gatewayScalingTrigger(a.namespace, a.queuePerPod)];
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

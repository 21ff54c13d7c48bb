/**
 * Cluster add-ons installed from Helm charts (versions.ts pins them): the NVIDIA device plugin for the
 * GPU nodes, and KEDA, which scales ComfyUI on the gateway's figure. Each is a child of the Cluster.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { CHARTS } from "../versions";
import { SYSTEM_NODE_LABEL } from "./nodeLabels";

export function createDevicePlugin(name: string, parent: pulumi.Resource, provider: k8s.Provider, dependsOn: pulumi.Resource[]): k8s.helm.v3.Release {
  // The AL2023 NVIDIA AMI ships the driver and container toolkit, not the device plugin.
  return new k8s.helm.v3.Release(
    `${name}-nvidia-device-plugin`,
    {
      name: "nvidia-device-plugin",
      chart: CHARTS.nvidiaDevicePlugin.chart,
      version: CHARTS.nvidiaDevicePlugin.version,
      repositoryOpts: { repo: CHARTS.nvidiaDevicePlugin.repo },
      namespace: "kube-system",
      atomic: true,
      values: {
        // GPU nodes only: Karpenter's GPU NodePool sets this label (nodeadm sets it too from 1.35).
        nodeSelector: { "nvidia.com/gpu.present": "true" },
        // Overriding tolerations replaces the chart's list, so both defaults are kept explicitly.
        tolerations: [
          { key: "CriticalAddonsOnly", operator: "Exists" },
          { key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" },
        ],
        priorityClassName: "system-node-critical",
      },
    },
    { parent, provider, dependsOn },
  );
}

/**
 * KEDA on the system nodes. It was a child of ComfyWorkload (same name, `${name}-keda`) before it came
 * here with the other add-ons: the alias keeps the release in place instead of reinstalling it.
 */
export function createKeda(name: string, parent: pulumi.Resource, provider: k8s.Provider, dependsOn: pulumi.Resource[]): k8s.helm.v3.Release {
  return new k8s.helm.v3.Release(
    `${name}-keda`,
    {
      name: "keda",
      chart: CHARTS.keda.chart,
      version: CHARTS.keda.version,
      repositoryOpts: { repo: CHARTS.keda.repo },
      namespace: "keda",
      createNamespace: true,
      atomic: true,
      values: { nodeSelector: { ...SYSTEM_NODE_LABEL }, operator: { replicaCount: 1 }, metricsServer: { replicaCount: 2 } },
    },
    { parent, provider, dependsOn, aliases: [{ parent: pulumi.createUrn(name, "comfyui:workload:ComfyWorkload") }] },
  );
}

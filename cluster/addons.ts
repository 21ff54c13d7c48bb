/**
 * Cluster add-ons installed from Helm charts (versions.ts pins them): the AWS Load Balancer Controller,
 * which makes the gateway's ALB from its Ingress, the NVIDIA device plugin for the GPU nodes, and KEDA,
 * which scales ComfyUI on the gateway's figure. Each is a child of the Cluster.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { CHARTS } from "../versions";
import { PodIdentityRole } from "./iam";
import { lbcStatements } from "./lbcPolicy";
import { SYSTEM_NODE_LABEL } from "./nodeLabels";

/** A chart pinned in versions.ts as an atomic Helm release (a failed install or upgrade rolls back). */
function chartRelease(
  resourceName: string,
  chart: "lbController" | "nvidiaDevicePlugin" | "keda",
  release: { name: string; namespace: string; createNamespace?: boolean; values: Record<string, unknown> },
  opts: pulumi.CustomResourceOptions,
): k8s.helm.v3.Release {
  const c = CHARTS[chart];
  return new k8s.helm.v3.Release(
    resourceName,
    { ...release, chart: c.chart, version: c.version, repositoryOpts: { repo: c.repo }, atomic: true },
    opts,
  );
}

/** The AWS Load Balancer Controller on the system nodes, with its Pod Identity role (lbcPolicy.ts). */
export function createLoadBalancerController(
  name: string,
  parent: pulumi.Resource,
  provider: k8s.Provider,
  args: { clusterName: pulumi.Output<string>; region: string; vpcId: pulumi.Input<string>; accountId: pulumi.Input<string>; tags: Record<string, string> },
  dependsOn: pulumi.Resource[],
): k8s.helm.v3.Release {
  const role = new PodIdentityRole(
    `${name}-lbc`,
    {
      clusterName: args.clusterName,
      namespace: "kube-system",
      serviceAccount: "aws-load-balancer-controller",
      statements: lbcStatements(args.clusterName, args.region, args.accountId),
      tags: args.tags,
    },
    { parent },
  );
  return chartRelease(
    `${name}-lbc`,
    "lbController",
    {
      name: "aws-load-balancer-controller",
      namespace: "kube-system",
      values: {
        clusterName: args.clusterName,
        region: args.region,
        vpcId: args.vpcId,
        replicaCount: 2,
        serviceAccount: { create: true, name: "aws-load-balancer-controller" },
        nodeSelector: { ...SYSTEM_NODE_LABEL },
        // Only Ingresses of class alb are ours; leave other LoadBalancer Services alone.
        enableServiceMutatorWebhook: false,
        // Integrations this stack does not use: off, so the role needs no WAF/Shield permissions.
        enableShield: false,
        enableWaf: false,
        enableWafv2: false,
      },
    },
    { parent, provider, dependsOn: [role, ...dependsOn] },
  );
}

export function createDevicePlugin(name: string, parent: pulumi.Resource, provider: k8s.Provider, dependsOn: pulumi.Resource[]): k8s.helm.v3.Release {
  // The AL2023 NVIDIA AMI ships the driver and container toolkit, not the device plugin.
  return chartRelease(
    `${name}-nvidia-device-plugin`,
    "nvidiaDevicePlugin",
    {
      name: "nvidia-device-plugin",
      namespace: "kube-system",
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
  return chartRelease(
    `${name}-keda`,
    "keda",
    {
      name: "keda",
      namespace: "keda",
      createNamespace: true,
      values: { nodeSelector: { ...SYSTEM_NODE_LABEL }, operator: { replicaCount: 1 }, metricsServer: { replicaCount: 2 } },
    },
    { parent, provider, dependsOn, aliases: [{ parent: pulumi.createUrn(name, "comfyui:workload:ComfyWorkload") }] },
  );
}

/**
 * The Karpenter controller: its Pod Identity role (upstream's statements, scoped to this cluster) and
 * the two pinned Helm releases, CRDs and controller, on the system nodes.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { SYSTEM_NODE_LABEL } from "../cluster";
import { PodIdentityRole, policyJson } from "../cluster/iam";
import { CHARTS } from "../versions";
import { controllerStatements, scopedControllerStatements } from "./iam";
import type { Interruption } from "./interruption";
import { type GpuCapacityArgs, KARPENTER_NAMESPACE, KARPENTER_SERVICE_ACCOUNT } from "./validate";

export interface Controller {
  role: PodIdentityRole;
  release: k8s.helm.v3.Release;
}

export function createController(name: string, parent: pulumi.Resource, args: GpuCapacityArgs, interruption: Interruption, nodeRole: aws.iam.Role, tags: Record<string, string>): Controller {
  const role = new PodIdentityRole(
    `${name}-controller`,
    {
      clusterName: args.clusterName,
      namespace: KARPENTER_NAMESPACE,
      serviceAccount: KARPENTER_SERVICE_ACCOUNT,
      statements: controllerStatements({
        clusterName: args.clusterName,
        region: args.region,
        accountId: args.accountId,
        interruptionQueueArn: interruption.queue.arn,
        nodeRoleArn: nodeRole.arn,
      }),
      tags,
    },
    { parent },
  );
  // Condition keys embed the cluster name, and a key cannot be an Output: this document is
  // rendered once the name is known, as its own inline policy on the same role.
  const scoped = new aws.iam.RolePolicy(
    `${name}-controller-scoped`,
    {
      role: role.role.name,
      policy: pulumi
        .all([args.clusterName, args.accountId])
        .apply(([clusterName, accountId]) => policyJson(scopedControllerStatements({ clusterName, region: args.region, accountId }))),
    },
    { parent },
  );

  const releaseDeps = [role, scoped, ...args.dependsOn];
  const crds = new k8s.helm.v3.Release(
    `${name}-karpenter-crd`,
    { name: "karpenter-crd", chart: CHARTS.karpenterCrd.chart, version: CHARTS.karpenterCrd.version, namespace: KARPENTER_NAMESPACE, atomic: true },
    { parent, provider: args.provider, dependsOn: releaseDeps },
  );
  const release = new k8s.helm.v3.Release(
    `${name}-karpenter`,
    {
      name: "karpenter",
      chart: CHARTS.karpenter.chart,
      version: CHARTS.karpenter.version,
      namespace: KARPENTER_NAMESPACE,
      atomic: true,
      // The karpenter-crd release owns the CRDs, so Helm upgrades them (it never upgrades crds/).
      skipCrds: true,
      values: {
        settings: {
          clusterName: args.clusterName,
          interruptionQueue: interruption.queue.name,
          ...(args.clusterEndpoint !== undefined ? { clusterEndpoint: args.clusterEndpoint } : {}),
        },
        serviceAccount: { create: true, name: KARPENTER_SERVICE_ACCOUNT },
        replicas: 2,
        // On the system nodes, so the GPU pool can scale to zero without taking its own controller.
        nodeSelector: { ...SYSTEM_NODE_LABEL },
        controller: {
          // Karpenter asks IMDS for the region when the SDK has none (pkg/operator/operator.go at v1.14.1),
          // and the system nodes' hop limit of 1 keeps IMDS from pods (cluster/index.ts): so it is told.
          env: [{ name: "AWS_REGION", value: args.region }],
          resources: {
            requests: { cpu: "250m", memory: "512Mi" },
            limits: { memory: "1Gi" },
          },
        },
      },
    },
    { parent, provider: args.provider, dependsOn: [crds, ...releaseDeps, interruption.queuePolicy] },
  );
  return { role, release };
}

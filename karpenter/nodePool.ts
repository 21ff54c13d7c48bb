/**
 * The GPU pool: one EC2NodeClass (the pinned AL2023 NVIDIA AMI, IMDSv2 with hop limit 1, an encrypted
 * root volume, the NVMe instance store as RAID0 and the rendered user data) and one NodePool (the
 * configured types and capacity, the GPU cap, consolidation only when empty).
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { GPU_POOL_LABEL, GPU_TAINT } from "../contracts/node";
import { resolveNvidiaAmi } from "./preflight";
import { renderGpuUserData } from "./userdata/gpuUserData";
import { DEFAULT_RESERVE_GB, type GpuCapacityArgs, GPU_NODE_CLASS_NAME, GPU_NODE_POOL_NAME, userDataArgs } from "./validate";

/** What the pool waits for: the controller that reads it, the node role and what nodes need first. */
export interface NodePoolDeps {
  controller: pulumi.Resource;
  nodeRole: aws.iam.Role;
  nodeReady: pulumi.Resource[];
}

export function createGpuNodePool(name: string, parent: pulumi.Resource, args: GpuCapacityArgs, deps: NodePoolDeps, tags: Record<string, string>): void {
  const userData = pulumi
    .all([args.modelsBucket, args.nodeToolsBucket, args.reserveGb ?? DEFAULT_RESERVE_GB, args.imageParameter, args.metricsLogGroupName, args.clusterName])
    .apply(([modelsBucket, toolsBucket, reserveGb, imageParameter, metricsLogGroupName, clusterName]) =>
      renderGpuUserData({
        ...userDataArgs(args),
        modelsBucket,
        toolsBucket,
        reserveGb,
        imageParameter,
        bootMetrics: metricsLogGroupName !== undefined ? { logGroupName: metricsLogGroupName, clusterName } : undefined,
      }),
    );
  // Fails the preview, naming the SSM parameter, when the pinned release has no NVIDIA image for
  // this Kubernetes version; the id is recorded on the EC2NodeClass for operators.
  const amiId = resolveNvidiaAmi(args.kubernetesVersion, args.amiAlias, { parent });

  const nodeClass = new k8s.apiextensions.CustomResource(
    `${name}-nodeclass`,
    {
      apiVersion: "karpenter.k8s.aws/v1",
      kind: "EC2NodeClass",
      metadata: { name: GPU_NODE_CLASS_NAME, annotations: { "comfyui.studio/nvidia-ami-id": amiId } },
      spec: {
        // No amiFamily: the alias names the family and pins the release.
        amiSelectorTerms: [{ alias: args.amiAlias }],
        role: deps.nodeRole.name,
        subnetSelectorTerms: [{ tags: { "karpenter.sh/discovery": args.clusterName } }],
        securityGroupSelectorTerms: [{ id: args.clusterSecurityGroupId }],
        // Hop limit 1 keeps pods (one hop further) from reaching the node role's credentials.
        metadataOptions: { httpEndpoint: "enabled", httpProtocolIPv6: "disabled", httpPutResponseHopLimit: 1, httpTokens: "required" },
        blockDeviceMappings: [
          {
            deviceName: "/dev/xvda",
            rootVolume: true,
            ebs: { volumeSize: `${args.rootVolumeGiB}Gi`, volumeType: "gp3", encrypted: true, deleteOnTermination: true },
          },
        ],
        // Models, images and emptyDirs go to the NVMe array (NODE_MODELS_DIR lives on it).
        instanceStorePolicy: "RAID0",
        userData,
        tags: { ...tags },
      },
    },
    { parent, provider: args.provider, dependsOn: [deps.controller, ...deps.nodeReady] },
  );

  new k8s.apiextensions.CustomResource(
    `${name}-nodepool`,
    {
      apiVersion: "karpenter.sh/v1",
      kind: "NodePool",
      metadata: { name: GPU_NODE_POOL_NAME },
      spec: {
        template: {
          metadata: {
            // Below Kubernetes 1.35 nodeadm does not set gpu.present; the device plugin selects on it.
            labels: { ...GPU_POOL_LABEL, "nvidia.com/gpu.present": "true" },
          },
          spec: {
            nodeClassRef: { group: "karpenter.k8s.aws", kind: "EC2NodeClass", name: GPU_NODE_CLASS_NAME },
            taints: [{ ...GPU_TAINT }],
            requirements: [
              { key: "node.kubernetes.io/instance-type", operator: "In", values: [...args.instanceTypes] },
              { key: "karpenter.sh/capacity-type", operator: "In", values: [...args.capacityTypes] },
              // Models live on instance-store NVMe; a type without it could not hold them.
              { key: "karpenter.k8s.aws/instance-local-nvme", operator: "Gt", values: ["100"] },
              { key: "kubernetes.io/arch", operator: "In", values: ["amd64"] },
              { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
            ],
            expireAfter: args.expireAfter,
          },
        },
        limits: { "nvidia.com/gpu": String(args.gpuLimit) },
        disruption: {
          // WhenEmpty: a node running a ComfyUI job is never consolidated away mid-render.
          consolidationPolicy: "WhenEmpty",
          consolidateAfter: args.consolidateAfter,
          budgets: [{ nodes: "10%" }],
        },
        ...(args.weight !== undefined ? { weight: args.weight } : {}),
      },
    },
    { parent, provider: args.provider, dependsOn: [deps.controller, nodeClass] },
  );
}

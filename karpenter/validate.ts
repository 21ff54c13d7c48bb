/**
 * GpuCapacity's arguments, names and checks: everything the component's functions share, and the
 * validation that runs before anything is created (one preview shows every problem).
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { modelsReserveGb } from "../contracts/node";
import { amiAliasProblem, durationProblem, gpuInstanceTypeProblem } from "./rules";
import { GpuUserDataArgs, UserDataArgError, renderGpuUserData } from "./userdata/gpuUserData";

/** Namespace and service account of the controller; the Pod Identity association names both. */
export const KARPENTER_NAMESPACE = "kube-system";
export const KARPENTER_SERVICE_ACCOUNT = "karpenter";

/** Cluster-scoped Karpenter objects; the sync Lambda finds nodes by the `karpenter.sh/nodepool` tag. */
export const GPU_NODE_POOL_NAME = "comfyui-gpu";
export const GPU_NODE_CLASS_NAME = "comfyui-gpu";

/** Tags Karpenter sets itself and rejects in `spec.tags` (EC2NodeClass validation). */
const RESTRICTED_TAG = /^(kubernetes\.io\/cluster\/|karpenter\.sh\/nodepool$|karpenter\.sh\/nodeclaim$|karpenter\.k8s\.aws\/ec2nodeclass$|eks:eks-cluster-name$)/;

export interface GpuCapacityArgs {
  /** EKS cluster name: Karpenter's `settings.clusterName`, the discovery tag value and the IAM scope. */
  clusterName: pulumi.Input<string>;
  /** API server endpoint. @defaultValue unset: Karpenter looks it up with eks:DescribeCluster. */
  clusterEndpoint?: pulumi.Input<string>;
  /** AWS region of the cluster (plain: it is part of ARNs and of the rendered user data). */
  region: string;
  /** The cluster's Kubernetes version: the AMI alias is resolved (and checked) for it. */
  kubernetesVersion: string;
  /**
   * The most vCPUs one GPU costs among the instance types (vCPUs ÷ GPUs, from EC2's data), so
   * `gpuLimit` GPUs translate into the EC2 vCPU quota they need. @defaultValue unset: not checked
   */
  vcpusPerGpu?: pulumi.Input<number>;
  /** AWS account id, for ARNs in the controller policy. */
  accountId: pulumi.Input<string>;
  /** The EKS-managed cluster security group; GPU nodes join it like the system nodes. */
  clusterSecurityGroupId: pulumi.Input<string>;
  /** Name of the models bucket the nodes fill from. */
  modelsBucket: pulumi.Input<string>;
  /** ARN of the models bucket; the node role may only list it and read its objects. */
  modelsBucketArn: pulumi.Input<string>;
  /** EC2 instance types of the GPU NodePool (each must have local NVMe). No default. */
  instanceTypes: string[];
  /** Capacity types Karpenter may buy. No default. */
  capacityTypes: ("spot" | "on-demand")[];
  /** Upper bound of `nvidia.com/gpu` over all nodes of the pool: the cost cap. Positive integer. */
  gpuLimit: number;
  /** Pinned AMI alias such as `al2023@v20260724`. `@latest` is rejected: it would drift every node. */
  amiAlias: string;
  /** How long an empty GPU node is kept before Karpenter removes it, e.g. "5m". */
  consolidateAfter: string;
  /** Maximum node lifetime, e.g. "168h", or "Never". */
  expireAfter: string;
  /** Root EBS volume (gp3, encrypted) in GiB; images and models live on NVMe. */
  rootVolumeGiB: number;
  /**
   * The pinned models (files, folders ending in `/`), copied before a node registers, most important
   * first; the model agent keeps them too. [] = none.
   */
  pins: string[];
  /** Time budget of the pinned copy in seconds (at most 720: Karpenter's registration timeout is 15 min). */
  bootFillSeconds: number;
  /** Files copied in parallel by the pinned copy. */
  parallelTransfers: number;
  /**
   * GB of each node's NVMe array that models never use, beyond kubelet's 10% eviction line: the same
   * figure the model agent gets (contracts/node.ts modelsReserveGb of the most GPUs of a pool type).
   * @defaultValue modelsReserveGb(8)
   */
  reserveGb?: pulumi.Input<number>;
  /** Private bucket GPU nodes fetch their node tool from at boot (Storage.nodeToolsBucket). */
  nodeToolsBucket: pulumi.Input<string>;
  /** Its ARN; the node role may read exactly the one tool object in it. */
  nodeToolsBucketArn: pulumi.Input<string>;
  /** nodeadm's FastImagePull feature gate (parallel pull and unpack with soci). @defaultValue true */
  fastImagePull?: boolean;
  /**
   * Name of the SSM parameter holding the ComfyUI image by digest (`<registry>/<repo>@sha256:...`);
   * each node pulls it during the model fill. The node role needs ssm:GetParameter on it.
   * @defaultValue unset: no pre-pull
   */
  imageParameter?: pulumi.Input<string>;
  /**
   * The cluster's metrics log group (contracts/metrics.ts metricsLogGroupName): each GPU node
   * sends its boot summary there as one EMF event, stream `node-boot/<instance id>`. Give it with
   * `metricsLogGroupArn`. @defaultValue unset: no boot metrics, no grant
   */
  metricsLogGroupName?: pulumi.Input<string>;
  /** That log group's ARN (aws.cloudwatch.LogGroup.arn, without ":*"); the node role may write only its node-boot/ streams. */
  metricsLogGroupArn?: pulumi.Input<string>;
  /** NodePool weight among NodePools. @defaultValue unset (Karpenter treats it as 0) */
  weight?: number;
  /** The cluster's Kubernetes provider; every Kubernetes object and Helm release uses it. */
  provider: k8s.Provider;
  /** What must exist before the controller is installed (system nodes, CoreDNS, Pod Identity agent). */
  dependsOn: pulumi.Resource[];
  /** Tags for every AWS resource and for the instances Karpenter launches. @defaultValue {} */
  tags?: Record<string, string>;
}

/** Without a figure from the pool's types: the reserve of the largest GPU instances (8 GPUs). */
export const DEFAULT_RESERVE_GB = modelsReserveGb(8);

interface Problem {
  propertyPath: string;
  reason: string;
}

/** The user-data renderer's fields, as this component's arguments. */
const USER_DATA_FIELDS: Partial<Record<UserDataArgError["field"], string>> = {
  pins: "pins",
  parallel: "parallelTransfers",
  bootFillSeconds: "bootFillSeconds",
  reserveGb: "reserveGb",
  imageParameter: "imageParameter",
  region: "region",
  "bootMetrics.logGroupName": "metricsLogGroupName",
  "bootMetrics.clusterName": "clusterName",
};

function userDataProblem(err: unknown): Problem {
  if (err instanceof UserDataArgError) return { propertyPath: USER_DATA_FIELDS[err.field] ?? "userData", reason: err.message };
  return { propertyPath: "userData", reason: err instanceof Error ? err.message : String(err) };
}

/** Every problem with the plain arguments, so one preview shows them all. */
export function validateGpuCapacityArgs(args: GpuCapacityArgs): Problem[] {
  const problems: Problem[] = [];
  const bad = (propertyPath: string, reason: string) => problems.push({ propertyPath, reason });
  const alias = amiAliasProblem(args.amiAlias);
  if (alias) bad("amiAlias", alias);
  if (args.instanceTypes.length === 0) bad("instanceTypes", "must list at least one EC2 instance type like g6.xlarge");
  for (const t of args.instanceTypes) {
    const problem = gpuInstanceTypeProblem(t);
    if (problem) bad("instanceTypes", problem);
  }
  if (args.capacityTypes.length === 0 || args.capacityTypes.some((c) => c !== "spot" && c !== "on-demand")) {
    bad("capacityTypes", `must list "spot" and/or "on-demand"`);
  }
  if (!Number.isInteger(args.gpuLimit) || args.gpuLimit < 1) bad("gpuLimit", `must be a positive integer, got ${args.gpuLimit}`);
  const consolidate = durationProblem(args.consolidateAfter, { never: false, example: "5m" });
  if (consolidate) bad("consolidateAfter", consolidate);
  const expire = durationProblem(args.expireAfter, { never: true, example: "168h" });
  if (expire) bad("expireAfter", expire);
  if (!Number.isInteger(args.rootVolumeGiB) || args.rootVolumeGiB < 20 || args.rootVolumeGiB > 16384) {
    bad("rootVolumeGiB", `must be an integer in [20, 16384], got ${args.rootVolumeGiB}`);
  }
  if (args.weight !== undefined && (!Number.isInteger(args.weight) || args.weight < 1 || args.weight > 100)) {
    bad("weight", `must be an integer in [1, 100], got ${args.weight}`);
  }
  if ((args.metricsLogGroupName === undefined) !== (args.metricsLogGroupArn === undefined)) {
    bad(args.metricsLogGroupName === undefined ? "metricsLogGroupName" : "metricsLogGroupArn", "metricsLogGroupName and metricsLogGroupArn go together: the nodes write to the group the grant names");
  }
  for (const key of Object.keys(args.tags ?? {})) {
    if (RESTRICTED_TAG.test(key)) bad(`tags.${key}`, "is set by Karpenter itself and rejected in an EC2NodeClass");
  }
  try {
    // The bucket name is an Output; a placeholder lets the rest be checked before anything exists.
    // The reserve may be an Output; its own check runs at render.
    const reserveGb = typeof args.reserveGb === "number" ? args.reserveGb : DEFAULT_RESERVE_GB;
    renderGpuUserData({ ...userDataArgs(args), modelsBucket: "placeholder-bucket", toolsBucket: "placeholder-bucket", reserveGb });
  } catch (err) {
    problems.push(userDataProblem(err));
  }
  return problems;
}

/** The user-data arguments that come straight from this component's plain arguments. */
export function userDataArgs(args: GpuCapacityArgs): Omit<GpuUserDataArgs, "modelsBucket" | "toolsBucket" | "reserveGb"> {
  return { region: args.region, pins: args.pins, parallel: args.parallelTransfers, bootFillSeconds: args.bootFillSeconds, fastImagePull: args.fastImagePull };
}

export function throwProblems(problems: Problem[]): void {
  if (problems.length === 1) throw new pulumi.InputPropertyError(problems[0]);
  if (problems.length > 1) {
    throw new pulumi.InputPropertiesError({
      message: `invalid GpuCapacity arguments: ${problems.map((p) => `${p.propertyPath}: ${p.reason}`).join("; ")}`,
      errors: problems,
    });
  }
}

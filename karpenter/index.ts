/**
 * GPU capacity on demand: Karpenter (CRDs and controller, Pod Identity, interruption queue) and
 * one GPU NodePool whose nodes boot from a pinned AL2023 NVIDIA AMI, build a RAID0 array over their
 * NVMe instance store for the model cache and copy the pinned models before they register (see
 * userdata/); the model agent (workload/modelsAgent.ts) keeps that cache afterwards.
 */
import * as pulumi from "@pulumi/pulumi";
import { createController } from "./controller";
import { quotaFamily } from "./gpuTypes";
import { createInterruption } from "./interruption";
import { createNodeIdentity } from "./nodeIdentity";
import { createGpuNodePool } from "./nodePool";
import { checkGpuQuotas } from "./preflight";
import { GPU_NODE_CLASS_NAME, GPU_NODE_POOL_NAME, type GpuCapacityArgs, throwProblems, validateGpuCapacityArgs } from "./validate";

export { nvidiaAmiParameter, quotaWarning, GPU_VCPU_QUOTAS } from "./preflight";
export * from "./gpuTypes";
export * from "./nodeDaemonSets";
export { GPU_NODE_CLASS_NAME, GPU_NODE_POOL_NAME, KARPENTER_NAMESPACE, KARPENTER_SERVICE_ACCOUNT, validateGpuCapacityArgs } from "./validate";
export type { GpuCapacityArgs } from "./validate";

/** The vCPU quota families (G and VT, or P) the configured types count against. */
function quotaFamilies(types: readonly string[]): ("g" | "p")[] {
  return [...new Set(types.map(quotaFamily))];
}

/**
 * Karpenter and one GPU NodePool, in pulumi-eks's shape: the constructor validates its arguments and
 * calls one function per part (interruption.ts, nodeIdentity.ts, controller.ts, nodePool.ts), each
 * creating its resources as children of this component under the names they always had.
 */
export class GpuCapacity extends pulumi.ComponentResource {
  /** NodePools whose nodes hold models (the sync Lambda targets their instances). */
  readonly nodePoolNames: string[];
  readonly nodeClassName: string;
  readonly nodeRoleArn: pulumi.Output<string>;
  readonly nodeRoleName: pulumi.Output<string>;
  readonly interruptionQueueName: pulumi.Output<string>;
  readonly controllerRoleArn: pulumi.Output<string>;
  /** EventBridge rule names of the interruption queue's feeds (spot-interruption, rebalance, …), for metrics. */
  readonly interruptionRuleNames: Record<string, pulumi.Output<string>>;
  /** What the EC2 vCPU quota check found (empty when the quotas cover gpuLimit). */
  readonly quotaWarnings: pulumi.Output<string[]>;

  constructor(name: string, args: GpuCapacityArgs, opts?: pulumi.ComponentResourceOptions) {
    throwProblems(validateGpuCapacityArgs(args));
    super("comfyui:karpenter:GpuCapacity", name, {}, opts);
    const tags = args.tags ?? {};

    const interruption = createInterruption(name, this, tags);
    const node = createNodeIdentity(name, this, args, tags);
    const controller = createController(name, this, args, interruption, node.role, tags);
    const quotaWarnings =
      args.vcpusPerGpu !== undefined
        ? pulumi
            .output(args.vcpusPerGpu)
            .apply((v) => checkGpuQuotas(args.capacityTypes, quotaFamilies(args.instanceTypes), Math.ceil(args.gpuLimit * v), args.region, { parent: this }))
        : pulumi.output<string[]>([]);
    createGpuNodePool(name, this, args, { controller: controller.release, nodeRole: node.role, nodeReady: node.ready }, tags);

    this.quotaWarnings = quotaWarnings;
    this.interruptionRuleNames = interruption.ruleNames;
    this.nodePoolNames = [GPU_NODE_POOL_NAME];
    this.nodeClassName = GPU_NODE_CLASS_NAME;
    this.nodeRoleArn = node.role.arn;
    this.nodeRoleName = node.role.name;
    this.interruptionQueueName = interruption.queue.name;
    this.controllerRoleArn = controller.role.roleArn;
    this.registerOutputs({
      nodePoolNames: this.nodePoolNames,
      nodeClassName: this.nodeClassName,
      nodeRoleArn: this.nodeRoleArn,
      nodeRoleName: this.nodeRoleName,
      interruptionQueueName: this.interruptionQueueName,
      controllerRoleArn: this.controllerRoleArn,
      quotaWarnings: this.quotaWarnings,
    });
  }
}

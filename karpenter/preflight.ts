/**
 * Checks that run at `pulumi preview`, before anything is created, for things that would otherwise
 * fail only later and silently: Karpenter never finding the pinned AMI, or EC2 refusing every GPU
 * launch because the account's vCPU quota is too low (a new account's G and VT Spot quota is 0).
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/**
 * The SSM parameter Karpenter reads for an `al2023@<release>` alias on NVIDIA instance types
 * (aws/karpenter-provider-aws v1.14.1, pkg/providers/amifamily/al2023.go resolvePath: the alias's
 * version, with its leading v, goes into the name as is).
 */
export function nvidiaAmiParameter(kubernetesVersion: string, amiAlias: string): string {
  const release = amiAlias.split("@")[1];
  return `/aws/service/eks/optimized-ami/${kubernetesVersion}/amazon-linux-2023/x86_64/nvidia/amazon-eks-node-al2023-x86_64-nvidia-${kubernetesVersion}-${release}/image_id`;
}

/**
 * Resolves the NVIDIA AL2023 image of the pinned release for the cluster's Kubernetes version, or
 * fails the preview naming the parameter. Karpenter itself would only log "failed to discover any
 * AMIs for alias" and never launch a GPU node.
 */
export function resolveNvidiaAmi(kubernetesVersion: string, amiAlias: string, opts: pulumi.InvokeOptions): pulumi.Output<string> {
  const name = nvidiaAmiParameter(kubernetesVersion, amiAlias);
  return pulumi.output(
    aws.ssm.getParameter({ name }, opts).then(
      (p) => p.value,
      (err: unknown) => {
        throw new Error(
          `gpuAmiAlias ${amiAlias} has no NVIDIA AL2023 image for Kubernetes ${kubernetesVersion}: SSM parameter ${name} ` +
            `could not be read (${err instanceof Error ? err.message : String(err)}); pin a release built for ${kubernetesVersion}`,
        );
      },
    ),
  );
}

/**
 * EC2 vCPU quotas that cap GPU launches (Service Quotas, service code ec2), by family and capacity
 * type: G and VT instances, and P instances (p4d, p5 …), each on-demand and spot.
 */
export const GPU_VCPU_QUOTAS = {
  g: {
    "on-demand": { code: "L-DB2E81BA", name: "Running On-Demand G and VT instances" },
    spot: { code: "L-3819A6DF", name: "All G and VT Spot Instance Requests" },
  },
  p: {
    "on-demand": { code: "L-417A185B", name: "Running On-Demand P instances" },
    spot: { code: "L-7212CCBC", name: "All P Spot Instance Requests" },
  },
} as const;

type Capacity = "on-demand" | "spot";

/** The console page where a quota increase is requested. */
export function quotaConsoleUrl(region: string, code: string): string {
  return `https://${region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/${code}`;
}

/**
 * What to tell the operator about one quota: undefined when it covers `neededVcpus`. Pure, so the
 * wording and the arithmetic are tested without AWS.
 */
export function quotaWarning(q: { code: string; name: string }, capacity: Capacity, quotaVcpus: number, neededVcpus: number, region: string): string | undefined {
  if (quotaVcpus >= neededVcpus) return undefined;
  return (
    `EC2 quota "${q.name}" (${q.code}) in ${region} is ${quotaVcpus} vCPUs, but gpuLimit needs ${neededVcpus}: ` +
    `${capacity} GPU nodes ${quotaVcpus === 0 ? "cannot launch at all" : "will stop launching early"}. ` +
    `Request an increase: ${quotaConsoleUrl(region, q.code)}`
  );
}

/**
 * Reads the quotas for the capacity types in use and warns (never fails: the quota can be raised
 * after the deploy, and reading it may be denied to the deployer) when one is below what
 * `gpuLimit` GPUs need. Resolves to the warnings, so a component can wait for it.
 */
export function checkGpuQuotas(
  capacityTypes: readonly Capacity[],
  families: readonly (keyof typeof GPU_VCPU_QUOTAS)[],
  neededVcpus: number,
  region: string,
  opts: pulumi.InvokeOptions,
): pulumi.Output<string[]> {
  const quotas = families.flatMap((f) => capacityTypes.map((capacity) => ({ capacity, q: GPU_VCPU_QUOTAS[f][capacity] })));
  const checks = quotas.map(({ capacity, q }) =>
    aws.servicequotas.getServiceQuota({ serviceCode: "ec2", quotaCode: q.code }, opts).then(
      (found) => quotaWarning(q, capacity, found.value, neededVcpus, region),
      (err: unknown) =>
        `could not read EC2 quota ${q.code} (${err instanceof Error ? err.message : String(err)}); ` +
        `check it before generating: ${quotaConsoleUrl(region, q.code)}`,
    ),
  );
  return pulumi.output(
    Promise.all(checks).then((found) => {
      const warnings = found.filter((w): w is string => w !== undefined);
      for (const w of warnings) void pulumi.log.warn(w);
      return warnings;
    }),
  );
}

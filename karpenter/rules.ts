/**
 * The GPU pool's value rules, once: the stack's config (config.ts) and the component (karpenter/index.ts)
 * both check with these, so a value one accepts the other cannot refuse. Each returns the reason a value
 * is refused, or undefined.
 */
import { GPU_AMI_ALIAS } from "../versions";

/**
 * Karpenter's duration format: the NodePool CRD's pattern `^([0-9]+(s|m|h))+$` for consolidateAfter and
 * expireAfter (test/upstream/crds/karpenter.sh_nodepools.yaml at v1.14.1), "Never" where the field allows it.
 */
export function durationProblem(value: string, opts: { never: boolean; example: string }): string | undefined {
  if (opts.never && value === "Never") return undefined;
  return /^([0-9]+(s|m|h))+$/.test(value) ? undefined : `must be a duration like ${opts.example}${opts.never ? " or Never" : ""}, got "${value}"`;
}

/**
 * An AL2023 AMI alias pinned to a release: `al2023@v20260724` (EKS AMI release tags are vYYYYMMDD, with a
 * `-N` suffix on a re-release). Only AL2023 because the GPU user data is nodeadm MIME, which only AL2023
 * reads; never `@latest`, which the EC2NodeClass CRD allows but which drifts every node whenever AWS ships
 * an AMI (its alias description at v1.14.1).
 */
export function amiAliasProblem(alias: string): string | undefined {
  if (/@latest$/i.test(alias)) return `"${alias}" is not pinned: @latest drifts every GPU node whenever AWS ships an AMI; use a release like ${GPU_AMI_ALIAS}`;
  if (!/^al2023@v\d{8}(-\d+)?$/.test(alias)) return `"${alias}" must be an AL2023 release alias like ${GPU_AMI_ALIAS} (the GPU user data is nodeadm MIME, which only AL2023 reads)`;
  return undefined;
}

const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;
/** Accelerated-computing families (G, VT, P) are for GPU work, never for the system nodes. */
const GPU_FAMILY = /^(g\d|gr\d|p\d|vt\d)/;

/**
 * An EC2 instance type name such as g6e.4xlarge. Only the form: what a GPU type has (NVIDIA GPUs, NVMe,
 * offered in the zones) is EC2's own data, read at preview (karpenter/gpuTypes.ts).
 */
export function gpuInstanceTypeProblem(type: string): string | undefined {
  return INSTANCE_TYPE.test(type) ? undefined : `"${type}" is not an EC2 instance type name like g6e.4xlarge`;
}

/** The system nodes' type: an instance type name outside the GPU families (they run controllers only). */
export function systemInstanceTypeProblem(type: string): string | undefined {
  if (!INSTANCE_TYPE.test(type)) return `"${type}" is not an EC2 instance type`;
  if (GPU_FAMILY.test(type)) return `"${type}" is a GPU type; system nodes run controllers only`;
  return undefined;
}

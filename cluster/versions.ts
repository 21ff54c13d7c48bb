/**
 * Which EKS Kubernetes versions this stack may run, and what each costs. One dated table, with its
 * sources, so that a version leaving standard support (the control plane then bills extended
 * support: $0.60/h instead of $0.10/h, ≈ $365 more a month) is a warning at preview, and one past
 * extended support is refused before anything is created.
 */

/** When the table below was last checked against its sources. */
export const EKS_SUPPORT_TABLE_DATE = "2026-12-01";

/**
 * End of standard and of extended support per minor version (UTC dates), from the Amazon EKS user
 * guide "Understand the Kubernetes version lifecycle on EKS" release calendar
 * (docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html), cross-checked with
 * endoflife.date/amazon-eks (1.35 released 2026-01-28). Standard support lasts 14 months from the
 * EKS release, extended support 12 more.
 */
export const EKS_SUPPORT: Readonly<Record<string, { standardEnd: string; extendedEnd: string }>> = {
  "1.30": { standardEnd: "2025-07-23", extendedEnd: "2026-07-23" },
  "1.31": { standardEnd: "2025-11-26", extendedEnd: "2026-11-26" },
  "1.32": { standardEnd: "2026-03-23", extendedEnd: "2027-03-23" },
  "1.33": { standardEnd: "2026-07-29", extendedEnd: "2027-07-29" },
  "1.34": { standardEnd: "2026-12-02", extendedEnd: "2027-12-02" },
  "1.35": { standardEnd: "2027-03-27", extendedEnd: "2028-03-27" },
};

/**
 * The Kubernetes versions each pinned component supports; the stack runs only where all overlap.
 * - Karpenter 1.14.x: 1.26–1.36 (aws/karpenter-provider-aws v1.14.1, hack/docs/compatibilitymatrix_gen/compatibility.yaml)
 * - KEDA 2.20: tested on 1.33–1.35 (keda.sh/docs/2.20/operate/cluster, compatibility matrix)
 * - AMI release v20260724: builds 1.30–1.36 (awslabs/amazon-eks-ami CHANGELOG at v20260724, AMI details)
 */
export const COMPONENT_KUBERNETES_RANGE: readonly { component: string; min: string; max: string }[] = [
  { component: "Karpenter 1.14.1", min: "1.26", max: "1.36" },
  { component: "KEDA 2.20.2", min: "1.33", max: "1.35" },
  { component: "AMI release v20260724", min: "1.30", max: "1.36" },
];

/** The newest version that every pinned component supports: the default. */
export const DEFAULT_KUBERNETES_VERSION = "1.35";

const DAY_MS = 24 * 3600 * 1000;
const minor = (v: string) => Number(v.split(".")[1]);

export interface VersionVerdict {
  /** Why the version cannot be used (undefined: it can). */
  error?: string;
  /** Something the operator must know (extended-support billing, an end date close by). */
  warning?: string;
}

/** Judges a `1.NN` version on `today` against the support table and the components' ranges. */
export function judgeKubernetesVersion(version: string, today: Date): VersionVerdict {
  for (const r of COMPONENT_KUBERNETES_RANGE) {
    if (minor(version) < minor(r.min) || minor(version) > minor(r.max)) {
      return { error: `${version} is not supported by ${r.component} (${r.min}–${r.max}); use ${DEFAULT_KUBERNETES_VERSION}` };
    }
  }
  const dates = EKS_SUPPORT[version];
  if (!dates) {
    return { error: `${version} has no EKS support dates in cluster/versions.ts (table of ${EKS_SUPPORT_TABLE_DATE}); use ${DEFAULT_KUBERNETES_VERSION}` };
  }
  const standardEnd = Date.parse(`${dates.standardEnd}T00:00:00Z`);
  const extendedEnd = Date.parse(`${dates.extendedEnd}T00:00:00Z`);
  const now = today.getTime();
  if (now >= extendedEnd) {
    return { error: `EKS ${version} left extended support on ${dates.extendedEnd}: EKS upgrades such clusters itself; use ${DEFAULT_KUBERNETES_VERSION}` };
  }
  if (now >= standardEnd) {
    return {
      warning: `EKS ${version} left standard support on ${dates.standardEnd}: the control plane bills extended support ($0.60/h instead of $0.10/h, about $365 more a month) until ${dates.extendedEnd}; upgrade with pulumi config set kubernetesVersion ${DEFAULT_KUBERNETES_VERSION}`,
    };
  }
  const daysLeft = Math.ceil((standardEnd - now) / DAY_MS);
  if (daysLeft <= 30) {
    return {
      warning: `EKS ${version} leaves standard support in ${daysLeft} day(s), on ${dates.standardEnd}; after that the control plane bills extended support ($0.60/h instead of $0.10/h); plan the upgrade to ${DEFAULT_KUBERNETES_VERSION}`,
    };
  }
  return {};
}

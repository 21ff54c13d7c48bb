/**
 * Every version this stack pins, in one place: Helm charts, EKS add-ons, container base images, the
 * GPU AMI release, ComfyUI, and which EKS Kubernetes versions all of them support. An upgrade is a
 * reviewed change to this file, never a surprise on `pulumi up`. Dockerfiles cannot import it; a
 * test (test/image/dockerfile.test.ts) checks their FROM lines against IMAGES.
 *
 * The Kubernetes part is one dated table, with its sources, so that a version leaving standard
 * support (the control plane then bills extended support: $0.60/h instead of $0.10/h, ≈ $365 more a
 * month) is a warning at preview, and one past extended support is refused before anything is created.
 */

/** Helm charts: the controller and CRDs of Karpenter move together. */
export const CHARTS = {
  lbController: { chart: "aws-load-balancer-controller", version: "3.5.0", repo: "https://aws.github.io/eks-charts" },
  nvidiaDevicePlugin: { chart: "nvidia-device-plugin", version: "0.20.0", repo: "https://nvidia.github.io/k8s-device-plugin" },
  karpenterCrd: { chart: "oci://public.ecr.aws/karpenter/karpenter-crd", version: "1.14.1" },
  karpenter: { chart: "oci://public.ecr.aws/karpenter/karpenter", version: "1.14.1" },
  keda: { chart: "keda", version: "2.20.2", repo: "https://kedacore.github.io/charts" },
} as const;

/**
 * EKS add-ons. Mountpoint is pinned (config `mountpointAddonVersion` overrides it); the core add-ons
 * (vpc-cni, kube-proxy, coredns, eks-pod-identity-agent) and amazon-cloudwatch-observability take
 * EKS's default for the cluster's Kubernetes version, which moves with that version only.
 */
export const ADDONS = {
  /**
   * The Mountpoint for S3 CSI driver add-on, pinned: an unpinned add-on takes whatever EKS calls the
   * default for the cluster version, so the driver could change under the outputs volume on any
   * cluster update. v2.7.0 is the driver release this program was written against
   * (awslabs/mountpoint-s3-csi-driver v2.7.0); the -eksbuild suffix is EKS's packaging number, which
   * cannot be resolved offline: `aws eks describe-addon-versions --addon-name aws-mountpoint-s3-csi-driver
   * --kubernetes-version <v>` lists the real ones, and config `mountpointAddonVersion` overrides this.
   */
  mountpoint: "v2.7.0-eksbuild.1",
} as const;

/**
 * Base images. ECR Public mirrors of Docker Official Images (no anonymous pull limit); CodeBuild's
 * own managed image for the builds.
 */
export const IMAGES = {
  /** The gateway's and the model agent's runtime (Node 22 LTS). */
  node: "public.ecr.aws/docker/library/node:22.20.0-alpine3.22",
  /** ComfyUI's image (image/Dockerfile), source and runtime stages. */
  ubuntu: "public.ecr.aws/docker/library/ubuntu:24.04",
  /** The CodeBuild project that builds and pushes the images. */
  codebuild: "aws/codebuild/amazonlinux-x86_64-standard:5.0",
} as const;

/** The GPU nodes' AMI: an AL2023 release alias (never @latest). Default of config `gpuAmiAlias`. */
export const GPU_AMI_ALIAS = "al2023@v20260724";

/** ComfyUI built into the image: the release tag and the commit it must resolve to. */
export const COMFYUI = { version: "v0.3.64", commit: "a125cd84b054a57729b5eecab930ca9408719832" } as const;

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
  { component: `Karpenter ${CHARTS.karpenter.version}`, min: "1.26", max: "1.36" },
  { component: `KEDA ${CHARTS.keda.version}`, min: "1.33", max: "1.35" },
  { component: `AMI release ${GPU_AMI_ALIAS.split("@")[1]}`, min: "1.30", max: "1.36" },
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
    return { error: `${version} has no EKS support dates in versions.ts (table of ${EKS_SUPPORT_TABLE_DATE}); use ${DEFAULT_KUBERNETES_VERSION}` };
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

/**
 * GPU instance types from EC2's own data: what each configured type has (NVIDIA GPUs, NVMe instance
 * store, vCPUs, memory, network), whether the stack's availability zones offer it, what a ComfyUI
 * pod may request on it, and what it costs in the stack's region. Read at `pulumi preview`, so a type
 * that cannot run ComfyUI here is refused before anything is created, with the type and the reason.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import prices from "./data/gpu-prices.json";
import { gpuNodeOverhead } from "./nodeDaemonSets";

/** The facts of one type this program uses (EC2 DescribeInstanceTypes through aws.ec2.getInstanceType). */
export interface GpuTypeFacts {
  instanceType: string;
  gpus: number;
  gpuName: string;
  /** Memory of one GPU, MiB. */
  gpuMemoryMiB: number;
  vcpu: number;
  memoryMiB: number;
  /** Total instance store, GB. */
  nvmeGB: number;
  /** Baseline network bandwidth of the default network card, Gbps. */
  networkGbps: number;
  /** Pods the VPC CNI can address on the node (ENI-limited, as Karpenter computes it). */
  maxPods: number;
}

/** The part of aws.ec2.GetInstanceTypeResult the facts come from. */
export type InstanceTypeInfo = Pick<
  aws.ec2.GetInstanceTypeResult,
  | "instanceType"
  | "gpuses"
  | "defaultVcpus"
  | "memorySize"
  | "instanceStorageSupported"
  | "instanceDisks"
  | "totalInstanceStorage"
  | "networkCards"
  | "defaultNetworkCardIndex"
  | "maximumIpv4AddressesPerInterface"
  | "supportedArchitectures"
>;

/** Why a type cannot carry this workload, or undefined when it can. */
export function gpuTypeProblem(info: InstanceTypeInfo): string | undefined {
  const nvidia = info.gpuses.filter((g) => /nvidia/i.test(g.manufacturer) && g.count > 0);
  if (nvidia.length === 0) return "has no NVIDIA GPU (ComfyUI's image is CUDA-only)";
  const ssd = info.instanceDisks.some((d) => d.type === "ssd");
  // The NodePool also requires karpenter.k8s.aws/instance-local-nvme > 100 (GB).
  if (!info.instanceStorageSupported || !ssd || info.totalInstanceStorage <= 100) {
    return "has no NVMe instance store (over 100 GB) to hold the models";
  }
  if (!info.supportedArchitectures.includes("x86_64")) return `is ${info.supportedArchitectures.join("/")} only; the ComfyUI image and GPU nodes are x86_64`;
  return undefined;
}

export function factsOf(info: InstanceTypeInfo): GpuTypeFacts {
  const gpu = info.gpuses.find((g) => /nvidia/i.test(g.manufacturer))!;
  const card = info.networkCards.find((c) => c.index === info.defaultNetworkCardIndex) ?? info.networkCards[0];
  return {
    instanceType: info.instanceType,
    gpus: info.gpuses.filter((g) => /nvidia/i.test(g.manufacturer)).reduce((n, g) => n + g.count, 0),
    gpuName: gpu.name,
    gpuMemoryMiB: gpu.memorySize,
    vcpu: info.defaultVcpus,
    memoryMiB: info.memorySize,
    nvmeGB: info.totalInstanceStorage,
    networkGbps: card?.baselineBandwidth ?? 0,
    // The VPC CNI uses the default network card only (Karpenter v1.14.1 pkg/providers/instancetype/types.go ENILimitedPods).
    maxPods: (card?.maximumInterfaces ?? 0) * (info.maximumIpv4AddressesPerInterface - 1) + 2,
  };
}

/**
 * What kubelet leaves to pods on a node of this type, as Karpenter v1.14.1 computes it
 * (pkg/providers/instancetype/types.go: memory minus the 7.5 % VM overhead, kube-reserved CPU by
 * core ranges and 11 MiB × pods + 255 MiB of memory, 100 Mi eviction threshold). Karpenter packs
 * pods by this figure, so a pod that fits it gets a node.
 */
export function allocatable(f: Pick<GpuTypeFacts, "vcpu" | "memoryMiB" | "maxPods">): { cpuMilli: number; memoryMiB: number } {
  const cpu = f.vcpu * 1000;
  let reserved = 0;
  for (const [start, end, pct] of [
    [0, 1000, 0.06],
    [1000, 2000, 0.01],
    [2000, 4000, 0.005],
    [4000, 2 ** 31, 0.0025],
  ]) {
    if (cpu >= start) reserved += Math.trunc((Math.min(cpu, end) - start) * pct);
  }
  const memory = f.memoryMiB - Math.ceil(f.memoryMiB * 0.075);
  return { cpuMilli: cpu - reserved, memoryMiB: memory - (11 * f.maxPods + 255) - 100 };
}

/**
 * What every GPU node keeps for its DaemonSets: the requests of each one the stack installs there
 * (nodeDaemonSets.ts, from the pinned charts: VPC CNI with the network policy agent, kube-proxy,
 * EKS Pod Identity agent, NVIDIA device plugin, Mountpoint CSI node driver, and the CloudWatch
 * add-on's agent, dcgm-exporter and Fluent Bit), plus memory headroom for their use above them.
 */
export const DAEMONSET_BUDGET: { readonly cpuMilli: number; readonly memoryMiB: number } = gpuNodeOverhead();

/** The uploader sidecar's requests (workload/index.ts), part of every ComfyUI pod. */
export const SIDECAR_REQUESTS = { cpuMilli: 100, memoryMiB: 128 } as const;

/**
 * Requests of one ComfyUI container (one GPU): each GPU's share of the allocatable CPU and memory
 * after the DaemonSets (DAEMONSET_BUDGET) and the sidecar, on the type where that share is
 * smallest, rounded down to 100m and 256Mi. The same pod then fits k times on every configured type
 * with k GPUs, so pods fill a node before another launches. g6.xlarge / g5.xlarge (4 vCPU, 16 GiB;
 * allocatable 3920m / 14162Mi): 3000m and 12288Mi; g6.2xlarge / g5.2xlarge: 7000m and 27392Mi.
 */
export function podResourcesPerGpu(types: readonly GpuTypeFacts[]): { cpu: string; memory: string } {
  if (types.length === 0) throw new Error("podResourcesPerGpu: no GPU instance type");
  const shares = types.map((t) => {
    const a = allocatable(t);
    return {
      cpuMilli: Math.floor((a.cpuMilli - DAEMONSET_BUDGET.cpuMilli) / t.gpus) - SIDECAR_REQUESTS.cpuMilli,
      memoryMiB: Math.floor((a.memoryMiB - DAEMONSET_BUDGET.memoryMiB) / t.gpus) - SIDECAR_REQUESTS.memoryMiB,
    };
  });
  // Whole cores and 256 MiB steps: readable requests, a little slack for rounding.
  const cpu = Math.floor(Math.min(...shares.map((s) => s.cpuMilli)) / 100) * 100;
  const memory = Math.floor(Math.min(...shares.map((s) => s.memoryMiB)) / 256) * 256;
  if (cpu < 1000 || memory < 4096) {
    throw new Error(`gpuInstanceTypes: a GPU's share is only ${cpu}m CPU and ${memory}Mi memory after the node's reservations; ComfyUI needs at least 1 vCPU and 4 GiB per GPU`);
  }
  return { cpu: `${cpu}m`, memory: `${memory}Mi` };
}

/** The EC2 vCPU quota family a type counts against (Service Quotas, service code ec2). */
export function quotaFamily(instanceType: string): "g" | "p" {
  return /^p\d/.test(instanceType) ? "p" : "g";
}

/** Most vCPUs one GPU costs among the types: gpuLimit GPUs need gpuLimit × this many vCPUs of quota. */
export function vcpusPerGpu(types: readonly GpuTypeFacts[]): number {
  return Math.max(...types.map((t) => t.vcpu / t.gpus));
}

/**
 * Reads every configured type from EC2 and checks it is offered in at least one of the stack's
 * availability zones; fails the preview with every refused type and its reason at once.
 */
export function resolveGpuTypes(
  instanceTypes: readonly string[],
  availabilityZones: pulumi.Input<string[]>,
  opts: pulumi.InvokeOptions,
): pulumi.Output<GpuTypeFacts[]> {
  const infos = Promise.all(
    instanceTypes.map((t) =>
      aws.ec2.getInstanceType({ instanceType: t }, opts).then(
        (info) => ({ t, info }),
        (err: unknown) => ({ t, error: `is not an EC2 instance type here (${err instanceof Error ? err.message : String(err)})` }),
      ),
    ),
  );
  return pulumi.all([pulumi.output(infos), availabilityZones]).apply(async ([found, azs]) => {
    const offered = await aws.ec2.getInstanceTypeOfferings(
      {
        locationType: "availability-zone",
        filters: [
          { name: "instance-type", values: [...instanceTypes] },
          { name: "location", values: azs },
        ],
      },
      opts,
    );
    const offeredTypes = new Set(offered.instanceTypes);
    const problems: string[] = [];
    const facts: GpuTypeFacts[] = [];
    for (const f of found) {
      if ("error" in f) {
        problems.push(`"${f.t}" ${f.error}`);
        continue;
      }
      const problem = gpuTypeProblem(f.info);
      if (problem) problems.push(`"${f.t}" ${problem}`);
      else if (!offeredTypes.has(f.t)) problems.push(`"${f.t}" is not offered in the stack's availability zones (${azs.join(", ")})`);
      else facts.push(factsOf(f.info));
    }
    if (problems.length > 0) throw new Error(`gpuInstanceTypes: ${problems.join("; ")}`);
    return facts;
  });
}

export interface PriceSnapshot {
  source: { repository: string; tag: string; path: string; generatedAt: string };
  onDemandUsdPerHour: Record<string, Record<string, number>>;
}

/** The vendored on-demand price list (Karpenter's generated copy of the AWS Price List). */
export const PRICE_SNAPSHOT = prices as PriceSnapshot;

/**
 * The provider the Price List lookups go through: the Price List API answers in us-east-1 only,
 * whatever the stack's region.
 */
export function pricingProvider(name: string): aws.Provider {
  return new aws.Provider(name, { region: "us-east-1" });
}

/**
 * On-demand USD per hour of each type in the region: the AWS Price List (the pricing API answers in
 * us-east-1) at preview, else the dated snapshot, else undefined — never another region's figure.
 */
export function onDemandPrices(
  instanceTypes: readonly string[],
  region: string,
  pricingProvider: aws.Provider | undefined,
  opts: pulumi.InvokeOptions,
): pulumi.Output<Record<string, { usdPerHour: number | null; source: string }>> {
  const lookups = instanceTypes.map(async (t) => {
    try {
      const product = await aws.pricing.getProduct(
        {
          serviceCode: "AmazonEC2",
          filters: [
            { field: "instanceType", value: t },
            { field: "regionCode", value: region },
            { field: "operatingSystem", value: "Linux" },
            { field: "tenancy", value: "Shared" },
            { field: "preInstalledSw", value: "NA" },
            { field: "capacitystatus", value: "Used" },
            { field: "licenseModel", value: "No License required" },
          ],
        },
        { ...opts, provider: pricingProvider },
      );
      return [t, { usdPerHour: onDemandUsd(product.result), source: "AWS Price List" }] as const;
    } catch {
      const snap = PRICE_SNAPSHOT.onDemandUsdPerHour[region]?.[t];
      return [
        t,
        snap !== undefined
          ? { usdPerHour: snap, source: `${PRICE_SNAPSHOT.source.repository} ${PRICE_SNAPSHOT.source.tag} ${PRICE_SNAPSHOT.source.path} (${PRICE_SNAPSHOT.source.generatedAt})` }
          : { usdPerHour: null, source: `no price known for ${region}: the Price List could not be read` },
      ] as const;
    }
  });
  return pulumi.output(Promise.all(lookups).then((e) => Object.fromEntries(e)));
}

/** The hourly on-demand USD price in one Price List product document (terms.OnDemand.*.priceDimensions.*). */
export function onDemandUsd(productJson: string): number {
  const product = JSON.parse(productJson) as { terms?: { OnDemand?: Record<string, { priceDimensions: Record<string, { unit: string; pricePerUnit: { USD?: string } }> }> } };
  for (const term of Object.values(product.terms?.OnDemand ?? {})) {
    for (const d of Object.values(term.priceDimensions)) {
      if (d.unit === "Hrs" && d.pricePerUnit.USD !== undefined) return Number(d.pricePerUnit.USD);
    }
  }
  throw new Error("no hourly on-demand price in the Price List product");
}

/**
 * EC2's answers for the mocked account, from vendored real data (test/upstream/ec2/README.md):
 * Karpenter v1.14.1's reference of instance types (generated from DescribeInstanceTypes) and its
 * VPC limits, turned into the shape aws.ec2.getInstanceType returns.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { InstanceTypeInfo } from "../../karpenter/gpuTypes";

interface Vendored {
  labels: Record<string, string>;
  allocatable: Record<string, string>;
  vpcLimits: { interfaces: number; ipv4PerInterface: number; defaultCardInterfaces: number; networkCards: number };
}

export const EC2_DATA = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "upstream", "ec2", "instance-types.json"), "utf8")) as {
  source: Record<string, unknown>;
  types: Record<string, Vendored>;
};

/** The vendored type as getInstanceType would return it (the fields the program reads). */
export function instanceTypeInfo(type: string): InstanceTypeInfo {
  const v = EC2_DATA.types[type];
  if (!v) throw new Error(`InvalidInstanceType: the instance type '${type}' does not exist`);
  const l = (k: string) => v.labels[`karpenter.k8s.aws/instance-${k}`];
  const gpus = Number(l("gpu-count") ?? 0);
  const nvme = Number(l("local-nvme") ?? 0);
  return {
    instanceType: type,
    gpuses: gpus > 0 ? [{ count: gpus, manufacturer: l("gpu-manufacturer") === "nvidia" ? "NVIDIA" : String(l("gpu-manufacturer")), memorySize: Number(l("gpu-memory")), name: String(l("gpu-name")).toUpperCase() }] : [],
    defaultVcpus: Number(l("cpu")),
    memorySize: Number(l("memory")),
    instanceStorageSupported: nvme > 0,
    instanceDisks: nvme > 0 ? [{ count: 1, size: nvme, type: "ssd" }] : [],
    totalInstanceStorage: nvme,
    defaultNetworkCardIndex: 0,
    networkCards: [{ index: 0, baselineBandwidth: Number(l("network-bandwidth")) / 1000, peakBandwidth: 0, maximumInterfaces: v.vpcLimits.defaultCardInterfaces, performance: "" }],
    maximumIpv4AddressesPerInterface: v.vpcLimits.ipv4PerInterface,
    supportedArchitectures: [v.labels["kubernetes.io/arch"] === "arm64" ? "arm64" : "x86_64"],
  };
}

/** Karpenter's own allocatable figures for a vendored type (cpu in millicores, memory in MiB). */
export function karpenterAllocatable(type: string): { cpuMilli: number; memoryMiB: number; gpus: number; pods: number } {
  const a = EC2_DATA.types[type].allocatable;
  return { cpuMilli: Number(a.cpu.replace(/m$/, "")), memoryMiB: Number(a.memory.replace(/Mi$/, "")), gpus: Number(a["nvidia.com/gpu"] ?? 0), pods: Number(a.pods) };
}

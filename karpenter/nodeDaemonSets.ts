/**
 * Every DaemonSet this stack installs that runs on a GPU node, with the requests of its pod as the
 * pinned (or, where EKS does not let us pin, the documented) versions set them. A ComfyUI pod is
 * sized to what the node leaves after these (gpuTypes.ts podResourcesPerGpu): Karpenter packs a
 * pending pod onto a type only when that pod plus the DaemonSets that would run there fit the
 * type's allocatable, so a pod sized without them never fits the smallest type.
 *
 * A pod's request is what the scheduler counts: the sum of its containers, or its largest init
 * container when that is larger (Kubernetes "Resource sharing within containers"). Requests a
 * template takes from `.Values.resources` by `default` (an empty block falls back to it) count
 * like the rest.
 *
 * test/program/gpuFit.test.ts derives the same list from the vendored charts and manifests
 * (test/upstream/README.md) for the add-ons and releases in the program graph, with each
 * DaemonSet's tolerations and node selection against the GPU NodePool's taints and labels, and
 * fails when an entry here is missing, extra or differs.
 */

export interface GpuNodeDaemonSet {
  /** namespace/name of the DaemonSet. */
  name: string;
  /** What in this program installs it. */
  installedBy: string;
  /** Where its requests and its placement come from. */
  source: string;
  /** The pod's CPU request, millicores. */
  cpuMilli: number;
  /** The pod's memory request, MiB. */
  memoryMiB: number;
}

export const GPU_NODE_DAEMONSETS: readonly GpuNodeDaemonSet[] = [
  {
    name: "kube-system/aws-node",
    installedBy: "cluster/: EKS add-on vpc-cni (network policy agent on)",
    source:
      "aws/amazon-vpc-cni-k8s v1.23.0 charts/aws-vpc-cni: aws-node 25m (values resources); aws-eks-nodeagent and the init container take values resources too (templates/daemonset.yaml `default .Values.resources`): 25m + 25m, init 25m; tolerations Exists. Unchanged since v1.19.0",
    cpuMilli: 50,
    memoryMiB: 0,
  },
  {
    name: "kube-system/kube-proxy",
    installedBy: "cluster/: EKS add-on kube-proxy",
    source:
      "EKS publishes no manifest or chart for its kube-proxy add-on (aws/containers-roadmap#1503): the DaemonSet as EKS installs it requests cpu 100m and no memory and tolerates every taint (eksctl-io/eksctl pkg/addons/default/testdata/sample-1.25.json, a cluster's kube-system of EKS 1.25)",
    cpuMilli: 100,
    memoryMiB: 0,
  },
  {
    name: "kube-system/eks-pod-identity-agent",
    installedBy: "cluster/: EKS add-on eks-pod-identity-agent",
    source: "aws/eks-pod-identity-agent v0.1.37 charts/eks-pod-identity-agent 1.2.0: resources {} (no requests), tolerations Exists",
    cpuMilli: 0,
    memoryMiB: 0,
  },
  {
    name: "kube-system/nvidia-device-plugin",
    installedBy: "cluster/: Helm chart nvidia-device-plugin 0.20.0 (nodeSelector nvidia.com/gpu.present)",
    source: "NVIDIA/k8s-device-plugin v0.20.0 deployments/helm/nvidia-device-plugin: resources {} (no requests)",
    cpuMilli: 0,
    memoryMiB: 0,
  },
  {
    name: "kube-system/s3-csi-node",
    installedBy: "storage/: EKS add-on aws-mountpoint-s3-csi-driver v2.7.0 (tolerateAllTaints)",
    source:
      "awslabs/mountpoint-s3-csi-driver v2.7.0 charts/aws-mountpoint-s3-csi-driver: node.resources 10m/40Mi for s3-plugin, and for node-driver-registrar and liveness-probe (their resources {} fall back to node.resources in templates/node.yaml). Its mount pods (one per volume on the node) request nothing unless the volume asks (pkg/podmounter/mppod/creator.go configureResourceRequests); ours do not",
    cpuMilli: 30,
    memoryMiB: 120,
  },
  {
    name: "amazon-cloudwatch/cloudwatch-agent",
    installedBy: "observability/: EKS add-on amazon-cloudwatch-observability (the operator's AmazonCloudWatchAgent, mode daemonset)",
    source: "aws-observability/helm-charts amazon-cloudwatch-observability-6.4.0 values.yaml agent.resources.requests 250m/128Mi, root tolerations Exists",
    cpuMilli: 250,
    memoryMiB: 128,
  },
  {
    name: "amazon-cloudwatch/dcgm-exporter",
    installedBy: "observability/: EKS add-on amazon-cloudwatch-observability (dcgmExporter, on its list of NVIDIA instance types)",
    source: "aws-observability/helm-charts amazon-cloudwatch-observability-6.4.0 values.yaml dcgmExporter.resources.requests 250m/128Mi (deployed whether or not gpuMetrics collects its figures)",
    cpuMilli: 250,
    memoryMiB: 128,
  },
  {
    name: "comfyui/comfyui-models-agent",
    installedBy: "workload/modelsAgent.ts: the model agent's DaemonSet (nodeSelector comfyui.studio/pool=gpu, tolerates nvidia.com/gpu)",
    source: "workload/modelsAgent.ts MODELS_AGENT_RESOURCES: one container, 50m/128Mi (idle RSS 73 MiB, 133-182 MiB during a 2 GB fetch: docs/benchmarks.md)",
    cpuMilli: 50,
    memoryMiB: 128,
  },
  {
    name: "amazon-cloudwatch/fluent-bit",
    installedBy: "observability/: EKS add-on amazon-cloudwatch-observability (containerLogs.enabled)",
    source: "aws-observability/helm-charts amazon-cloudwatch-observability-6.4.0 values.yaml containerLogs.fluentBit.resources.requests 50m/25Mi",
    cpuMilli: 50,
    memoryMiB: 25,
  },
];

/**
 * Memory kept on every GPU node beyond the DaemonSets' requests: their limits let them grow past
 * their requests (agent 512Mi, dcgm-exporter 750Mi, fluent-bit 250Mi, s3-csi-node 256Mi per
 * container) while ComfyUI's memory limit equals its request, so the node's memory must not be
 * promised to ComfyUI to the last MiB. CPU needs no such room: it is shared, not killed for.
 */
export const DAEMONSET_MEMORY_HEADROOM_MIB = 1024;

/** The sum of the DaemonSets' requests on a GPU node. */
export function gpuNodeDaemonSetRequests(daemonSets: readonly GpuNodeDaemonSet[] = GPU_NODE_DAEMONSETS): { cpuMilli: number; memoryMiB: number } {
  return daemonSets.reduce((t, d) => ({ cpuMilli: t.cpuMilli + d.cpuMilli, memoryMiB: t.memoryMiB + d.memoryMiB }), { cpuMilli: 0, memoryMiB: 0 });
}

/** What a ComfyUI pod cannot have on a GPU node: the DaemonSets' requests, plus the memory headroom. */
export function gpuNodeOverhead(): { cpuMilli: number; memoryMiB: number } {
  const r = gpuNodeDaemonSetRequests();
  return { cpuMilli: r.cpuMilli, memoryMiB: r.memoryMiB + DAEMONSET_MEMORY_HEADROOM_MIB };
}

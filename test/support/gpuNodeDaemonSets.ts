/**
 * Which DaemonSets land on a GPU node, and what their pods request, derived from the vendored
 * charts and manifests (test/upstream/README.md, "DaemonSets on GPU nodes") for each installer in
 * a program graph: an EKS add-on, a Helm release or a DaemonSet the program creates itself. The
 * chart values are merged with what the graph sets (an add-on's configurationValues, a release's
 * values: maps merge, lists replace, as Helm does). Each model names the template lines its rule
 * rests on and fails if the vendored template no longer has them, so a chart bump that changes a
 * rule fails here instead of being read wrong.
 *
 * The node side is the scheduler's (and Karpenter's, which packs pods by the same rules): every
 * NoSchedule/NoExecute taint tolerated, nodeSelector labels equal, one required node-affinity term
 * matched; a pod requests the sum of its containers or its largest init container, whichever is
 * larger.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import type { RecordedResource } from "./mocks";

const UPSTREAM = path.join(__dirname, "..", "upstream");
const text = (rel: string) => fs.readFileSync(path.join(UPSTREAM, rel), "utf8");
const load = (rel: string) => yaml.load(text(rel)) as Values;

type Values = Record<string, any>;

export interface Toleration {
  key?: string;
  operator?: string;
  value?: string;
  effect?: string;
}
export interface Taint {
  key: string;
  value?: string;
  effect: string;
}
export interface Requirement {
  key: string;
  operator: string;
  values?: string[];
}
export interface Requests {
  cpu?: string;
  memory?: string;
}

export interface ModelDaemonSet {
  /** namespace/name */
  name: string;
  /** The vendored file its definition comes from. */
  source: string;
  containers: Requests[];
  initContainers: Requests[];
  tolerations: Toleration[];
  nodeSelector: Record<string, string>;
  /** Required node affinity: any one term, every expression of it. */
  nodeSelectorTerms: { matchExpressions?: Requirement[] }[];
}

/** Helm's merge of user values over chart defaults: maps merge, everything else replaces. */
export function mergeValues(base: Values, over: Values): Values {
  const out: Values = { ...base };
  for (const [k, v] of Object.entries(over ?? {})) {
    out[k] = v && typeof v === "object" && !Array.isArray(v) && base[k] && typeof base[k] === "object" && !Array.isArray(base[k]) ? mergeValues(base[k], v) : v;
  }
  return out;
}

/** Helm's `default a b`: b unless empty. */
const orDefault = <T>(fallback: T, value: T | undefined): T => (value === undefined || value === null || (typeof value === "object" && Object.keys(value as object).length === 0) ? fallback : value);
const requestsOf = (resources: Values | undefined): Requests => ({ ...(resources?.requests ?? {}) });
const termsOf = (affinity: Values | undefined) => (affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? []) as ModelDaemonSet["nodeSelectorTerms"];

/** Fails when a vendored template no longer holds a line a model's rule rests on. */
function rests(file: string, ...lines: string[]): void {
  const t = text(file);
  for (const l of lines) if (!t.includes(l)) throw new Error(`${file} no longer contains '${l}': the DaemonSet model for it must be re-read`);
}

/** The amazon-cloudwatch-observability chart's tolerations helper: the component's own list if it has one, else the root list. */
function cwTolerations(v: Values, component: Values | undefined): Toleration[] {
  rests("charts/amazon-cloudwatch-observability-6.4.0/templates/_helpers.tpl", '{{- $tolerations := .context.Values.tolerations }}', '{{- $componentTolerations := dig "tolerations" nil .component }}');
  return (component && component.tolerations !== undefined && component.tolerations !== null ? component.tolerations : v.tolerations) ?? [];
}

const VPC_CNI = "charts/aws-vpc-cni-1.23.0";
const POD_IDENTITY = "charts/eks-pod-identity-agent-1.2.0";
const MOUNTPOINT = "charts/aws-mountpoint-s3-csi-driver-2.7.0";
const DEVICE_PLUGIN = "charts/nvidia-device-plugin-0.20.0";
const CLOUDWATCH = "charts/amazon-cloudwatch-observability-6.4.0";
const CLOUDWATCH_VALUES = "observability/amazon-cloudwatch-observability-6.4.0-values.yaml";
const EKS_SAMPLE = "eks/eksctl-sample-1.25.json";

function vpcCni(over: Values): ModelDaemonSet[] {
  const v = mergeValues(load(`${VPC_CNI}/values.yaml`), over);
  const t = `${VPC_CNI}/templates/daemonset.yaml`;
  rests(t, "{{- with default .Values.resources .Values.init.resources }}", "{{- with default .Values.resources .Values.nodeAgent.resources }}", "{{- with .Values.resources }}", "{{- if .Values.nodeAgent.enabled }}", "{{- with .Values.tolerations }}", "{{- with .Values.nodeSelector }}", "{{- with .Values.affinity }}");
  return [
    {
      name: "kube-system/aws-node",
      source: t,
      containers: [requestsOf(v.resources), ...(v.nodeAgent.enabled ? [requestsOf(orDefault(v.resources, v.nodeAgent.resources))] : [])],
      initContainers: [requestsOf(orDefault(v.resources, v.init.resources))],
      tolerations: v.tolerations ?? [],
      nodeSelector: v.nodeSelector ?? {},
      nodeSelectorTerms: termsOf(v.affinity),
    },
  ];
}

/** EKS's kube-proxy as the vendored kube-system dump holds it (no chart exists). */
function kubeProxy(): ModelDaemonSet[] {
  const list = JSON.parse(text(EKS_SAMPLE)) as { items: Values[] };
  const ds = list.items.find((i) => i.kind === "DaemonSet" && i.metadata.name === "kube-proxy");
  if (!ds) throw new Error(`${EKS_SAMPLE} has no kube-proxy DaemonSet`);
  const spec = ds.spec.template.spec;
  return [
    {
      name: "kube-system/kube-proxy",
      source: EKS_SAMPLE,
      containers: spec.containers.map((c: Values) => requestsOf(c.resources)),
      initContainers: (spec.initContainers ?? []).map((c: Values) => requestsOf(c.resources)),
      tolerations: spec.tolerations ?? [],
      nodeSelector: spec.nodeSelector ?? {},
      nodeSelectorTerms: termsOf(spec.affinity),
    },
  ];
}

function podIdentityAgent(over: Values): ModelDaemonSet[] {
  const v = mergeValues(load(`${POD_IDENTITY}/values.yaml`), over);
  const t = `${POD_IDENTITY}/templates/daemonset.yaml`;
  rests(t, "{{- if $daemonset.create -}}", "{{- $affinity := default $top.Values.affinity $daemonset.affinity -}}", "{{- toYaml $top.Values.resources | nindent 12 }}", "{{- with $top.Values.tolerations }}", "{{- with $top.Values.nodeSelector }}");
  return Object.entries(v.daemonsets as Record<string, Values>)
    .filter(([, d]) => d.create)
    .map(([key, d]) => ({
      name: `kube-system/eks-pod-identity-agent${d.nameSuffix ? `-${d.nameSuffix}` : ""}`,
      source: `${t} (daemonsets.${key})`,
      containers: [requestsOf(v.resources)],
      // The init container sets no resources (templates/daemonset.yaml initContainers).
      initContainers: v.init.create ? [{}] : [],
      tolerations: v.tolerations ?? [],
      nodeSelector: v.nodeSelector ?? {},
      nodeSelectorTerms: termsOf(orDefault(v.affinity, d.affinity)),
    }));
}

function mountpoint(over: Values): ModelDaemonSet[] {
  const v = mergeValues(load(`${MOUNTPOINT}/values.yaml`), over);
  const t = `${MOUNTPOINT}/templates/node.yaml`;
  rests(
    t,
    "{{- with .Values.node.resources }}",
    "{{- with default .Values.node.resources .Values.sidecars.nodeDriverRegistrar.resources }}",
    "{{- with default .Values.node.resources .Values.sidecars.livenessProbe.resources }}",
    "{{- if .Values.node.tolerateAllTaints }}",
    "        - key: s3.csi.aws.com/agent-not-ready",
    "        kubernetes.io/os: linux",
  );
  const node = v.node;
  const tolerations: Toleration[] = node.tolerateAllTaints
    ? [{ operator: "Exists" }, ...(node.tolerations ?? [])]
    : [
        ...(node.defaultTolerations ? [{ key: "CriticalAddonsOnly", operator: "Exists" }, { key: "s3.csi.aws.com/agent-not-ready", operator: "Exists" }, { operator: "Exists", effect: "NoExecute" }] : []),
        ...(node.tolerations ?? []),
      ];
  return [
    {
      name: "kube-system/s3-csi-node",
      source: t,
      containers: [requestsOf(node.resources), requestsOf(orDefault(node.resources, v.sidecars.nodeDriverRegistrar.resources)), requestsOf(orDefault(node.resources, v.sidecars.livenessProbe.resources))],
      initContainers: [],
      tolerations,
      nodeSelector: { "kubernetes.io/os": "linux", ...(node.nodeSelector ?? {}) },
      nodeSelectorTerms: termsOf(node.affinity),
    },
  ];
}

function devicePlugin(over: Values): ModelDaemonSet[] {
  const v = mergeValues(load(`${DEVICE_PLUGIN}/values.yaml`), over);
  const dp = `${DEVICE_PLUGIN}/templates/daemonset-device-plugin.yml`;
  const mps = `${DEVICE_PLUGIN}/templates/daemonset-mps-control-daemon.yml`;
  const gfd = `${DEVICE_PLUGIN}/templates/daemonset-gfd.yml`;
  rests(dp, "{{- if .Values.devicePlugin.enabled }}", "{{- with .Values.resources }}", "{{- with .Values.nodeSelector }}", "{{- with .Values.affinity }}", "{{- with .Values.tolerations }}");
  rests(mps, "{{- if .Values.devicePlugin.enabled }}", 'nvidia.com/mps.capable: "true"');
  rests(gfd, "{{- if .Values.gfd.enabled }}");
  const common = { tolerations: v.tolerations ?? [], nodeSelectorTerms: termsOf(v.affinity), initContainers: [] as Requests[] };
  return [
    ...(v.devicePlugin.enabled
      ? [
          { ...common, name: "kube-system/nvidia-device-plugin", source: dp, containers: [requestsOf(v.resources)], nodeSelector: v.nodeSelector ?? {} },
          // Only on nodes labelled for MPS sharing.
          { ...common, name: "kube-system/nvidia-device-plugin-mps-control-daemon", source: mps, containers: [requestsOf(v.resources)], nodeSelector: { "nvidia.com/mps.capable": "true", ...(v.nodeSelector ?? {}) } },
        ]
      : []),
    ...(v.gfd.enabled ? [{ ...common, name: "kube-system/gpu-feature-discovery", source: gfd, containers: [requestsOf(v.resources)], nodeSelector: v.nodeSelector ?? {} }] : []),
  ];
}

/**
 * The add-on's DaemonSets: Fluent Bit (containerLogs), the AmazonCloudWatchAgent of each `agents`
 * entry in daemonset mode (the operator turns it into a DaemonSet with the spec's resources,
 * tolerations and placement), dcgm-exporter and neuron-monitor (operator resources likewise),
 * node-exporter (only with otelContainerInsights), and the Windows ones.
 */
function cloudwatch(over: Values): ModelDaemonSet[] {
  const v = mergeValues(load(CLOUDWATCH_VALUES), over);
  const t = (f: string) => `${CLOUDWATCH}/templates/${f}`;
  rests(t("linux/fluent-bit-daemonset.yaml"), "{{- if .Values.containerLogs.enabled }}", "{{- with .Values.containerLogs.fluentBit.resources }}", "{{- with .Values.containerLogs.fluentBit.affinity }}", "{{- with .Values.containerLogs.fluentBit.nodeSelector }}", 'dict "component" .Values.containerLogs.fluentBit');
  rests(t("linux/cloudwatch-agent-custom-resource.yaml"), "{{- $agent := mergeOverwrite (deepCopy $.Values.agent) . }}", "{{- if or $.Values.otelContainerInsights.enabled (ne $agent.name $.Values.otelContainerInsights.clusterScraperAgent) }}", "{{- with $agent.nodeSelector }}", "{{- with $agent.affinity }}", '{{- $prunedResources := include "cloudwatch-agent.pruneNulls" $agent.resources | fromYaml }}', 'dict "component" $agent');
  rests(t("linux/dcgm-exporter-daemonset.yaml"), "{{- if .Values.dcgmExporter.enabled }}", "{{- with .Values.dcgmExporter.resources }}", "{{- with .Values.dcgmExporter.affinity }}", "{{- with .Values.dcgmExporter.nodeSelector }}", 'dict "component" .Values.dcgmExporter');
  rests(t("linux/neuron-monitor-daemonset.yaml"), "{{- if .Values.neuronMonitor.enabled }}", "{{- with .Values.neuronMonitor.affinity }}", "{{- with .Values.neuronMonitor.nodeSelector }}");
  rests(t("linux/node-exporter-daemonset.yaml"), "{{- if and .Values.nodeExporter.enabled .Values.otelContainerInsights.enabled }}");
  for (const f of ["windows/cloudwatch-agent-windows-container-insights-daemonset.yaml", "windows/cloudwatch-agent-windows-daemonset.yaml", "windows/fluent-bit-windows-daemonset.yaml"]) {
    rests(t(f), "kubernetes.io/os: windows");
  }
  const out: ModelDaemonSet[] = [];
  const operatorDs = (name: string, source: string, component: Values) => ({
    name: `amazon-cloudwatch/${name}`,
    source,
    containers: [requestsOf(component.resources)],
    initContainers: [],
    tolerations: cwTolerations(v, component),
    nodeSelector: component.nodeSelector ?? {},
    nodeSelectorTerms: termsOf(component.affinity),
  });
  if (v.containerLogs.enabled) out.push(operatorDs("fluent-bit", t("linux/fluent-bit-daemonset.yaml"), v.containerLogs.fluentBit));
  if (v.agent.enabled) {
    for (const entry of v.agents as Values[]) {
      const agent = mergeValues(v.agent, entry);
      if (agent.mode !== "daemonset") continue;
      if (!v.otelContainerInsights.enabled && agent.name === v.otelContainerInsights.clusterScraperAgent) continue;
      out.push(operatorDs(agent.name, t("linux/cloudwatch-agent-custom-resource.yaml"), agent));
    }
    const windows = { ...v.agent, nodeSelector: { "kubernetes.io/os": "windows" } };
    out.push(operatorDs("cloudwatch-agent-windows", t("windows/cloudwatch-agent-windows-daemonset.yaml"), windows));
    out.push(operatorDs("cloudwatch-agent-windows-container-insights", t("windows/cloudwatch-agent-windows-container-insights-daemonset.yaml"), windows));
  }
  if (v.containerLogs.enabled) out.push(operatorDs("fluent-bit-windows", t("windows/fluent-bit-windows-daemonset.yaml"), { ...v.containerLogs.fluentBit, nodeSelector: { "kubernetes.io/os": "windows" } }));
  if (v.dcgmExporter.enabled) out.push(operatorDs("dcgm-exporter", t("linux/dcgm-exporter-daemonset.yaml"), v.dcgmExporter));
  if (v.neuronMonitor.enabled) out.push(operatorDs("neuron-monitor", t("linux/neuron-monitor-daemonset.yaml"), v.neuronMonitor));
  if (v.nodeExporter.enabled && v.otelContainerInsights.enabled) out.push(operatorDs("node-exporter", t("linux/node-exporter-daemonset.yaml"), v.nodeExporter));
  return out;
}

/** Charts and add-ons the program installs that create no DaemonSet (Deployments and CRDs only). */
const NO_DAEMONSETS = new Set(["addon:coredns", "chart:aws-load-balancer-controller", "chart:karpenter", "chart:karpenter-crd", "chart:keda"]);

/**
 * The DaemonSets one installer in the graph creates, or undefined for an installer this model does
 * not know (a new add-on or chart: its DaemonSets must be vendored and modelled here first).
 */
export function daemonSetsOf(r: RecordedResource): ModelDaemonSet[] | undefined {
  if (r.type === "aws:eks/addon:Addon") {
    const over = r.inputs.configurationValues ? (JSON.parse(r.inputs.configurationValues) as Values) : {};
    switch (r.inputs.addonName) {
      case "vpc-cni":
        return vpcCni(over);
      case "kube-proxy":
        return kubeProxy();
      case "eks-pod-identity-agent":
        return podIdentityAgent(over);
      case "aws-mountpoint-s3-csi-driver":
        return mountpoint(over);
      case "amazon-cloudwatch-observability":
        return cloudwatch(over);
      default:
        return NO_DAEMONSETS.has(`addon:${r.inputs.addonName}`) ? [] : undefined;
    }
  }
  if (r.type === "kubernetes:helm.sh/v3:Release") {
    if (r.inputs.chart === "nvidia-device-plugin") return devicePlugin(r.inputs.values ?? {});
    return NO_DAEMONSETS.has(`chart:${String(r.inputs.chart).replace(/^oci:\/\/.*\//, "")}`) ? [] : undefined;
  }
  if (r.type === "kubernetes:apps/v1:DaemonSet") {
    const spec = r.inputs.spec.template.spec;
    return [
      {
        name: `${r.inputs.metadata.namespace ?? "default"}/${r.inputs.metadata.name}`,
        source: `the program (${r.name})`,
        containers: spec.containers.map((c: Values) => requestsOf(c.resources)),
        initContainers: (spec.initContainers ?? []).map((c: Values) => requestsOf(c.resources)),
        tolerations: spec.tolerations ?? [],
        nodeSelector: spec.nodeSelector ?? {},
        nodeSelectorTerms: termsOf(spec.affinity),
      },
    ];
  }
  return [];
}

/** Whether a toleration tolerates a taint (Kubernetes' ToleratesTaint). */
export function tolerates(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if (!t.key) return t.operator === "Exists";
  if (t.key !== taint.key) return false;
  return t.operator === "Exists" || (t.value ?? "") === (taint.value ?? "");
}

function matches(req: Requirement, labels: Record<string, string>): boolean {
  const has = req.key in labels;
  const v = labels[req.key];
  switch (req.operator) {
    case "In":
      return has && (req.values ?? []).includes(v);
    case "NotIn":
      return !has || !(req.values ?? []).includes(v);
    case "Exists":
      return has;
    case "DoesNotExist":
      return !has;
    case "Gt":
      return has && Number(v) > Number(req.values?.[0]);
    case "Lt":
      return has && Number(v) < Number(req.values?.[0]);
    default:
      throw new Error(`unknown node selector operator ${req.operator}`);
  }
}

/** Whether the DaemonSet's pod schedules on a node with these labels and taints. */
export function landsOn(ds: ModelDaemonSet, node: { labels: Record<string, string>; taints: Taint[] }): boolean {
  const blocking = node.taints.filter((t) => t.effect === "NoSchedule" || t.effect === "NoExecute");
  if (!blocking.every((taint) => ds.tolerations.some((t) => tolerates(t, taint)))) return false;
  if (!Object.entries(ds.nodeSelector).every(([k, v]) => node.labels[k] === v)) return false;
  return ds.nodeSelectorTerms.length === 0 || ds.nodeSelectorTerms.some((term) => (term.matchExpressions ?? []).every((r) => matches(r, node.labels)));
}

export const milli = (cpu: string | number | undefined): number => {
  if (cpu === undefined) return 0;
  const s = String(cpu);
  return s.endsWith("m") ? Number(s.slice(0, -1)) : Math.round(Number(s) * 1000);
};
export const mebi = (mem: string | number | undefined): number => {
  if (mem === undefined) return 0;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi)?$/.exec(String(mem));
  if (!m) throw new Error(`memory quantity ${String(mem)} not understood`);
  const n = Number(m[1]);
  return m[2] === "Gi" ? n * 1024 : m[2] === "Ki" ? n / 1024 : m[2] === "Mi" ? n : n / 1024 / 1024;
};

/** A pod's request as the scheduler counts it: containers summed, or the largest init container if larger. */
export function podRequests(containers: Requests[], initContainers: Requests[]): { cpuMilli: number; memoryMiB: number } {
  const sum = (f: (r: Requests) => number) => containers.reduce((n, c) => n + f(c), 0);
  const max = (f: (r: Requests) => number) => Math.max(0, ...initContainers.map(f));
  const cpu = (r: Requests) => milli(r.cpu);
  const mem = (r: Requests) => mebi(r.memory);
  return { cpuMilli: Math.max(sum(cpu), max(cpu)), memoryMiB: Math.max(sum(mem), max(mem)) };
}

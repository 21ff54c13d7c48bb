/**
 * The platform's own metrics, named once: namespace, names, units and dimensions live here and
 * nowhere else. Emitters (the sync Lambda, the gateway, the node boot) build their log lines with
 * the functions below, and the dashboard and alarms draw from the same table, so a renamed metric
 * cannot leave a graph or an alarm looking at nothing.
 *
 * Longer than the ~300 lines a file is kept to: one table of every metric, with the EMF builders that
 * must agree with it, read by three programs (the stack, the gateway image, the node boot's jq).
 *
 * The lines are CloudWatch embedded metric format (EMF) documents, written by hand after AWS's
 * "Specification: Embedded metric format" (CloudWatch User Guide,
 * https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
 * a root `_aws` object with `Timestamp` (ms since the epoch) and `CloudWatchMetrics`, an array of
 * directives `{ Namespace, Dimensions: [[names…]], Metrics: [{ Name, Unit }] }`; every dimension
 * and metric a directive names is a root member (dimension values strings, metric values numbers
 * or arrays of at most 100 numbers); at most 100 metrics per directive and 30 dimensions per set.
 * CloudWatch Logs extracts the metrics from any log event shaped so (no header needed for Lambda
 * or for PutLogEvents: "Using the PutLogEvents API to send manually-created embedded metric format
 * logs").
 *
 * Not the aws-embedded-metrics npm package: its logger picks an environment at run time, flushes
 * asynchronously through sinks and keeps module state, none of which survives Pulumi's closure
 * serialization of the sync Lambda cleanly; these functions are pure and serialize by value.
 */

/**
 * One namespace for everything this platform emits. Slash-separated like AWS's own ("AWS/Lambda"),
 * but without the reserved "AWS/" prefix.
 */
const NS = "ComfyUI/Platform";
export const NAMESPACE = NS;

/** The only dimension: the EKS cluster name, spelled as Container Insights spells it, so one stack's figures never mix with another's. */
const CLUSTER = "ClusterName";
export const CLUSTER_DIMENSION = CLUSTER;

// Functions below read the module's private names, never an exported one: TypeScript's CommonJS
// output turns a reference to an exported const into `exports.X`, which Pulumi's serialized Lambda
// module does not have (test/sync/handler.test.ts checks the serialized text).

/**
 * The documented wake budget: waiting prompt → first image on a fresh GPU node, the upper end of
 * the "now" total in docs/scaling.md's phase budget (≈ 3.7 min, derived there; a test reads the
 * table). The gateway promises it until it has measured cold starts of its own, and the "GPU pods
 * pending" alarm waits this long before paging.
 */
export { COLD_START_BUDGET_SECONDS } from "./gateway";

/** EMF units used here (a subset of the spec's list). */
export type EmfUnit = "Seconds" | "Bytes" | "Bytes/Second" | "Count" | "None";

export type MetricSource = "gateway" | "sync" | "node-boot";

export interface MetricSpec {
  readonly name: string;
  readonly unit: EmfUnit;
  readonly dimensions: readonly string[];
  readonly source: MetricSource;
  /** What one value means; shown in docs/operations.md. */
  readonly meaning: string;
}

const spec = (source: MetricSource, name: string, unit: EmfUnit, meaning: string, extraDimensions: readonly string[] = []): MetricSpec => ({
  name,
  unit,
  dimensions: [CLUSTER, ...extraDimensions],
  source,
  meaning,
});

/** The GPU nodes' EC2 instance type and Karpenter capacity type (spot / on-demand), from the Node's labels. */
const BY_TYPE = ["InstanceType", "CapacityType"] as const;
export const NODE_TYPE_DIMENSIONS = BY_TYPE;

const TABLE = {
  // The gateway: one snapshot a minute, one outcome line per finished prompt.
  queueDepth: spec("gateway", "QueueDepth", "Count", "prompts waiting or running (the figure KEDA scales on)"),
  promptsWaiting: spec("gateway", "PromptsWaiting", "Count", "prompts accepted and not yet on a pod"),
  promptsRunning: spec("gateway", "PromptsRunning", "Count", "prompts executing on a pod"),
  websocketClients: spec("gateway", "WebSocketClients", "Count", "connected /ws clients"),
  podsReady: spec("gateway", "GpuPodsReady", "Count", "ComfyUI pods ready to take prompts"),
  gpuNodesByType: spec("gateway", "GpuNodes", "Count", "GPU nodes with a ready ComfyUI pod, by instance type and capacity type", BY_TYPE),
  podsByType: spec("gateway", "ComfyUIPods", "Count", "ready ComfyUI pods, by their node's instance type and capacity type", BY_TYPE),
  promptsAccepted: spec("gateway", "PromptsAccepted", "Count", "prompts stored and answered by POST /prompt"),
  promptsSucceeded: spec("gateway", "PromptsSucceeded", "Count", "prompts that finished with execution_success"),
  promptsFailed: spec("gateway", "PromptsFailed", "Count", "prompts that finished with execution_error or ran out of attempts"),
  promptWaitSeconds: spec("gateway", "PromptWaitSeconds", "Seconds", "from acceptance to the start on a pod"),
  promptRunSeconds: spec("gateway", "PromptRunSeconds", "Seconds", "from the start on a pod to the finish"),
  outputsSaved: spec("gateway", "OutputsSaved", "Count", "files a finished prompt saved (type output: images, videos …), copied to the outputs bucket"),
  coldStartSeconds: spec("gateway", "ColdStartSeconds", "Seconds", "one cold start: from the first prompt waiting while no GPU pod was ready to the first prompt running"),
  nodeRegisteredSeconds: spec("gateway", "NodeRegisteredSeconds", "Seconds", "a new GPU node: from its kernel start to kubelet registering the Node"),
  comfyuiReadySeconds: spec("gateway", "ComfyUIReadySeconds", "Seconds", "a new GPU node: from its kernel start to its first ComfyUI pod Ready"),
  http5xx: spec("gateway", "Http5xxResponses", "Count", "gateway answers with a 5xx status"),
  // The model cache (issue 19; only with a models bucket): the leader's snapshot carries what the model
  // agents it polls counted since the previous snapshot, summed over the agents, and its own placements.
  modelFetches: spec("gateway", "ModelFetches", "Count", "model downloads the GPU nodes' agents started (prompts' fetches, prefetches, pins, bucket changes)"),
  modelFetchesFailed: spec("gateway", "ModelFetchesFailed", "Count", "model downloads that failed (S3 refused or did not deliver, checksum mismatch, no space)"),
  modelBytesFetched: spec("gateway", "ModelBytesFetched", "Bytes", "bytes the completed model downloads wrote into the nodes' model folders"),
  modelCacheHits: spec("gateway", "ModelCacheHits", "Count", "model files a prompt needed that its node already held"),
  modelCacheMisses: spec("gateway", "ModelCacheMisses", "Count", "model files a prompt needed that its node had to fetch first"),
  modelEvictions: spec("gateway", "ModelEvictions", "Count", "model files the nodes' caches removed to make room (least recently used first)"),
  modelLoadsAvoided: spec("gateway", "ModelLoadsAvoided", "Count", "prompts placed on a pod whose previous prompt had the same main model (ComfyUI keeps it loaded: no load from NVMe)"),
  // The model-sync Lambda: one line per batch.
  syncBatches: spec("sync", "SyncBatches", "Count", "SQS batches the sync Lambda handled"),
  syncChangesApplied: spec("sync", "SyncChangesApplied", "Count", "net model changes delivered to every running GPU node (or to none running)"),
  syncNodeFailures: spec("sync", "SyncNodeFailures", "Count", "GPU nodes that failed to apply a batch after every attempt"),
  syncFailedBatches: spec("sync", "SyncFailedBatches", "Count", "batches handed back to SQS for redelivery"),
  syncRejectedEvents: spec("sync", "SyncRejectedEvents", "Count", "S3 events dropped as invalid (never retried)"),
  // The GPU node's boot: one line when the model folder is filled.
  bootFillSeconds: spec("node-boot", "BootFillSeconds", "Seconds", "time to fill the node's model folder from S3"),
  bootFillBytes: spec("node-boot", "BootFillBytes", "Bytes", "bytes copied into the model folder at boot"),
  bootFillThroughput: spec("node-boot", "BootFillThroughput", "Bytes/Second", "bytes per second of the boot fill"),
  hotSetFilesMissing: spec("node-boot", "HotSetFilesMissing", "Count", "hot-set files not on the node when it took pods"),
  bootRaidSeconds: spec("node-boot", "BootRaidSeconds", "Seconds", "from the node's kernel start to its NVMe RAID0 mounted"),
  bootFilledSeconds: spec("node-boot", "BootFilledSeconds", "Seconds", "from the node's kernel start to its hot set filled (absent when the fill stopped at its budget)"),
  bootImageSeconds: spec("node-boot", "BootImageSeconds", "Seconds", "from the node's kernel start to the ComfyUI image present (absent when the pre-pull failed or was off)"),
} as const;

export const METRICS: typeof TABLE = TABLE;

export type MetricKey = keyof typeof TABLE;

/** Values for some metrics: a number, or up to 100 numbers (EMF's value array). */
export type MetricValues = Partial<Record<MetricKey, number | readonly number[]>>;

/** The EMF document (a plain object, so a JSON logger can write it as one line). */
export interface EmfDocument {
  _aws: {
    Timestamp: number;
    CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: EmfUnit }[] }[];
  };
  [member: string]: unknown;
}

const MAX_METRICS_PER_DIRECTIVE = 100;
const MAX_DIMENSIONS_PER_SET = 30;
const MAX_VALUES_PER_METRIC = 100;

/**
 * One EMF document for `values`, all under the same dimensions. Throws, naming the culprit, on an
 * empty set, a value that is not a finite number, a missing or empty dimension, or a metric whose
 * dimensions differ from the others — CloudWatch would drop such a line silently.
 */
export function emfDocument(values: MetricValues, dimensions: Readonly<Record<string, string>>, timestampMs: number): EmfDocument {
  const keys = (Object.keys(values) as MetricKey[]).filter((k) => values[k] !== undefined);
  if (keys.length === 0) throw new Error("emf: no metric values");
  if (keys.length > MAX_METRICS_PER_DIRECTIVE) throw new Error(`emf: ${keys.length} metrics, at most ${MAX_METRICS_PER_DIRECTIVE} per directive`);
  if (!Number.isInteger(timestampMs) || timestampMs < 0) throw new Error(`emf: timestamp must be epoch milliseconds, got ${timestampMs}`);
  const dims = TABLE[keys[0]].dimensions;
  if (dims.length > MAX_DIMENSIONS_PER_SET) throw new Error(`emf: ${dims.length} dimensions, at most ${MAX_DIMENSIONS_PER_SET}`);
  const doc: EmfDocument = {
    _aws: { Timestamp: timestampMs, CloudWatchMetrics: [{ Namespace: NS, Dimensions: [[...dims]], Metrics: [] }] },
  };
  for (const d of dims) {
    const v = dimensions[d];
    if (typeof v !== "string" || v.trim() === "") throw new Error(`emf: dimension ${d} must be a non-empty string`);
    doc[d] = v;
  }
  for (const k of keys) {
    const m = TABLE[k];
    if (m.dimensions.join(",") !== dims.join(",")) throw new Error(`emf: ${m.name} has dimensions [${m.dimensions}] but the line has [${dims}]`);
    const v = values[k]!;
    const list = typeof v === "number" ? [v] : v;
    if (list.length === 0 || list.length > MAX_VALUES_PER_METRIC) throw new Error(`emf: ${m.name} needs 1 to ${MAX_VALUES_PER_METRIC} values, got ${list.length}`);
    const bad = list.find((x) => typeof x !== "number" || !Number.isFinite(x));
    if (bad !== undefined) throw new Error(`emf: ${m.name} value ${String(bad)} is not a finite number`);
    doc._aws.CloudWatchMetrics[0].Metrics.push({ Name: m.name, Unit: m.unit });
    doc[m.name] = typeof v === "number" ? v : [...list];
  }
  return doc;
}

/** The EMF document as the one JSON line a log event must be. */
export function emf(values: MetricValues, dimensions: Readonly<Record<string, string>>, timestampMs: number): string {
  return JSON.stringify(emfDocument(values, dimensions, timestampMs));
}

// ---- Emitters: what each part of the platform writes ----

/** What the sync Lambda knows at the end of a batch (a subset of its summary line). */
export interface SyncBatchFigures {
  readonly clusterName: string;
  readonly changeCount: number;
  readonly rejectedCount: number;
  readonly failedNodes: number;
  /** True when the batch was handed back to SQS (the changes were not applied everywhere). */
  readonly retried: boolean;
}

/** One line per sync batch. */
export function syncBatchEmf(f: SyncBatchFigures, timestampMs: number): EmfDocument {
  return emfDocument(
    {
      syncBatches: 1,
      syncChangesApplied: f.retried ? 0 : f.changeCount,
      syncNodeFailures: f.failedNodes,
      syncFailedBatches: f.retried ? 1 : 0,
      syncRejectedEvents: f.rejectedCount,
    },
    { [CLUSTER]: f.clusterName },
    timestampMs,
  );
}

/** The model cache since the previous snapshot: the agents' counters (summed over them) and the leader's placements. */
export interface ModelCacheFigures {
  readonly fetches: number;
  readonly fetchesFailed: number;
  readonly bytesFetched: number;
  readonly hits: number;
  readonly misses: number;
  readonly evictions: number;
  readonly loadsAvoided: number;
}

export interface GatewaySnapshot {
  readonly clusterName: string;
  readonly waiting: number;
  readonly running: number;
  readonly websocketClients: number;
  readonly podsReady: number;
  /** Prompts accepted and 5xx answers since the previous snapshot. */
  readonly acceptedSinceLast: number;
  readonly http5xxSinceLast: number;
  /** Only with a models bucket (the model library): without one there is no cache to report, and nothing is written. */
  readonly modelCache?: ModelCacheFigures;
}

/** The gateway's periodic line (the leader writes one a minute). */
export function gatewaySnapshotEmf(s: GatewaySnapshot, timestampMs: number): EmfDocument {
  return emfDocument(
    {
      queueDepth: s.waiting + s.running,
      promptsWaiting: s.waiting,
      promptsRunning: s.running,
      websocketClients: s.websocketClients,
      podsReady: s.podsReady,
      promptsAccepted: s.acceptedSinceLast,
      http5xx: s.http5xxSinceLast,
      ...(s.modelCache
        ? {
          modelFetches: s.modelCache.fetches,
          modelFetchesFailed: s.modelCache.fetchesFailed,
          modelBytesFetched: s.modelCache.bytesFetched,
          modelCacheHits: s.modelCache.hits,
          modelCacheMisses: s.modelCache.misses,
          modelEvictions: s.modelCache.evictions,
          modelLoadsAvoided: s.modelCache.loadsAvoided,
        }
        : {}),
    },
    { [CLUSTER]: s.clusterName },
    timestampMs,
  );
}

export interface PromptOutcome {
  readonly clusterName: string;
  readonly outcome: "success" | "error";
  readonly waitSeconds: number;
  /** Absent when the prompt never started (it failed while waiting). */
  readonly runSeconds?: number;
  /** Files of type output in its history. @defaultValue 0 */
  readonly outputs?: number;
}

/** One line per finished prompt. */
export function promptOutcomeEmf(p: PromptOutcome, timestampMs: number): EmfDocument {
  return emfDocument(
    {
      ...(p.outcome === "success" ? { promptsSucceeded: 1 } : { promptsFailed: 1 }),
      promptWaitSeconds: p.waitSeconds,
      ...(p.runSeconds !== undefined ? { promptRunSeconds: p.runSeconds } : {}),
      outputsSaved: p.outputs ?? 0,
    },
    { [CLUSTER]: p.clusterName },
    timestampMs,
  );
}

export interface GpuFleetGroup {
  readonly clusterName: string;
  readonly instanceType: string;
  /** Karpenter's karpenter.sh/capacity-type: "spot" or "on-demand". */
  readonly capacityType: string;
  readonly nodes: number;
  readonly pods: number;
}

/** With the snapshot, one line per (instance type, capacity type) the ready pods run on. */
export function gpuFleetEmf(g: GpuFleetGroup, timestampMs: number): EmfDocument {
  return emfDocument(
    { gpuNodesByType: g.nodes, podsByType: g.pods },
    { [CLUSTER]: g.clusterName, [BY_TYPE[0]]: g.instanceType, [BY_TYPE[1]]: g.capacityType },
    timestampMs,
  );
}

/** One line per cold start, when its first prompt starts running. */
export function coldStartEmf(clusterName: string, seconds: number, timestampMs: number): EmfDocument {
  return emfDocument({ coldStartSeconds: seconds }, { [CLUSTER]: clusterName }, timestampMs);
}

export interface NodeReady {
  readonly clusterName: string;
  /** Kernel start → Node created (kubelet registered). */
  readonly registeredSeconds: number;
  /** Kernel start → the node's first ComfyUI pod Ready. */
  readonly readySeconds: number;
}

/** One line per new GPU node, once its first ComfyUI pod is Ready (the gateway sees both ends). */
export function nodeReadyEmf(n: NodeReady, timestampMs: number): EmfDocument {
  return emfDocument({ nodeRegisteredSeconds: n.registeredSeconds, comfyuiReadySeconds: n.readySeconds }, { [CLUSTER]: n.clusterName }, timestampMs);
}

/** What the node's boot summary says (karpenter/userdata/comfyui-models.sh, schema 1), in the terms of the metrics. */
export interface NodeBootFill {
  readonly clusterName: string;
  readonly seconds: number;
  readonly bytes: number;
  readonly hotSetFilesMissing: number;
  /** Kernel start → RAID mounted, → hot set filled, → image present; absent when not reached. */
  readonly raidSeconds?: number;
  readonly filledSeconds?: number;
  readonly imageSeconds?: number;
}

/** The node's line once its model folder is filled. */
export function nodeBootEmf(b: NodeBootFill, timestampMs: number): EmfDocument {
  return emfDocument(
    {
      bootFillSeconds: b.seconds,
      bootFillBytes: b.bytes,
      ...(b.seconds > 0 ? { bootFillThroughput: b.bytes / b.seconds } : {}),
      hotSetFilesMissing: b.hotSetFilesMissing,
      ...(b.raidSeconds !== undefined ? { bootRaidSeconds: b.raidSeconds } : {}),
      ...(b.filledSeconds !== undefined ? { bootFilledSeconds: b.filledSeconds } : {}),
      ...(b.imageSeconds !== undefined ? { bootImageSeconds: b.imageSeconds } : {}),
    },
    { [CLUSTER]: b.clusterName },
    timestampMs,
  );
}

/**
 * The node-boot line for the node itself, which has bash and jq but not this module: a jq program
 * generated from the table above that turns the boot summary (input) into the same EMF document as
 * `nodeBootEmf`, with the summary itself under `boot_summary` (a plain log field: one event carries
 * both). jq arguments: `--arg cluster NAME --argjson ts EPOCH_MS`. Each value is a jq expression
 * over the summary that yields null when the metric does not apply; null values are left out.
 */
export function nodeBootEmfJq(): string {
  const expr: Partial<Record<MetricKey, string>> = {
    bootFillSeconds: ".fill.seconds",
    bootFillBytes: ".fill.bytes",
    bootFillThroughput: "(if .fill.seconds > 0 then .fill.bytes / .fill.seconds else null end)",
    hotSetFilesMissing: ".fill.missing_files",
    bootRaidSeconds: "(if .t_raid then .t_raid - .t_boot else null end)",
    bootFilledSeconds: "(if .t_filled then .t_filled - .t_boot else null end)",
    bootImageSeconds: "(if .t_image then .t_image - .t_boot else null end)",
  };
  const keys = (Object.keys(TABLE) as MetricKey[]).filter((k) => TABLE[k].source === "node-boot");
  const missing = keys.filter((k) => !expr[k]);
  if (missing.length) throw new Error(`nodeBootEmfJq: no summary expression for ${missing.join(", ")}`);
  const values = keys.map((k) => `${JSON.stringify(TABLE[k].name)}: ${expr[k]}`).join(", ");
  const units = JSON.stringify(Object.fromEntries(keys.map((k) => [TABLE[k].name, TABLE[k].unit])));
  const dims = JSON.stringify([...TABLE[keys[0]].dimensions]);
  return (
    `. as $s | ({${values}} | with_entries(select(.value != null))) as $v | ${units} as $u` +
    ` | {_aws: {Timestamp: $ts, CloudWatchMetrics: [{Namespace: ${JSON.stringify(NS)}, Dimensions: [${dims}], Metrics: [$v | keys_unsorted[] | {Name: ., Unit: $u[.]}]}]}, ${JSON.stringify(CLUSTER)}: $cluster} + $v + {boot_summary: $s}`
  );
}

/**
 * Where the gateway and the GPU nodes send their lines: one log group per cluster, written with
 * PutLogEvents (CloudWatch extracts EMF from it; "Using the PutLogEvents API to send
 * manually-created embedded metric format logs", CloudWatch User Guide), one stream per writer.
 * Not the CloudWatch agent's EMF listener: a node's boot ends before kubelet, so before the agent
 * runs there, and one path for both writers keeps the IAM to one log group.
 */
export function metricsLogGroupName(clusterName: string): string {
  return `/comfyui/${clusterName}/metrics`;
}
/** Stream name prefixes: `gateway/<pod>` and `node-boot/<instance id>`; each writer's IAM is scoped to its own. */
export const GATEWAY_STREAM_PREFIX = "gateway/";
export const NODE_BOOT_STREAM_PREFIX = "node-boot/";

/**
 * Where each emitter runs in production; a test keeps this table honest by reading the named files
 * (each must import and call its emitter).
 */
export const EMITTER_WIRING: Record<MetricSource, { readonly emitter: string; readonly calledFrom: string }[]> = {
  sync: [{ emitter: "syncBatchEmf", calledFrom: "sync/handler.ts" }],
  gateway: [
    { emitter: "gatewaySnapshotEmf", calledFrom: "workload/gateway/telemetry/index.ts" },
    { emitter: "promptOutcomeEmf", calledFrom: "workload/gateway/telemetry/index.ts" },
    { emitter: "coldStartEmf", calledFrom: "workload/gateway/telemetry/index.ts" },
    { emitter: "nodeReadyEmf", calledFrom: "workload/gateway/telemetry/index.ts" },
    { emitter: "gpuFleetEmf", calledFrom: "workload/gateway/telemetry/index.ts" },
  ],
  "node-boot": [{ emitter: "nodeBootEmfJq", calledFrom: "karpenter/userdata/gpuUserData.ts" }],
};

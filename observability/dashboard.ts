/**
 * The CloudWatch dashboard body, as a pure function of plain values, and the layout table
 * docs/operations.md shows (rendered from the same body, so the doc cannot drift).
 *
 * Body structure after "Dashboard Body Structure and Syntax" (CloudWatch API Reference): a
 * `widgets` array; each widget has `type`, `x` (0–23), `y`, `width` (1–24), `height` and
 * `properties`; a metric widget's `metrics` rows are `[Namespace, MetricName, DimName, DimValue, …,
 * {options}]` or `[{ expression, label, id }]`, and it needs `region`. AWS metrics drawn here are the
 * documented ones listed in test/upstream/observability/aws-metrics.json; ours come from metrics.ts.
 */
import { CLUSTER_DIMENSION, METRICS, MetricKey, NAMESPACE } from "../contracts/metrics";
import { nodesNeverRegisteredMetric } from "./alarms";

export interface DashboardParams {
  region: string;
  clusterName: string;
  /** Kubernetes namespace of the ComfyUI pods. */
  workloadNamespace: string;
  syncQueueName: string;
  syncDeadLetterQueueName: string;
  syncFunctionName: string;
  /** Karpenter's interruption EventBridge rules (TriggeredRules per RuleName). */
  spotInterruptionRuleName: string;
  rebalanceRuleName: string;
  /** CloudFront distribution; its metrics live in us-east-1 with Region=Global. */
  cloudFrontDistributionId?: string;
  /** Whether GPU utilisation/memory (DCGM through the agent) is collected. */
  gpuMetrics: boolean;
  /** USD per GPU-hour used for the spend line (the dearest configured type, per GPU). */
  gpuUsdPerGpuHour: number;
  gpuDailyBudgetUsd?: number;
}

type MetricRow = (string | Record<string, unknown>)[];
export interface Widget {
  type: "metric" | "text";
  x: number;
  y: number;
  width: number;
  height: number;
  properties: Record<string, unknown> & { title?: string; metrics?: MetricRow[]; region?: string; markdown?: string };
}
export interface DashboardBody {
  widgets: Widget[];
}

const HEIGHT = 6;

/** A row of our metric with the cluster dimension, and drawing options. */
function ours(key: MetricKey, clusterName: string, options: Record<string, unknown>): MetricRow {
  return [NAMESPACE, METRICS[key].name, CLUSTER_DIMENSION, clusterName, options];
}

type Draft = Omit<Widget, "x" | "y" | "height">;

function graph(title: string, region: string, metrics: MetricRow[], extra: Record<string, unknown> = {}, width = 6): Draft {
  return { type: "metric", width, properties: { title, region, view: "timeSeries", stacked: false, period: 300, metrics, ...extra } };
}

/** The rows of the dashboard, top to bottom; each row's widths add up to 24. */
function rows(p: DashboardParams): Draft[][] {
  const c = p.clusterName;
  const r = p.region;
  const ci = (name: string, dims: string[], options: Record<string, unknown>): MetricRow => ["ContainerInsights", name, ...dims, options];
  const out: Draft[][] = [
    [
      graph("Prompts (per 5 min) and images per hour", r, [
        ours("promptsAccepted", c, { stat: "Sum", label: "accepted" }),
        ours("promptsSucceeded", c, { stat: "Sum", label: "finished" }),
        ours("promptsFailed", c, { stat: "Sum", label: "failed" }),
        ours("outputsSaved", c, { stat: "Sum", period: 3600, label: "images saved per hour", yAxis: "right" }),
      ]),
      graph("Queue", r, [
        ours("queueDepth", c, { stat: "Maximum", label: "queued + running" }),
        ours("promptsWaiting", c, { stat: "Maximum", label: "waiting" }),
        ours("promptsRunning", c, { stat: "Maximum", label: "running" }),
      ]),
      graph("Wait and run time (s)", r, [
        ours("promptWaitSeconds", c, { stat: "p50", label: "wait p50" }),
        ours("promptWaitSeconds", c, { stat: "p95", label: "wait p95" }),
        ours("promptRunSeconds", c, { stat: "p50", label: "run p50" }),
        ours("promptRunSeconds", c, { stat: "p95", label: "run p95" }),
      ]),
      graph("Cold start (s)", r, [
        ours("coldStartSeconds", c, { stat: "p50", label: "p50" }),
        ours("coldStartSeconds", c, { stat: "p95", label: "p95" }),
        ours("coldStartSeconds", c, { stat: "SampleCount", label: "cold starts", yAxis: "right" }),
      ]),
    ],
    [
      graph("Gateway clients and 5xx", r, [
        ours("websocketClients", c, { stat: "Maximum", label: "WebSocket clients" }),
        ours("http5xx", c, { stat: "Sum", label: "5xx answers", yAxis: "right" }),
      ]),
      graph("ComfyUI pods", r, [
        ci("namespace_number_of_running_pods", ["ClusterName", c, "Namespace", p.workloadNamespace], { stat: "Maximum", label: "running pods" }),
        ours("podsReady", c, { stat: "Maximum", label: "ready for prompts (gateway)" }),
      ]),
      graph("Nodes and GPUs", r, [
        ci("cluster_node_count", ["ClusterName", c], { stat: "Maximum", label: "nodes" }),
        ci("node_gpu_limit", ["ClusterName", c], { stat: "Sum", period: 60, label: "GPUs (per minute)" }),
        ci("node_gpu_usage_total", ["ClusterName", c], { stat: "Sum", period: 60, label: "GPUs in use (per minute)" }),
        [NAMESPACE, nodesNeverRegisteredMetric(c), { stat: "Sum", label: "GPU nodes launched, never registered", yAxis: "right" }],
      ]),
      graph("Spot interruptions and rebalance notices", r, [
        ["AWS/Events", "TriggeredRules", "RuleName", p.spotInterruptionRuleName, { stat: "Sum", label: "spot interruption warnings" }],
        ["AWS/Events", "TriggeredRules", "RuleName", p.rebalanceRuleName, { stat: "Sum", label: "rebalance recommendations" }],
      ]),
    ],
  ];
  // The GPU fleet by EC2 type and spot / on-demand: one series per combination the gateway saw.
  const byType = (key: MetricKey, label: string): MetricRow => [{
    expression: `SEARCH('{${NAMESPACE},${[...METRICS[key].dimensions].join(",")}} MetricName="${METRICS[key].name}" ${CLUSTER_DIMENSION}="${c}"', 'Maximum', 300)`,
    label,
    id: key.toLowerCase(),
  }];
  out.push([
    graph("GPU nodes by instance type and capacity type", r, [byType("gpuNodesByType", "nodes")], {}, 12),
    graph("ComfyUI pods by instance type and capacity type", r, [byType("podsByType", "pods")], {}, 12),
  ]);
  // A real deployment's own cold start, phase by phase (the node writes the first four at boot, the
  // gateway the last two when it sees the Node and the pod), next to the fill that dominates it.
  out.push([
    graph("GPU node start, from kernel start (s, p50)", r, [
      ours("bootRaidSeconds", c, { stat: "p50", label: "NVMe RAID ready" }),
      ours("bootImageSeconds", c, { stat: "p50", label: "image present" }),
      ours("bootFilledSeconds", c, { stat: "p50", label: "hot set filled" }),
      ours("nodeRegisteredSeconds", c, { stat: "p50", label: "kubelet registered" }),
      ours("comfyuiReadySeconds", c, { stat: "p50", label: "ComfyUI ready" }),
      ours("comfyuiReadySeconds", c, { stat: "p95", label: "ComfyUI ready p95" }),
    ], {}, 12),
    graph("Boot fill", r, [
      ours("bootFillSeconds", c, { stat: "p50", label: "fill seconds p50" }),
      ours("bootFillThroughput", c, { stat: "Average", label: "bytes/s", yAxis: "right" }),
      ours("bootFillBytes", c, { stat: "Average", label: "bytes per node", yAxis: "right", visible: false }),
    ]),
    graph("Hot-set files missing at boot", r, [ours("hotSetFilesMissing", c, { stat: "Maximum", label: "missing (worst node)" })]),
  ]);
  if (p.gpuMetrics) {
    out.push([
      graph("GPU utilisation (%)", r, [
        ci("node_gpu_utilization", ["ClusterName", c], { stat: "Average", label: "average" }),
        ci("node_gpu_utilization", ["ClusterName", c], { stat: "Maximum", label: "busiest" }),
      ], { yAxis: { left: { min: 0, max: 100 } } }, 12),
      graph("GPU memory (%)", r, [
        ci("node_gpu_memory_utilization", ["ClusterName", c], { stat: "Average", label: "average" }),
        ci("node_gpu_memory_utilization", ["ClusterName", c], { stat: "Maximum", label: "fullest" }),
      ], { yAxis: { left: { min: 0, max: 100 } } }, 12),
    ]);
  }
  // The nodes' model caches (the gateway's snapshot, summed over the model agents; sums per 5 minutes).
  out.push([
    graph("Model cache: files found or fetched", r, [
      ours("modelCacheHits", c, { stat: "Sum", label: "found on the node", id: "hits" }),
      ours("modelCacheMisses", c, { stat: "Sum", label: "fetched first", id: "misses" }),
      // Files, not bytes: of the files prompts needed, the share their node already held.
      [{ expression: "100 * hits / (hits + misses)", label: "hit ratio (%)", id: "hitratio", yAxis: "right" }],
    ], { yAxis: { right: { min: 0, max: 100 } } }, 8),
    graph("Model downloads", r, [
      ours("modelFetches", c, { stat: "Sum", label: "started" }),
      ours("modelFetchesFailed", c, { stat: "Sum", label: "failed" }),
      ours("modelBytesFetched", c, { stat: "Sum", label: "bytes fetched", yAxis: "right" }),
    ], {}, 8),
    graph("Model loads avoided and evictions", r, [
      ours("modelLoadsAvoided", c, { stat: "Sum", label: "prompts on a pod with their model loaded" }),
      ours("modelEvictions", c, { stat: "Sum", label: "files evicted for room", yAxis: "right" }),
    ], {}, 8),
  ]);
  out.push([
    graph("Model sync", r, [
      ours("syncBatches", c, { stat: "Sum", label: "batches" }),
      ours("syncChangesApplied", c, { stat: "Sum", label: "changes applied" }),
      ours("syncNodeFailures", c, { stat: "Sum", label: "node failures" }),
      ours("syncFailedBatches", c, { stat: "Sum", label: "batches retried" }),
      ours("syncRejectedEvents", c, { stat: "Sum", label: "events rejected" }),
    ], {}, 8),
    graph("Sync queues", r, [
      ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", p.syncQueueName, { stat: "Maximum", label: "queue" }],
      ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", p.syncDeadLetterQueueName, { stat: "Maximum", label: "dead-letter queue" }],
    ], {}, 8),
    graph("Sync Lambda", r, [
      ["AWS/Lambda", "Invocations", "FunctionName", p.syncFunctionName, { stat: "Sum", label: "invocations" }],
      ["AWS/Lambda", "Errors", "FunctionName", p.syncFunctionName, { stat: "Sum", label: "errors" }],
      ["AWS/Lambda", "Duration", "FunctionName", p.syncFunctionName, { stat: "Maximum", label: "longest (ms)", yAxis: "right" }],
    ], {}, 8),
  ]);
  if (p.cloudFrontDistributionId !== undefined) {
    const d = p.cloudFrontDistributionId;
    // CloudFront publishes to us-east-1 only, with Region=Global ("Viewing CloudFront metrics").
    const cf = (name: string, options: Record<string, unknown>): MetricRow => ["AWS/CloudFront", name, "DistributionId", d, "Region", "Global", options];
    out.push([
      graph("CloudFront requests", "us-east-1", [cf("Requests", { stat: "Sum", label: "requests" })], {}, 8),
      graph("CloudFront errors (%)", "us-east-1", [cf("4xxErrorRate", { stat: "Average", label: "4xx" }), cf("5xxErrorRate", { stat: "Average", label: "5xx" })], {}, 8),
      graph("CloudFront origin latency (ms)", "us-east-1", [cf("OriginLatency", { stat: "p95", label: "p95" })], {}, 8),
    ]);
  }
  const spendRows: MetricRow[] = [
    ci("node_gpu_limit", ["ClusterName", c], { stat: "Sum", period: 86400, id: "gpumin", visible: false }),
    // node_gpu_limit is reported once a minute per node: a day's Sum is GPU-minutes.
    [{ expression: "gpumin / 60", label: "GPU-hours", id: "gpuh" }],
    [{ expression: `gpuh * ${p.gpuUsdPerGpuHour}`, label: `USD at $${p.gpuUsdPerGpuHour}/GPU-hour`, id: "usd", yAxis: "right" }],
  ];
  out.push([
    graph("GPU-hours and spend per day", r, spendRows, {
      period: 86400,
      view: "bar",
      ...(p.gpuDailyBudgetUsd !== undefined ? { annotations: { horizontal: [{ label: "daily budget (USD)", value: p.gpuDailyBudgetUsd, yAxis: "right" }] } } : {}),
    }, 16),
    {
      type: "text",
      width: 8,
      properties: {
        markdown:
          `### Where to look next\nAlarms go to the stack's SNS topic; what each means and what to do: docs/operations.md.\n\n` +
          `Spend is on-demand price × GPU-hours (spot costs less); budget: ${p.gpuDailyBudgetUsd !== undefined ? `$${p.gpuDailyBudgetUsd}/day` : "not set"}.`,
      },
    },
  ]);
  return out;
}

export function dashboardBody(p: DashboardParams): DashboardBody {
  const widgets: Widget[] = [];
  let y = 0;
  for (const row of rows(p)) {
    let x = 0;
    for (const w of row) {
      widgets.push({ ...w, x, y, height: HEIGHT });
      x += w.width;
    }
    y += HEIGHT;
  }
  return { widgets };
}

/** The layout as a Markdown table: one line per row of widgets, each with its width in grid columns (of 24). */
export function renderLayout(body: DashboardBody): string {
  const byRow = new Map<number, Widget[]>();
  for (const w of body.widgets) byRow.set(w.y, [...(byRow.get(w.y) ?? []), w]);
  const lines = ["| row | widgets, left to right (width of 24) |", "|---|---|"];
  [...byRow.keys()].sort((a, b) => a - b).forEach((y, i) => {
    const cells = byRow.get(y)!.sort((a, b) => a.x - b.x).map((w) => `${w.properties.title ?? "notes (text)"} (${w.width})`);
    lines.push(`| ${i + 1} | ${cells.join(" · ")} |`);
  });
  return lines.join("\n");
}

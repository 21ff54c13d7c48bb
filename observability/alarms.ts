/**
 * The alarms, as plain data: what each watches, its threshold and period, and a description that
 * says what to do. Every one goes to the stack's SNS topic (observability/index.ts); `checkAlarm`
 * refuses an alarm that could page nobody or leave the reader without a next step.
 */
import { CLUSTER_DIMENSION, METRICS, NAMESPACE } from "./metrics";

export interface AlarmMetric {
  namespace: string;
  metricName: string;
  dimensions: Record<string, string>;
  stat: string;
  period: number;
}

export interface AlarmSpec {
  key: string;
  description: string;
  /** What it means and what to do, for docs/operations.md. */
  meaning: string;
  action: string;
  comparisonOperator: "GreaterThanThreshold" | "GreaterThanOrEqualToThreshold";
  threshold: number;
  evaluationPeriods: number;
  treatMissingData: "notBreaching" | "missing";
  /** One metric, or metric math with `expression` over `metrics` (ids m1, m2…). */
  metric?: AlarmMetric;
  expression?: { expression: string; label: string; metrics: Record<string, AlarmMetric> };
}

export interface AlarmParams {
  clusterName: string;
  syncDeadLetterQueueName: string;
  syncFunctionName: string;
  /** Failed prompts, in % of finished ones over 15 minutes, above which to alarm. */
  failedPromptRatePercent: number;
  /** Gateway 5xx answers per 5 minutes above which to alarm. */
  gateway5xxPerFiveMinutes: number;
  gpuUsdPerGpuHour: number;
  gpuDailyBudgetUsd?: number;
}

const ours = (key: keyof typeof METRICS, clusterName: string, stat: string, period: number): AlarmMetric => ({
  namespace: NAMESPACE,
  metricName: METRICS[key].name,
  dimensions: { [CLUSTER_DIMENSION]: clusterName },
  stat,
  period,
});

export function alarmSpecs(p: AlarmParams): AlarmSpec[] {
  const alarms: AlarmSpec[] = [
    {
      key: "sync-dlq",
      meaning: "A model change could not be delivered to the GPU nodes after 5 receives and waits in the dead-letter queue.",
      action:
        "Read the sync Lambda's log (its 'model sync summary' lines name the failed nodes and their stderr), fix the cause, then redrive the dead-letter queue to the sync queue (SQS console: Start DLQ redrive). Nodes started since read the bucket at boot and are already current.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: 0,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      metric: { namespace: "AWS/SQS", metricName: "ApproximateNumberOfMessagesVisible", dimensions: { QueueName: p.syncDeadLetterQueueName }, stat: "Maximum", period: 300 },
    },
    {
      key: "sync-lambda-errors",
      meaning: "The sync Lambda itself failed (crash, timeout, bad configuration), so a whole batch went back to SQS.",
      action: "Open the function's log group (/aws/lambda/<function>) for the error; configuration errors name the missing variable. SQS redelivers the batch by itself.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: 0,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      metric: { namespace: "AWS/Lambda", metricName: "Errors", dimensions: { FunctionName: p.syncFunctionName }, stat: "Sum", period: 300 },
    },
    {
      key: "sync-node-failures",
      meaning: "At least one running GPU node did not apply a model change after every attempt (the batch is retried by SQS).",
      action: "Find the node in the summary line's 'failed' list; check its SSM agent and disk (`comfyui-models` stderr is in the line). A node that keeps failing can be deleted: Karpenter replaces it and the new one reads the bucket at boot.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: 0,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      metric: ours("syncNodeFailures", p.clusterName, "Sum", 300),
    },
    {
      key: "gateway-failed-prompts",
      meaning: `More than ${p.failedPromptRatePercent} % of the prompts that finished in 15 minutes failed.`,
      action: "Look at the gateway's log for the failing prompts' execution_error (a missing model or custom node is the usual cause); if every prompt fails, check the ComfyUI pods' logs and the last image build.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: p.failedPromptRatePercent,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      expression: {
        expression: "IF((FILL(m1,0)+FILL(m2,0)) > 0, 100*FILL(m1,0)/(FILL(m1,0)+FILL(m2,0)), 0)",
        label: "failed prompts (%)",
        metrics: { m1: ours("promptsFailed", p.clusterName, "Sum", 900), m2: ours("promptsSucceeded", p.clusterName, "Sum", 900) },
      },
    },
    {
      key: "gateway-5xx",
      meaning: `The gateway answered more than ${p.gateway5xxPerFiveMinutes} requests with a 5xx in 5 minutes.`,
      action: "Check the gateway pods (kubectl -n comfyui logs deploy/gateway) and DynamoDB throttling; a leader hand-over shows as a short burst.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: p.gateway5xxPerFiveMinutes,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      metric: ours("http5xx", p.clusterName, "Sum", 300),
    },
  ];
  if (p.gpuDailyBudgetUsd !== undefined) {
    alarms.push({
      key: "gpu-spend",
      meaning: `GPU nodes cost more than $${p.gpuDailyBudgetUsd} over the last 24 hours at $${p.gpuUsdPerGpuHour} per GPU-hour (on-demand; spot is cheaper, so this errs high).`,
      action: "See which prompts kept GPUs busy (dashboard: queue and GPUs); lower maxReplicas or gpuLimit, shorten idleMinutes, or raise gpuDailyBudgetUsd if the work was wanted.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: p.gpuDailyBudgetUsd,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      expression: {
        // node_gpu_limit comes once a minute per node: a day's Sum is GPU-minutes.
        expression: `m1 / 60 * ${p.gpuUsdPerGpuHour}`,
        label: "GPU spend (USD, 24 h)",
        metrics: { m1: { namespace: "ContainerInsights", metricName: "node_gpu_limit", dimensions: { ClusterName: p.clusterName }, stat: "Sum", period: 86400 } },
      },
    });
  }
  for (const a of alarms) a.description = `${a.meaning} What to do: ${a.action}`.slice(0, 1024);
  return alarms;
}

/** What a MetricAlarm's inputs must hold to be useful: an action, a threshold, a period, a description. */
export interface AlarmInputsLike {
  alarmActions?: unknown[];
  threshold?: number;
  period?: number;
  alarmDescription?: string;
  metricQueries?: { metric?: { period?: number } }[];
}

/** Throws naming the alarm and what is missing. */
export function checkAlarm(name: string, a: AlarmInputsLike): void {
  const problems: string[] = [];
  if (!a.alarmActions || a.alarmActions.length === 0) problems.push("no alarm action (nobody would be told)");
  if (typeof a.threshold !== "number" || !Number.isFinite(a.threshold)) problems.push("no threshold");
  const periods = a.metricQueries ? a.metricQueries.filter((q) => q.metric).map((q) => q.metric!.period) : [a.period];
  if (periods.length === 0 || periods.some((x) => typeof x !== "number" || x < 10)) problems.push("no period");
  if (!a.alarmDescription || !/What to do: \S/.test(a.alarmDescription)) problems.push("no description saying what to do");
  if (problems.length > 0) throw new Error(`alarm ${name}: ${problems.join("; ")}`);
}

/** The alarms as a Markdown table for docs/operations.md. */
export function renderAlarmTable(alarms: AlarmSpec[]): string {
  const watched = (a: AlarmSpec) =>
    a.metric ? `${a.metric.namespace} ${a.metric.metricName} (${a.metric.stat}, ${a.metric.period} s)` : `${a.expression!.label}: ${a.expression!.expression} (${Object.values(a.expression!.metrics)[0].period} s)`;
  const op = (a: AlarmSpec) => (a.comparisonOperator === "GreaterThanThreshold" ? ">" : "≥");
  return [
    "| alarm | watches | fires when | what it means | what to do |",
    "|---|---|---|---|---|",
    ...alarms.map((a) => `| \`${a.key}\` | ${watched(a).replace(/\|/g, "\\|")} | ${op(a)} ${a.threshold} | ${a.meaning} | ${a.action} |`),
  ].join("\n");
}

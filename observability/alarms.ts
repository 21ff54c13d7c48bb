/**
 * The alarms, as plain data: what each watches, its threshold and period, and a description that
 * says what to do. Every one goes to the stack's SNS topic (observability/index.ts); `checkAlarm`
 * refuses an alarm that could page nobody or leave the reader without a next step.
 */
import { CLUSTER_DIMENSION, COLD_START_BUDGET_SECONDS, METRICS, NAMESPACE } from "../contracts/metrics";

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
  /** Namespace of the ComfyUI pods. @defaultValue none (no "GPU pods pending" alarm) */
  workloadNamespace?: string;
  /** Name of the ComfyUI Deployment (workload/index.ts names it "comfyui"). @defaultValue "comfyui" */
  comfyuiDeploymentName?: string;
}

/**
 * A metric that a CloudWatch Logs metric filter makes (not an emitter): Karpenter's log line for a
 * NodeClaim deleted before its node ever registered, counted in our namespace. A metric filter can
 * only take dimensions from fields of the log event, and no field Fluent Bit writes names the
 * cluster (the log group does), so the metric has no dimension and carries the cluster in its
 * name instead: two stacks in one account and region count their own nodes.
 */
export function nodesNeverRegisteredMetric(clusterName: string): string {
  return `NodesNeverRegistered-${clusterName}`;
}

export interface LogMetricFilterSpec {
  /** Filter name, unique per log group. */
  name: string;
  logGroupName: (clusterName: string) => string;
  pattern: string;
  metricNamespace: string;
  metricName: string;
  /** Each match counts 1; minutes without a match report 0, so the alarm sees zeros, not gaps. */
  metricValue: "1";
  defaultValue: number;
  unit: "Count";
}

/**
 * The metric filter behind "gpu-nodes-never-registered", as plain data for observability/index.ts
 * to create (aws.cloudwatch.LogMetricFilter).
 *
 * What Karpenter v1.14.1 writes (kubernetes-sigs/karpenter@v1.14.1):
 * - pkg/controllers/nodeclaim/lifecycle/liveness.go deletes a launched NodeClaim whose Registered
 *   condition did not turn true within registrationTimeout (15 minutes), logging "terminating due
 *   to timeout" with reason "registration_timeout" — but at V(1), i.e. zap's debug level, which the
 *   default log level (info, pkg/operator/logging/logging.go) drops; it records no Event for it.
 * - pkg/controllers/nodeclaim/lifecycle/controller.go then finalizes the NodeClaim and logs
 *   "deleted nodeclaim" at info. Its context carries "provider-id" when the instance was launched
 *   (Status.ProviderID) and "Node" only when Status.NodeName is set, which registration.go does
 *   when the node registers. So "deleted nodeclaim" with a provider-id and no Node is an instance
 *   that launched and never became a node; a launch failure has no provider-id.
 * - Logs are zap JSON with keys message, level, time, logger (logging.go EncoderConfig).
 *
 * How the line reaches CloudWatch (aws-observability/helm-charts amazon-cloudwatch-observability-6.4.0,
 * values.yaml application-log.conf): Fluent Bit tails /var/log/containers/*.log except the
 * cloudwatch-agent, fluent-bit, aws-node and kube-proxy files (Karpenter's pods in kube-system are
 * not excluded), keeps the raw line in `log`, merges its JSON under `log_processed` (Merge_Log On,
 * Merge_Log_Key log_processed) and adds `kubernetes.namespace_name`, into
 * /aws/containerinsights/<cluster>/application.
 */
export function nodesNeverRegisteredFilter(karpenterNamespace: string, clusterName: string): LogMetricFilterSpec {
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(karpenterNamespace)) throw new Error(`karpenterNamespace: '${karpenterNamespace}' is not a Kubernetes namespace name`);
  return {
    name: "karpenter-nodeclaim-never-registered",
    logGroupName: (clusterName) => `/aws/containerinsights/${clusterName}/application`,
    // The hyphenated key is matched in the raw line with a regex ("%…%", whose allowed symbols
    // include '-' but not quotes) rather than as a JSON selector.
    pattern:
      `{ $.kubernetes.namespace_name = "${karpenterNamespace}" && $.log_processed.message = "deleted nodeclaim" && ` +
      "$.log_processed.Node NOT EXISTS && $.log = %provider-id% }",
    metricNamespace: NAMESPACE,
    metricName: nodesNeverRegisteredMetric(clusterName),
    metricValue: "1",
    defaultValue: 0,
    unit: "Count",
  };
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
  if (p.workloadNamespace !== undefined) {
    // Container Insights' leader agent reports each Pending pod, scheduled or not, from the API
    // server with PodName = its Deployment (awscontainerinsightreceiver k8sapiserver.go
    // getPendingPodStatusMetrics / getKubernetesBlob); [ClusterName, Namespace, PodName] is one of
    // pod_status_pending's dimension sets. Datapoints come once a minute and only while a pod is
    // pending, so no data means none pending.
    const minutes = Math.ceil(COLD_START_BUDGET_SECONDS / 60);
    alarms.push({
      key: "gpu-pods-pending",
      meaning:
        `A ComfyUI pod has been Pending in every minute for ${minutes} minutes, longer than the documented wake budget (${COLD_START_BUDGET_SECONDS} s). ` +
        "Approximation: the alarm sees the count of pending pods per minute, not each pod's age, so pods that keep arriving pending back to back also fire it.",
      action:
        `kubectl -n ${p.workloadNamespace} describe pod -l app.kubernetes.io/name=comfyui shows why (FailedScheduling, image pull, volume); ` +
        "check Karpenter's log for the NodeClaim it launched, the G/VT vCPU quota and the NodePool limits.",
      description: "",
      comparisonOperator: "GreaterThanOrEqualToThreshold",
      threshold: 1,
      evaluationPeriods: minutes,
      treatMissingData: "notBreaching",
      metric: {
        namespace: "ContainerInsights",
        metricName: "pod_status_pending",
        dimensions: { ClusterName: p.clusterName, Namespace: p.workloadNamespace, PodName: p.comfyuiDeploymentName ?? "comfyui" },
        stat: "Minimum",
        period: 60,
      },
    });
  }
  alarms.push(
    {
      key: "prompts-waiting-no-gpu",
      meaning: "Prompts have waited for 15 minutes (three 5-minute periods) while no GPU pod was ready at any moment: no GPU node could start.",
      action:
        "Check the G and VT instance vCPU quota (Service Quotas, EC2 'Running On-Demand G and VT instances' and the spot one), Karpenter's log " +
        "(kubectl -n kube-system logs deploy/karpenter) for launch errors and insufficient capacity, the NodePool limits (kubectl get nodepool), " +
        "and image pull errors on pending pods (kubectl -n comfyui get events).",
      description: "",
      comparisonOperator: "GreaterThanOrEqualToThreshold",
      threshold: 1,
      evaluationPeriods: 3,
      treatMissingData: "notBreaching",
      expression: {
        // Nested IF instead of AND: only IF and comparison operators, as the failed-prompt alarm uses.
        expression: "IF(FILL(m1,0) > 0, IF(FILL(m2,0) == 0, 1, 0), 0)",
        label: "prompts waiting, no GPU pod ready",
        metrics: { m1: ours("promptsWaiting", p.clusterName, "Minimum", 300), m2: ours("podsReady", p.clusterName, "Maximum", 300) },
      },
    },
    {
      key: "gpu-nodes-never-registered",
      meaning: "Karpenter deleted a GPU NodeClaim whose instance launched but never registered as a node (Karpenter gives up after 15 minutes).",
      action:
        "Read the instance's console output (EC2: Get system log) for the boot failure (user data, RAID, model fill); kubectl -n kube-system logs deploy/karpenter " +
        "around the 'deleted nodeclaim' line names the NodeClaim and provider-id. Repeated failures mark the NodePool NodeRegistrationHealthy=False.",
      description: "",
      comparisonOperator: "GreaterThanThreshold",
      threshold: 0,
      evaluationPeriods: 1,
      treatMissingData: "notBreaching",
      metric: { namespace: NAMESPACE, metricName: nodesNeverRegisteredMetric(p.clusterName), dimensions: {}, stat: "Sum", period: 300 },
    },
  );
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

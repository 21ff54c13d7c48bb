/**
 * Observability from one link: a CloudWatch dashboard, alarms that reach a person through one
 * encrypted SNS topic, Container Insights (with NVIDIA GPU metrics, switchable) through the
 * amazon-cloudwatch-observability EKS add-on, and log retention for the groups it writes.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { policyJson, POD_IDENTITY_TRUST, Statement } from "../cluster/iam";
import { alarmSpecs, AlarmSpec, checkAlarm, nodesNeverRegisteredFilter } from "./alarms";
import { dashboardBody } from "./dashboard";

export { dashboardBody, renderLayout } from "./dashboard";
export { alarmSpecs, checkAlarm, renderAlarmTable } from "./alarms";
export * from "../contracts/metrics";

/**
 * The add-on's namespace and the agent's service account: "Quick start with the Amazon CloudWatch
 * Observability EKS add-on" (CloudWatch User Guide) names `cloudwatch-agent` in `amazon-cloudwatch`
 * for its Pod Identity association (add-on v3.1.0 or later) and the AWS-managed
 * CloudWatchAgentServerPolicy as the permissions the agent needs.
 */
export const AGENT_NAMESPACE = "amazon-cloudwatch";
export const AGENT_SERVICE_ACCOUNT = "cloudwatch-agent";
/** Not a *FullAccess policy: it lets the agent write metrics and logs and read its own SSM parameters (AWS Managed Policy Reference). */
export const AGENT_MANAGED_POLICY_ARN = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy";

/**
 * The add-on's configuration. `agent.config` replaces the agent's default configuration, so it
 * states all we want: enhanced Container Insights, NVIDIA GPU metrics only when `gpuMetrics`
 * (`accelerated_compute_metrics`; the agent treats a missing key as true under enhanced
 * Container Insights — aws/amazon-cloudwatch-agent translator tests "missingAcceleratedComputeMetric").
 * No EMF listener: our own lines go to the metrics log group with PutLogEvents (metrics.ts
 * metricsLogGroupName), the one path that also works during a node's boot. Application Signals
 * is left out (billed per request; nothing here is instrumented). `containerLogs.enabled` keeps
 * Fluent Bit shipping pod logs (chart values.yaml, aws-observability/helm-charts
 * amazon-cloudwatch-observability-6.4.0; example in "Install the CloudWatch agent with the Amazon
 * CloudWatch Observability EKS add-on").
 */
export function addonConfiguration(gpuMetrics: boolean): object {
  return {
    containerLogs: { enabled: true },
    agent: {
      config: {
        logs: {
          metrics_collected: {
            kubernetes: { enhanced_container_insights: true, accelerated_compute_metrics: gpuMetrics },
          },
        },
      },
    },
  };
}

/** Log groups Container Insights writes for a cluster (created here first, so they get our retention). */
const CONTAINER_INSIGHTS_GROUPS = ["application", "dataplane", "host", "performance"] as const;
export function containerInsightsLogGroups(clusterName: string): string[] {
  return CONTAINER_INSIGHTS_GROUPS.map((g) => `/aws/containerinsights/${clusterName}/${g}`);
}

/** Retention values CloudWatch Logs accepts (PutRetentionPolicy). */
export const RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653] as const;

export interface ObservabilityArgs {
  /** EKS cluster name: the ClusterName dimension of every metric and the add-on's cluster. */
  clusterName: pulumi.Input<string>;
  /** The stack's region (dashboard, alarms, topic). */
  region: string;
  accountId: pulumi.Input<string>;
  /** Kubernetes namespace of the ComfyUI pods. */
  workloadNamespace: string;
  /** Namespace Karpenter runs in (its logs feed the "never registered" count). */
  karpenterNamespace: string;
  syncQueueName: pulumi.Input<string>;
  syncDeadLetterQueueName: pulumi.Input<string>;
  syncFunctionName: pulumi.Input<string>;
  /** Karpenter's EventBridge rules for spot interruption warnings and rebalance recommendations. */
  spotInterruptionRuleName: pulumi.Input<string>;
  rebalanceRuleName: pulumi.Input<string>;
  /** CloudFront distribution, when the edge is on. @defaultValue none (no CloudFront row) */
  cloudFrontDistributionId?: pulumi.Input<string>;
  /** USD per GPU-hour for the spend line and alarm (the dearest configured type, divided by its GPUs). */
  gpuUsdPerGpuHour: pulumi.Input<number>;
  /** Alarm when a day's GPU spend exceeds this. @defaultValue none (no spend alarm) */
  gpuDailyBudgetUsd?: number;
  /** Addresses subscribed to the alarm topic (each confirms by email). @defaultValue [] */
  alertEmails?: string[];
  /** Days to keep Container Insights logs. @defaultValue 30 */
  logRetentionDays?: number;
  /** Collect NVIDIA GPU metrics (DCGM through the agent). @defaultValue true */
  gpuMetrics?: boolean;
  /** @defaultValue 10 */
  failedPromptRatePercent?: number;
  /** @defaultValue 5 */
  gateway5xxPerFiveMinutes?: number;
  /** amazon-cloudwatch-observability version. @defaultValue EKS's default for the cluster version */
  addonVersion?: string;
  /** What the add-on must wait for (system nodes, Pod Identity agent). @defaultValue [] */
  dependsOn?: pulumi.Resource[];
  tags?: Record<string, string>;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function validate(args: ObservabilityArgs, retention: number): void {
  const bad = (propertyPath: string, reason: string) => new pulumi.InputPropertyError({ propertyPath, reason });
  for (const e of args.alertEmails ?? []) if (!EMAIL.test(e)) throw bad("alertEmails", `'${e}' is not an email address`);
  if (!(RETENTION_DAYS as readonly number[]).includes(retention)) throw bad("logRetentionDays", `must be one of ${RETENTION_DAYS.join(", ")}, got ${retention}`);
  if (args.gpuDailyBudgetUsd !== undefined && !(args.gpuDailyBudgetUsd > 0)) throw bad("gpuDailyBudgetUsd", `must be a positive number, got ${args.gpuDailyBudgetUsd}`);
  for (const [k, v] of [["failedPromptRatePercent", args.failedPromptRatePercent], ["gateway5xxPerFiveMinutes", args.gateway5xxPerFiveMinutes]] as const) {
    if (v !== undefined && !(v >= 0)) throw bad(k, `must be zero or more, got ${v}`);
  }
}

/**
 * The only service that publishes to the alarm topic: CloudWatch, for the alarms below (their
 * alarmActions). No EventBridge rule targets the topic (Karpenter's rules target its interruption
 * queue), so EventBridge gets no grant; a rule added later must add its principal here and the
 * whole-program test (test/program/security.test.ts) ties every grant to a publisher in the graph.
 */
export const TOPIC_PUBLISHERS = ["cloudwatch.amazonaws.com"] as const;

/** Key policy: the account administers the key; CloudWatch may use it to publish to the topic, for this account only. */
export function topicKeyStatements(accountId: pulumi.Input<string>): Statement[] {
  return [
    { Sid: "AccountAdministers", Effect: "Allow", Principal: { AWS: pulumi.interpolate`arn:aws:iam::${accountId}:root` }, Action: "kms:*", Resource: "*" },
    {
      // An AWS-managed key (alias/aws/sns) cannot grant a service, so alarms could not publish.
      Sid: "AlarmsPublish",
      Effect: "Allow",
      Principal: { Service: [...TOPIC_PUBLISHERS] },
      Action: ["kms:Decrypt", "kms:GenerateDataKey*"],
      Resource: "*",
      Condition: { StringEquals: { "aws:SourceAccount": accountId } },
    },
  ];
}

/** Only CloudWatch (the alarms) of this account may publish; TLS only. */
export function topicStatements(topicArn: pulumi.Input<string>, accountId: pulumi.Input<string>): Statement[] {
  return [
    {
      Sid: "AlarmsPublish",
      Effect: "Allow",
      Principal: { Service: [...TOPIC_PUBLISHERS] },
      Action: "sns:Publish",
      Resource: topicArn,
      Condition: { StringEquals: { "aws:SourceAccount": accountId } },
    },
    { Sid: "DenyHTTP", Effect: "Deny", Principal: "*", Action: "sns:Publish", Resource: topicArn, Condition: { Bool: { "aws:SecureTransport": "false" } } },
  ];
}

export class Observability extends pulumi.ComponentResource {
  readonly dashboardName: pulumi.Output<string>;
  readonly dashboardUrl: pulumi.Output<string>;
  readonly alarmTopicArn: pulumi.Output<string>;
  readonly alarmNames: pulumi.Output<string>[];

  constructor(name: string, args: ObservabilityArgs, opts?: pulumi.ComponentResourceOptions) {
    const retention = args.logRetentionDays ?? 30;
    validate(args, retention);
    super("comfyui:observability:Observability", name, {}, opts);
    const parent = { parent: this };
    const tags = args.tags ?? {};
    const gpuMetrics = args.gpuMetrics ?? true;

    const key = new aws.kms.Key(
      `${name}-alarms`,
      { description: "Encrypts the ComfyUI alarm topic", enableKeyRotation: true, policy: policyJson(topicKeyStatements(args.accountId)), tags },
      parent,
    );
    const topic = new aws.sns.Topic(`${name}-alarms`, { kmsMasterKeyId: key.arn, tags }, parent);
    new aws.sns.TopicPolicy(`${name}-alarms`, { arn: topic.arn, policy: policyJson(topicStatements(topic.arn, args.accountId)) }, parent);
    (args.alertEmails ?? []).forEach(
      (endpoint, i) => new aws.sns.TopicSubscription(`${name}-alarms-email-${i}`, { topic: topic.arn, protocol: "email", endpoint }, parent),
    );

    // One resource per fixed group (the cluster name is an Output), created before the add-on so
    // the agent and Fluent Bit write into groups that already carry our retention.
    const logGroups = pulumi.output(args.clusterName).apply(containerInsightsLogGroups);
    const groups = CONTAINER_INSIGHTS_GROUPS.map(
      (g, i) => new aws.cloudwatch.LogGroup(`${name}-ci-${g}`, { name: logGroups.apply((l) => l[i]), retentionInDays: retention, tags }, parent),
    );

    const agentRole = new aws.iam.Role(`${name}-cw-agent`, { assumeRolePolicy: POD_IDENTITY_TRUST, tags }, parent);
    const agentPolicy = new aws.iam.RolePolicyAttachment(`${name}-cw-agent`, { role: agentRole.name, policyArn: AGENT_MANAGED_POLICY_ARN }, parent);
    new aws.eks.Addon(
      `${name}-cloudwatch`,
      {
        clusterName: args.clusterName,
        addonName: "amazon-cloudwatch-observability",
        ...(args.addonVersion ? { addonVersion: args.addonVersion } : {}),
        configurationValues: JSON.stringify(addonConfiguration(gpuMetrics)),
        podIdentityAssociations: [{ roleArn: agentRole.arn, serviceAccount: AGENT_SERVICE_ACCOUNT }],
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
        tags,
      },
      { parent: this, dependsOn: [...(args.dependsOn ?? []), agentPolicy, ...groups] },
    );

    const plain = pulumi.all([
      args.clusterName, args.syncQueueName, args.syncDeadLetterQueueName, args.syncFunctionName,
      args.spotInterruptionRuleName, args.rebalanceRuleName, args.cloudFrontDistributionId, args.gpuUsdPerGpuHour,
    ]);
    const body = plain.apply(([clusterName, q, dlq, fn, spot, rebalance, cf, price]) =>
      JSON.stringify(
        dashboardBody({
          region: args.region, clusterName, workloadNamespace: args.workloadNamespace, syncQueueName: q, syncDeadLetterQueueName: dlq,
          syncFunctionName: fn, spotInterruptionRuleName: spot, rebalanceRuleName: rebalance, cloudFrontDistributionId: cf,
          gpuMetrics, gpuUsdPerGpuHour: price, gpuDailyBudgetUsd: args.gpuDailyBudgetUsd,
        }),
      ),
    );
    const dashboard = new aws.cloudwatch.Dashboard(
      `${name}-dashboard`,
      { dashboardName: pulumi.interpolate`${args.clusterName}-platform`, dashboardBody: body },
      parent,
    );

    // The alarm set, thresholds and periods depend only on plain args, so they are known at
    // preview; names, dimensions and the price inside descriptions and math come from Outputs.
    const thresholds = {
      gpuDailyBudgetUsd: args.gpuDailyBudgetUsd,
      failedPromptRatePercent: args.failedPromptRatePercent ?? 10,
      gateway5xxPerFiveMinutes: args.gateway5xxPerFiveMinutes ?? 5,
    };
    const shapes = alarmSpecs({ clusterName: "-", syncDeadLetterQueueName: "-", syncFunctionName: "-", gpuUsdPerGpuHour: 0, workloadNamespace: args.workloadNamespace, ...thresholds });
    const specs = pulumi
      .all([args.clusterName, args.syncDeadLetterQueueName, args.syncFunctionName, args.gpuUsdPerGpuHour])
      .apply(([clusterName, dlq, fn, price]) => alarmSpecs({ clusterName, syncDeadLetterQueueName: dlq, syncFunctionName: fn, gpuUsdPerGpuHour: price, workloadNamespace: args.workloadNamespace, ...thresholds }));

    // Karpenter's "deleted nodeclaim" lines of instances that never became nodes, counted from its
    // pod logs in the application group (alarms.ts nodesNeverRegisteredFilter says why that line).
    const appGroup = groups[CONTAINER_INSIGHTS_GROUPS.indexOf("application")];
    const filter = pulumi.output(args.clusterName).apply((c) => nodesNeverRegisteredFilter(args.karpenterNamespace, c));
    new aws.cloudwatch.LogMetricFilter(
      `${name}-nodes-never-registered`,
      {
        name: filter.name,
        logGroupName: appGroup.name,
        pattern: filter.pattern,
        metricTransformation: {
          namespace: filter.metricNamespace,
          name: filter.metricName,
          value: filter.metricValue,
          defaultValue: filter.defaultValue.apply(String),
          unit: filter.unit,
        },
      },
      parent,
    );
    this.alarmNames = shapes.map((shape, i) => {
      const inputs = alarmInputs(shape, specs.apply((all) => all[i]), topic.arn, tags);
      checkAlarm(shape.key, { alarmActions: [topic.arn], threshold: shape.threshold, alarmDescription: shape.description, period: shape.metric?.period, metricQueries: shape.expression ? Object.values(shape.expression.metrics).map((metric) => ({ metric })) : undefined });
      return new aws.cloudwatch.MetricAlarm(`${name}-${shape.key}`, inputs, parent).name;
    });

    this.dashboardName = dashboard.dashboardName;
    this.dashboardUrl = pulumi.interpolate`https://${args.region}.console.aws.amazon.com/cloudwatch/home?region=${args.region}#dashboards/dashboard/${dashboard.dashboardName}`;
    this.alarmTopicArn = topic.arn;
    this.registerOutputs({ dashboardName: this.dashboardName, dashboardUrl: this.dashboardUrl, alarmTopicArn: this.alarmTopicArn });
  }
}

/** MetricAlarm inputs for a spec; shape (single metric or math) comes from the plain spec, values from the resolved one. */
function alarmInputs(shape: AlarmSpec, spec: pulumi.Output<AlarmSpec>, topicArn: pulumi.Output<string>, tags: Record<string, string>): aws.cloudwatch.MetricAlarmArgs {
  const common = {
    alarmDescription: spec.description,
    comparisonOperator: shape.comparisonOperator,
    threshold: shape.threshold,
    evaluationPeriods: shape.evaluationPeriods,
    treatMissingData: shape.treatMissingData,
    alarmActions: [topicArn],
    okActions: [topicArn],
    tags,
  };
  if (shape.metric) {
    return {
      ...common,
      namespace: shape.metric.namespace,
      metricName: spec.apply((s) => s.metric!.metricName),
      dimensions: spec.apply((s) => s.metric!.dimensions),
      statistic: shape.metric.stat as aws.cloudwatch.MetricAlarmArgs["statistic"],
      period: shape.metric.period,
    };
  }
  return {
    ...common,
    metricQueries: spec.apply((s) => [
      { id: "e1", expression: s.expression!.expression, label: s.expression!.label, returnData: true },
      ...Object.entries(s.expression!.metrics).map(([id, m]) => ({
        id,
        returnData: false,
        metric: { namespace: m.namespace, metricName: m.metricName, dimensions: m.dimensions, stat: m.stat, period: m.period },
      })),
    ]),
  };
}

/**
 * The alarms added for issue 7 (GPU pods pending past the wake budget, prompts waiting with no GPU,
 * GPU nodes that never registered) and the log metric filter behind the last one: each passes
 * checkAlarm as the component builds it, draws only documented AWS metrics or ours, and the filter
 * matches Karpenter v1.14.1's real log line as the add-on's Fluent Bit ships it, and nothing else.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { alarmSpecs, AlarmParams, AlarmSpec, checkAlarm, nodesNeverRegisteredFilter, nodesNeverRegisteredMetric } from "../../observability/alarms";
import { COLD_START_BUDGET_SECONDS, gatewaySnapshotEmf, METRICS, NAMESPACE } from "../../contracts/metrics";
import { KARPENTER_NAMESPACE } from "../../karpenter";
import { metricIdentity, parseEmfLine } from "./emfParse";

const ROOT = path.join(__dirname, "..", "..");
const UPSTREAM = path.join(ROOT, "test/upstream/observability");
const AWS_METRICS = (JSON.parse(readFileSync(path.join(UPSTREAM, "aws-metrics.json"), "utf8")) as {
  metrics: { namespace: string; name: string; dimensions: string[] }[];
}).metrics;
const DOCUMENTED = new Set(AWS_METRICS.map((m) => metricIdentity(m.namespace, m.name, m.dimensions)));

const PARAMS: AlarmParams = {
  clusterName: "comfyui-dev", syncDeadLetterQueueName: "sync-dlq", syncFunctionName: "comfyui-dev-model-sync",
  failedPromptRatePercent: 10, gateway5xxPerFiveMinutes: 5, gpuUsdPerGpuHour: 1.861, workloadNamespace: "comfyui",
};
const NEW_KEYS = ["gpu-pods-pending", "prompts-waiting-no-gpu", "gpu-nodes-never-registered"];

/** The checkAlarm input for a spec as observability/index.ts passes it (topic as the one action). */
function inputsOf(a: AlarmSpec, actions: unknown[] = ["arn:aws:sns:us-west-2:123456789012:obs-alarms"]) {
  return {
    alarmActions: actions,
    threshold: a.threshold,
    alarmDescription: a.description,
    period: a.metric?.period,
    metricQueries: a.expression ? Object.values(a.expression.metrics).map((metric) => ({ metric })) : undefined,
  };
}

/** Metrics our emitters write, plus the log-filter metric (made by the filter spec, not an emitter). */
function ours(): Set<string> {
  const line = gatewaySnapshotEmf({ clusterName: "c", waiting: 1, running: 0, websocketClients: 0, podsReady: 0, acceptedSinceLast: 0, http5xxSinceLast: 0 }, 1_800_000_000_000);
  const ids = parseEmfLine(JSON.stringify(line)).map((m) => metricIdentity(m.namespace, m.name, Object.keys(m.dimensions)));
  const filter = nodesNeverRegisteredFilter(KARPENTER_NAMESPACE, "comfyui-dev");
  return new Set([...ids, metricIdentity(filter.metricNamespace, filter.metricName, [])]);
}

function unknownMetrics(specs: AlarmSpec[], known: Set<string>): string[] {
  const bad: string[] = [];
  for (const a of specs) {
    for (const m of a.metric ? [a.metric] : Object.values(a.expression!.metrics)) {
      const id = metricIdentity(m.namespace, m.metricName, Object.keys(m.dimensions));
      if (!(m.namespace === NAMESPACE ? known : DOCUMENTED).has(id)) bad.push(`${a.key}: ${id}`);
    }
  }
  return bad;
}

describe("alarms: the three for pending GPU pods, waiting prompts, unregistered nodes", () => {
  const specs = alarmSpecs(PARAMS);
  const byKey = (k: string) => specs.find((a) => a.key === k)!;

  it("each exists, goes to the topic with threshold, period and what to do (checkAlarm)", () => {
    for (const k of NEW_KEYS) {
      assert.ok(byKey(k), k);
      checkAlarm(k, inputsOf(byKey(k)));
      assert.match(byKey(k).description, /What to do: \S/);
    }
    // Negative: the same alarms without an action, or with a description that says nothing to do.
    for (const k of NEW_KEYS) {
      assert.throws(() => checkAlarm(k, inputsOf(byKey(k), [])), new RegExp(`alarm ${k}: no alarm action`));
      assert.throws(() => checkAlarm(k, { ...inputsOf(byKey(k)), alarmDescription: byKey(k).meaning }), /what to do/);
    }
  });

  it("draw only documented AWS metrics (with a documented dimension set) or ours", () => {
    assert.deepEqual(unknownMetrics(specs.filter((a) => NEW_KEYS.includes(a.key)), ours()), []);
    // Negative: a namespace-only pending count is not a documented dimension set, nor is a metric nobody writes.
    const pending = structuredClone(byKey("gpu-pods-pending"));
    delete pending.metric!.dimensions.PodName;
    const lost = structuredClone(byKey("prompts-waiting-no-gpu"));
    lost.expression!.metrics.m1.metricName = "PromptsLost";
    assert.deepEqual(unknownMetrics([pending, lost], ours()), [
      `gpu-pods-pending: ${metricIdentity("ContainerInsights", "pod_status_pending", ["ClusterName", "Namespace"])}`,
      `prompts-waiting-no-gpu: ${metricIdentity(NAMESPACE, "PromptsLost", ["ClusterName"])}`,
    ]);
  });

  it("GPU pods pending: fires only once pods stayed pending longer than the wake budget", () => {
    const a = byKey("gpu-pods-pending");
    assert.deepEqual(a.metric!.dimensions, { ClusterName: "comfyui-dev", Namespace: "comfyui", PodName: "comfyui" });
    // Every minute of the window must hold a pending pod (Minimum ≥ 1), and the window covers the budget.
    assert.equal(a.metric!.stat, "Minimum");
    assert.ok(a.metric!.period * a.evaluationPeriods >= COLD_START_BUDGET_SECONDS, "window shorter than the wake budget");
    assert.ok(a.metric!.period * (a.evaluationPeriods - 1) < COLD_START_BUDGET_SECONDS, "window a whole period longer than needed");
    assert.equal(a.treatMissingData, "notBreaching", "no datapoint means no pod pending");
    // Without a workload namespace there is nothing to watch: no alarm rather than a wrong one.
    assert.ok(!alarmSpecs({ ...PARAMS, workloadNamespace: undefined }).some((x) => x.key === "gpu-pods-pending"));
    assert.equal(alarmSpecs({ ...PARAMS, comfyuiDeploymentName: "comfy" }).find((x) => x.key === "gpu-pods-pending")!.metric!.dimensions.PodName, "comfy");
  });

  it("prompts waiting with no GPU: the math is 1 only when prompts waited and no pod was ready, for 15 minutes", () => {
    const a = byKey("prompts-waiting-no-gpu");
    const { m1, m2 } = a.expression!.metrics;
    assert.equal(m1.metricName, METRICS.promptsWaiting.name);
    assert.equal(m2.metricName, METRICS.podsReady.name);
    assert.equal(m1.period * a.evaluationPeriods, 900);
    // The expression evaluated as CloudWatch would (IF(cond, a, b); FILL(x, 0) for a missing value).
    const evalExpr = (w: number | null, r: number | null) => {
      const js = a.expression!.expression
        .replace(/FILL\((m\d),0\)/g, (_, id: string) => `(${id} ?? 0)`)
        .replace(/IF\(/g, "iff(");
      return new Function("m1", "m2", "iff", `return ${js};`)(w, r, (c: boolean, x: number, y: number) => (c ? x : y)) as number;
    };
    const fires = (w: number | null, r: number | null) => evalExpr(w, r) >= a.threshold;
    assert.equal(fires(3, 0), true);
    assert.equal(fires(3, 1), false, "a pod is ready: the prompts will run");
    assert.equal(fires(0, 0), false, "nothing waiting: scale-to-zero is normal");
    assert.equal(fires(null, null), false, "no snapshot: not this alarm's case");
    assert.equal(fires(2, null), true, "no pod count written means none ready");
    // Only IF and comparisons: no AND/OR whose spelling the alarm would depend on.
    assert.doesNotMatch(a.expression!.expression, /\bAND\b|&&|\bOR\b|\|\|/);
  });

  it("GPU nodes never registered: the log-filter metric, counted per 5 minutes", () => {
    const a = byKey("gpu-nodes-never-registered");
    assert.deepEqual([a.metric!.namespace, a.metric!.metricName, a.metric!.dimensions, a.metric!.stat], [NAMESPACE, nodesNeverRegisteredMetric(PARAMS.clusterName), {}, "Sum"]);
    assert.equal(a.threshold, 0);
    assert.equal(a.comparisonOperator, "GreaterThanThreshold");
  });
});

// ---- The metric filter against Karpenter's log line as CloudWatch stores it ----

/**
 * A CloudWatch Logs JSON filter pattern evaluator for exactly the constructs the filter uses, after
 * "Filter pattern syntax for metric filters, subscription filters, filter log events, and Live
 * Tail" (CloudWatch Logs User Guide): `{ term && term … }`, where a term is `$.a.b = "string"`
 * (exact, case-sensitive), `$.a.b NOT EXISTS`, or `$.a.b = %regex%` (unanchored). Anything else
 * throws, so a pattern that grows new syntax cannot pass untested.
 */
function matches(pattern: string, message: string): boolean {
  const body = /^\{\s*(.*?)\s*\}$/.exec(pattern);
  if (!body) throw new Error(`not a JSON pattern: ${pattern}`);
  let event: unknown;
  try {
    event = JSON.parse(message);
  } catch {
    return false; // a JSON pattern never matches a non-JSON event
  }
  const lookup = (selector: string): { found: boolean; value?: unknown } => {
    let cur: unknown = event;
    for (const key of selector.slice(2).split(".")) {
      if (cur === null || typeof cur !== "object" || !(key in (cur as object))) return { found: false };
      cur = (cur as Record<string, unknown>)[key];
    }
    return { found: true, value: cur };
  };
  return body[1].split(/\s*&&\s*/).every((term) => {
    let m = /^(\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s+NOT EXISTS$/.exec(term);
    if (m) return !lookup(m[1]).found;
    m = /^(\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*=\s*"([^"]*)"$/.exec(term);
    if (m) {
      const v = lookup(m[1]);
      return v.found && v.value === m[2];
    }
    m = /^(\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*=\s*%([A-Za-z0-9_#=@/;,:\-^$?[\]{}|\\*+.]+)%$/.exec(term);
    if (m) {
      const v = lookup(m[1]);
      return v.found && typeof v.value === "string" && new RegExp(m[2]).test(v.value);
    }
    throw new Error(`unsupported term in filter pattern: ${term}`);
  });
}

/**
 * One Karpenter log line as zap writes it (pkg/operator/logging/logging.go: JSON, keys level, time,
 * logger, message; ISO 8601 time; capital level), with the controller-runtime reconcile context and
 * the lifecycle controller's own values (controller.go: "provider-id" once launched, "Node" once
 * registered), wrapped as the add-on's Fluent Bit stores it (raw line in `log`, parsed under
 * `log_processed`, pod metadata under `kubernetes`).
 */
function karpenterEvent(message: string, extra: Record<string, unknown>, namespace = KARPENTER_NAMESPACE): string {
  const line = JSON.stringify({
    level: "INFO",
    time: "2026-08-01T10:15:42.123Z",
    logger: "controller",
    message,
    commit: "6e7eab7",
    controller: "nodeclaim.lifecycle",
    controllerGroup: "karpenter.sh",
    controllerKind: "NodeClaim",
    NodeClaim: { name: "gpu-x7k2p" },
    namespace: "",
    name: "gpu-x7k2p",
    reconcileID: "0b6f8f0e-2f0c-4d36-9a8e-3c7b5d2f9a11",
    ...extra,
  });
  return JSON.stringify({
    time: "2026-08-01T10:15:42.123456789Z",
    stream: "stdout",
    _p: "F",
    log: line,
    kubernetes: {
      pod_name: "karpenter-6f9c8d7b5-q2w4e",
      namespace_name: namespace,
      pod_id: "4c1e6a0e-1111-4a2b-9c3d-5e6f7a8b9c0d",
      host: "ip-10-0-1-23.us-west-2.compute.internal",
      container_name: "controller",
      docker_id: "3f2a",
      container_hash: "public.ecr.aws/karpenter/controller@sha256:00",
      container_image: "public.ecr.aws/karpenter/controller:1.14.1",
    },
    log_processed: JSON.parse(line),
  });
}

describe("alarms: the never-registered metric filter", () => {
  const filter = nodesNeverRegisteredFilter(KARPENTER_NAMESPACE, "comfyui-dev");
  const providerId = { "provider-id": "aws:///us-west-2a/i-0123456789abcdef0" };

  it("matches Karpenter's 'deleted nodeclaim' for a launched instance that never became a node", () => {
    assert.equal(matches(filter.pattern, karpenterEvent("deleted nodeclaim", providerId)), true);
  });

  it("does not match a registered node's deletion, a launch failure, other lines, or another namespace", () => {
    const node = { Node: { name: "ip-10-0-2-45.us-west-2.compute.internal" } };
    assert.equal(matches(filter.pattern, karpenterEvent("deleted nodeclaim", { ...providerId, ...node })), false, "registered, then scaled in");
    assert.equal(matches(filter.pattern, karpenterEvent("deleted nodeclaim", {})), false, "never launched (insufficient capacity)");
    assert.equal(matches(filter.pattern, karpenterEvent("launched nodeclaim", providerId)), false);
    assert.equal(matches(filter.pattern, karpenterEvent("registered nodeclaim", { ...providerId, ...node })), false);
    assert.equal(matches(filter.pattern, karpenterEvent("deleted nodeclaim", providerId, "comfyui")), false, "someone else's pod");
    assert.equal(matches(filter.pattern, "deleted nodeclaim provider-id"), false, "not JSON");
    // The evaluator refuses syntax it does not model instead of guessing.
    assert.throws(() => matches('{ $.a = "x" || $.b = "y" }', "{}"), /unsupported term/);
  });

  it("is a counter in our namespace on the add-on's application log group, zero when idle", () => {
    assert.equal(filter.logGroupName("comfyui-dev"), "/aws/containerinsights/comfyui-dev/application");
    assert.deepEqual([filter.metricNamespace, filter.metricName, filter.metricValue, filter.defaultValue], [NAMESPACE, nodesNeverRegisteredMetric("comfyui-dev"), "1", 0]);
    assert.throws(() => nodesNeverRegisteredFilter('kube-system" || $.x = "y', "comfyui-dev"), /not a Kubernetes namespace name/);
  });

  it("the add-on's Fluent Bit (chart 6.4.0) ships Karpenter's container log and merges its JSON under log_processed", () => {
    const values = readFileSync(path.join(UPSTREAM, "amazon-cloudwatch-observability-6.4.0-values.yaml"), "utf8");
    // The Linux application-log.conf: the first block of that name in the chart.
    const conf = values.slice(values.indexOf("application-log.conf: |"), values.indexOf("dataplane-log.conf: |"));
    const setting = (key: string) => [...conf.matchAll(new RegExp(`^\\s+${key}\\s+(.+)$`, "gm"))].map((m) => m[1].trim());
    const glob = (g: string) => new RegExp(`^${g.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
    // Kubelet names container logs <pod>_<namespace>_<container>-<id>.log.
    const karpenterLog = `/var/log/containers/karpenter-6f9c8d7b5-q2w4e_${KARPENTER_NAMESPACE}_controller-3f2a.log`;
    assert.ok(setting("Path").some((p) => glob(p).test(karpenterLog)), "tailed");
    const excluded = setting("Exclude_Path").flatMap((e) => e.split(/\s*,\s*/));
    assert.ok(excluded.length > 0);
    assert.ok(!excluded.some((e) => glob(e).test(karpenterLog)), "not excluded");
    assert.ok(excluded.some((e) => glob(e).test("/var/log/containers/fluent-bit-abc_amazon-cloudwatch_fluent-bit-1.log")), "the exclusion check can fail");
    assert.deepEqual(setting("Merge_Log"), ["On"]);
    assert.deepEqual(setting("Merge_Log_Key"), ["log_processed"]);
    assert.ok(setting("log_group_name").includes("/aws/containerinsights/${CLUSTER_NAME}/application"));
    assert.ok(filter.pattern.includes("$.log_processed.message"));
  });
});

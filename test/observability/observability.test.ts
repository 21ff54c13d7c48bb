import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { alarmSpecs, checkAlarm, nodesNeverRegisteredFilter, renderAlarmTable } from "../../observability/alarms";
import { DashboardBody, dashboardBody, DashboardParams, renderLayout } from "../../observability/dashboard";
import { coldStartEmf, gatewaySnapshotEmf, gpuFleetEmf, METRICS, NAMESPACE, nodeBootEmf, nodeReadyEmf, promptOutcomeEmf, syncBatchEmf } from "../../contracts/metrics";
import { installMocks, MOCK_ACCOUNT, Recorder, unwrap } from "../support/mocks";
import { metricIdentity, parseEmfLine } from "./emfParse";

const ROOT = path.join(__dirname, "..", "..");
const AWS_METRICS = (JSON.parse(readFileSync(path.join(ROOT, "test/upstream/observability/aws-metrics.json"), "utf8")) as {
  metrics: { namespace: string; name: string; dimensions: string[] }[];
}).metrics;
const DOCUMENTED = new Set(AWS_METRICS.map((m) => metricIdentity(m.namespace, m.name, m.dimensions)));

/** What our emitters actually write: every emitter's output, parsed as CloudWatch would. */
function emitted(): Set<string> {
  const T = 1_800_000_000_000;
  const lines = [
    syncBatchEmf({ clusterName: "c", changeCount: 1, rejectedCount: 1, failedNodes: 1, retried: false }, T),
    gatewaySnapshotEmf({
      clusterName: "c", waiting: 1, running: 1, websocketClients: 1, podsReady: 1, acceptedSinceLast: 1, http5xxSinceLast: 1,
      modelCache: { fetches: 1, fetchesFailed: 1, bytesFetched: 1, hits: 1, misses: 1, evictions: 1, loadsAvoided: 1 },
    }, T),
    promptOutcomeEmf({ clusterName: "c", outcome: "success", waitSeconds: 1, runSeconds: 1 }, T),
    promptOutcomeEmf({ clusterName: "c", outcome: "error", waitSeconds: 1 }, T),
    coldStartEmf("c", 1, T),
    nodeReadyEmf({ clusterName: "c", registeredSeconds: 1, readySeconds: 2 }, T),
    gpuFleetEmf({ clusterName: "c", instanceType: "g5.2xlarge", capacityType: "spot", nodes: 1, pods: 1 }, T),
    nodeBootEmf({ clusterName: "c", seconds: 1, bytes: 1, hotSetFilesMissing: 1, raidSeconds: 1, filledSeconds: 1, imageSeconds: 1 }, T),
  ];
  const ids = lines.flatMap((l) => parseEmfLine(JSON.stringify(l)).map((m) => metricIdentity(m.namespace, m.name, Object.keys(m.dimensions))));
  // The one metric a log filter makes rather than an emitter (alarms.ts nodesNeverRegisteredFilter).
  const filter = nodesNeverRegisteredFilter("kube-system", "comfyui-dev");
  return new Set([...ids, metricIdentity(filter.metricNamespace, filter.metricName, [])]);
}

/** Every metric a dashboard draws must be emitted by our code or be a documented AWS metric; returns the offenders. */
function unknownMetrics(body: DashboardBody, ours: Set<string>): string[] {
  const bad: string[] = [];
  for (const w of body.widgets) {
    for (const row of w.properties.metrics ?? []) {
      if (typeof row[0] !== "string") {
        // SEARCH('{Namespace,Dim1,Dim2} MetricName="X" …'): the schema names the exact dimension set.
        const expr = String((row[0] as { expression?: string }).expression ?? "");
        const search = /SEARCH\('\{([^}]+)\}\s+MetricName="([^"]+)"/.exec(expr);
        if (search) {
          const [ns, ...dimNames] = search[1].split(",").map((x) => x.trim());
          const id = metricIdentity(ns, search[2], dimNames);
          if (!(ns === NAMESPACE ? ours : DOCUMENTED).has(id)) bad.push(id);
        } else if (expr.includes("SEARCH(")) bad.push(`unparsed SEARCH: ${expr}`);
        continue;
      }
      const [ns, name, ...rest] = row as string[];
      const dims = rest.filter((x) => typeof x === "string");
      const dimNames = dims.filter((_, i) => i % 2 === 0);
      const id = metricIdentity(ns, name, dimNames);
      if (!(ns === NAMESPACE ? ours : DOCUMENTED).has(id)) bad.push(id);
    }
  }
  return bad;
}

/** Structural validity of a dashboard body (Dashboard Body Structure and Syntax). */
function bodyProblems(body: DashboardBody): string[] {
  const problems: string[] = [];
  const cells = new Set<string>();
  for (const w of body.widgets) {
    const t = w.properties.title ?? w.type;
    if (!(w.x >= 0 && w.x + w.width <= 24 && w.width >= 1 && w.height >= 1 && w.y >= 0)) problems.push(`${t}: outside the 24-column grid`);
    for (let x = w.x; x < w.x + w.width; x++) for (let y = w.y; y < w.y + w.height; y++) {
      if (cells.has(`${x},${y}`)) problems.push(`${t}: overlaps another widget`);
      cells.add(`${x},${y}`);
    }
    if (w.type === "metric") {
      if (!w.properties.region) problems.push(`${t}: a metric widget needs region`);
      const ids = new Set<string>();
      for (const row of w.properties.metrics ?? []) {
        const last = row[row.length - 1];
        if (typeof last === "object" && typeof last.id === "string") ids.add(last.id);
      }
      for (const row of w.properties.metrics ?? []) {
        if (typeof row[0] === "object") {
          // String literals (a SEARCH's query, its statistic) hold no ids.
          const expr = String((row[0] as { expression?: string }).expression ?? "").replace(/'[^']*'|"[^"]*"/g, "");
          for (const ref of expr.match(/\b[a-z][a-zA-Z0-9_]*\b/g) ?? []) if (!ids.has(ref)) problems.push(`${t}: expression uses unknown id ${ref}`);
          continue;
        }
        const strings = row.filter((x) => typeof x === "string");
        if (strings.length < 2 || strings.length % 2 !== 0) problems.push(`${t}: a metric row is [namespace, name, (dimension, value)…]`);
      }
    }
  }
  return problems;
}

const PARAMS: DashboardParams = {
  region: "us-west-2", clusterName: "comfyui-dev", workloadNamespace: "comfyui", syncQueueName: "sync-q", syncDeadLetterQueueName: "sync-dlq",
  syncFunctionName: "comfyui-dev-model-sync", spotInterruptionRuleName: "spot-rule", rebalanceRuleName: "rebalance-rule",
  cloudFrontDistributionId: "E123", gpuMetrics: true, gpuUsdPerGpuHour: 1.861, gpuDailyBudgetUsd: 50,
};

describe("observability: dashboard", () => {
  it("is a valid body: on the grid, no overlaps, every metric widget has a region, expressions name known ids", () => {
    const body = JSON.parse(JSON.stringify(dashboardBody(PARAMS))) as DashboardBody;
    assert.deepEqual(bodyProblems(body), []);
    // The check can fail: an overlapping widget and a dangling expression are caught.
    const broken = structuredClone(body);
    broken.widgets.push({ ...broken.widgets[0], properties: { ...broken.widgets[0].properties, metrics: [[{ expression: "nope * 2", id: "x" }]] } });
    assert.ok(bodyProblems(broken).some((p) => /overlaps/.test(p)));
    assert.ok(bodyProblems(broken).some((p) => /unknown id nope/.test(p)));
  });

  it("draws only metrics our emitters write (same namespace, name, dimensions) or documented AWS metrics", () => {
    const ours = emitted();
    for (const p of [PARAMS, { ...PARAMS, gpuMetrics: false, cloudFrontDistributionId: undefined, gpuDailyBudgetUsd: undefined }]) {
      assert.deepEqual(unknownMetrics(dashboardBody(p), ours), []);
    }
    // Every metric metrics.ts defines is drawn somewhere.
    const drawn = JSON.stringify(dashboardBody(PARAMS));
    for (const m of Object.values(METRICS)) assert.ok(drawn.includes(`"${m.name}"`) || drawn.includes(`MetricName=\\"${m.name}\\"`), m.name);
  });

  it("a Model cache row draws each model-cache metric metrics.ts declares, and its hit ratio divides the hits by hits + misses", () => {
    const body = dashboardBody(PARAMS);
    const y = body.widgets.find((w) => w.properties.title === "Model cache: files found or fetched")?.y;
    assert.ok(y !== undefined, "the row exists");
    const row = body.widgets.filter((w) => w.y === y);
    assert.equal(row.reduce((n, w) => n + w.width, 0), 24, "one full row");
    const drawn = new Map<string, Record<string, unknown>>();
    for (const w of row) {
      for (const m of w.properties.metrics ?? []) {
        if (typeof m[0] !== "string") continue;
        assert.equal(m[0], NAMESPACE);
        assert.deepEqual(m.slice(2, 4), ["ClusterName", PARAMS.clusterName]);
        drawn.set(m[1] as string, m[m.length - 1] as Record<string, unknown>);
      }
    }
    const declared = Object.values(METRICS).filter((m) => m.source === "gateway" && m.name.startsWith("Model")).map((m) => m.name);
    assert.equal(declared.length, 7);
    assert.deepEqual([...drawn.keys()].sort(), declared.sort(), "exactly the declared model-cache names, no other and none missing");
    for (const opts of drawn.values()) assert.equal(opts.stat, "Sum", "per-snapshot differences add up");
    const ratio = row.flatMap((w) => w.properties.metrics ?? []).find((m) => typeof m[0] === "object")![0] as { expression: string };
    assert.equal(drawn.get(METRICS.modelCacheHits.name)!.id, "hits");
    assert.equal(drawn.get(METRICS.modelCacheMisses.name)!.id, "misses");
    assert.equal(ratio.expression.replace(/\s/g, ""), "100*hits/(hits+misses)");
  });

  it("catches a metric nobody emits, and an AWS metric with the wrong dimensions", () => {
    const body = dashboardBody(PARAMS);
    body.widgets[0].properties.metrics!.push([NAMESPACE, "PromptsLost", "ClusterName", "c", {}]);
    body.widgets[0].properties.metrics!.push(["AWS/SQS", "ApproximateNumberOfMessagesVisible", "FunctionName", "x", {}]);
    body.widgets[0].properties.metrics!.push([{ expression: `SEARCH('{${NAMESPACE},ClusterName,InstanceType} MetricName="GpuNodes"', 'Maximum', 300)`, id: "bad" }] as never);
    assert.deepEqual(unknownMetrics(body, emitted()), [
      metricIdentity(NAMESPACE, "PromptsLost", ["ClusterName"]),
      metricIdentity("AWS/SQS", "ApproximateNumberOfMessagesVisible", ["FunctionName"]),
      metricIdentity(NAMESPACE, "GpuNodes", ["ClusterName", "InstanceType"]),
    ]);
  });

  it("follows the switches: no GPU row without GPU metrics, CloudFront only with a distribution and in us-east-1", () => {
    const titles = (p: DashboardParams) => dashboardBody(p).widgets.map((w) => w.properties.title);
    assert.ok(titles(PARAMS).includes("GPU utilisation (%)"));
    assert.ok(!titles({ ...PARAMS, gpuMetrics: false }).includes("GPU utilisation (%)"));
    assert.ok(!titles({ ...PARAMS, cloudFrontDistributionId: undefined }).some((t) => t?.startsWith("CloudFront")));
    for (const w of dashboardBody(PARAMS).widgets.filter((x) => x.properties.title?.startsWith("CloudFront"))) assert.equal(w.properties.region, "us-east-1");
  });

  it("docs/operations.md shows the layout and the alarms exactly as rendered from the code", () => {
    const doc = readFileSync(path.join(ROOT, "docs/operations.md"), "utf8");
    const between = (name: string) => {
      const m = new RegExp(`<!-- ${name}:begin -->\\n([\\s\\S]*?)\\n<!-- ${name}:end -->`).exec(doc);
      assert.ok(m, `docs/operations.md has the ${name} markers`);
      return m[1];
    };
    assert.equal(between("dashboard-layout"), renderLayout(dashboardBody(PARAMS)));
    assert.equal(between("alarms"), renderAlarmTable(alarmSpecs({ ...PARAMS, failedPromptRatePercent: 10, gateway5xxPerFiveMinutes: 5 })));
  });
});

describe("observability: alarms", () => {
  const specs = alarmSpecs({ ...PARAMS, failedPromptRatePercent: 10, gateway5xxPerFiveMinutes: 5 });

  it("watch only emitted or documented metrics", () => {
    const ours = emitted();
    for (const a of specs) {
      for (const m of a.metric ? [a.metric] : Object.values(a.expression!.metrics)) {
        const id = metricIdentity(m.namespace, m.metricName, Object.keys(m.dimensions));
        assert.ok((m.namespace === NAMESPACE ? ours : DOCUMENTED).has(id), `${a.key}: ${id}`);
      }
    }
    assert.deepEqual(specs.map((a) => a.key), [
      "sync-dlq", "sync-lambda-errors", "sync-node-failures", "gateway-failed-prompts", "gateway-5xx",
      "gpu-pods-pending", "prompts-waiting-no-gpu", "gpu-nodes-never-registered", "gpu-spend",
    ]);
    assert.ok(!alarmSpecs({ ...PARAMS, gpuDailyBudgetUsd: undefined, failedPromptRatePercent: 10, gateway5xxPerFiveMinutes: 5 }).some((a) => a.key === "gpu-spend"));
  });

  it("checkAlarm refuses an alarm without an action, threshold, period or what-to-do", () => {
    const good = { alarmActions: ["arn:aws:sns:x"], threshold: 0, period: 300, alarmDescription: "x. What to do: y" };
    checkAlarm("good", good);
    assert.throws(() => checkAlarm("a", { ...good, alarmActions: [] }), /alarm a: no alarm action/);
    assert.throws(() => checkAlarm("b", { ...good, threshold: undefined }), /no threshold/);
    assert.throws(() => checkAlarm("c", { ...good, period: undefined }), /no period/);
    assert.throws(() => checkAlarm("d", { ...good, alarmDescription: "DLQ not empty" }), /what to do/);
  });
});

describe("observability: the component built on its own", () => {
  const rec = new Recorder();
  const build = async (extra: Record<string, unknown> = {}) => {
    rec.reset();
    installMocks(rec);
    const { Observability } = await import("../../observability");
    const o = new Observability("obs", {
      clusterName: "comfyui-dev", region: "us-west-2", accountId: MOCK_ACCOUNT, workloadNamespace: "comfyui", karpenterNamespace: "kube-system", syncQueueName: "sync-q",
      syncDeadLetterQueueName: "sync-dlq", syncFunctionName: "comfyui-dev-model-sync", spotInterruptionRuleName: "spot-rule",
      rebalanceRuleName: "rebalance-rule", cloudFrontDistributionId: "E123", gpuUsdPerGpuHour: 1.861, gpuDailyBudgetUsd: 50,
      alertEmails: ["ops@studio.example", "lead@studio.example"], ...extra,
    });
    await unwrap(o.dashboardUrl);
    await Promise.all(o.alarmNames.map((n) => unwrap(n)));
    return o;
  };

  it("every alarm goes to the one topic, with threshold, period and a what-to-do description", async () => {
    await build();
    const topicArn = `arn:aws:sns:us-west-2:${MOCK_ACCOUNT}:obs-alarms`;
    const alarms = rec.ofType("aws:cloudwatch/metricAlarm:MetricAlarm");
    assert.equal(alarms.length, 9);
    for (const a of alarms) {
      assert.deepEqual(a.inputs.alarmActions, [topicArn], a.name);
      checkAlarm(a.name, a.inputs);
    }
    const dlq = rec.one("aws:cloudwatch/metricAlarm:MetricAlarm", "sync-dlq").inputs;
    assert.deepEqual([dlq.namespace, dlq.metricName, dlq.dimensions, dlq.threshold, dlq.comparisonOperator], ["AWS/SQS", "ApproximateNumberOfMessagesVisible", { QueueName: "sync-dlq" }, 0, "GreaterThanThreshold"]);
    const spend = rec.one("aws:cloudwatch/metricAlarm:MetricAlarm", "gpu-spend").inputs;
    assert.equal(spend.threshold, 50);
    assert.equal(spend.metricQueries[0].expression, "m1 / 60 * 1.861");
    // The never-registered alarm watches exactly what the filter on the application log group makes.
    const never = rec.one("aws:cloudwatch/metricAlarm:MetricAlarm", "gpu-nodes-never-registered").inputs;
    const filter = rec.one("aws:cloudwatch/logMetricFilter:LogMetricFilter").inputs;
    assert.equal(filter.logGroupName, "/aws/containerinsights/comfyui-dev/application");
    assert.deepEqual([filter.metricTransformation.namespace, filter.metricTransformation.name], [never.namespace, never.metricName]);
    assert.equal(never.metricName, "NodesNeverRegistered-comfyui-dev");
    assert.match(filter.pattern, /\$\.kubernetes\.namespace_name = "kube-system"/);
  });

  it("the topic is encrypted with a key only CloudWatch may use; only CloudWatch (the alarms) may publish, for this account", async () => {
    await build();
    const topic = rec.one("aws:sns/topic:Topic").inputs;
    const key = rec.one("aws:kms/key:Key").inputs;
    assert.ok(topic.kmsMasterKeyId, "encrypted");
    assert.equal(key.enableKeyRotation, true);
    const keyPolicy = JSON.parse(key.policy);
    const use = keyPolicy.Statement.find((s: { Sid: string }) => s.Sid === "AlarmsPublish");
    // No EventBridge rule targets the topic, so EventBridge gets neither the topic nor the key.
    assert.deepEqual(use.Principal.Service, ["cloudwatch.amazonaws.com"]);
    assert.ok(!JSON.stringify(keyPolicy).includes("events.amazonaws.com"));
    assert.deepEqual(use.Condition, { StringEquals: { "aws:SourceAccount": MOCK_ACCOUNT } });
    const policy = JSON.parse(rec.one("aws:sns/topicPolicy:TopicPolicy").inputs.policy);
    const allows = policy.Statement.filter((s: { Effect: string }) => s.Effect === "Allow");
    assert.equal(allows.length, 1);
    assert.deepEqual(allows[0].Principal, { Service: ["cloudwatch.amazonaws.com"] });
    assert.equal(allows[0].Action, "sns:Publish");
    assert.ok(policy.Statement.some((s: { Effect: string; Condition?: object }) => s.Effect === "Deny" && JSON.stringify(s.Condition).includes("SecureTransport")));
    assert.deepEqual(rec.ofType("aws:sns/topicSubscription:TopicSubscription").map((s) => [s.inputs.protocol, s.inputs.endpoint]), [["email", "ops@studio.example"], ["email", "lead@studio.example"]]);
  });

  it("the add-on: Pod Identity for cloudwatch-agent with CloudWatchAgentServerPolicy only, GPU metrics on the switch", async () => {
    await build();
    const addon = rec.one("aws:eks/addon:Addon").inputs;
    assert.equal(addon.addonName, "amazon-cloudwatch-observability");
    assert.equal(addon.podIdentityAssociations[0].serviceAccount, "cloudwatch-agent");
    const attached = rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").map((a) => a.inputs.policyArn);
    assert.deepEqual(attached, ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]);
    assert.ok(!attached.some((a) => /FullAccess|PowerUser|AdministratorAccess/.test(a)));
    const trust = JSON.parse(rec.one("aws:iam/role:Role").inputs.assumeRolePolicy);
    assert.deepEqual(trust.Statement[0].Principal, { Service: "pods.eks.amazonaws.com" });
    const k8s = JSON.parse(addon.configurationValues).agent.config.logs.metrics_collected.kubernetes;
    assert.deepEqual(k8s, { enhanced_container_insights: true, accelerated_compute_metrics: true });

    await build({ gpuMetrics: false, logRetentionDays: 7 });
    const off = JSON.parse(rec.one("aws:eks/addon:Addon").inputs.configurationValues).agent.config.logs.metrics_collected.kubernetes;
    assert.equal(off.accelerated_compute_metrics, false);
    const groups = rec.ofType("aws:cloudwatch/logGroup:LogGroup");
    assert.deepEqual(groups.map((g) => g.inputs.name).sort(), ["application", "dataplane", "host", "performance"].map((g) => `/aws/containerinsights/comfyui-dev/${g}`));
    for (const g of groups) assert.equal(g.inputs.retentionInDays, 7);
  });

  it("the dashboard body it creates passes the same checks; the URL points at it", async () => {
    const o = await build();
    const body = JSON.parse(rec.one("aws:cloudwatch/dashboard:Dashboard").inputs.dashboardBody) as DashboardBody;
    assert.deepEqual(bodyProblems(body), []);
    assert.deepEqual(unknownMetrics(body, emitted()), []);
    assert.equal(await unwrap(o.dashboardUrl), "https://us-west-2.console.aws.amazon.com/cloudwatch/home?region=us-west-2#dashboards/dashboard/comfyui-dev-platform");
  });

  it("refuses bad input naming the key", async () => {
    const { Observability } = await import("../../observability");
    const base = {
      clusterName: "c", region: "us-west-2", accountId: MOCK_ACCOUNT, workloadNamespace: "comfyui", karpenterNamespace: "kube-system", syncQueueName: "q", syncDeadLetterQueueName: "d",
      syncFunctionName: "f", spotInterruptionRuleName: "s", rebalanceRuleName: "r", gpuUsdPerGpuHour: 1,
    };
    assert.throws(() => new Observability("bad1", { ...base, alertEmails: ["not-an-email"] }), /not an email address/);
    assert.throws(() => new Observability("bad2", { ...base, logRetentionDays: 10 }), /must be one of 1, 3/);
    assert.throws(() => new Observability("bad3", { ...base, gpuDailyBudgetUsd: 0 }), /positive number/);
  });
});

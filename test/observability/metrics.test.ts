import { strict as assert } from "node:assert";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import {
  CLUSTER_DIMENSION,
  emf,
  EMITTER_WIRING,
  gatewaySnapshotEmf,
  METRICS,
  NAMESPACE,
  coldStartEmf,
  gpuFleetEmf,
  NODE_TYPE_DIMENSIONS,
  nodeBootEmf,
  nodeBootEmfJq,
  nodeReadyEmf,
  promptOutcomeEmf,
  syncBatchEmf,
} from "../../contracts/metrics";
import { parseEmfLine } from "./emfParse";

const T = 1_800_000_000_000;
const byName = (line: object) => Object.fromEntries(parseEmfLine(JSON.stringify(line)).map((m) => [m.name, m]));

describe("contracts/metrics", () => {
  it("names every metric once, in one namespace, under the cluster dimension", () => {
    const names = Object.values(METRICS).map((m) => m.name);
    assert.equal(new Set(names).size, names.length, "metric names are unique");
    assert.equal(NAMESPACE, "ComfyUI/Platform");
    assert.ok(!NAMESPACE.startsWith("AWS/"), "AWS/ namespaces are reserved");
    for (const m of Object.values(METRICS)) assert.equal(m.dimensions[0], CLUSTER_DIMENSION, m.name);
    for (const m of Object.values(METRICS)) assert.ok(m.dimensions.length === 1 || m.dimensions.join() === [CLUSTER_DIMENSION, ...NODE_TYPE_DIMENSIONS].join(), m.name);
  });

  it("the costs count every metric name defined here", () => {
    const n = Object.keys(METRICS).length;
    const costs = readFileSync(path.join(__dirname, "..", "..", "docs", "costs.md"), "utf8");
    assert.match(costs, new RegExp(`${n} names in contracts/metrics.ts`));
    assert.match(costs, new RegExp(`${n} × \\$0\\.30 per custom metric-month`));
    assert.match(readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8"), new RegExp(`${n} metric names \\$${(n * 0.3).toFixed(2).replace(".", "\\.")}`));
    const byType = Object.values(METRICS).filter((m) => m.dimensions.length > 1).length;
    assert.match(costs, new RegExp(`the ${byType} by-type names bill once per instance type and capacity type`));
  });

  it("formats a valid EMF line that parses back into the same metrics, units and dimensions", () => {
    const line = emf({ promptWaitSeconds: [1.5, 2, 40], promptsFailed: 1 }, { ClusterName: "comfyui-dev" }, T);
    const metrics = parseEmfLine(line);
    assert.deepEqual(
      metrics.map((m) => [m.namespace, m.name, m.unit, m.dimensions, m.values, m.timestamp]),
      [
        ["ComfyUI/Platform", "PromptWaitSeconds", "Seconds", { ClusterName: "comfyui-dev" }, [1.5, 2, 40], T],
        ["ComfyUI/Platform", "PromptsFailed", "Count", { ClusterName: "comfyui-dev" }, [1], T],
      ],
    );
    assert.ok(!line.includes("\n"), "one line");
  });

  it("refuses what CloudWatch would drop: no values, NaN, a missing dimension, too many values, a bad timestamp", () => {
    assert.throws(() => emf({}, { ClusterName: "c" }, T), /no metric values/);
    assert.throws(() => emf({ queueDepth: Number.NaN }, { ClusterName: "c" }, T), /QueueDepth value NaN is not a finite number/);
    assert.throws(() => emf({ queueDepth: 1 }, {}, T), /dimension ClusterName must be a non-empty string/);
    assert.throws(() => emf({ queueDepth: 1 }, { ClusterName: " " }, T), /ClusterName/);
    assert.throws(() => emf({ promptRunSeconds: Array(101).fill(1) }, { ClusterName: "c" }, T), /1 to 100 values, got 101/);
    assert.throws(() => emf({ queueDepth: 1 }, { ClusterName: "c" }, 1.5), /epoch milliseconds/);
  });

  it("the test parser itself rejects invalid EMF (so the checks above can fail)", () => {
    assert.throws(() => parseEmfLine(JSON.stringify({ QueueDepth: 1 })), /missing _aws/);
    const bad = { _aws: { Timestamp: T, CloudWatchMetrics: [{ Namespace: "N", Dimensions: [["ClusterName"]], Metrics: [{ Name: "Q", Unit: "Count" }] }] }, Q: 1 };
    assert.throws(() => parseEmfLine(JSON.stringify(bad)), /dimension ClusterName has no string root member/);
    assert.throws(() => parseEmfLine(JSON.stringify({ ...bad, ClusterName: "c", Q: "1" })), /metric Q needs a number/);
    const badUnit = structuredClone(bad) as typeof bad;
    badUnit._aws.CloudWatchMetrics[0].Metrics[0].Unit = "Secs";
    assert.throws(() => parseEmfLine(JSON.stringify({ ...badUnit, ClusterName: "c" })), /unit Secs/);
  });

  it("sync: a batch line counts the batch, what was applied, failed nodes and rejected events", () => {
    const ok = byName(syncBatchEmf({ clusterName: "c", changeCount: 3, rejectedCount: 2, failedNodes: 0, retried: false }, T));
    assert.deepEqual(Object.fromEntries(Object.entries(ok).map(([k, v]) => [k, v.values[0]])), {
      SyncBatches: 1, SyncChangesApplied: 3, SyncNodeFailures: 0, SyncFailedBatches: 0, SyncRejectedEvents: 2,
    });
    const failed = byName(syncBatchEmf({ clusterName: "c", changeCount: 3, rejectedCount: 0, failedNodes: 2, retried: true }, T));
    assert.equal(failed.SyncChangesApplied.values[0], 0);
    assert.equal(failed.SyncNodeFailures.values[0], 2);
    assert.equal(failed.SyncFailedBatches.values[0], 1);
  });

  it("gateway: the snapshot's queue depth is waiting + running; an outcome line carries its times", () => {
    const snap = byName(gatewaySnapshotEmf({ clusterName: "c", waiting: 4, running: 2, websocketClients: 7, podsReady: 0, acceptedSinceLast: 9, http5xxSinceLast: 1 }, T));
    assert.equal(snap.QueueDepth.values[0], 6);
    assert.equal(snap.WebSocketClients.values[0], 7);
    assert.equal(snap.Http5xxResponses.values[0], 1);
    assert.equal(snap.GpuPodsReady.values[0], 0);
    const done = byName(promptOutcomeEmf({ clusterName: "c", outcome: "success", waitSeconds: 95, runSeconds: 12 }, T));
    assert.deepEqual(Object.keys(done).sort(), ["OutputsSaved", "PromptRunSeconds", "PromptWaitSeconds", "PromptsSucceeded"]);
    assert.equal(done.PromptWaitSeconds.values[0], 95);
    assert.equal(byName(coldStartEmf("c", 140, T)).ColdStartSeconds.values[0], 140);
    const node = byName(nodeReadyEmf({ clusterName: "c", registeredSeconds: 70, readySeconds: 110 }, T));
    assert.deepEqual([node.NodeRegisteredSeconds.values[0], node.ComfyUIReadySeconds.values[0]], [70, 110]);
    const failedWaiting = byName(promptOutcomeEmf({ clusterName: "c", outcome: "error", waitSeconds: 3 }, T));
    assert.deepEqual(Object.keys(failedWaiting).sort(), ["OutputsSaved", "PromptWaitSeconds", "PromptsFailed"]);
  });

  it("gateway: the snapshot carries the model cache's figures only when it has them (a models bucket)", () => {
    const base = { clusterName: "c", waiting: 0, running: 0, websocketClients: 0, podsReady: 1, acceptedSinceLast: 0, http5xxSinceLast: 0 };
    const without = byName(gatewaySnapshotEmf(base, T));
    assert.deepEqual(Object.keys(without).filter((n) => n.startsWith("Model")), [], "no model library, no cache figures");
    const cache = { fetches: 3, fetchesFailed: 1, bytesFetched: 6.9e9, hits: 12, misses: 3, evictions: 2, loadsAvoided: 7 };
    const withCache = byName(gatewaySnapshotEmf({ ...base, modelCache: cache }, T));
    assert.deepEqual(
      Object.fromEntries(Object.entries(withCache).filter(([n]) => n.startsWith("Model")).map(([n, m]) => [n, [m.values[0], m.unit]])),
      {
        ModelFetches: [3, "Count"], ModelFetchesFailed: [1, "Count"], ModelBytesFetched: [6.9e9, "Bytes"], ModelCacheHits: [12, "Count"],
        ModelCacheMisses: [3, "Count"], ModelEvictions: [2, "Count"], ModelLoadsAvoided: [7, "Count"],
      },
    );
    // Every model-cache name in the table is one the snapshot writes (none is declared and never written).
    const declared = Object.values(METRICS).map((m) => m.name).filter((n) => n.startsWith("Model"));
    assert.deepEqual(Object.keys(withCache).filter((n) => n.startsWith("Model")).sort(), declared.sort());
  });

  it("node boot: the node's jq program turns a boot summary into the same metrics as nodeBootEmf", () => {
    const summaries = [
      { schema: 1, t_boot: 1000, t_userdata: 1030, t_raid: 1041, t_filled: 1090, t_image: 1075, fill: { result: "complete", files: 3, bytes: 20e9, seconds: 49, missing_files: 0 } },
      { schema: 1, t_boot: 1000, t_userdata: 1030, t_raid: 1041, t_filled: null, t_image: null, fill: { result: "budget", files: 1, bytes: 0, seconds: 0, missing_files: 4 } },
    ];
    for (const s of summaries) {
      const out = execFileSync("jq", ["-c", "--arg", "cluster", "comfyui-dev", "--argjson", "ts", String(T), nodeBootEmfJq()], { input: JSON.stringify(s) }).toString();
      const expected = nodeBootEmf({
        clusterName: "comfyui-dev", seconds: s.fill.seconds, bytes: s.fill.bytes, hotSetFilesMissing: s.fill.missing_files,
        raidSeconds: s.t_raid - s.t_boot, ...(s.t_filled ? { filledSeconds: s.t_filled - s.t_boot } : {}), ...(s.t_image ? { imageSeconds: s.t_image - s.t_boot } : {}),
      }, T);
      assert.deepEqual(parseEmfLine(out), parseEmfLine(JSON.stringify(expected)));
      assert.deepEqual(JSON.parse(out).boot_summary, s, "the summary rides along as a log field");
    }
  });

  it("node boot: throughput is bytes over seconds, left out for an instant fill", () => {
    const b = byName(nodeBootEmf({ clusterName: "c", seconds: 100, bytes: 50e9, hotSetFilesMissing: 0 }, T));
    assert.equal(b.BootFillThroughput.values[0], 5e8);
    assert.equal(b.BootFillThroughput.unit, "Bytes/Second");
    assert.ok(!("BootFillThroughput" in byName(nodeBootEmf({ clusterName: "c", seconds: 0, bytes: 0, hotSetFilesMissing: 0 }, T))));
  });

  it("the wiring table is true: a named caller imports and calls its emitter; every source has an emitter", () => {
    for (const [source, emitters] of Object.entries(EMITTER_WIRING)) {
      assert.ok(emitters.length > 0, source);
      for (const e of emitters) {
        const text = readFileSync(path.join(__dirname, "..", "..", e.calledFrom), "utf8");
        assert.match(text, new RegExp(`import \\{[^}]*\\b${e.emitter}\\b[^}]*\\} from "(\\.\\./)+contracts/metrics"`), `${e.calledFrom} imports ${e.emitter}`);
        assert.match(text, new RegExp(`\\b${e.emitter}\\(`), `${e.calledFrom} calls ${e.emitter}`);
      }
    }
    // The metrics of a source all come out of its emitters (none is defined and never written).
    const sample: Record<string, object[]> = {
      sync: [syncBatchEmf({ clusterName: "c", changeCount: 1, rejectedCount: 0, failedNodes: 0, retried: false }, T)],
      gateway: [
        gatewaySnapshotEmf({
          clusterName: "c", waiting: 0, running: 0, websocketClients: 0, podsReady: 1, acceptedSinceLast: 0, http5xxSinceLast: 0,
          modelCache: { fetches: 0, fetchesFailed: 0, bytesFetched: 0, hits: 0, misses: 0, evictions: 0, loadsAvoided: 0 },
        }, T),
        promptOutcomeEmf({ clusterName: "c", outcome: "success", waitSeconds: 1, runSeconds: 1 }, T),
        promptOutcomeEmf({ clusterName: "c", outcome: "error", waitSeconds: 1 }, T),
        coldStartEmf("c", 1, T),
        nodeReadyEmf({ clusterName: "c", registeredSeconds: 1, readySeconds: 2 }, T),
        gpuFleetEmf({ clusterName: "c", instanceType: "g6.xlarge", capacityType: "on-demand", nodes: 1, pods: 1 }, T),
      ],
      "node-boot": [nodeBootEmf({ clusterName: "c", seconds: 1, bytes: 1, hotSetFilesMissing: 0, raidSeconds: 1, filledSeconds: 2, imageSeconds: 2 }, T)],
    };
    for (const [source, lines] of Object.entries(sample)) {
      const written = new Set(lines.flatMap((l) => parseEmfLine(JSON.stringify(l)).map((m) => m.name)));
      const defined = Object.values(METRICS).filter((m) => m.source === source).map((m) => m.name);
      assert.deepEqual([...written].sort(), [...defined].sort(), source);
    }
  });
});

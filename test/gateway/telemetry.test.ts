import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import * as vm from "node:vm";
import { COLD_START_BUDGET_SECONDS, GATEWAY_STREAM_PREFIX } from "../../contracts/metrics";
import { loadConfig } from "../../workload/gateway/config";
import { startLocal } from "../../workload/gateway/main";
import { gpuStatusText } from "../../workload/gateway/routes/discovery";
import { LocalObjectStore } from "../../workload/gateway/store/objects";
import { CloudWatchLogsSink, ColdStarts, median, metricsSinkFor, NO_METRICS, Telemetry } from "../../workload/gateway/telemetry";
import { parseEmfLine } from "../observability/emfParse";
import { fakeLogs } from "./fakeLogs";
import { get, post, quiet, t2i, tmpDir, until } from "./helpers";
import { startStandIn } from "./standin";

const emfNames = (messages: string[]) => messages.flatMap((m) => parseEmfLine(m).map((x) => x.name));
const valuesOf = (messages: string[], name: string) => messages.flatMap((m) => parseEmfLine(m).filter((x) => x.name === name).flatMap((x) => x.values));

describe("gateway telemetry", function () {
  this.timeout(30000);

  describe("cold starts", () => {
    it("promises the documented budget until three are measured, then their median; the history survives a new leader", async () => {
      const store = new LocalObjectStore(tmpDir());
      const a = new ColdStarts(store, COLD_START_BUDGET_SECONDS, quiet);
      await a.load();
      assert.deepEqual(a.estimate(0), { seconds: COLD_START_BUDGET_SECONDS, basis: "budget", samples: 0 });
      const T = 1_800_000_000_000;
      for (const [start, secs] of [[T, 100], [T + 1e6, 300], [T + 2e6, 140]] as const) {
        a.waiting(start + 5000); // a later prompt does not move the start
        a.waiting(start);
        a.waiting(start + 9000);
        assert.equal(a.estimate(start + 30_000).waitingSeconds, 30);
        assert.equal(await a.started(start + secs * 1000), secs);
        assert.equal(await a.started(start + secs * 1000 + 1), undefined, "one measurement per cold start");
      }
      assert.deepEqual(a.estimate(T + 3e6), { seconds: 140, basis: "measured", samples: 3 });
      const b = new ColdStarts(store, COLD_START_BUDGET_SECONDS, quiet);
      await b.load();
      assert.deepEqual(b.estimate(0), { seconds: 140, basis: "measured", samples: 3 });
      // Cancelled (nothing ran): not a measurement.
      b.waiting(T + 4e6);
      b.cancel();
      assert.equal(await b.started(T + 5e6), undefined);
      assert.equal(b.estimate(0).samples, 3);
    });

    it("keeps a rolling window and ignores a corrupt history", async () => {
      const dir = tmpDir();
      const store = new LocalObjectStore(dir);
      const c = new ColdStarts(store, 222, quiet, 5);
      for (let i = 1; i <= 8; i++) {
        c.waiting(0);
        await c.started(i * 10_000);
      }
      // Last five: 40, 50, 60, 70, 80 s.
      assert.deepEqual(c.estimate(0), { seconds: 60, basis: "measured", samples: 5 });
      assert.equal(median([3, 1, 2, 10]), 2.5);
      fs.writeFileSync(path.join(dir, "cold-starts.json"), "{not json");
      const d = new ColdStarts(store, 222, quiet);
      await d.load();
      assert.equal(d.estimate(0).basis, "budget");
    });

    it("the UI text: about N minutes from the measured median or the budget; longer than usual past it; nothing once a pod is ready", () => {
      assert.equal(gpuStatusText({ ready: 1, coldStart: { seconds: 100, basis: "measured", samples: 4 } }), "");
      assert.match(gpuStatusText({ ready: 0, coldStart: { seconds: 222, basis: "budget", samples: 0 } }), /^GPU starting — about 4 minutes \(estimate, none measured yet\)/);
      assert.match(gpuStatusText({ ready: 0, coldStart: { seconds: 150, basis: "measured", samples: 7, waitingSeconds: 60 } }), /about 2 minutes \(median of the last 7 starts\)/);
      assert.match(gpuStatusText({ ready: 0, coldStart: { seconds: 150, basis: "measured", samples: 7, waitingSeconds: 140 } }), /about 1 minute \(/);
      assert.match(gpuStatusText({ ready: 0, coldStart: { seconds: 150, basis: "measured", samples: 7, waitingSeconds: 400 } }), /taking longer than usual \(median of the last 7 starts: 3 min\)/);
      assert.match(gpuStatusText({ ready: 0 }), /GPU starting: queued prompts run/);
    });
  });

  describe("CloudWatch Logs sink (fake endpoint, the service's JSON protocol)", () => {
    it("creates its stream once, sends events in time order, keeps them through a failed call and sends them next time", async () => {
      const logs = await fakeLogs();
      const client = logs.client();
      const sink = new CloudWatchLogsSink({ client, logGroup: "/comfyui/c/metrics", logStream: "gateway/gw-0", log: quiet, flushMs: 3_600_000 });
      const t = new Telemetry({ clusterName: "c", sink, coldStarts: new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet), log: quiet, now: () => 2000 });
      try {
        t.snapshot({ waiting: 2, running: 1, websocketClients: 3, readyPods: ["pod-a"] });
        const rec = { id: "p", createdAt: 500 } as never;
        t.finished(rec, { prompt: [], outputs: {}, status: { status_str: "success", completed: true, messages: [] }, meta: {} }, 1000, 1500);
        logs.fail("PutLogEvents", "ServiceUnavailableException", 503);
        await sink.flush();
        assert.equal(logs.messages().length, 0);
        await sink.flush();
        const msgs = logs.messages();
        assert.equal(msgs.length, 2);
        const put = logs.calls.filter((c) => c.target === "Logs_20140328.PutLogEvents").at(-1)!;
        assert.equal(put.body.logGroupName, "/comfyui/c/metrics");
        assert.equal(put.body.logStreamName, "gateway/gw-0");
        assert.deepEqual(put.body.logEvents!.map((e) => e.timestamp), [1500, 2000], "chronological");
        assert.equal(logs.calls.filter((c) => c.target.endsWith("CreateLogStream")).length, 1);
        assert.deepEqual(valuesOf(msgs, "PromptWaitSeconds"), [0.5]);
        assert.deepEqual(valuesOf(msgs, "PromptRunSeconds"), [0.5]);
        assert.deepEqual(valuesOf(msgs, "QueueDepth"), [3]);
        assert.deepEqual(valuesOf(msgs, "OutputsSaved"), [0]);
      } finally {
        await sink.close();
        client.destroy();
        await logs.close();
      }
    });

    it("from the configuration: none without a log group; else the stream gateway/<pod>, its client closed with it", async () => {
      assert.equal(metricsSinkFor({ podName: "gw-0" }, quiet), undefined);
      const logs = await fakeLogs();
      const saved = { ...process.env };
      Object.assign(process.env, { AWS_ENDPOINT_URL_CLOUDWATCH_LOGS: logs.url, AWS_ACCESS_KEY_ID: "AKIDTEST", AWS_SECRET_ACCESS_KEY: "test" });
      try {
        const sink = metricsSinkFor({ metricsLogGroup: "/comfyui/c/metrics", region: "us-east-1", podName: "gw-0" }, quiet)!;
        const t = new Telemetry({ clusterName: "c", sink, coldStarts: new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet), log: quiet, now: () => 5 });
        t.snapshot({ waiting: 4, running: 0, websocketClients: 0, readyPods: [] });
        await sink.close();
        assert.deepEqual(valuesOf(logs.messages(), "PromptsWaiting"), [4]);
        assert.deepEqual([...new Set(logs.calls.map((c) => `${c.body.logGroupName} ${c.body.logStreamName}`))], ["/comfyui/c/metrics gateway/gw-0"]);
      } finally {
        for (const k of ["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]) {
          if (saved[k] === undefined) delete process.env[k];
          else process.env[k] = saved[k];
        }
        await logs.close();
      }
    });

    it("an event larger than one call is dropped rather than holding back the others", async () => {
      const logs = await fakeLogs();
      const client = logs.client();
      const sink = new CloudWatchLogsSink({ client, logGroup: "g", logStream: "gateway/x", log: quiet, flushMs: 3_600_000 });
      try {
        const small = { _aws: { Timestamp: 2, CloudWatchMetrics: [] } };
        sink.put({ _aws: { Timestamp: 1, CloudWatchMetrics: [] }, pad: "x".repeat(1_100_000) } as never);
        sink.put(small as never);
        await sink.close();
        assert.deepEqual(logs.messages(), [JSON.stringify(small)]);
      } finally {
        client.destroy();
        await logs.close();
      }
    });

    it("an existing stream (a restarted pod) is fine; a bounded buffer drops the oldest", async () => {
      const logs = await fakeLogs();
      const client = logs.client();
      const first = new CloudWatchLogsSink({ client, logGroup: "g", logStream: "gateway/x", log: quiet, flushMs: 3_600_000, maxBuffered: 2 });
      const c = new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet);
      const t = new Telemetry({ clusterName: "c", sink: first, coldStarts: c, log: quiet, now: () => 1 });
      try {
        t.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: [] });
        await first.close();
        const again = new CloudWatchLogsSink({ client, logGroup: "g", logStream: "gateway/x", log: quiet, flushMs: 3_600_000, maxBuffered: 2 });
        const t2 = new Telemetry({ clusterName: "c", sink: again, coldStarts: c, log: quiet, now: () => 2 });
        for (let i = 0; i < 3; i++) t2.snapshot({ waiting: i, running: 0, websocketClients: 0, readyPods: [] });
        await again.close();
        assert.deepEqual(valuesOf(logs.messages(), "PromptsWaiting"), [0, 1, 2], "the first line, then the newest two of three");
        assert.equal(logs.calls.filter((x) => x.target.endsWith("CreateLogStream")).length, 2);
      } finally {
        client.destroy();
        await logs.close();
      }
    });

    it("a new GPU node is counted once, only when fresh, from its boot-at label to registration and readiness", async () => {
      const lines: object[] = [];
      const sink = { ...NO_METRICS, put: (d: object) => void lines.push(d) };
      const now = 10_000_000;
      const t = new Telemetry({ clusterName: "c", sink, coldStarts: new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet), log: quiet, now: () => now });
      t.nodeStarted({ node: "ip-1", bootAt: now - 200_000, registeredAt: now - 120_000, readyAt: now - 30_000 });
      t.nodeStarted({ node: "ip-1", bootAt: now - 200_000, registeredAt: now - 120_000, readyAt: now - 20_000 });
      t.nodeStarted({ node: "ip-old", bootAt: now - 9e6, registeredAt: now - 8.9e6, readyAt: now - 8e6 });
      t.nodeStarted({ node: "ip-nolabel", registeredAt: now - 120_000, readyAt: now - 30_000 });
      const msgs = lines.map((l) => JSON.stringify(l));
      assert.deepEqual(valuesOf(msgs, "NodeRegisteredSeconds"), [80]);
      assert.deepEqual(valuesOf(msgs, "ComfyUIReadySeconds"), [170]);
    });

    it("the snapshot carries the model cache's figures it is given (a models bucket), and none without them", () => {
      const lines: object[] = [];
      const sink = { ...NO_METRICS, put: (d: object) => void lines.push(d) };
      const t = new Telemetry({ clusterName: "c", sink, coldStarts: new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet), log: quiet, now: () => 1 });
      t.snapshot({ waiting: 1, running: 0, websocketClients: 0, readyPods: [] });
      const plain = lines.splice(0).map((l) => JSON.stringify(l));
      assert.deepEqual(emfNames(plain).filter((n) => n.startsWith("Model")), []);
      assert.deepEqual(valuesOf(plain, "PromptsWaiting"), [1], "the snapshot itself is written");
      t.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: [], modelCache: { fetches: 2, fetchesFailed: 0, bytesFetched: 4096, hits: 9, misses: 2, evictions: 1, loadsAvoided: 5 } });
      const msgs = lines.splice(0).map((l) => JSON.stringify(l));
      assert.deepEqual(["ModelFetches", "ModelFetchesFailed", "ModelBytesFetched", "ModelCacheHits", "ModelCacheMisses", "ModelEvictions", "ModelLoadsAvoided"].map((n) => valuesOf(msgs, n)), [[2], [0], [4096], [9], [2], [1], [5]]);
      for (const m of msgs) for (const x of parseEmfLine(m)) assert.deepEqual(x.dimensions, { ClusterName: "c" });
    });

    it("the fleet by instance type and capacity type: ready pods grouped by their node's labels, gone pods forgotten", () => {
      const lines: object[] = [];
      const sink = { ...NO_METRICS, put: (d: object) => void lines.push(d) };
      const t = new Telemetry({ clusterName: "c", sink, coldStarts: new ColdStarts(new LocalObjectStore(tmpDir()), 222, quiet), log: quiet, now: () => 1 });
      const at = { registeredAt: 0, readyAt: 0 };
      t.nodeStarted({ node: "n1", instanceType: "g6.12xlarge", capacityType: "spot", ...at }, "p1");
      t.nodeStarted({ node: "n1", instanceType: "g6.12xlarge", capacityType: "spot", ...at }, "p2");
      t.nodeStarted({ node: "n2", instanceType: "g6.12xlarge", capacityType: "spot", ...at }, "p3");
      t.nodeStarted({ node: "n3", instanceType: "g5.2xlarge", capacityType: "on-demand", ...at }, "p4");
      const fleet = () => lines.splice(0).flatMap((l) => parseEmfLine(JSON.stringify(l))).filter((m) => m.name === "GpuNodes" || m.name === "ComfyUIPods")
        .map((m) => `${m.name} ${m.dimensions.InstanceType}/${m.dimensions.CapacityType}=${m.values[0]}`).sort();
      t.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: ["p1", "p2", "p3", "p4"] });
      assert.deepEqual(fleet(), ["ComfyUIPods g5.2xlarge/on-demand=1", "ComfyUIPods g6.12xlarge/spot=3", "GpuNodes g5.2xlarge/on-demand=1", "GpuNodes g6.12xlarge/spot=2"]);
      t.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: ["p1"] });
      assert.deepEqual(fleet(), ["ComfyUIPods g6.12xlarge/spot=1", "GpuNodes g6.12xlarge/spot=1"]);
      t.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: ["p1", "p4"] });
      assert.deepEqual(fleet(), ["ComfyUIPods g6.12xlarge/spot=1", "GpuNodes g6.12xlarge/spot=1"], "p4 left and is not counted again until it is read again");
    });
  });

  it("end to end: a prompt waits for a starting pod; the gateway measures the cold start, shows it in /gateway/pods and sends every figure as EMF", async () => {
    const logs = await fakeLogs();
    const client = logs.client();
    const seed = await startStandIn({ stepMs: 1 });
    const dir = tmpDir();
    const cfg = (url: string) => loadConfig(["--port", "0", "--data-dir", dir, "--comfyui", url, "--cluster-name", "comfyui-dev"], { GATEWAY_METRICS_SECONDS: "1" });
    // A first run fills the discovery cache, so the prompt validates while no pod is ready.
    let sink = new CloudWatchLogsSink({ client, logGroup: "/comfyui/comfyui-dev/metrics", logStream: `${GATEWAY_STREAM_PREFIX}gw`, log: quiet, flushMs: 200 });
    let gw = await startLocal(cfg(seed.url), quiet, { metrics: sink });
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
    await gw.close();
    await seed.close();
    const slow = await startStandIn({ stepMs: 1, readyAfterMs: 1500 });
    sink = new CloudWatchLogsSink({ client, logGroup: "/comfyui/comfyui-dev/metrics", logStream: `${GATEWAY_STREAM_PREFIX}gw`, log: quiet, flushMs: 200 });
    gw = await startLocal(cfg(slow.url), quiet, { metrics: sink });
    try {
      const before = (await get(gw.adminUrl, "/gateway/pods")).json;
      assert.equal(before.coldStart.basis, "budget");
      assert.equal(before.coldStart.seconds, COLD_START_BUDGET_SECONDS);
      const r = await post(gw.url, "/prompt", { prompt: t2i(1) });
      assert.equal(r.status, 200, r.text);
      const waiting = await until(async () => {
        const p = (await get(gw.adminUrl, "/gateway/pods")).json;
        return p.ready === 0 && p.coldStart.waitingSeconds !== undefined && p;
      });
      assert.equal(waiting.coldStart.basis, "budget");
      await until(async () => (await get(gw.url, `/history/${r.json.prompt_id}`)).json[r.json.prompt_id], 20000);
      const after = (await get(gw.adminUrl, "/gateway/pods")).json;
      assert.equal(after.coldStart.samples, 1);
      assert.equal(after.coldStart.waitingSeconds, undefined);
      // The served extension evaluates, polls /gateway/pods and shows the text.
      const js = (await get(gw.url, "/extensions/comfyui-gateway/gpu-status.js")).buf.toString();
      const el = { style: {} as Record<string, string>, textContent: "" };
      const sandbox = {
        document: { createElement: () => el, body: { appendChild: () => undefined } },
        fetch: async () => ({ json: async () => ({ ready: 0, coldStart: { seconds: 222, basis: "budget", samples: 0 } }) }),
        setTimeout: () => undefined,
      };
      vm.runInNewContext(js, sandbox);
      await until(async () => el.textContent !== "" && el.textContent);
      assert.match(el.textContent, /GPU starting — about 4 minutes/);
      assert.equal(el.style.display, "block");

      await until(async () => emfNames(logs.messages()).includes("PromptsSucceeded") && emfNames(logs.messages()).includes("GpuPodsReady"), 10000);
      const msgs = logs.messages();
      const cold = valuesOf(msgs, "ColdStartSeconds");
      assert.equal(cold.length, 1);
      assert.ok(cold[0] >= 1.2 && cold[0] < 15, `cold start ${cold[0]} s (the pod turned ready after 1.5 s)`);
      assert.ok(valuesOf(msgs, "PromptWaitSeconds")[0] >= cold[0] - 0.05, "the prompt waited at least the cold start");
      assert.ok(valuesOf(msgs, "PromptsAccepted").reduce((a, b) => a + b, 0) >= 1);
      assert.deepEqual(valuesOf(msgs, "OutputsSaved"), [1], "the SaveImage node's one image");
      for (const m of msgs) for (const x of parseEmfLine(m)) assert.deepEqual(x.dimensions, { ClusterName: "comfyui-dev" });
      assert.deepEqual(emfNames(msgs).filter((n) => n.startsWith("Model")), [], "no models bucket: no model-cache figures");
    } finally {
      await gw.close();
      await slow.close();
      client.destroy();
      await logs.close();
    }
  });
});

describe("gateway telemetry: what counts as a 5xx", function () {
  this.timeout(20000);
  it("client answers count; a standby's readiness 503s do not, and a new leader starts from zero", async () => {
    const lines: object[] = [];
    const sink = { ...NO_METRICS, put: (d: object) => void lines.push(d) };
    const never = await startStandIn({ neverReady: true });
    const gw = await startLocal(loadConfig(["--port", "0", "--data-dir", tmpDir(), "--comfyui", never.url], {}), quiet, { metrics: sink });
    const fivexx = () => {
      gw.gateway.telemetry.snapshot({ waiting: 0, running: 0, websocketClients: 0, readyPods: [] });
      return valuesOf(lines.splice(0).map((l) => JSON.stringify(l)), "Http5xxResponses");
    };
    try {
      assert.equal((await get(gw.url, "/object_info")).status, 503, "no pod, no cache");
      assert.deepEqual(fivexx(), [1]);
      await gw.gateway.standDown();
      for (let i = 0; i < 3; i++) assert.equal((await get(gw.adminUrl, "/gateway/scaling")).status, 200);
      assert.equal((await get(gw.url, "/object_info")).status, 503);
      await gw.gateway.lead({ epoch: 99 });
      assert.equal((await get(gw.url, "/object_info")).status, 503);
      assert.deepEqual(fivexx(), [1], "only the leader's own client answer");
    } finally {
      await gw.close();
      await never.close();
    }
  });
});

describe("the documented wake budget", () => {
  it("is the upper end of docs/scaling.md's g5.2xlarge 'now' total, the figure the gateway promises before it has measured", () => {
    const doc = fs.readFileSync(path.join(__dirname, "..", "..", "docs", "scaling.md"), "utf8");
    const header = doc.split("\n").find((l) => l.startsWith("| phase |"))!.split("|").map((c) => c.trim());
    const total = doc.split("\n").find((l) => l.startsWith("| **total**"))!.split("|").map((c) => c.trim());
    const cell = total[header.indexOf("now, g5.2xlarge")];
    const m = /–(\d+(?:\.\d+)?) min/.exec(cell);
    assert.ok(m, `a range in ${cell}`);
    assert.equal(Math.round(Number(m[1]) * 60), COLD_START_BUDGET_SECONDS);
    assert.equal(loadConfig(["--comfyui", "http://127.0.0.1:1"], {}).coldStartBudgetSeconds, COLD_START_BUDGET_SECONDS);
    assert.equal(loadConfig(["--comfyui", "http://127.0.0.1:1", "--cold-start-budget", "300"], {}).coldStartBudgetSeconds, 300);
  });
});

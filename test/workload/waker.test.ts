import { strict as assert } from "node:assert";
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { createWaker } from "../../workload/waker/waker";
import {
  Children,
  closeServer,
  collect,
  ComfyStandIn,
  getJson,
  listen,
  refusedUrl,
  request,
  sleep,
  waitFor,
} from "./wakerHelpers";

const WAKER_JS = path.join(__dirname, "..", "..", "workload", "waker", "waker.js");
const HEALTH = { "user-agent": "ELB-HealthChecker/2.0" };
const BROWSER = {
  "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/150.0 Safari/537.36",
  accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
};
const COST = "controller.kubernetes.io/pod-deletion-cost";

type Demand = { demand: number; lastDemandSecondsAgo: number | null };
type Status = { ready: boolean; waitingSeconds: number; etaSeconds: number };
type WakerOptions = Parameters<typeof createWaker>[0];

describe("waker (workload/waker/waker.js)", function () {
  const cleanups: (() => Promise<void> | void)[] = [];
  const children = new Children();

  afterEach(async () => {
    children.killAll();
    while (cleanups.length) await cleanups.pop()!();
  });

  async function standIn(state: "down" | "starting" | "ready", queue = 0): Promise<ComfyStandIn> {
    const s = await ComfyStandIn.start(state, queue);
    cleanups.push(() => s.close());
    return s;
  }

  /** Starts a waker on loopback ports; returns its base URL and metrics URL. */
  async function startWaker(options: Partial<WakerOptions> & { comfyuiUrl: string }) {
    const logs: Record<string, unknown>[] = [];
    const waker = createWaker({
      port: 0,
      metricsPort: 0,
      host: "127.0.0.1",
      checkIntervalSeconds: 0.05,
      log: (entry) => logs.push(entry),
      ...options,
    });
    cleanups.push(() => waker.close());
    const { port, metricsPort } = await waker.start();
    return {
      waker,
      logs,
      url: `http://127.0.0.1:${port}`,
      metrics: `http://127.0.0.1:${metricsPort}`,
      port,
    };
  }

  it("passes the ALB health check only while no ComfyUI pod is ready", async () => {
    const comfy = await standIn("down");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    const health = () => request(`${w.url}/`, { headers: HEALTH });

    const down = await health();
    assert.equal(down.status, 200, "connection refused means no ComfyUI pod: the waker must be healthy");
    assert.equal(down.body.trim(), "ok");

    await comfy.setState("starting");
    await sleep(200);
    assert.equal((await health()).status, 200, "ComfyUI answering 503 is not ready yet");

    await comfy.setState("ready");
    await waitFor("the health check to turn 503", async () => (await health()).status === 503, 2000);
    // Any path: the ALB's health-check path is shared with the ComfyUI pods.
    assert.equal((await request(`${w.url}/some/other/path`, { headers: HEALTH })).status, 503);

    await comfy.setState("down");
    await waitFor("the health check to turn 200 again", async () => (await health()).status === 200, 2000);
  });

  it("treats a connection-refused COMFYUI_URL as no ComfyUI pod", async () => {
    const w = await startWaker({ comfyuiUrl: await refusedUrl() });
    assert.equal((await request(w.url, { headers: HEALTH })).status, 200);
  });

  it("starts with no demand, and health checks and probes do not create any", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    assert.deepEqual(await getJson<Demand>(`${w.metrics}/demand`), { demand: 0, lastDemandSecondsAgo: null });
    await request(`${w.url}/`, { headers: HEALTH });
    await request(`${w.url}/`, { headers: { ...HEALTH, accept: "text/html" } });
    await request(`${w.url}/`, { headers: { "user-agent": "kube-probe/1.33" } });
    assert.deepEqual(await getJson<Demand>(`${w.metrics}/demand`), { demand: 0, lastDemandSecondsAgo: null });
    assert.equal((await request(`${w.metrics}/healthz`)).status, 200);
    assert.equal((await request(`${w.metrics}/nope`)).status, 404);
  });

  const demandSources: [string, (url: string, port: number) => Promise<unknown>][] = [
    ["a browser page load", (url) => request(`${url}/`, { headers: BROWSER })],
    [
      "an API POST /prompt",
      (url) =>
        request(`${url}/prompt`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt: {}, client_id: "c1" }),
        }),
    ],
    ["the waiting page's status poll", (url) => request(`${url}/waker/status`)],
  ];
  // What an idle ComfyUI tab does after scale-to-zero: it must not wake a GPU over and over.
  const backgroundSources: [string, (url: string, port: number) => Promise<unknown>][] = [
    ["a background GET /api/object_info", (url) => request(`${url}/api/object_info`)],
    ["a reconnecting WebSocket upgrade to /ws", (_url, port) => rawUpgrade(port, "/ws?clientId=c1")],
  ];
  for (const [name, send] of backgroundSources) {
    it(`does not count ${name} as demand`, async () => {
      const comfy = await standIn("starting");
      const w = await startWaker({ comfyuiUrl: comfy.url });
      await send(w.url, w.port);
      assert.deepEqual(await getJson<Demand>(`${w.metrics}/demand`), { demand: 0, lastDemandSecondsAgo: null });
    });
  }
  for (const [name, send] of demandSources) {
    it(`counts ${name} as demand`, async () => {
      const comfy = await standIn("starting");
      const w = await startWaker({ comfyuiUrl: comfy.url });
      assert.equal((await getJson<Demand>(`${w.metrics}/demand`)).demand, 0);
      await send(w.url, w.port);
      assert.deepEqual(await getJson<Demand>(`${w.metrics}/demand`), { demand: 1, lastDemandSecondsAgo: 0 });
    });
  }

  it("drops demand back to 0 once the window has passed", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url, demandWindowSeconds: 1 });
    await request(`${w.url}/prompt`, { method: "POST", body: "{}" });
    assert.equal((await getJson<Demand>(`${w.metrics}/demand`)).demand, 1);
    await sleep(1100);
    const after = await getJson<Demand>(`${w.metrics}/demand`);
    assert.equal(after.demand, 0);
    assert.equal(after.lastDemandSecondsAgo, 1);
  });

  it("answers API clients with 503, Retry-After and a gpu_starting JSON error", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    const calls = [
      request(`${w.url}/prompt`, { method: "POST", body: JSON.stringify({ prompt: { "1": {} } }) }),
      request(`${w.url}/prompt`),
      request(`${w.url}/api/history?max_items=1`, { headers: { accept: "application/json" } }),
      request(`${w.url}/upload/image`, { method: "POST", body: "x".repeat(2 * 1024 * 1024) }),
    ];
    for (const res of await Promise.all(calls)) {
      assert.equal(res.status, 503);
      assert.equal(res.headers["x-comfyui-waker"], "1");
      assert.match(String(res.headers["content-type"]), /^application\/json/);
      const retry = Number(res.headers["retry-after"]);
      assert.ok(Number.isInteger(retry) && retry > 0, `Retry-After is a positive integer: ${res.headers["retry-after"]}`);
      assert.deepEqual(JSON.parse(res.body), {
        error: {
          type: "gpu_starting",
          message: `No GPU worker is running yet; one is starting. Retry after ${retry} seconds.`,
          retry_after_seconds: retry,
        },
      });
    }
  });

  it("answers an upload that expects 100-continue with 503 before its body is sent", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    const head = await rawExchange(
      w.port,
      "POST /upload/image HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert.match(head, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    assert.equal((await getJson<Demand>(`${w.metrics}/demand`)).demand, 1);
  });

  it("answers a WebSocket upgrade with 503 on the raw socket and closes it", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    const raw = await rawUpgrade(w.port, "/ws?clientId=abc");
    assert.match(raw, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    assert.match(raw, /\r\nretry-after: \d+\r\n/i);
    assert.match(raw, /\r\nx-comfyui-waker: 1\r\n/i);
    assert.equal(JSON.parse(raw.split("\r\n\r\n")[1]).error.type, "gpu_starting");
  });

  it("serves browsers a self-contained waiting page that reflects nothing from the request", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url, expectedWakeSeconds: 180 });
    const res = await request(`${w.url}/<script>alert(1)</script>?q=%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E`, {
      headers: { ...BROWSER, "user-agent": "<script>alert(3)</script>", "accept-language": "<b>x</b>" },
    });
    assert.equal(res.status, 503);
    assert.match(String(res.headers["content-type"]), /^text\/html/);
    assert.equal(res.headers["cache-control"], "no-store");
    assert.equal(res.headers["x-comfyui-waker"], "1");
    assert.ok(Number(res.headers["retry-after"]) > 0);

    const page = res.body;
    assert.ok(!page.includes("alert("), "nothing from the request appears in the page");
    assert.ok(!/onerror|<img|<b>/i.test(page));
    assert.equal(page.match(/<script/g)?.length, 1, "only the page's own script");
    assert.ok(!/\s(src|href)="(https?:)?\/\//.test(page), "no external resources");
    assert.match(page, /<html lang="en">/);
    assert.match(page, /<title>[^<]+<\/title>/);
    assert.match(page, /<p id="status"[^>]*role="status"[^>]*aria-live="polite"[^>]*>GPU starting — about 3 minutes</);
    assert.match(page, /<progress /);

    // The CSP allows exactly the inline script and style, by hash, and nothing else.
    const csp = String(res.headers["content-security-policy"]);
    assert.match(csp, /default-src 'none'/);
    assert.ok(!csp.includes("unsafe-inline") && !csp.includes("unsafe-eval"));
    const sha = (text: string) => `'sha256-${createHash("sha256").update(text, "utf8").digest("base64")}'`;
    const script = /<script>([\s\S]*?)<\/script>/.exec(page)![1];
    const style = /<style>([\s\S]*?)<\/style>/.exec(page)![1];
    assert.ok(csp.includes(`script-src ${sha(script)}`), "script hash in CSP");
    assert.ok(csp.includes(`style-src ${sha(style)}`), "style hash in CSP");

    const head = await request(`${w.url}/`, { method: "HEAD", headers: BROWSER });
    assert.equal(head.status, 503);
    assert.equal(head.body, "");
  });

  it("reports the wake-up on /waker/status with a decreasing ETA, reset once ComfyUI is ready", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url, expectedWakeSeconds: 180 });
    const first = await request(`${w.url}/waker/status`);
    assert.equal(first.status, 200);
    assert.equal(first.headers["x-comfyui-waker"], "1");
    assert.equal(first.headers["cache-control"], "no-store");
    const s1 = JSON.parse(first.body) as Status;
    assert.deepEqual(s1, { ready: false, waitingSeconds: 0, etaSeconds: 180 });

    await sleep(1100);
    const s2 = await getJson<Status>(`${w.url}/waker/status`);
    assert.equal(s2.ready, false);
    assert.ok(s2.etaSeconds < s1.etaSeconds, `ETA decreased: ${s1.etaSeconds} -> ${s2.etaSeconds}`);
    assert.equal(s2.waitingSeconds, 1);

    await comfy.setState("ready");
    await waitFor("status ready", async () => (await getJson<Status>(`${w.url}/waker/status`)).ready, 2000);
    assert.deepEqual(await getJson<Status>(`${w.url}/waker/status`), { ready: true, waitingSeconds: 0, etaSeconds: 0 });
    assert.ok(w.logs.some((l) => l.msg === "comfyui ready"));
  });

  it("close() is idempotent and frees its ports", async () => {
    const comfy = await standIn("starting");
    const w = await startWaker({ comfyuiUrl: comfy.url });
    const first = w.waker.close();
    assert.equal(w.waker.close(), first);
    await first;
    await assert.rejects(request(w.url), /ECONNREFUSED/);
  });

  function envFor(extra: Record<string, string>): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
    // A CI runner inside Kubernetes must not switch on the in-cluster pod-deletion-cost loop.
    delete env.KUBERNETES_SERVICE_HOST;
    return env;
  }

  it("exits non-zero naming the variable when an environment value is invalid", async () => {
    const bad = await children.run(
      "node",
      [WAKER_JS],
      envFor({ COMFYUI_URL: "http://127.0.0.1:1", PORT: "0", METRICS_PORT: "0", EXPECTED_WAKE_SECONDS: "three minutes" }),
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /EXPECTED_WAKE_SECONDS/);

    const missing = await children.run("node", [WAKER_JS], envFor({ COMFYUI_URL: "", PORT: "0", METRICS_PORT: "0" }));
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /COMFYUI_URL/);
  });

  it("runs from the environment and stops cleanly on SIGTERM", async () => {
    const started = Date.now();
    const child = children.spawn(
      "node",
      [WAKER_JS],
      envFor({ COMFYUI_URL: await refusedUrl(), PORT: "0", METRICS_PORT: "0", CHECK_INTERVAL_SECONDS: "0.2" }),
    );
    const done = collect(child, started, 10000);
    let out = "";
    child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")));
    await waitFor("the listening log line", () => out.includes('"waker listening"'), 5000);
    const listening = out
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "waker listening")!;
    assert.equal(listening.podDeletionCost, false);
    const res = await request(`http://127.0.0.1:${listening.port}/`, { headers: HEALTH });
    assert.equal(res.status, 200);
    child.kill("SIGTERM");
    const result = await done;
    assert.equal(result.code, 0, result.stderr);
  });

  it("keeps each ready pod's deletion cost equal to its queue, patching only changes", async () => {
    const comfy = await standIn("starting");
    const podA = await standIn("ready", 0);
    const podB = await standIn("ready", 5);
    const podC = await standIn("ready", 7); // answers, but its pod is not Ready: must be left alone
    const unreachable = await refusedUrl();
    const kube = new FakeKube([
      pod("comfy-a", "10.0.0.1", true),
      pod("comfy-b", "10.0.0.2", true, "1"),
      pod("comfy-c", "10.0.0.3", false),
      pod("comfy-d", "10.0.0.4", true, "3"),
    ]);
    const kubeUrl = await kube.start();
    cleanups.push(() => kube.close());
    const urls: Record<string, string> = {
      "comfy-a": podA.url,
      "comfy-b": podB.url,
      "comfy-c": podC.url,
      "comfy-d": unreachable,
    };
    const w = await startWaker({
      comfyuiUrl: comfy.url,
      kubeApiUrl: kubeUrl,
      kubeToken: () => "test-token",
      namespace: "comfy",
      podSelector: "app.kubernetes.io/name=comfyui",
      costIntervalSeconds: 0.05,
      podPromptUrl: (_ip, name) => `${urls[name]}/prompt`,
    });

    await waitFor("two patches", () => kube.patches.length >= 2, 3000);
    await sleep(300); // several more rounds: nothing else may be patched
    const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
    assert.deepEqual(
      [...kube.patches].sort(byName),
      [
        { name: "comfy-a", contentType: "application/merge-patch+json", body: { metadata: { annotations: { [COST]: "0" } } } },
        { name: "comfy-b", contentType: "application/merge-patch+json", body: { metadata: { annotations: { [COST]: "5" } } } },
      ],
    );
    assert.ok(kube.listCalls >= 3);
    assert.deepEqual([...kube.authorizations], ["Bearer test-token"]);
    assert.deepEqual([...kube.selectors], ["app.kubernetes.io/name=comfyui"]);

    podB.setQueue(2);
    await waitFor("a patch for the changed queue", () => kube.patches.length >= 3, 3000);
    await sleep(200);
    assert.equal(kube.patches.length, 3);
    assert.deepEqual(kube.patches[2], {
      name: "comfy-b",
      contentType: "application/merge-patch+json",
      body: { metadata: { annotations: { [COST]: "2" } } },
    });
    assert.ok(!JSON.stringify(w.logs).includes("test-token"), "the token never reaches the logs");
  });
});

/** Sends a WebSocket upgrade on a raw socket; resolves with everything received once the server closes it. */
function rawUpgrade(port: number, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    socket.setTimeout(3000, () => socket.destroy(new Error("the server did not close the upgrade socket")));
    socket.on("connect", () =>
      socket.write(
        [
          `GET ${target} HTTP/1.1`,
          `Host: 127.0.0.1:${port}`,
          "Upgrade: websocket",
          "Connection: Upgrade",
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version: 13",
          "",
          "",
        ].join("\r\n"),
      ),
    );
    socket.on("data", (c: Buffer) => (data += c.toString("utf8")));
    socket.on("end", () => {
      socket.end();
      resolve(data);
    });
    socket.on("error", reject);
  });
}

/** Writes `raw` and resolves with the first response head (up to the blank line); then hangs up. */
function rawExchange(port: number, raw: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(raw));
    let data = "";
    socket.setTimeout(3000, () => socket.destroy(new Error("no response head within 3 s")));
    socket.on("data", (c: Buffer) => {
      data += c.toString("utf8");
      const end = data.indexOf("\r\n\r\n");
      if (end >= 0) {
        socket.destroy();
        resolve(data.slice(0, end + 2));
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`closed before a response head: ${JSON.stringify(data)}`)));
  });
}

type FakePod = {
  metadata: { name: string; annotations: Record<string, string> };
  status: { phase: string; podIP: string; conditions: { type: string; status: string }[] };
};

function pod(name: string, ip: string, ready: boolean, cost?: string): FakePod {
  return {
    metadata: { name, annotations: cost === undefined ? {} : { [COST]: cost } },
    status: { phase: "Running", podIP: ip, conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  };
}

/** Just enough of the Kubernetes API: list pods by selector, merge-patch one pod's annotations. */
class FakeKube {
  readonly patches: { name: string; contentType: string; body: unknown }[] = [];
  readonly authorizations = new Set<string>();
  readonly selectors = new Set<string>();
  listCalls = 0;
  private readonly server = http.createServer((req, res) => this.handle(req, res));

  constructor(private readonly pods: FakePod[]) {}

  async start(): Promise<string> {
    return `http://127.0.0.1:${await listen(this.server)}`;
  }

  close(): Promise<void> {
    return closeServer(this.server);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      this.authorizations.add(String(req.headers.authorization));
      const url = new URL(req.url ?? "/", "http://kube");
      const send = (status: number, value: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(value));
      };
      if (req.method === "GET" && url.pathname === "/api/v1/namespaces/comfy/pods") {
        this.listCalls++;
        this.selectors.add(String(url.searchParams.get("labelSelector")));
        return send(200, { kind: "PodList", apiVersion: "v1", items: this.pods });
      }
      const m = /^\/api\/v1\/namespaces\/comfy\/pods\/([^/]+)$/.exec(url.pathname);
      const target = m && this.pods.find((p) => p.metadata.name === decodeURIComponent(m[1]));
      if (req.method === "PATCH" && target) {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
          metadata: { annotations: Record<string, string> };
        };
        this.patches.push({ name: target.metadata.name, contentType: String(req.headers["content-type"]), body });
        Object.assign(target.metadata.annotations, body.metadata.annotations);
        return send(200, target);
      }
      send(404, { kind: "Status", status: "Failure", reason: "NotFound" });
    });
  }
}

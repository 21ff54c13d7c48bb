// Chaos: 200 prompts from 3 clients through the gateway PROCESS over 3 stand-in PROCESSES, while stand-ins
// are SIGKILLed mid-prompt at random and restarted, and the gateway is SIGKILLed and restarted once on the
// same --data-dir. Every prompt must end exactly once (success, or failed with its reason after the attempt
// limit), every output must come back through /view, no prompt may appear twice in history, and the runs
// the stand-ins did must square with the attempts the store counted.
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import WebSocket from "ws";
import { startEmbeddedStore } from "../../workload/gateway/store/embedded";
import { spawnStandIn, type StandInProcess } from "./standin/process";
import { freePort, spawnGateway, type GatewayProcess } from "./cli";
import { get, t2i, tmpDir, until } from "./helpers";

const PROMPTS = 200;
const MAX_ATTEMPTS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rand = (a: number, b: number) => a + Math.random() * (b - a);

/** A client that keeps one WebSocket open (reconnecting like ComfyUI's frontend) and counts completions. */
class ChaosClient {
  readonly done = new Map<string, number>();
  private ws: WebSocket | undefined;
  private stopped = false;
  constructor(readonly id: string, private readonly base: string) {}
  connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(this.base.replace(/^http/, "ws") + `/ws?clientId=${this.id}`);
    this.ws = ws;
    ws.on("message", (d, bin) => {
      if (bin) return;
      const m = JSON.parse(d.toString());
      if (m.type === "executing" && m.data.node === null && m.data.prompt_id) this.done.set(m.data.prompt_id, (this.done.get(m.data.prompt_id) ?? 0) + 1);
    });
    ws.on("error", () => undefined);
    ws.on("close", () => void sleep(300).then(() => this.connect()));
  }
  /** POST /prompt with a client-chosen prompt_id, retried until the gateway answers (safe retries). */
  async submit(seed: number): Promise<string> {
    const id = randomUUID();
    const body = JSON.stringify({ prompt: { ...t2i(seed, undefined, 6), "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: `chaos/${id}` } } }, client_id: this.id, prompt_id: id });
    for (;;) {
      try {
        const r = await fetch(this.base + "/prompt", { method: "POST", body, signal: AbortSignal.timeout(5000) });
        const j = (await r.json().catch(() => undefined)) as { prompt_id?: string } | undefined;
        if (r.status === 200) {
          assert.equal(j?.prompt_id, id);
          return id;
        }
        assert.ok(r.status >= 500, `only unavailability is retried, got ${r.status} ${JSON.stringify(j)}`);
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
      }
      await sleep(200);
    }
  }
  stop(): void {
    this.stopped = true;
    this.ws?.terminate();
  }
}

describe("gateway chaos (processes, SIGKILL)", function () {
  this.timeout(120000);
  const dirs: string[] = [];
  let pods: StandInProcess[] = [];
  let gw: GatewayProcess | undefined;
  const clients: ChaosClient[] = [];

  after(async () => {
    for (const c of clients) c.stop();
    await gw?.killAll();
    await Promise.all(pods.map((p) => p.stop()));
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it("200 prompts, 3 clients, stand-ins and the gateway SIGKILLed: each prompt ends once, outputs survive, runs match attempts", async () => {
    const t0 = Date.now();
    const podDirs = [0, 1, 2].map(() => tmpDir("gw-chaos-pod-"));
    const gwDir = tmpDir("gw-chaos-");
    dirs.push(...podDirs, gwDir);
    const port = await freePort();
    const adminPort = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const admin = `http://127.0.0.1:${adminPort}`;
    const startGw = async () => {
      const args = ["--port", String(port), "--admin-port", String(adminPort), "--data-dir", gwDir, "--max-attempts", String(MAX_ATTEMPTS), ...pods.flatMap((p) => ["--comfyui", p.url])];
      return spawnGateway(args, { via: "node" });
    };
    pods = await Promise.all(podDirs.map((d) => spawnStandIn({ stepMs: 15, dataDir: d })));
    gw = await startGw();
    await until(async () => (await get(admin, "/gateway/pods")).json?.ready === 3, 20000);
    await until(async () => (await get(base, "/object_info/KSampler")).json?.KSampler, 20000);

    for (const name of ["batch", "artist", "pipeline"]) {
      const c = new ChaosClient(name, base);
      c.connect();
      clients.push(c);
    }
    // One client's big batch up front; two others trickle in while things break.
    const ids = new Map<string, string>();
    const submitting = [
      (async () => {
        for (let i = 0; i < 120; i++) ids.set(await clients[0].submit(i), "batch");
      })(),
      ...[1, 2].map(async (k) => {
        for (let i = 0; i < 40; i++) {
          ids.set(await clients[k].submit(1000 * k + i), clients[k].id);
          await sleep(rand(50, 300));
        }
      }),
    ];

    const historyCount = async () => {
      try {
        const r = await fetch(base + "/history", { signal: AbortSignal.timeout(3000) });
        return Object.keys((await r.json()) as object).length;
      } catch {
        return -1;
      }
    };

    // On a timeout: which prompts are open, where the gateway and the pods think they are, what the log says.
    const diagnose = async () => {
      const hist = await fetch(base + "/history", { signal: AbortSignal.timeout(3000) }).then((r) => r.json() as Promise<Record<string, unknown>>).catch(() => ({}));
      const open = [...ids.keys()].filter((id) => !(id in hist));
      const queue = await get(base, "/queue").then((r) => JSON.stringify(r.json)).catch((e: Error) => e.message);
      const podsNow = await get(admin, "/gateway/pods").then((r) => JSON.stringify(r.json)).catch((e: Error) => e.message);
      const onPods = await Promise.all(pods.map((p) => fetch(p.url + "/queue", { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).catch((e: Error) => e.message)));
      const logLines = gw!.lines.filter((l) => open.some((id) => l.includes(id))).slice(-40);
      return [`submitted: ${submitted}, ids: ${ids.size}, open: ${open.join(", ")}`, `gateway /queue: ${queue}`, `gateway /gateway/pods: ${podsNow}`,
        ...onPods.map((q, i) => `pod ${i} /queue: ${q.slice(0, 500)}`), "gateway log lines naming them:", ...logLines].join("\n");
    };

    // Chaos: a random stand-in that is running a prompt is SIGKILLed, and restarted a little later; at least one
    // stays up. Once about a third of the prompts finished, the gateway is SIGKILLed and restarted.
    const killed = new Set<number>();
    let kills = 0;
    let gatewayRestarted = false;
    const down = new Map<number, Promise<void>>();
    let submitted = false;
    void Promise.all(submitting).then(() => (submitted = true));
    while (!(submitted && (await historyCount()) === PROMPTS)) {
      if (Date.now() - t0 >= 100000) assert.fail(`still ${PROMPTS - (await historyCount())} prompts open after 100 s\n${await diagnose()}`);
      const n = await historyCount();
      if (!gatewayRestarted && n >= PROMPTS / 3) {
        gatewayRestarted = true;
        const end = await gw.kill("SIGKILL");
        assert.equal(end.signal, "SIGKILL");
        await sleep(rand(100, 500));
        gw = await startGw();
        continue;
      }
      const fresh = [0, 1, 2].filter((k) => !killed.has(k) && !down.has(k));
      if (down.size < 2 && n < PROMPTS * 0.9 && (fresh.length > 0 || Math.random() < 0.4)) {
        // Stand-ins not killed yet first (each must die at least once), then any that is up.
        const order = (fresh.length ? fresh : [0, 1, 2].filter((k) => !down.has(k))).sort(() => Math.random() - 0.5);
        for (const k of order) {
          const q = await fetch(pods[k].url + "/queue", { signal: AbortSignal.timeout(2000) }).then((r) => r.json() as Promise<{ queue_running: unknown[] }>).catch(() => undefined);
          if (!q || q.queue_running.length === 0) continue;
          await pods[k].kill("SIGKILL");
          killed.add(k);
          kills++;
          down.set(k, sleep(rand(100, 800))
            .then(() => pods[k].restart())
            .finally(() => down.delete(k)));
          break;
        }
      }
      await sleep(rand(200, 700));
    }
    await Promise.all(down.values());
    for (const c of clients) c.stop();
    const elapsed = Date.now() - t0;

    // ---- every prompt ended exactly once -----------------------------------------------------------------
    assert.equal(ids.size, PROMPTS);
    assert.ok(gatewayRestarted, "the gateway was killed and restarted");
    assert.deepEqual([...killed].sort(), [0, 1, 2], `every stand-in was SIGKILLed mid-prompt (${kills} kills)`);
    const raw = await (await fetch(base + "/history")).text();
    const keys = [...raw.matchAll(/"([0-9a-f-]{36})":\{"prompt":/g)].map((m) => m[1]);
    assert.equal(keys.length, PROMPTS, "one history entry per prompt");
    assert.equal(new Set(keys).size, PROMPTS, "no prompt_id twice in history");
    assert.deepEqual(new Set(keys), new Set(ids.keys()));
    const history = JSON.parse(raw) as Record<string, { status: { status_str: string; messages: [string, { exception_message?: string }][] }; outputs: Record<string, { images: { filename: string; subfolder: string; type: string }[] }> }>;
    const failed = Object.entries(history).filter(([, e]) => e.status.status_str !== "success");
    for (const [id, e] of failed) {
      const err = e.status.messages.find(([t]) => t === "execution_error")?.[1];
      assert.match(err?.exception_message ?? "", new RegExp(`prompt failed after ${MAX_ATTEMPTS} attempts; last: `), `${id} failed with its reason: ${err?.exception_message}`);
    }
    assert.deepEqual((await get(base, "/queue")).json, { queue_running: [], queue_pending: [] });
    assert.equal((await get(admin, "/gateway/scaling")).json.prompts, 0);
    for (const c of clients) for (const [id, n] of c.done) assert.ok(n === 1 && ids.get(id) === c.id, `${c.id} was told ${id} ended ${n}× (owner ${ids.get(id)})`);

    // ---- every output retrievable through /view ---------------------------------------------------------
    let images = 0;
    for (const [id, e] of Object.entries(history)) {
      if (e.status.status_str !== "success") continue;
      const imgs = Object.values(e.outputs).flatMap((o) => o.images);
      assert.equal(imgs.length, 1, id);
      for (const img of imgs) {
        assert.equal(img.subfolder, `${id}/chaos`);
        const v = await get(base, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=${img.type}`);
        assert.equal(v.status, 200, `${id}: ${img.filename}`);
        assert.equal(v.buf.subarray(1, 4).toString("latin1"), "PNG");
        images++;
      }
    }

    // ---- what the stand-ins ran squares with the attempts the store counted -------------------------------
    assert.deepEqual(await gw.kill("SIGTERM"), { code: 0, signal: null });
    gw = undefined;
    const runs = new Map<string, number>();
    for (const d of podDirs) {
      const dir = path.join(d, "output", "chaos");
      for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
        const id = f.slice(0, 36);
        runs.set(id, (runs.get(id) ?? 0) + 1);
      }
    }
    const db = await startEmbeddedStore({ dbPath: path.join(gwDir, "db") });
    try {
      let reruns = 0;
      for (const id of ids.keys()) {
        const r = await db.store.get(id);
        assert.ok(r && r.state === "done", id);
        const ran = runs.get(id) ?? 0;
        // A SaveImage file per finished run on a pod; runs that were killed leave none.
        assert.ok(ran <= r.attempt, `${id}: ${ran} saved runs but ${r.attempt} attempts`);
        assert.ok(r.attempt >= 1 && r.attempt <= MAX_ATTEMPTS, `${id}: ${r.attempt} attempts`);
        if (r.history!.status.status_str === "success") assert.ok(ran >= 1, `${id} succeeded without a run on any stand-in`);
        else assert.equal(r.attempt, MAX_ATTEMPTS);
        if (r.attempt > 1) reruns++;
      }
      assert.ok(reruns >= 1, "some prompts ran again after a kill");
      console.log(`      chaos: ${PROMPTS} prompts, ${kills} stand-in kills, 1 gateway kill, ${reruns} re-run, ${failed.length} failed after ${MAX_ATTEMPTS} attempts, ${images} images, ${(elapsed / 1000).toFixed(1)} s`);
    } finally {
      await db.close();
    }
  });
});

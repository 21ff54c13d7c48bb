/**
 * Gateway benchmark (on demand, not in npm test):
 *   npx ts-node --transpile-only bench/gateway/run.ts [--latency 300] [--prompts 1000] [--pods 4] [--sockets 1000] [--concurrency 64] [--step-ms 0]
 *
 * Everything runs as separate processes on this machine: stand-ins (test/gateway/standin, stepMs 0), the
 * gateway (compiled with workload/gateway/tsconfig.build.json and run by node, as the image does; local mode,
 * embedded store on a temp --data-dir), and this process as the client.
 *  1. added latency: submit → `executing null` for one prompt at a time, straight to a stand-in vs through the
 *     gateway to the same stand-in; p50/p99 of each and the difference.
 *  2. sustained prompts/s: `--prompts` prompts with `--concurrency` submits in flight, through the gateway over
 *     `--pods` stand-ins, first submit → last `executing null`.
 *  3. idle WebSockets: `--sockets` sockets opened to the gateway and held; the gateway's RSS before and after.
 * Prints a JSON summary and a Markdown table for docs/benchmarks.md.
 */
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import WebSocket from "ws";
import { spawnGateway, type GatewayProcess } from "../../test/gateway/cli";
import { spawnStandIn, type StandInProcess } from "../../test/gateway/standin/process";
import { startEmbeddedStore } from "../../workload/gateway/store/embedded";

function flag(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} needs a positive number, got ${process.argv[i + 1]}`);
  return v;
}

const LATENCY_N = flag("latency", 300);
const PROMPTS = flag("prompts", 1000);
const PODS = flag("pods", 4);
const SOCKETS = flag("sockets", 1000);
const CONCURRENCY = flag("concurrency", 64);
/** The stand-ins' time per sampler step (the graph has one): 0 makes the gateway's own work the whole cost. */
const STEP_MS = process.argv.includes("--step-ms") ? Number(process.argv[process.argv.indexOf("--step-ms") + 1]) : 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The §8 graph with one sampler step: the stand-in's work is as small as it gets, so the hop dominates. */
function graph(seed: number): Record<string, unknown> {
  return {
    "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "v1-5-pruned-emaonly.safetensors" } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: "a cat", clip: ["4", 1] } },
    "7": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["4", 1] } },
    "5": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
    "3": { class_type: "KSampler", inputs: { model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0], seed, steps: 1, cfg: 8, sampler_name: "euler", scheduler: "normal", denoise: 1 } },
    "8": { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: "bench" } },
  };
}

/** One client socket that resolves a waiter per prompt on `executing null`. */
async function client(base: string, clientId: string): Promise<{ done(id: string): Promise<number>; close(): void }> {
  const ws = new WebSocket(base.replace(/^http/, "ws") + `/ws?clientId=${clientId}`);
  const waiters = new Map<string, (t: number) => void>();
  const early = new Map<string, number>();
  ws.on("message", (d, bin) => {
    if (bin) return;
    const m = JSON.parse(d.toString());
    if (m.type === "executing" && m.data.node === null && m.data.prompt_id) {
      const t = performance.now();
      const w = waiters.get(m.data.prompt_id);
      if (w) {
        waiters.delete(m.data.prompt_id);
        w(t);
      } else early.set(m.data.prompt_id, t);
    }
  });
  await new Promise<void>((res, rej) => ws.once("open", () => res()).once("error", rej));
  return {
    done: (id) => {
      const t = early.get(id);
      if (t !== undefined) {
        early.delete(id);
        return Promise.resolve(t);
      }
      return new Promise((res) => waiters.set(id, res));
    },
    close: () => ws.terminate(),
  };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Median cost of one embedded-store call (dynalite on LevelDB, as local mode runs it): create, claim, complete, get. */
async function storeCallMs(n: number): Promise<{ perCallMs: number; calls: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-store-"));
  const db = await startEmbeddedStore({ dbPath: path.join(dir, "db") });
  const xs: number[] = [];
  const time = async (fn: () => Promise<unknown>) => {
    const t = performance.now();
    await fn();
    xs.push(performance.now() - t);
  };
  try {
    const fence = { epoch: await db.store.takeEpoch() };
    for (let i = 0; i < n; i++) {
      const id = randomUUID();
      const rec = { id, number: i, seq: Date.now(), clientId: "b", prompt: graph(i), extraData: {}, outputs: ["9"], state: "queued" as const, attempt: 0, createdAt: Date.now() };
      await time(() => db.store.create(rec));
      await time(() => db.store.claim(id, 0, "pod", "gw", Date.now(), fence));
      await time(() => db.store.complete(id, 1, { prompt: [], outputs: {}, status: { status_str: "success", completed: true, messages: [] }, meta: {} }, Date.now(), 60, fence));
    }
  } finally {
    await db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { perCallMs: pct(xs, 50), calls: xs.length };
}

/** Starts the compiled gateway over `pods` on a fresh data dir; resolves once every pod is ready and object_info is cached. */
async function startGateway(dist: string, dataDir: string, pods: StandInProcess[], profileDir?: string): Promise<GatewayProcess> {
  const gw = await spawnGateway(["--port", "0", "--data-dir", dataDir, ...pods.flatMap((p) => ["--comfyui", p.url])], {
    compiledMain: path.join(dist, "workload/gateway/main.js"), env: { GATEWAY_LOG_LEVEL: "warn" }, nodeArgs: profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [],
  });
  for (;;) {
    const r = await fetch(gw.adminUrl + "/gateway/pods").then((x) => x.json() as Promise<{ ready: number }>);
    const o = pods.length ? await fetch(gw.url + "/object_info/KSampler").then((x) => x.json() as Promise<Record<string, unknown>>) : { KSampler: true };
    if (r.ready === pods.length && o.KSampler) return gw;
    await sleep(100);
  }
}

/** `PROMPTS` prompts with `CONCURRENCY` submits in flight; `target(i)` says where prompt i goes. First submit → last `executing null`. */
async function sustained(target: (i: number) => string, label: string, seed0: number): Promise<{ promptsPerSecond: number; seconds: number }> {
  const bases = [...new Set(Array.from({ length: PROMPTS }, (_, i) => target(i)))];
  const clients = new Map<string, Awaited<ReturnType<typeof client>>>();
  for (const b of bases) clients.set(b, await client(b, `bench-${label}`));
  const ends: Promise<number>[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= PROMPTS) return;
      const id = randomUUID();
      const base = target(i);
      ends.push(clients.get(base)!.done(id));
      const r = await fetch(base + "/prompt", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: graph(seed0 + i), client_id: `bench-${label}`, prompt_id: id }) });
      if (r.status !== 200) throw new Error(`POST /prompt ${r.status}: ${await r.text()}`);
      await r.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const t1 = Math.max(...(await Promise.all(ends)));
  for (const c of clients.values()) c.close();
  return { promptsPerSecond: Math.round((PROMPTS / ((t1 - t0) / 1000)) * 10) / 10, seconds: Math.round((t1 - t0) / 100) / 10 };
}

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-"));
  const pods: StandInProcess[] = [];
  const gws: GatewayProcess[] = [];
  const result: Record<string, unknown> = {
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model,
    latencyN: LATENCY_N, prompts: PROMPTS, pods: PODS, sockets: SOCKETS, concurrency: CONCURRENCY, stepMs: STEP_MS,
  };
  try {
    for (let i = 0; i < PODS; i++) pods.push(await spawnStandIn({ stepMs: STEP_MS }));
    // Compiled as the image builds it (tsconfig.build.json) and run by plain node, as in the container
    // (the image's CMD is `node dist/workload/gateway/main.js`).
    const dist = path.join(dataDir, "dist");
    execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", path.resolve(__dirname, "../../workload/gateway/tsconfig.build.json"), "--outDir", dist], { stdio: "inherit" });
    result.storeCall = await storeCallMs(100);

    // 3 first, on a fresh process: idle WebSockets and the gateway's memory (no prompt has grown its heap).
    {
      const fresh = await startGateway(dist, path.join(dataDir, "fresh"), pods.slice(0, 1));
      gws.push(fresh);
      await sleep(1000);
      const before = rssMb(fresh.gatewayPid);
      const socks: WebSocket[] = [];
      for (let i = 0; i < SOCKETS; i += 50) {
        await Promise.all(Array.from({ length: Math.min(50, SOCKETS - i) }, (_, k) => new Promise<void>((res, rej) => {
          const ws = new WebSocket(fresh.url.replace(/^http/, "ws") + `/ws?clientId=idle-${i + k}`);
          socks.push(ws);
          ws.once("open", () => res()).once("error", rej);
        })));
      }
      // Hold them past a keepalive round (5 s) so the per-socket timers and buffers are in the figure.
      await sleep(7000);
      const after = rssMb(fresh.gatewayPid);
      const open = socks.filter((s) => s.readyState === WebSocket.OPEN).length;
      for (const s of socks) s.terminate();
      result.idleSockets = { open, rssBeforeMb: Math.round(before), rssWithSocketsMb: Math.round(after), perSocketKb: Math.round(((after - before) * 1024) / SOCKETS * 10) / 10 };
      await fresh.kill("SIGTERM");
    }

    // --profile DIR: a V8 CPU profile of this gateway process (written when it exits), to see where the time goes.
    const profileDir = process.argv.includes("--profile") ? process.argv[process.argv.indexOf("--profile") + 1] : undefined;
    const gw = await startGateway(dist, path.join(dataDir, "data"), pods, profileDir);
    gws.push(gw);
    const base = gw.url;

    // 1. added latency: one prompt at a time, alternating straight to pod 0 and through the gateway (which
    // places a lone prompt on an idle pod), so both see the same machine at the same moments.
    {
      const direct = await client(pods[0].url, "bench-direct");
      const via = await client(base, "bench-gw");
      const one = async (target: string, c: typeof direct, clientId: string, seed: number) => {
        const t0 = performance.now();
        const id = randomUUID();
        const wait = c.done(id);
        const r = await fetch(target + "/prompt", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: graph(seed), client_id: clientId, prompt_id: id }) });
        if (r.status !== 200) throw new Error(`POST /prompt ${r.status}: ${await r.text()}`);
        await r.arrayBuffer();
        return (await wait) - t0;
      };
      const xs: number[] = [];
      const ys: number[] = [];
      for (let i = -20; i < LATENCY_N; i++) {
        const d = await one(pods[0].url, direct, "bench-direct", 1_000_000 + i);
        const g = await one(base, via, "bench-gw", 2_000_000 + i);
        if (i >= 0) {
          xs.push(d);
          ys.push(g);
        }
      }
      direct.close();
      via.close();
      const r2 = (v: number) => Math.round(v * 100) / 100;
      result.latencyMs = { directP50: r2(pct(xs, 50)), gatewayP50: r2(pct(ys, 50)), addedP50: r2(pct(ys, 50) - pct(xs, 50)), directP99: r2(pct(xs, 99)), gatewayP99: r2(pct(ys, 99)) };
    }

    // 2. sustained throughput: the same stand-ins fed directly (round robin), then through the gateway.
    result.direct = await sustained((i) => pods[i % PODS].url, "direct", 3_000_000);
    result.throughput = await sustained(() => base, "gw", 4_000_000);
  } finally {
    for (const g of gws) {
      await g.kill("SIGTERM");
      await g.killAll();
    }
    await Promise.all(pods.map((p) => p.stop()));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result, null, 2));
  const l = result.latencyMs as Record<string, number>;
  const t = result.throughput as Record<string, number>;
  const d = result.direct as Record<string, number>;
  const s = result.idleSockets as Record<string, number>;
  const sc = result.storeCall as { perCallMs: number };
  const budget = Math.round((3 * sc.perCallMs + 5) * 100) / 100;
  const ratio = Math.round((t.promptsPerSecond / d.promptsPerSecond) * 1000) / 10;
  console.log(`
| measure | result | target | met |
|---|---|---|---|
| sustained prompts/s through the gateway, ${PODS} stand-ins at ${STEP_MS} ms per prompt (${PROMPTS} prompts, ${CONCURRENCY} in flight: ${t.seconds} s) vs the same stand-ins fed directly (${d.promptsPerSecond}/s, ${d.seconds} s) | ${t.promptsPerSecond}/s = ${ratio} % | ≥ 90 % | ${ratio >= 90 ? "yes" : "no"} |
| added latency p50, submit → \`executing null\`, one at a time, interleaved (direct ${l.directP50} ms, through the gateway ${l.gatewayP50} ms) | ${l.addedP50} ms | ≤ 3 store calls × ${sc.perCallMs.toFixed(2)} ms + 5 ms = ${budget} ms | ${l.addedP50 <= budget ? "yes" : "no"} |
| p99, same runs (direct ${l.directP99} ms, through the gateway ${l.gatewayP99} ms) | — | reported | — |
| gateway RSS with ${s.open} idle WebSockets on a fresh process (before: ${s.rssBeforeMb} MB; ${s.perSocketKb} KB each) | ${s.rssWithSocketsMb} MB | ≤ 150 MB | ${s.rssWithSocketsMb <= 150 ? "yes" : "no"} |
`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * Gateway benchmark (on demand, not in npm test):
 *   npx ts-node --transpile-only bench/gateway/run.ts [--latency 300] [--prompts 1000] [--pods 4] [--sockets 1000] [--concurrency 64]
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

async function main(): Promise<void> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "gw-bench-"));
  const pods: StandInProcess[] = [];
  let gw: GatewayProcess | undefined;
  const result: Record<string, unknown> = {
    date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpu: os.cpus()[0]?.model,
    latencyN: LATENCY_N, prompts: PROMPTS, pods: PODS, sockets: SOCKETS, concurrency: CONCURRENCY,
  };
  try {
    for (let i = 0; i < PODS; i++) pods.push(await spawnStandIn({ stepMs: 0 }));
    // Compiled as the image builds it (tsconfig.build.json) and run by plain node, as in the container.
    const dist = path.join(dataDir, "dist");
    execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", path.resolve(__dirname, "../../workload/gateway/tsconfig.build.json"), "--outDir", dist], { stdio: "inherit" });
    gw = await spawnGateway(["--port", "0", "--data-dir", path.join(dataDir, "data"), ...pods.flatMap((p) => ["--comfyui", p.url])], { compiledMain: path.join(dist, "main.js"), env: { GATEWAY_LOG_LEVEL: "info" } });
    const base = gw.url;
    for (;;) {
      const r = await fetch(base + "/gateway/pods").then((x) => x.json() as Promise<{ ready: number }>);
      const o = await fetch(base + "/object_info/KSampler").then((x) => x.json() as Promise<Record<string, unknown>>);
      if (r.ready === PODS && o.KSampler) break;
      await sleep(100);
    }

    // 1. added latency: one prompt at a time, straight to pod 0, then through the gateway to pod 0 alone
    // (the other pods are idle either way; the gateway places a lone prompt on the emptiest pod).
    const seq = async (target: string, clientId: string, n: number, seed0: number) => {
      const c = await client(target, clientId);
      const xs: number[] = [];
      try {
        for (let i = -20; i < n; i++) {
          const t0 = performance.now();
          const id = randomUUID();
          const wait = c.done(id);
          const r = await fetch(target + "/prompt", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: graph(seed0 + i), client_id: clientId, prompt_id: id }) });
          if (r.status !== 200) throw new Error(`POST /prompt ${r.status}: ${await r.text()}`);
          await r.arrayBuffer();
          const t1 = await wait;
          if (i >= 0) xs.push(t1 - t0);
        }
      } finally {
        c.close();
      }
      return xs;
    };
    const direct = await seq(pods[0].url, "bench-direct", LATENCY_N, 1_000_000);
    const via = await seq(base, "bench-gw", LATENCY_N, 2_000_000);
    const lat = {
      directP50: pct(direct, 50), directP99: pct(direct, 99), gatewayP50: pct(via, 50), gatewayP99: pct(via, 99),
      addedP50: pct(via, 50) - pct(direct, 50), addedP99: pct(via, 99) - pct(direct, 99),
    };
    result.latencyMs = Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, Math.round(v * 100) / 100]));

    // 2. sustained throughput over every pod.
    {
      const c = await client(base, "bench-tput");
      const ids: Promise<number>[] = [];
      let next = 0;
      const t0 = performance.now();
      const worker = async () => {
        for (;;) {
          const i = next++;
          if (i >= PROMPTS) return;
          const id = randomUUID();
          ids.push(c.done(id));
          const r = await fetch(base + "/prompt", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: graph(3_000_000 + i), client_id: "bench-tput", prompt_id: id }) });
          if (r.status !== 200) throw new Error(`POST /prompt ${r.status}: ${await r.text()}`);
          await r.arrayBuffer();
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      const tSubmitted = performance.now();
      const ends = await Promise.all(ids);
      const t1 = Math.max(...ends);
      c.close();
      result.throughput = {
        promptsPerSecond: Math.round((PROMPTS / ((t1 - t0) / 1000)) * 10) / 10,
        acceptedPerSecond: Math.round((PROMPTS / ((tSubmitted - t0) / 1000)) * 10) / 10,
        seconds: Math.round((t1 - t0) / 100) / 10,
      };
    }

    // 3. idle WebSockets and the gateway's memory.
    {
      await sleep(1000);
      if (global.gc) global.gc();
      const before = rssMb(gw.gatewayPid);
      const socks: WebSocket[] = [];
      for (let i = 0; i < SOCKETS; i += 50) {
        await Promise.all(Array.from({ length: Math.min(50, SOCKETS - i) }, (_, k) => new Promise<void>((res, rej) => {
          const ws = new WebSocket(base.replace(/^http/, "ws") + `/ws?clientId=idle-${i + k}`);
          socks.push(ws);
          ws.once("open", () => res()).once("error", rej);
        })));
      }
      // Hold them past a keepalive round (5 s) so the per-socket timers and buffers are in the figure.
      await sleep(7000);
      const after = rssMb(gw.gatewayPid);
      const open = socks.filter((s) => s.readyState === WebSocket.OPEN).length;
      for (const s of socks) s.terminate();
      result.idleSockets = { open, rssBeforeMb: Math.round(before), rssWithSocketsMb: Math.round(after), perSocketKb: Math.round(((after - before) * 1024) / SOCKETS * 10) / 10 };
    }
  } finally {
    await gw?.kill("SIGTERM");
    await gw?.killAll();
    await Promise.all(pods.map((p) => p.stop()));
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result, null, 2));
  const l = result.latencyMs as Record<string, number>;
  const t = result.throughput as Record<string, number>;
  const s = result.idleSockets as Record<string, number>;
  console.log(`
| measure | result | target |
|---|---|---|
| added latency p50 (submit → executing null; direct ${l.directP50} ms, via gateway ${l.gatewayP50} ms) | ${l.addedP50} ms | ≤ 5 ms |
| added latency p99 (direct ${l.directP99} ms, via gateway ${l.gatewayP99} ms) | ${l.addedP99} ms | ≤ 25 ms |
| sustained prompts/s, ${PODS} stand-ins, embedded store (${PROMPTS} prompts in ${t.seconds} s; accepted ${t.acceptedPerSecond}/s) | ${t.promptsPerSecond} | ≥ 100 |
| gateway RSS with ${s.open} idle WebSockets (before: ${s.rssBeforeMb} MB; ${s.perSocketKb} KB each) | ${s.rssWithSocketsMb} MB | ≤ 200 MB |
`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

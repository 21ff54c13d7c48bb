/**
 * Model-blind against model-aware dispatch (issue 19): a trace of prompts from several clients over several
 * checkpoints (Zipf-distributed) through one local-mode gateway over three ComfyUI stand-ins, each with its own
 * models folder filled by its own model agent from s3rver. The stand-ins charge a model load in proportion to
 * the checkpoint's size (--load-ms-per-mb) and count loads; a sampler step costs --step-ms.
 *
 *   npx ts-node --transpile-only bench/models/routing.ts [--prompts 200] [--clients 5] [--models 6] [--zipf 1.1]
 *     [--pods 3] [--mb 2] [--load-ms-per-mb 1000] [--steps 20] [--step-ms 25] [--cache-mb 8] [--seed 7]
 *
 * Reports, per mode: model loads (all stand-ins), makespan (first accepted → last finished), and the wait of
 * each prompt (accepted → its execution_start in history), p50 and p95. Results: docs/benchmarks.md.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pino from "pino";
import { loadConfig } from "../../workload/gateway/config";
import { startLocal } from "../../workload/gateway/main";
import { startAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { startStandIn } from "../../test/gateway/standin";
import { startS3 } from "../../test/karpenter/userdataHelpers";
import { putObject, s3Client } from "../../test/models/helpers";

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

const P = {
  prompts: arg("prompts", 200), clients: arg("clients", 5), models: arg("models", 6), zipf: arg("zipf", 1.1), pods: arg("pods", 3),
  mb: arg("mb", 2), loadMsPerMb: arg("load-ms-per-mb", 1000), steps: arg("steps", 20), stepMs: arg("step-ms", 25), cacheMb: arg("cache-mb", 8), seed: arg("seed", 7),
};

/** mulberry32: a reproducible trace for both modes. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function trace(): { client: number; model: number; seed: number }[] {
  const r = rng(P.seed);
  const w = Array.from({ length: P.models }, (_, k) => 1 / Math.pow(k + 1, P.zipf));
  const sum = w.reduce((a, b) => a + b, 0);
  // Each client works mostly with its own favourite models (artists do): a Zipf rank per client, rotated.
  return Array.from({ length: P.prompts }, (_, i) => {
    const client = i % P.clients;
    let x = r() * sum;
    let k = 0;
    while (x > w[k] && k < P.models - 1) x -= w[k++];
    return { client, model: (k + client) % P.models, seed: i };
  });
}

function graph(seed: number, ckpt: string): Record<string, unknown> {
  return {
    "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: ckpt } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: "a cat", clip: ["4", 1] } },
    "7": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["4", 1] } },
    "5": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
    "3": { class_type: "KSampler", inputs: { model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0], seed, steps: P.steps, cfg: 8, sampler_name: "euler", scheduler: "normal", denoise: 1 } },
    "8": { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: "bench" } },
  };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

async function runMode(mode: "off" | "on", endpoint: string, bucket: string): Promise<{ loads: number; makespan: number; p50: number; p95: number; fetched: number }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `bench-routing-${mode}-`));
  const nodes = [];
  for (let i = 0; i < P.pods; i++) {
    const dir = path.join(root, `node${i}`);
    fs.mkdirSync(dir);
    const agent = await startAgent(parseAgentArgs(["--models-dir", dir, "--bucket", bucket, "--endpoint", endpoint, "--cache-gb", String(P.cacheMb / 1000), "--port", "0", "--socket", "", "--region", "us-east-1"], process.env), () => undefined);
    const standIn = await startStandIn({ modelsDir: dir, stepMs: P.stepMs, loadMsPerByte: P.loadMsPerMb / 1e6 });
    nodes.push({ agent, standIn });
  }
  const argv = ["--port", "0", "--data-dir", path.join(root, "gw"), "--models-bucket", bucket, "--models-endpoint", endpoint, "--model-routing", mode];
  for (const n of nodes) argv.push("--comfyui", n.standIn.url, "--models-agent", n.agent.url);
  const gw = await startLocal(loadConfig(argv, { AWS_REGION: "us-east-1" }), pino({ level: "silent" }));
  try {
    // Fill the discovery cache first (the first pod that turns ready), as a running studio has it.
    for (let t = Date.now(); (await fetch(`${gw.url}/object_info`)).status !== 200 && Date.now() - t < 30_000; ) await new Promise((r) => setTimeout(r, 100));
    await gw.gateway.services.discovery.settled();
    const ids: string[] = [];
    const t0 = Date.now();
    for (const p of trace()) {
      const res = await fetch(`${gw.url}/prompt`, { method: "POST", body: JSON.stringify({ prompt: graph(p.seed, `model${p.model}.safetensors`), client_id: `client-${p.client}` }) });
      const j = (await res.json()) as { prompt_id?: string };
      if (!j.prompt_id) throw new Error(`refused: ${JSON.stringify(j)}`);
      ids.push(j.prompt_id);
    }
    const waits: number[] = [];
    let last = 0;
    for (const id of ids) {
      for (;;) {
        const h = (await (await fetch(`${gw.url}/history/${id}`)).json()) as Record<string, { status: { status_str: string; messages: [string, { timestamp: number }][] }; prompt: unknown[] }>;
        const e = h[id];
        if (e) {
          if (e.status.status_str !== "success") throw new Error(`prompt ${id} failed: ${JSON.stringify(e.status.messages)}`);
          const start = e.status.messages.find(([t]) => t === "execution_start")?.[1].timestamp ?? 0;
          const end = e.status.messages.find(([t]) => t === "execution_success")?.[1].timestamp ?? Date.now();
          const created = ((e.prompt[3] as { create_time?: number }) ?? {}).create_time ?? t0;
          waits.push((start - created) / 1000);
          last = Math.max(last, end);
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const loads = nodes.reduce((s, n) => s + n.standIn.loads().length, 0);
    let fetched = 0;
    for (const n of nodes) fetched += (await n.agent.cache.inventory()).metrics.fetchesCompleted;
    return { loads, makespan: (last - t0) / 1000, p50: pct(waits, 50), p95: pct(waits, 95), fetched };
  } finally {
    await gw.close();
    for (const n of nodes) {
      await n.standIn.close();
      await n.agent.stop();
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  process.env.AWS_ACCESS_KEY_ID ??= "S3RVER";
  process.env.AWS_SECRET_ACCESS_KEY ??= "S3RVER";
  const s3dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-routing-s3-"));
  const bucket = "models";
  const s3 = await startS3(s3dir, bucket);
  const client = s3Client(s3.endpoint);
  for (let k = 0; k < P.models; k++) await putObject(client, bucket, `checkpoints/model${k}.safetensors`, Buffer.alloc(P.mb * 1e6, k));
  console.log(`trace: ${P.prompts} prompts, ${P.clients} clients, ${P.models} checkpoints of ${P.mb} MB (Zipf s=${P.zipf}), ${P.pods} stand-ins, load ${P.loadMsPerMb} ms/MB, ${P.steps} steps × ${P.stepMs} ms, cache ${P.cacheMb} MB per node`);
  const results: Record<string, Awaited<ReturnType<typeof runMode>>> = {};
  try {
    for (const mode of ["off", "on"] as const) {
      results[mode] = await runMode(mode, s3.endpoint, bucket);
      const r = results[mode];
      console.log(`${mode === "off" ? "model-blind" : "model-aware"}: loads ${r.loads}, fetches ${r.fetched}, makespan ${r.makespan.toFixed(1)} s, wait p50 ${r.p50.toFixed(1)} s, p95 ${r.p95.toFixed(1)} s`);
    }
    const off = results.off;
    const on = results.on;
    console.log(`loads ratio blind/aware: ${(off.loads / Math.max(1, on.loads)).toFixed(2)} (target ≥ 3); makespan shorter by ${(100 * (1 - on.makespan / off.makespan)).toFixed(0)} % (target ≥ 25 %)`);
  } finally {
    client.destroy();
    await s3.close();
    fs.rmSync(s3dir, { recursive: true, force: true });
  }
}

void main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});

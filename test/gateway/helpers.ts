import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pino from "pino";
import WebSocket from "ws";
import { loadConfig } from "../../workload/gateway/config";
import type { GatewayDeps } from "../../workload/gateway/app";
import { startLocal, type Running } from "../../workload/gateway/main";

export const quiet = pino({ level: process.env.GATEWAY_TEST_LOG ?? "silent" });

export function tmpDir(prefix = "gw-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startGateway(urls: string[], extra: string[] = [], dataDir = tmpDir(), overrides: Partial<GatewayDeps> = {}, env: NodeJS.ProcessEnv = {}): Promise<Running & { dataDir: string }> {
  const cfg = loadConfig(["--port", "0", "--data-dir", dataDir, ...urls.flatMap((u) => ["--comfyui", u]), ...extra], env);
  const r = await startLocal(cfg, quiet, overrides);
  return Object.assign(r, { dataDir });
}

/** The stock text-to-image graph (protocol §8). */
export function t2i(seed: number, ckpt = "v1-5-pruned-emaonly.safetensors", steps = 2): Record<string, unknown> {
  return {
    "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: ckpt } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: "a cat", clip: ["4", 1] } },
    "7": { class_type: "CLIPTextEncode", inputs: { text: "", clip: ["4", 1] } },
    "5": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } },
    "3": { class_type: "KSampler", inputs: { model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0], seed, steps, cfg: 8, sampler_name: "euler", scheduler: "normal", denoise: 1 } },
    "8": { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: "ComfyUI" } },
  };
}

export async function post(base: string, p: string, body: unknown): Promise<{ status: number; json: any; text: string }> {
  const res = await fetch(base + p, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

export async function get(base: string, p: string): Promise<{ status: number; json: any; buf: Buffer }> {
  const res = await fetch(base + p);
  const buf = Buffer.from(await res.arrayBuffer());
  let json: any;
  try {
    json = JSON.parse(buf.toString("utf8"));
  } catch {
    json = undefined;
  }
  return { status: res.status, json, buf };
}

export async function until<T>(fn: () => Promise<T | undefined | false>, timeoutMs = 20000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Opens /ws?clientId= and records every text message. */
export async function openWs(base: string, clientId: string): Promise<{ ws: WebSocket; messages: any[]; close(): Promise<void> }> {
  const ws = new WebSocket(base.replace(/^http/, "ws") + `/ws?clientId=${clientId}`);
  const messages: any[] = [];
  ws.on("message", (d, bin) => {
    if (!bin) messages.push(JSON.parse(d.toString()));
  });
  await new Promise<void>((res, rej) => {
    ws.once("open", () => res());
    ws.once("error", rej);
  });
  return {
    ws,
    messages,
    close: () =>
      new Promise<void>((res) => {
        if (ws.readyState === WebSocket.CLOSED) return res();
        ws.once("close", () => res());
        ws.close();
        // A peer that never answers the close handshake (already gone) must not hold the test's cleanup.
        setTimeout(() => ws.terminate(), 2000).unref();
      }),
  };
}

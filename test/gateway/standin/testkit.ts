// Small helpers for the stand-in's own tests (plain fetch + ws, nothing from the stand-in's internals).
import { strict as assert } from "node:assert";
import * as fs from "fs";
import * as path from "path";
import WebSocket from "ws";

export const FIXTURES = "/work/shared/fixtures/workflows";

export function fixture(name: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name), "utf8"));
}

/** The stock SD 1.5 graph of comfyui-protocol.md §8, with `steps` sampler steps. */
export function t2i(steps = 3, seed = 1, prefix = "ComfyUI"): Record<string, any> {
  return {
    "4": { class_type: "CheckpointLoaderSimple", inputs: { ckpt_name: "v1-5-pruned-emaonly.safetensors" } },
    "5": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 48, batch_size: 1 } },
    "6": { class_type: "CLIPTextEncode", inputs: { text: "a cat", clip: ["4", 1] } },
    "7": { class_type: "CLIPTextEncode", inputs: { text: "blurry", clip: ["4", 1] } },
    "3": {
      class_type: "KSampler",
      inputs: { model: ["4", 0], positive: ["6", 0], negative: ["7", 0], latent_image: ["5", 0], seed, steps, cfg: 8, sampler_name: "euler", scheduler: "normal", denoise: 1 },
    },
    "8": { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["4", 2] } },
    "9": { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: prefix } },
  };
}

export interface WsEvent {
  type: string;
  data: any;
}

/** A WebSocket client that records every text event (and counts binary frames). */
export class Recorder {
  events: WsEvent[] = [];
  binary = 0;
  closeCode: number | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (d, isBinary) => {
      if (isBinary) this.binary++;
      else this.events.push(JSON.parse(d.toString()));
    });
    ws.on("close", (code) => (this.closeCode = code));
    ws.on("error", () => undefined);
  }

  static async open(baseUrl: string, clientId?: string, pathName = "/ws", headers?: Record<string, string>): Promise<Recorder> {
    const url = baseUrl.replace(/^http/, "ws") + pathName + (clientId === undefined ? "" : `?clientId=${encodeURIComponent(clientId)}`);
    const ws = new WebSocket(url, { headers });
    const r = new Recorder(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
    });
    await until(() => r.events.length > 0); // the status message that greets every connection
    return r;
  }

  of(type: string): WsEvent[] {
    return this.events.filter((e) => e.type === type);
  }

  /** Resolves once `executing` with node null arrives for `promptId` (ComfyUI's reliable completion signal). */
  async done(promptId: string, timeoutMs = 10000): Promise<void> {
    await until(() => this.events.some((e) => e.type === "executing" && e.data.node === null && e.data.prompt_id === promptId), timeoutMs);
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      this.ws.once("close", () => resolve());
      this.ws.close();
      setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 1000).unref();
    });
  }
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 10000, stepMs = 5): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${cond.toString().slice(0, 200)}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any; text: string }> {
  const r = await fetch(url, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers });
  const text = await r.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, text };
}

export async function getJson(url: string): Promise<any> {
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`GET ${url} → ${r.status}`);
  return r.json();
}

/**
 * Submits `workflow` (whose node 4 names a model no pod has) through @saintno/comfyui-sdk's CallWrapper
 * and checks the call fails to enqueue with ComfyUI's own error body: prompt_outputs_failed_validation,
 * value_not_in_list on node 4. `sdk` is the package's exports, loaded by the caller.
 */
export async function assertMissingModelRejected(sdk: { CallWrapper: any; PromptBuilder: any }, api: unknown, workflow: Record<string, unknown>): Promise<void> {
  const failures: any[] = [];
  await new sdk.CallWrapper(api, new sdk.PromptBuilder(workflow, [], ["images"]).setOutputNode("images", "9")).onFailed((e: any) => failures.push(e)).run();
  const enqueue = failures.find((e) => e.name === "EnqueueFailedError");
  assert.ok(enqueue, `EnqueueFailedError among ${failures.map((e) => e.name)}`);
  assert.equal(enqueue.cause.error.type, "prompt_outputs_failed_validation");
  assert.equal(enqueue.cause.node_errors["4"].errors[0].type, "value_not_in_list");
}

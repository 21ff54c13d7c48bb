/**
 * Issue 19, the gateway's side: the models bucket is the library (every loader lists it, also with no pod),
 * prompts are routed by model, and their files are fetched onto the chosen node by its model agent before
 * ComfyUI sees them. Three stand-ins, each with its own models folder filled only by its own agent (run in
 * this process), over s3rver; the library is larger than the three caches together. Files are bytes, not GB;
 * the stand-ins charge a model load in proportion to the file's size and count loads.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type { S3Client } from "@aws-sdk/client-s3";
import WebSocket from "ws";
import { loadConfig } from "../../workload/gateway/config";
import { startLocal, type Running } from "../../workload/gateway/main";
import { startAgent, type RunningAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { startStandIn, type StandIn } from "./standin";
import { get, post, quiet, t2i, tmpDir, until } from "./helpers";
import { deleteObject, makeTempDir, putObject, removeDir, s3Client, startS3, TOKEN } from "../models/helpers";

const BUCKET = "models";
const KB = 1000;
/** Each node's cache: 100 kB (--cache-gb takes GB). */
const QUOTA_GB = 100 * KB / 1e9;
const LIBRARY: Record<string, number> = {
  "checkpoints/alpha.safetensors": 30 * KB,
  "checkpoints/beta.safetensors": 30 * KB,
  "checkpoints/gamma.safetensors": 30 * KB,
  "checkpoints/delta.safetensors": 30 * KB,
  "checkpoints/huge.safetensors": 150 * KB, // larger than any node's cache
  "loras/style.safetensors": 5 * KB,
  "diffusion_models/flux-tiny.safetensors": 60 * KB,
  "text_encoders/t5-tiny.safetensors": 20 * KB,
  "vae/ae.safetensors": 5 * KB,
};

interface Node { dir: string; agent: RunningAgent; standIn: StandIn }

async function startNode(endpoint: string, beforeStep?: (promptId: string, step: number) => Promise<void>): Promise<Node> {
  const dir = makeTempDir("model-node-");
  const settings = parseAgentArgs(["--models-dir", dir, "--bucket", BUCKET, "--endpoint", endpoint, "--cache-gb", String(QUOTA_GB), "--port", "0", "--token", TOKEN, "--region", "us-east-1", "--socket", ""], { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" });
  const agent = await startAgent(settings, () => undefined);
  // 0.01 ms a byte: a 30 kB checkpoint loads in 300 ms, as a 6.5 GB SDXL file takes seconds from NVMe.
  const standIn = await startStandIn({ modelsDir: dir, stepMs: 5, loadMsPerByte: 0.01, beforeStep });
  return { dir, agent, standIn };
}

async function startModelGateway(nodes: Node[], endpoint: string, extra: string[] = []): Promise<Running> {
  const argv = ["--port", "0", "--data-dir", tmpDir("gw-models-"), "--models-bucket", BUCKET, "--models-endpoint", endpoint, ...extra];
  for (const n of nodes) argv.push("--comfyui", n.standIn.url, "--models-agent", n.agent.url);
  const cfg = loadConfig(argv, { MODELS_AGENT_TOKEN: TOKEN, AWS_REGION: "us-east-1" });
  return startLocal(cfg, quiet);
}

async function history(base: string, id: string): Promise<any> {
  return until(async () => {
    const h = await get(base, `/history/${id}`);
    return h.json?.[id]?.status?.completed !== undefined && h.json[id].status.status_str !== undefined ? h.json[id] : undefined;
  }, 60_000);
}

function loadsOf(nodes: Node[], name: string): number {
  return nodes.reduce((s, n) => s + n.standIn.loads().filter((l) => l.name === name).length, 0);
}

describe("gateway: the models bucket is the library; dispatch by model, fetch before run (issue 19)", function () {
  this.timeout(120_000);
  let s3dir: string;
  let s3: { endpoint: string; close(): Promise<void> };
  let client: S3Client;
  const nodes: Node[] = [];
  const gateways: Running[] = [];
  const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };

  before(async () => {
    // The gateway lists the bucket with the SDK's default credential chain; s3rver takes any key.
    process.env.AWS_ACCESS_KEY_ID = "S3RVER";
    process.env.AWS_SECRET_ACCESS_KEY = "S3RVER";
    s3dir = makeTempDir("models-s3-");
    s3 = await startS3(s3dir, BUCKET);
    client = s3Client(s3.endpoint);
    for (const [key, bytes] of Object.entries(LIBRARY)) await putObject(client, BUCKET, key, Buffer.alloc(bytes, key.length));
    for (let i = 0; i < 3; i++) nodes.push(await startNode(s3.endpoint));
    const library = Object.values(LIBRARY).reduce((a, b) => a + b, 0);
    assert.ok(library > 3 * 100 * KB, "the library is larger than the three caches together");
  });

  after(async () => {
    for (const g of gateways) await g.close();
    for (const n of nodes) {
      await n.standIn.close();
      await n.agent.stop();
      removeDir(n.dir);
    }
    client?.destroy();
    await s3?.close();
    if (s3dir) removeDir(s3dir);
    if (savedEnv.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
    else process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
    if (savedEnv.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
    else process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
  });

  it("lists the whole library in every loader, also with no pod running, and runs a workflow whose models are on no node", async () => {
    const g = await startModelGateway(nodes, s3.endpoint);
    gateways.push(g);
    // The discovery cache is filled from the first pod that turns ready.
    await until(async () => (await get(g.url, "/object_info")).status === 200 && g.gateway.services.discovery.currentVersion !== undefined);
    await g.gateway.services.discovery.settled();
    for (const n of nodes) assert.deepEqual(fs.readdirSync(path.join(n.dir)).filter((d) => d !== ".comfyui-agent"), [], "no node holds any model yet");

    g.gateway.setPods([]);
    const info = (await get(g.url, "/object_info")).json;
    assert.deepEqual(info.CheckpointLoaderSimple.input.required.ckpt_name[0], ["alpha.safetensors", "beta.safetensors", "delta.safetensors", "gamma.safetensors", "huge.safetensors"]);
    assert.deepEqual(info.UNETLoader.input.required.unet_name[0], ["flux-tiny.safetensors"]);
    assert.deepEqual(info.LoraLoader.input.required.lora_name[0], ["style.safetensors"]);
    assert.deepEqual(info.VAELoader.input.required.vae_name[0], ["ae.safetensors", "pixel_space"]);
    assert.deepEqual(info.DualCLIPLoader.input.required.clip_name1[0], ["t5-tiny.safetensors"]);
    assert.deepEqual((await get(g.url, "/models/checkpoints")).json, ["alpha.safetensors", "beta.safetensors", "delta.safetensors", "gamma.safetensors", "huge.safetensors"]);
    // Validation accepts any library file: accepted with no pod at all.
    const accepted = await post(g.url, "/prompt", { prompt: t2i(1, "gamma.safetensors"), client_id: "artist-1" });
    assert.equal(accepted.status, 200, accepted.text);

    const frames: Buffer[] = [];
    const ws = new WebSocket(g.url.replace(/^http/, "ws") + "/ws?clientId=artist-1");
    ws.on("message", (d, bin) => bin && frames.push(d as Buffer));
    await new Promise((r) => ws.once("open", r));
    g.gateway.setPods(nodes.map((n) => ({ key: n.standIn.url, url: n.standIn.url, ready: true, terminating: false, agentUrl: n.agent.url })));
    const h = await history(g.url, accepted.json.prompt_id);
    assert.equal(h.status.status_str, "success", JSON.stringify(h.status));
    assert.equal(loadsOf(nodes, "gamma.safetensors"), 1, "loaded once, from the node's NVMe after the fetch");
    // The client was told which model was being fetched: ComfyUI's text frame (type 3) on the loader node "4".
    const texts = frames.filter((f) => f.readUInt32BE(0) === 3).map((f) => ({ node: f.subarray(8, 8 + f.readUInt32BE(4)).toString(), text: f.subarray(8 + f.readUInt32BE(4)).toString() }));
    assert.ok(texts.some((t) => t.node === "4" && t.text.includes("checkpoints/gamma.safetensors")), JSON.stringify(texts));
    ws.close();
    await g.close();
  });

  it("40 prompts alternating two checkpoints over two pods load each checkpoint at most twice", async () => {
    const two = nodes.slice(0, 2);
    const g = await startModelGateway(two, s3.endpoint);
    gateways.push(g);
    const before = { alpha: loadsOf(two, "alpha.safetensors"), beta: loadsOf(two, "beta.safetensors") };
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await post(g.url, "/prompt", { prompt: t2i(100 + i, i % 2 ? "beta.safetensors" : "alpha.safetensors"), client_id: "batch" });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.prompt_id);
    }
    for (const id of ids) assert.equal((await history(g.url, id)).status.status_str, "success");
    const loads = { alpha: loadsOf(two, "alpha.safetensors") - before.alpha, beta: loadsOf(two, "beta.safetensors") - before.beta };
    assert.ok(loads.alpha <= 2 && loads.beta <= 2, `loads: ${JSON.stringify(loads)}`);
    await g.close();
  });

  it("cold start: agents on nodes whose ComfyUI is not Ready yet fetch the waiting prompts' files ahead; the prompts then run there with no fetch", async () => {
    const g = await startModelGateway([nodes[0]], s3.endpoint);
    gateways.push(g);
    await until(async () => (await get(g.url, "/object_info")).status === 200 && g.gateway.services.discovery.currentVersion !== undefined);
    await g.gateway.services.discovery.settled();
    // Scaled to zero: no pod at all; three prompts wait, the first two for one checkpoint.
    g.gateway.setPods([]);
    const ids: string[] = [];
    for (const [i, ckpt] of ["alpha", "alpha", "beta"].entries()) {
      const r = await post(g.url, "/prompt", { prompt: t2i(400 + i, `${ckpt}.safetensors`), client_id: "cold" });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.prompt_id);
    }
    // Two GPU nodes come up with empty caches: their agents are Ready, their ComfyUI pods are not. The second
    // node's ComfyUI holds its first prompt at its first step until the test lets it go.
    let letGo!: () => void;
    const going = new Promise<void>((r) => (letGo = r));
    const heldRuns: string[] = [];
    const cold = [await startNode(s3.endpoint), await startNode(s3.endpoint, async (id) => {
      heldRuns.push(id);
      await going;
    })];
    try {
      const inv = async (n: Node) => (await fetch(`${n.agent.url}/v1/inventory`, { headers: { "x-models-agent-token": TOKEN } })).json();
      g.gateway.setAgents(cold.map((n, i) => ({ node: `gpu-${i}`, url: n.agent.url })));
      await until(async () => (await inv(cold[0])).files.length > 0 && (await inv(cold[1])).files.length > 0);
      // The head of the queue's checkpoint to the first node, the next other model to the second: never one model twice.
      const [a0, a1] = [await inv(cold[0]), await inv(cold[1])];
      assert.deepEqual(a0.files.map((f: any) => f.path), ["checkpoints/alpha.safetensors"]);
      assert.deepEqual(a1.files.map((f: any) => f.path), ["checkpoints/beta.safetensors"]);
      assert.deepEqual(a0.holds.map((h: any) => h.id), [`prefetch:${ids[0]}`], "held against eviction until the pod starts");
      assert.deepEqual(a1.holds.map((h: any) => h.id), [`prefetch:${ids[2]}`]);
      assert.equal((await get(g.url, `/history/${ids[0]}`)).json[ids[0]], undefined, "still waiting: no pod yet");

      // The second node's pod turns Ready first: the beta prompt goes there although it is not the head of the
      // queue (it fetches nothing), and the alpha prompts wait for the first node's pod rather than take the
      // busy pod's second slot and fetch alpha there too.
      const pod = (i: number) => ({ key: cold[i].standIn.url, url: cold[i].standIn.url, ready: true, terminating: false, node: `gpu-${i}`, agentUrl: cold[i].agent.url });
      g.gateway.setPods([pod(1)]);
      await until(async () => heldRuns.length > 0);
      assert.deepEqual(heldRuns, [ids[2]]);
      const dispatcher = g.gateway.services.dispatcher!;
      assert.deepEqual([...dispatcher.workers.get(cold[1].standIn.url)!.slots.keys()], [ids[2]], "the alpha prompts are not buffered on the beta node");
      g.gateway.setPods([pod(1), pod(0)]);
      for (const id of ids.slice(0, 2)) assert.equal((await history(g.url, id)).status.status_str, "success");
      letGo();
      assert.equal((await history(g.url, ids[2])).status.status_str, "success");

      // Each ran where its files were: the dispatcher's ensures were hits, nothing was fetched a second time.
      const [e0, e1] = [await inv(cold[0]), await inv(cold[1])];
      assert.deepEqual([e0.metrics.fetches, e0.metrics.misses, e0.metrics.hits], [1, 1, 2], "alpha: fetched ahead once, then two hits");
      assert.deepEqual([e1.metrics.fetches, e1.metrics.misses, e1.metrics.hits], [1, 1, 1], "beta: fetched ahead once, then one hit");
      assert.deepEqual([...new Set(cold[0].standIn.loads().map((l) => l.name))], ["alpha.safetensors"]);
      assert.deepEqual([...new Set(cold[1].standIn.loads().map((l) => l.name))], ["beta.safetensors"]);
      // The prefetch holds are released once their prompts ended (the dispatcher's at each end).
      await until(async () => (await inv(cold[0])).holds.length === 0 && (await inv(cold[1])).holds.length === 0);
    } finally {
      letGo();
      await g.close();
      for (const n of cold) {
        await n.standIn.close();
        await n.agent.stop();
        removeDir(n.dir);
      }
    }
  });

  it("under a small quota the LRU never evicts a file a running or buffered prompt needs; too large or missing fails with the reason", async () => {
    const one = [nodes[2]];
    // Listed once: the object deleted below stays in the library, as between a delete and the next listing.
    const g = await startModelGateway(one, s3.endpoint, ["--models-list-seconds", "3600"]);
    gateways.push(g);
    // Four 30 kB checkpoints in turn through one 100 kB cache: each prompt's file must be fetched while the
    // running and the buffered prompt hold theirs; an evicted file would fail the stand-in's load.
    const names = ["alpha", "beta", "gamma", "delta"];
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await post(g.url, "/prompt", { prompt: t2i(200 + i, `${names[i % 4]}.safetensors`), client_id: "lru" });
      assert.equal(r.status, 200, r.text);
      ids.push(r.json.prompt_id);
    }
    for (const id of ids) {
      const h = await history(g.url, id);
      assert.equal(h.status.status_str, "success", JSON.stringify(h.status.messages));
    }
    const inv = await (await fetch(`${nodes[2].agent.url}/v1/inventory`, { headers: { "x-models-agent-token": TOKEN } })).json();
    assert.ok(inv.metrics.evictions > 0, "the LRU made room");
    assert.ok(inv.usedBytes <= 100 * KB);
    assert.deepEqual(inv.holds, [], "every hold released at the prompts' end");

    const huge = await post(g.url, "/prompt", { prompt: t2i(300, "huge.safetensors"), client_id: "lru" });
    const hh = await history(g.url, huge.json.prompt_id);
    assert.equal(hh.status.status_str, "error");
    const err = hh.status.messages.find((m: [string, any]) => m[0] === "execution_error")[1];
    assert.match(err.exception_message, /checkpoints\/huge\.safetensors.*too_large_for_cache/);

    // Listed, then gone from the bucket before a node fetched it.
    await deleteObject(client, BUCKET, "checkpoints/delta.safetensors");
    // The sync path's change reaches the node that holds it (converges to the bucket: removed).
    const applied = await fetch(`${nodes[2].agent.url}/v1/apply`, { method: "POST", headers: { "x-models-agent-token": TOKEN, "content-type": "application/json" }, body: JSON.stringify({ changes: [{ action: "delete", key: "checkpoints/delta.safetensors" }] }) });
    assert.equal(applied.status, 200);
    const gone = await post(g.url, "/prompt", { prompt: t2i(301, "delta.safetensors"), client_id: "lru" });
    const hg = await history(g.url, gone.json.prompt_id);
    assert.equal(hg.status.status_str, "error");
    assert.match(hg.status.messages.find((m: [string, any]) => m[0] === "execution_error")[1].exception_message, /delta\.safetensors.*object_missing/);
    await g.close();
  });
});

// The two npm ComfyUI clients, unchanged, against the gateway over two stand-ins (protocol §7: what each
// needs). Each must get its PNG exactly as it would from one ComfyUI.
import { strict as assert } from "node:assert";
import { PNG } from "pngjs";
import WebSocket from "ws";
import { DEFAULT_MODELS, startStandIn, type StandIn } from "./standin";
import { get, startGateway, t2i, until } from "./helpers";
import { assertMissingModelRejected } from "./standin/testkit";

/* eslint-disable @typescript-eslint/no-require-imports */
const { ComfyApi, CallWrapper, PromptBuilder } = require("@saintno/comfyui-sdk");
const { Client } = require("@stable-canvas/comfyui-client");
/* eslint-enable @typescript-eslint/no-require-imports */

describe("npm ComfyUI clients through the gateway (2 stand-ins)", function () {
  this.timeout(60000);
  let pods: StandIn[] = [];
  let gw: Awaited<ReturnType<typeof startGateway>>;

  // The saintno SDK binds its progress and preview listeners only after `executing` and then a
  // GET /history/{id} of its own; a prompt's first sampler step waits until its client has asked that
  // (seen on the way out of this process), however busy the machine, instead of racing it on the clock.
  const asked = new Map<string, () => void>();
  const askedFor = (id: string) => new Promise<void>((r) => asked.set(id, r));
  const realFetch = globalThis.fetch;
  let gateSaintno = false;
  before(async () => {
    globalThis.fetch = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
      const res = await realFetch(input, init);
      const m = /\/history\/([0-9a-f-]{36})/.exec(String(input instanceof Request ? input.url : input));
      if (m) asked.get(m[1])?.();
      return res;
    }) as typeof fetch;
    const beforeStep = (id: string, step: number) => (step === 0 && gateSaintno ? askedFor(id) : Promise.resolve());
    // Binary previews on (type 1 frames): the gateway relays them to the prompt's client.
    pods = await Promise.all([startStandIn({ stepMs: 20, previewMethod: "auto", beforeStep }), startStandIn({ stepMs: 20, previewMethod: "auto", beforeStep })]);
    gw = await startGateway(pods.map((p) => p.url));
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
  });
  after(async () => {
    globalThis.fetch = realFetch;
    await gw?.close();
    await Promise.all(pods.map((p) => p.close()));
  });

  const ranOn = (id: string) => pods.filter((p) => p.executed().includes(id)).length;

  it("@saintno/comfyui-sdk: init, concurrent text-to-image calls spread over both pods, progress + previews, each PNG downloads", async () => {
    // One ComfyApi (client id) per concurrent call: the SDK's CallWrapper fails a call on ANY execution_success
    // of its client id that arrives before the call's own output (it checks no prompt_id there), which one
    // ComfyUI never triggers (it runs a client's prompts one at a time) but a gateway over several pods does.
    const apis = [0, 1, 2, 3].map((i) => new ComfyApi(gw.url, `saintno-gw-${i}`));
    gateSaintno = true;
    try {
      await Promise.all(apis.map((api) => api.init(3, 200).waitForReady()));
      const before = pods.map((p) => p.executed().length);
      const calls = apis.map(async (api, i) => {
        const wf = new PromptBuilder(t2i(1), ["seed", "positive"], ["images"])
          .setInputNode("seed", "3.inputs.seed")
          .setInputNode("positive", "6.inputs.text")
          .setOutputNode("images", "9")
          .input("seed", 5000 + i)
          .input("positive", `a red fox ${i}`);
        const progress: number[] = [];
        const previews: Blob[] = [];
        let promptId: string | undefined;
        const failures: Error[] = [];
        const result = await new CallWrapper(api, wf)
          .onFailed((e: Error) => failures.push(e))
          .onPending((id?: string) => (promptId = id))
          // The SDK hands every progress event of its clientId to each call (it checks prompt_id only for onStart).
          .onProgress((p: { value: number; prompt_id: string }, pid?: string) => p.prompt_id === pid && progress.push(p.value))
          .onPreview((b: Blob) => previews.push(b))
          .run();
        return { result, progress, previews, promptId, failures };
      });
      const runs = await Promise.all(calls);
      for (const { result, progress, previews, promptId, failures } of runs) {
        assert.ok(result, `CallWrapper.run() resolved with a result; failures: ${failures.map((f) => `${f.name}: ${f.message}`)}`);
        const img = result.images.images[0];
        assert.match(img.filename, /^ComfyUI_\d{5}_\.png$/);
        assert.equal(img.subfolder, promptId, "the gateway's per-prompt subfolder");
        assert.equal(ranOn(promptId!), 1, "ran on exactly one pod");
        const blob: Blob = await apis[0].getImage(img);
        const png = PNG.sync.read(Buffer.from(await blob.arrayBuffer()));
        assert.deepEqual([png.width, png.height], [8, 8], "64×64 latent → 8×8 stand-in image");
        // The SDK binds its progress listener only after `executing` plus an HTTP round trip and resolves a call from
        // whichever of executed/status→history comes first, so which steps it sees depends on timing (as against one
        // ComfyUI); what it sees must be this prompt's steps, each once, in order (the raw order is checked in e2e).
        assert.ok(progress.every((v, k) => v >= 1 && v <= 2 && (k === 0 || v > progress[k - 1])), `progress of this prompt only, in order: ${progress}`);
        assert.ok(previews.length >= 1, "binary previews relayed");
        PNG.sync.read(Buffer.from(await previews[0].arrayBuffer()));
      }
      const ran = pods.map((p, i) => p.executed().length - before[i]);
      assert.ok(ran.every((n) => n >= 1), `both pods ran some: ${ran}`);
    } finally {
      gateSaintno = false;
      for (const api of apis) api.destroy();
    }
  });

  it("@saintno/comfyui-sdk: uploadImage, then a LoadImage prompt runs on a pod that never saw the upload", async () => {
    const api = new ComfyApi(gw.url, "saintno-up");
    try {
      await api.init(3, 200).waitForReady();
      const src = new PNG({ width: 3, height: 2 });
      src.data.fill(200);
      const up = await api.uploadImage(PNG.sync.write(src), "fox-input.png");
      assert.ok(up, "upload answered");
      assert.equal(up.info.filename, "fox-input.png");
      const wf = new PromptBuilder({ "1": { class_type: "LoadImage", inputs: { image: up.info.filename } }, "2": { class_type: "SaveImage", inputs: { images: ["1", 0], filename_prefix: "up" } } }, [], ["images"]).setOutputNode("images", "2");
      const result = await new CallWrapper(api, wf).run();
      assert.ok(result, "LoadImage prompt ran");
      const blob: Blob = await api.getImage(result.images.images[0]);
      const png = PNG.sync.read(Buffer.from(await blob.arrayBuffer()));
      assert.deepEqual([png.width, png.height], [3, 2], "the uploaded image went through the pod");
    } finally {
      api.destroy();
    }
  });

  it("@saintno/comfyui-sdk: a prompt naming a missing model fails with ComfyUI's value_not_in_list, nothing runs", async () => {
    const api = new ComfyApi(gw.url, "saintno-bad");
    try {
      await api.init(3, 200).waitForReady();
      const before = pods.map((p) => p.executed().length);
      await assertMissingModelRejected({ CallWrapper, PromptBuilder }, api, t2i(1, "missing.safetensors"));
      assert.deepEqual(pods.map((p) => p.executed().length), before);
    } finally {
      api.destroy();
    }
  });

  it("@stable-canvas/comfyui-client: enqueue over WebSocket and by polling, images downloadable, model lists from the gateway", async () => {
    const client = new Client({ api_host: gw.url.replace("http://", ""), clientId: "stable-canvas-gw", WebSocket, fetch });
    try {
      await client.connect();
      const workflow = { note: "ui graph via gateway" };
      const out = await client.enqueue(t2i(3), { workflow });
      // This client returns the binary previews it got (type "buff", one per sampler step) with the saved images (type "url").
      const urls = out.images.filter((i: { type: string }) => i.type === "url");
      const previews = out.images.filter((i: { type: string }) => i.type === "buff");
      assert.equal(urls.length, 1);
      assert.equal(previews.length, 2, "both steps' previews reached this client");
      PNG.sync.read(Buffer.from(previews[0].data));
      const r = await fetch(urls[0].data);
      assert.equal(r.status, 200);
      const buf = Buffer.from(await r.arrayBuffer());
      assert.ok(buf.includes(Buffer.from("ui graph via gateway")), "extra_pnginfo.workflow reached the pod and is in the PNG");
      assert.match(urls[0].data, new RegExp(`subfolder=${out.prompt_id}`));
      const polled = await client.enqueue_polling(t2i(99), { workflow, polling_ms: 50 } as any);
      assert.equal(polled.images.length, 1, "polling reads history: saved images only");
      assert.equal((await fetch(polled.images[0].data)).status, 200);
      assert.notEqual(polled.prompt_id, out.prompt_id);
      const models = await (await fetch(gw.url + "/object_info/CheckpointLoaderSimple")).json();
      assert.deepEqual(models.CheckpointLoaderSimple.input.required.ckpt_name[0], DEFAULT_MODELS.checkpoints.slice().sort());
    } finally {
      client.close();
    }
  });

  it("@stable-canvas/comfyui-client: a rejected prompt throws with ComfyUI's node_errors", async () => {
    const client = new Client({ api_host: gw.url.replace("http://", ""), clientId: "stable-canvas-bad", WebSocket, fetch });
    try {
      await client.connect();
      await assert.rejects(client.enqueue(t2i(1, "missing.safetensors")), (err: any) => {
        assert.match(JSON.stringify(err?.message ?? err) + JSON.stringify(err?.cause ?? {}) + JSON.stringify(err), /value_not_in_list|failed validation/i);
        return true;
      });
    } finally {
      client.close();
    }
  });
});

// Real ComfyUI clients against the stand-in, unchanged: @saintno/comfyui-sdk and
// @stable-canvas/comfyui-client generate and download an image; every fixture workflow validates with
// its models present and fails with value_not_in_list when one is missing.
import * as assert from "assert";
import * as fs from "fs";
import { PNG } from "pngjs";
import WebSocket from "ws";
import { DEFAULT_MODELS, startStandIn, StandIn } from "./standin";
import { FIXTURES, assertMissingModelRejected, fixture, getJson, post, t2i, until } from "./standin/testkit";

describe("ComfyUI stand-in with the npm clients", function () {
  this.timeout(30000);
  let s: StandIn;
  // The saintno SDK binds its progress listener only after `executing` and then a GET /history/{id} of its
  // own (CallWrapper.run), so a fast first step can pass before it listens. As in clients.test.ts, a
  // prompt's first step waits until its client has asked for that history (seen leaving this process),
  // however busy the machine, instead of racing it on the clock.
  const asked = new Map<string, () => void>();
  const realFetch = globalThis.fetch;
  before(() => {
    globalThis.fetch = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
      const res = await realFetch(input, init);
      const m = /\/history\/([0-9a-f-]{36})/.exec(String(input instanceof Request ? input.url : input));
      if (m) asked.get(m[1])?.();
      return res;
    }) as typeof fetch;
  });
  after(() => void (globalThis.fetch = realFetch));
  let gate = false;
  const beforeStep = (id: string, step: number) => (gate && step === 0 ? new Promise<void>((r) => asked.set(id, r)) : Promise.resolve());
  beforeEach(async () => (s = await startStandIn({ stepMs: 25, beforeStep })));
  afterEach(() => {
    gate = false;
    return s.close();
  });

  it("@saintno/comfyui-sdk: init, run a text-to-image prompt, get the image", async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { ComfyApi, CallWrapper, PromptBuilder } = require("@saintno/comfyui-sdk");
    const api = new ComfyApi(s.url, "saintno-test");
    gate = true;
    try {
      await api.init(3, 200).waitForReady();
      const wf = new PromptBuilder(t2i(4), ["seed", "positive"], ["images"])
        .setInputNode("seed", "3.inputs.seed")
        .setInputNode("positive", "6.inputs.text")
        .setOutputNode("images", "9")
        .input("seed", 1234)
        .input("positive", "a red fox");
      const progress: number[] = [];
      const result = await new CallWrapper(api, wf).onProgress((p: any) => progress.push(p.value)).run();
      assert.ok(result, "CallWrapper.run() resolved with a result");
      const img = result.images.images[0];
      assert.match(img.filename, /^ComfyUI_\d{5}_\.png$/);
      const blob: Blob = await api.getImage(img);
      const png = PNG.sync.read(Buffer.from(await blob.arrayBuffer()));
      assert.deepStrictEqual([png.width, png.height], [8, 6]);
      assert.deepStrictEqual(progress, [1, 2, 3, 4]);
    } finally {
      api.destroy();
    }
  });

  it("@saintno/comfyui-sdk: a rejected prompt fails the call with ComfyUI's error body", async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { ComfyApi, CallWrapper, PromptBuilder } = require("@saintno/comfyui-sdk");
    const api = new ComfyApi(s.url);
    try {
      await api.init(3, 200).waitForReady();
      const bad = t2i(1);
      bad["4"].inputs.ckpt_name = "missing.safetensors";
      await assertMissingModelRejected({ CallWrapper, PromptBuilder }, api, bad);
    } finally {
      api.destroy();
    }
  });

  it("@stable-canvas/comfyui-client: enqueue over WebSocket and by polling, images downloadable", async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Client } = require("@stable-canvas/comfyui-client");
    const client = new Client({ api_host: s.url.replace("http://", ""), clientId: "stable-canvas", WebSocket, fetch });
    try {
      await client.connect();
      const workflow = { note: "ui graph" };
      const out = await client.enqueue(t2i(3), { workflow });
      assert.strictEqual(out.images.length, 1);
      assert.strictEqual(out.images[0].type, "url");
      const r = await fetch(out.images[0].data);
      assert.strictEqual(r.status, 200);
      const buf = Buffer.from(await r.arrayBuffer());
      assert.ok(buf.includes(Buffer.from("ui graph")), "extra_pnginfo.workflow is in the PNG");
      const polled = await client.enqueue_polling(t2i(3, 99), { workflow, polling_ms: 50 } as any);
      assert.strictEqual(polled.images.length, 1);
      assert.strictEqual((await fetch(polled.images[0].data)).status, 200);
      const models = await getJson(s.url + "/object_info/CheckpointLoaderSimple");
      assert.deepStrictEqual(models.CheckpointLoaderSimple.input.required.ckpt_name[0], DEFAULT_MODELS.checkpoints.slice().sort());
    } finally {
      client.close();
    }
  });
});

// Model inputs of V1 loaders (checked by 0.3.64) and the folder each lists.
const MODEL_INPUTS: Record<string, Record<string, string>> = {
  CheckpointLoaderSimple: { ckpt_name: "checkpoints" },
  UNETLoader: { unet_name: "diffusion_models" },
  VAELoader: { vae_name: "vae" },
  CLIPLoader: { clip_name: "text_encoders" },
  DualCLIPLoader: { clip_name1: "text_encoders", clip_name2: "text_encoders" },
};

describe("ComfyUI stand-in with the fixture workflows", function () {
  this.timeout(60000);
  const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith(".json"));

  it("has fixtures to check", () => assert.ok(files.length >= 5, FIXTURES));

  for (const f of files) {
    it(`${f}: validates and runs to a saved image with the default models`, async () => {
      const s = await startStandIn({ stepMs: 0 });
      try {
        const r = await post(s.url + "/prompt", { prompt: fixture(f) });
        assert.strictEqual(r.status, 200, r.text);
        assert.deepStrictEqual(r.json.node_errors, {});
        await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1, 20000);
        const h = (await getJson(`${s.url}/history/${r.json.prompt_id}`))[r.json.prompt_id];
        assert.strictEqual(h.status.status_str, "success");
        const images = Object.values(h.outputs).flatMap((o: any) => o.images);
        assert.ok(images.length >= 1);
        for (const img of images as any[]) assert.strictEqual((await fetch(`${s.url}/view?filename=${img.filename}&type=${img.type}&subfolder=${img.subfolder}`)).status, 200);
      } finally {
        await s.close();
      }
    });

    it(`${f}: each model it loads, when missing, gives value_not_in_list on that node`, async () => {
      const wf = fixture(f);
      // Only nodes an output depends on are validated (sd3_api.json carries alternative, unconnected loaders).
      const reachable = new Set<string>();
      const visit = (id: string) => {
        if (reachable.has(id)) return;
        reachable.add(id);
        for (const v of Object.values(wf[id].inputs)) if (Array.isArray(v)) visit(String(v[0]));
      };
      for (const [id, n] of Object.entries(wf) as [string, any][]) if (n.class_type === "SaveImage") visit(id);
      const uses: [string, string, string, string][] = [];
      for (const [id, n] of Object.entries(wf) as [string, any][]) {
        if (!reachable.has(id)) continue;
        for (const [input, folder] of Object.entries(MODEL_INPUTS[n.class_type] ?? {})) uses.push([id, input, folder, n.inputs[input]]);
      }
      assert.ok(uses.length > 0, "the workflow loads at least one model");
      for (const [id, input, folder, file] of uses) {
        const models = { ...DEFAULT_MODELS, [folder]: DEFAULT_MODELS[folder].filter((m) => m !== file) };
        assert.notDeepStrictEqual(models[folder], DEFAULT_MODELS[folder], `${file} is one of the default ${folder}`);
        const s = await startStandIn({ models });
        try {
          const r = await post(s.url + "/prompt", { prompt: wf });
          assert.strictEqual(r.status, 400, `${f} without ${folder}/${file}`);
          assert.strictEqual(r.json.error.type, "prompt_outputs_failed_validation");
          const e = r.json.node_errors[id].errors.find((x: any) => x.extra_info.input_name === input);
          assert.strictEqual(e.type, "value_not_in_list");
          assert.strictEqual(e.extra_info.received_value, file);
          assert.deepStrictEqual(s.executed(), []);
        } finally {
          await s.close();
        }
      }
    });
  }
});

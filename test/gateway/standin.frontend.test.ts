// The stand-in as the web frontend needs it: the static trees (web root, /templates) with ComfyUI's content
// types and cache headers, and the loader nodes the frontend's model library looks up by name.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { FRONTEND_FIXTURE, startStandIn, TEMPLATES_FIXTURE, type StandIn } from "./standin";

describe("ComfyUI stand-in: the frontend's files and loader nodes", function () {
  this.timeout(30000);
  let s: StandIn;
  let bare: StandIn;
  before(async () => {
    s = await startStandIn({ frontendRoot: FRONTEND_FIXTURE, models: { checkpoints: ["a.safetensors"], loras: ["l1.safetensors", "sub/l2.pt"], upscale_models: ["4x.pth"] } });
    bare = await startStandIn({ templatesRoot: null });
  });
  after(async () => {
    await s?.close();
    await bare?.close();
  });

  it("serves index.html at / (no-cache) and each file with the type ComfyUI's mimetypes gives it", async () => {
    const root = await fetch(s.url + "/");
    assert.equal(root.status, 200);
    assert.equal(root.headers.get("cache-control"), "no-cache");
    assert.equal(await root.text(), fs.readFileSync(path.join(FRONTEND_FIXTURE, "index.html"), "utf8"));
    // One file of each kind the frontend loads, found in the fixture rather than named by hash.
    const assets = fs.readdirSync(path.join(FRONTEND_FIXTURE, "assets"));
    const pick = (ext: string) => `/assets/${assets.find((f) => f.endsWith(ext))}`;
    const cases: [string, string, string | null][] = [
      [pick(".js"), "application/javascript; charset=utf-8", "no-cache"],
      ["/assets/lib/primevue/index.mjs", "text/javascript", null],
      [pick(".css"), "text/css", "no-cache"],
      [pick(".woff2"), "font/woff2", null],
      [pick(".svg"), "image/svg+xml", null],
      [pick(".json"), "application/json", null],
    ];
    for (const [p, type, cache] of cases) {
      const r = await fetch(s.url + p);
      assert.equal(r.status, 200, p);
      assert.equal(r.headers.get("content-type"), type, p);
      assert.equal(r.headers.get("cache-control"), cache, p);
      assert.deepEqual(Buffer.from(await r.arrayBuffer()), fs.readFileSync(path.join(FRONTEND_FIXTURE, p)), p);
    }
  });

  it("answers like aiohttp's static route: folder 403, missing or escaping 404, other methods 405", async () => {
    assert.equal((await fetch(s.url + "/assets")).status, 403);
    assert.equal((await fetch(s.url + "/nothing-here.js")).status, 404);
    assert.equal((await fetch(s.url + "/%2e%2e/%2e%2e/etc/passwd")).status, 404);
    assert.equal((await fetch(s.url + "/user.css")).status, 404, "index.html links /user.css, which a stock ComfyUI does not have");
    assert.equal((await fetch(s.url + "/index.html", { method: "POST" })).status, 405);
    // A stand-in without a frontend keeps the stub page and 404s.
    assert.match(await (await fetch(bare.url + "/")).text(), /stand-in/);
    assert.equal((await fetch(bare.url + "/assets/" + fs.readdirSync(path.join(FRONTEND_FIXTURE, "assets"))[0])).status, 404);
  });

  it("serves the workflow templates at /templates/ (index as JSON, every listed thumbnail), 404 without them", async () => {
    const r = await fetch(s.url + "/templates/index.json");
    assert.equal(r.status, 200);
    // The frontend keeps the index only if the Content-Type says JSON (api.getCoreWorkflowTemplates).
    assert.match(r.headers.get("content-type") ?? "", /application\/json/);
    assert.equal(r.headers.get("cache-control"), "no-cache", "index*.json is an entry point for cache_control");
    const index = (await r.json()) as { moduleName: string; templates: { name: string; mediaSubtype: string }[] }[];
    assert.ok(index.length > 0 && index.every((c) => c.templates.length > 0));
    for (const c of index) {
      for (const t of c.templates) {
        const thumb = await fetch(`${s.url}/templates/${t.name}-1.${t.mediaSubtype}`);
        assert.equal(thumb.status, 200, t.name);
        assert.equal(thumb.headers.get("cache-control"), "public, max-age=86400");
        assert.deepEqual(Buffer.from(await thumb.arrayBuffer()), fs.readFileSync(path.join(TEMPLATES_FIXTURE, `${t.name}-1.${t.mediaSubtype}`)));
      }
    }
    assert.equal((await fetch(s.url + "/templates/nope.json")).status, 404);
    assert.equal((await fetch(bare.url + "/templates/index.json")).status, 404);
  });

  it("/object_info has every loader the model library maps a folder to, with nodes.py's inputs", async () => {
    const info = (await (await fetch(s.url + "/api/object_info")).json()) as Record<string, { input: { required: Record<string, unknown[]> }; output: string[]; category: string }>;
    // frontend 1.27.10 useModelToNodeStore.registerDefaults: these names, or the model library throws.
    for (const cls of ["CheckpointLoaderSimple", "ImageOnlyCheckpointLoader", "LoraLoader", "LoraLoaderModelOnly", "VAELoader", "ControlNetLoader", "UNETLoader", "UpscaleModelLoader", "StyleModelLoader", "GLIGENLoader"]) {
      assert.ok(info[cls], cls);
    }
    assert.deepEqual(info.LoraLoader.input.required.lora_name, [["l1.safetensors", "sub/l2.pt"], { tooltip: "The name of the LoRA." }]);
    assert.deepEqual(info.LoraLoader.input.required.strength_clip[1], { default: 1.0, min: -100.0, max: 100.0, step: 0.01, tooltip: "How strongly to modify the CLIP model. This value can be negative." });
    assert.deepEqual(info.LoraLoader.output, ["MODEL", "CLIP"]);
    assert.deepEqual(Object.keys(info.LoraLoaderModelOnly.input.required), ["model", "lora_name", "strength_model"]);
    // V3 (io.Combo) input as get_v1_info writes it.
    assert.deepEqual(info.UpscaleModelLoader.input.required.model_name, ["COMBO", { multiselect: false, options: ["4x.pth"] }]);
    assert.deepEqual(info.LoadImageMask.input.required.channel, [["alpha", "red", "green", "blue"]]);
    assert.equal(info.ImageOnlyCheckpointLoader.category, "loaders/video_models");
  });

  it("LoadImageMask lists every input file, LoadImage only images", async () => {
    for (const [name, type] of [["notes.txt", "text/plain"], ["pic.png", "image/png"]]) {
      const form = new FormData();
      form.append("image", new Blob([new Uint8Array([1, 2, 3])], { type }), name);
      assert.equal((await fetch(s.url + "/upload/image", { method: "POST", body: form })).status, 200);
    }
    const info = (await (await fetch(s.url + "/object_info")).json()) as Record<string, { input: { required: Record<string, unknown[]> } }>;
    assert.deepEqual(info.LoadImageMask.input.required.image[0], ["notes.txt", "pic.png"]);
    assert.deepEqual(info.LoadImage.input.required.image[0], ["pic.png"]);
  });

  it("a model without a preview image answers the preview route's 404", async () => {
    const r = await fetch(s.url + "/api/experiment/models/preview/checkpoints/0/a.webp");
    assert.equal(r.status, 404);
    assert.equal(r.headers.get("cache-control"), "public, max-age=3600", "an image path's 404 is cached for an hour (cache_control)");
  });
});

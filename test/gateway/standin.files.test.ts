// The stand-in's file routes against server.py / app/user_manager.py / app/app_settings.py of ComfyUI 0.3.64:
// /upload/image and /upload/mask, /view, LoadImage's custom validation, settings, users, userdata.
import * as assert from "assert";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { PNG } from "pngjs";
import { startStandIn, StandIn } from "./standin";
import { readTextChunks } from "./standin/png";
import { getJson, post, t2i, until } from "./standin/testkit";

function png(w: number, h: number, fill: [number, number, number, number]): Buffer {
  const p = new PNG({ width: w, height: h });
  for (let i = 0; i < w * h; i++) p.data.set(fill, i * 4);
  return PNG.sync.write(p);
}

async function upload(url: string, file: Buffer, name: string, fields: Record<string, string> = {}, route = "/upload/image") {
  const form = new FormData();
  form.append("image", new Blob([new Uint8Array(file)], { type: "image/png" }), name);
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  const r = await fetch(url + route, { method: "POST", body: form });
  const text = await r.text();
  return { status: r.status, json: r.headers.get("content-type")?.startsWith("application/json") ? JSON.parse(text) : undefined, text };
}

describe("ComfyUI stand-in: uploads and /view", function () {
  let s: StandIn;
  beforeEach(async () => (s = await startStandIn({ stepMs: 1 })));
  afterEach(() => s.close());

  it("stores an upload in input/ and answers {name, subfolder, type}; same bytes reuse the name, other bytes get ' (1)'", async () => {
    const a = png(4, 4, [255, 0, 0, 255]);
    const b = png(4, 4, [0, 255, 0, 255]);
    assert.deepStrictEqual((await upload(s.url, a, "cat.png")).json, { name: "cat.png", subfolder: "", type: "input" });
    assert.deepStrictEqual((await upload(s.url, a, "cat.png")).json.name, "cat.png");
    assert.deepStrictEqual((await upload(s.url, b, "cat.png")).json.name, "cat (1).png");
    assert.deepStrictEqual((await upload(s.url, png(4, 4, [0, 0, 255, 255]), "cat.png")).json.name, "cat (2).png");
    assert.deepStrictEqual((await upload(s.url, b, "cat.png", { overwrite: "true" })).json.name, "cat.png");
    assert.ok(fs.readFileSync(path.join(s.dataDir, "input", "cat.png")).equals(b));
    const sub = await upload(s.url, a, "dog.png", { subfolder: "pets", type: "temp" });
    assert.deepStrictEqual(sub.json, { name: "dog.png", subfolder: "pets", type: "temp" });
    assert.ok(fs.existsSync(path.join(s.dataDir, "temp", "pets", "dog.png")));
  });

  it("rejects a missing file or a path escape with 400 and an unknown type with 500", async () => {
    const r = await fetch(s.url + "/upload/image", { method: "POST", body: new FormData() });
    assert.strictEqual(r.status, 400);
    assert.strictEqual((await upload(s.url, png(1, 1, [0, 0, 0, 255]), "x.png", { subfolder: "../../x" })).status, 400);
    const t = await upload(s.url, png(1, 1, [0, 0, 0, 255]), "x.png", { type: "models" });
    assert.strictEqual(t.status, 500);
    assert.match(t.text, /500 Internal Server Error/);
  });

  it("/view: filename required (404), type/subfolder rules (400/403/404), annotated suffix overrides type, security Content-Type", async () => {
    fs.mkdirSync(path.join(s.dataDir, "output", "sub"), { recursive: true });
    fs.writeFileSync(path.join(s.dataDir, "output", "sub", "a.png"), png(2, 2, [1, 2, 3, 255]));
    fs.writeFileSync(path.join(s.dataDir, "input", "page.html"), "<script>x</script>");
    const st = async (q: string) => (await fetch(`${s.url}/view?${q}`)).status;
    assert.strictEqual(await st(""), 404);
    assert.strictEqual(await st("filename=a.png&subfolder=sub"), 200);
    assert.strictEqual(await st("filename=a.png&subfolder=sub&type=input"), 404);
    assert.strictEqual(await st("filename=a.png&subfolder=sub&type=models"), 400);
    assert.strictEqual(await st("filename=..%2Fa.png"), 400);
    assert.strictEqual(await st("filename=%2Fetc%2Fpasswd"), 400);
    assert.strictEqual(await st("filename=a.png&subfolder=..%2F.."), 403);
    assert.strictEqual(await st(`filename=${encodeURIComponent("a.png [output]")}&subfolder=sub&type=input`), 200);
    const html = await fetch(`${s.url}/api/view?filename=page.html&type=input`);
    assert.strictEqual(html.headers.get("content-type"), "application/octet-stream");
    assert.strictEqual(html.headers.get("cache-control"), null);
  });

  it("/view channel=rgb drops the alpha, channel=a keeps only it", async () => {
    fs.writeFileSync(path.join(s.dataDir, "output", "c.png"), png(1, 1, [10, 20, 30, 40]));
    const rgb = PNG.sync.read(Buffer.from(await (await fetch(`${s.url}/view?filename=c.png&channel=rgb`)).arrayBuffer()));
    assert.deepStrictEqual([...rgb.data.subarray(0, 4)], [10, 20, 30, 255]);
    const a = PNG.sync.read(Buffer.from(await (await fetch(`${s.url}/view?filename=c.png&channel=a`)).arrayBuffer()));
    assert.deepStrictEqual([...a.data.subarray(0, 4)], [0, 0, 0, 40]);
  });

  it("LoadImage validates that the file exists in input/ (custom_validation_failed), so a fresh upload validates at once", async () => {
    const wf = (image: string) => ({
      "1": { class_type: "LoadImage", inputs: { image } },
      "2": { class_type: "PreviewImage", inputs: { images: ["1", 0] } },
    });
    const bad = await post(s.url + "/prompt", { prompt: wf("later.png") });
    assert.strictEqual(bad.status, 400);
    assert.deepStrictEqual(bad.json.node_errors["1"].errors, [
      { type: "custom_validation_failed", message: "Custom validation failed for node", details: "image - Invalid image file: later.png", extra_info: { input_name: "image" } },
    ]);
    assert.strictEqual((await upload(s.url, png(16, 8, [9, 9, 9, 255]), "later.png")).status, 200);
    const info = await getJson(s.url + "/object_info/LoadImage");
    assert.deepStrictEqual(info.LoadImage.input.required.image, [["later.png"], { image_upload: true }]);
    const ok = await post(s.url + "/prompt", { prompt: wf("later.png") });
    assert.strictEqual(ok.status, 200, JSON.stringify(ok.json));
    await until(async () => Object.keys(await getJson(`${s.url}/history/${ok.json.prompt_id}`)).length === 1);
    const h = (await getJson(`${s.url}/history/${ok.json.prompt_id}`))[ok.json.prompt_id];
    const img = h.outputs["2"].images[0];
    const out = PNG.sync.read(Buffer.from(await (await fetch(`${s.url}/view?filename=${img.filename}&type=temp`)).arrayBuffer()));
    assert.deepStrictEqual([out.width, out.height], [16, 8]);
  });

  it("/upload/mask: the original with the upload's alpha, text chunks kept", async () => {
    const orig = Buffer.from(png(2, 2, [10, 20, 30, 255]));
    const { withTextChunks } = await import("./standin/png");
    fs.writeFileSync(path.join(s.dataDir, "output", "o.png"), withTextChunks(orig, [["prompt", "{}"]]));
    const mask = png(2, 2, [0, 0, 0, 7]);
    const r = await upload(s.url, mask, "m.png", { original_ref: JSON.stringify({ filename: "o.png", subfolder: "", type: "output" }) }, "/upload/mask");
    assert.deepStrictEqual(r.json, { name: "m.png", subfolder: "", type: "input" });
    const saved = fs.readFileSync(path.join(s.dataDir, "input", "m.png"));
    const p = PNG.sync.read(saved);
    assert.deepStrictEqual([...p.data.subarray(0, 4)], [10, 20, 30, 7]);
    assert.deepStrictEqual(readTextChunks(saved), [["prompt", "{}"]]);
  });
});

describe("ComfyUI stand-in: settings, users, userdata", function () {
  let s: StandIn;
  before(async () => (s = await startStandIn()));
  after(() => s.close());

  it("settings: {} at first, POST merges, per-id GET (null when unset) and POST", async () => {
    assert.deepStrictEqual(await getJson(s.url + "/settings"), {});
    assert.strictEqual((await post(s.url + "/settings", { "Comfy.A": 1, "Comfy.B": "x" })).status, 200);
    assert.strictEqual((await post(s.url + "/api/settings/Comfy.B", "true")).status, 200);
    assert.deepStrictEqual(await getJson(s.url + "/settings"), { "Comfy.A": 1, "Comfy.B": true });
    assert.deepStrictEqual(await getJson(s.url + "/settings/Comfy.A"), 1);
    assert.deepStrictEqual(await getJson(s.url + "/settings/Nope"), null);
    assert.strictEqual((await post(s.url + "/settings", "nope")).status, 500);
  });

  it("users: single-user storage answer; POST /users mints an id and refuses a duplicate name", async () => {
    assert.deepStrictEqual(await getJson(s.url + "/users"), { storage: "server", migrated: true });
    const r = await post(s.url + "/users", { username: "Ann Lee" });
    assert.match(r.json, /^Ann-Lee_[0-9a-f-]{36}$/);
    assert.deepStrictEqual((await post(s.url + "/users", { username: "Ann Lee" })).json, { error: "Duplicate username." });
    assert.strictEqual((await post(s.url + "/users", { username: "default" })).status, 400);
  });

  it("userdata: POST raw body (409 with overwrite=false), GET, list (recurse/full_info/split), v2 listing, move, DELETE 204, escapes 403", async () => {
    const wf = JSON.stringify({ nodes: [] });
    const r = await fetch(s.url + "/userdata/workflows%2Fa.json", { method: "POST", body: wf });
    assert.strictEqual(r.status, 200);
    assert.strictEqual(await r.json(), "workflows/a.json");
    assert.strictEqual((await fetch(s.url + "/userdata/workflows%2Fa.json?overwrite=false", { method: "POST", body: "x" })).status, 409);
    assert.strictEqual(await (await fetch(s.url + "/userdata/workflows%2Fa.json")).text(), wf);
    assert.strictEqual((await fetch(s.url + "/userdata/workflows%2Fnope.json")).status, 404);
    assert.strictEqual((await fetch(s.url + "/userdata/..%2F..%2Fx", { method: "POST", body: "x" })).status, 403);
    await fetch(s.url + "/userdata/workflows%2Fdeep%2Fb.json", { method: "POST", body: "{}" });
    assert.deepStrictEqual(await getJson(s.url + "/userdata?dir=workflows"), ["a.json"]);
    assert.deepStrictEqual((await getJson(s.url + "/userdata?dir=workflows&recurse=true")).sort(), ["a.json", "deep/b.json"]);
    assert.deepStrictEqual((await getJson(s.url + "/userdata?dir=workflows&recurse=true&split=true")).sort(), [["a.json", "a.json"], ["deep/b.json", "deep", "b.json"]]);
    const full = await getJson(s.url + "/userdata?dir=workflows&full_info=true");
    assert.deepStrictEqual(Object.keys(full[0]), ["path", "size", "modified", "created"]);
    assert.strictEqual(full[0].size, wf.length);
    assert.strictEqual((await fetch(s.url + "/userdata")).status, 400);
    assert.strictEqual((await fetch(s.url + "/userdata?dir=nothing")).status, 404);
    const v2 = await getJson(s.url + "/v2/userdata?path=workflows");
    assert.deepStrictEqual(v2.map((e: any) => [e.type, e.path]), [["directory", "workflows/deep"], ["file", "workflows/a.json"], ["file", "workflows/deep/b.json"]]);
    const mv = await fetch(s.url + "/userdata/workflows%2Fa.json/move/workflows%2Fc.json", { method: "POST" });
    assert.strictEqual(await mv.json(), "workflows/c.json");
    assert.strictEqual((await fetch(s.url + "/userdata/workflows%2Fc.json", { method: "DELETE" })).status, 204);
    assert.strictEqual((await fetch(s.url + "/userdata/workflows%2Fc.json", { method: "DELETE" })).status, 404);
  });
});

describe("ComfyUI stand-in: data dir", function () {
  it("removes its own temp data dir on close, keeps a given one (outputs survive a restart)", async () => {
    const own = await startStandIn({ stepMs: 1 });
    const dir = own.dataDir;
    await own.close();
    assert.ok(!fs.existsSync(dir));
    const given = fs.mkdtempSync(path.join(os.tmpdir(), "standin-given-"));
    try {
      const a = await startStandIn({ stepMs: 1, dataDir: given });
      const r = (await post(a.url + "/prompt", { prompt: t2i(1) })).json;
      await until(async () => Object.keys(await getJson(`${a.url}/history/${r.prompt_id}`)).length === 1);
      await a.close();
      assert.ok(fs.existsSync(path.join(given, "output", "ComfyUI_00001_.png")));
      const b = await startStandIn({ stepMs: 1, dataDir: given });
      const r2 = (await post(b.url + "/prompt", { prompt: t2i(1, 2) })).json;
      await until(async () => Object.keys(await getJson(`${b.url}/history/${r2.prompt_id}`)).length === 1);
      assert.deepStrictEqual(await getJson(`${b.url}/history/${r.prompt_id}`), {}, "history is in memory only");
      assert.strictEqual((await getJson(`${b.url}/history/${r2.prompt_id}`))[r2.prompt_id].outputs["9"].images[0].filename, "ComfyUI_00002_.png");
      await b.close();
    } finally {
      fs.rmSync(given, { recursive: true, force: true });
    }
  });

  it("rejects an unknown model folder or a model path escaping it, naming it", async () => {
    await assert.rejects(startStandIn({ models: { checkpointz: ["a.safetensors"] } }), /unknown model folder "checkpointz"/);
    await assert.rejects(startStandIn({ models: { checkpoints: ["../../a.safetensors"] } }), /escapes the models folder/);
  });
});

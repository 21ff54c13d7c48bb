// The ComfyUI stand-in against ComfyUI 0.3.64's protocol (comfyui-protocol.md §9 and the source at
// Comfy-Org/ComfyUI@a125cd84): routes, validation, queue, WebSocket events, history, caching, faults.
import * as assert from "assert";
import * as fs from "fs";
import * as path from "path";
import { startStandIn, StandIn } from "./standin";
import { readTextChunks } from "./standin/png";
import { Recorder, fixture, getJson, post, t2i, until } from "./standin/testkit";

describe("ComfyUI stand-in: HTTP basics", function () {
  let s: StandIn;
  before(async () => (s = await startStandIn({ stepMs: 1 })));
  after(() => s.close());

  it("serves every route bare and under /api, but /internal only bare", async () => {
    for (const p of ["/prompt", "/api/prompt", "/system_stats", "/api/system_stats", "/queue", "/api/queue", "/features", "/api/features"]) {
      assert.strictEqual((await fetch(s.url + p)).status, 200, p);
    }
    const sub = { method: "PATCH", body: JSON.stringify({ clientId: "x", enabled: true }) };
    assert.strictEqual((await fetch(s.url + "/internal/logs/subscribe", sub)).status, 200);
    assert.strictEqual((await fetch(s.url + "/api/internal/logs/subscribe", sub)).status, 405);
    assert.strictEqual((await fetch(s.url + "/api/internal/logs")).status, 404);
    assert.strictEqual(await (await fetch(s.url + "/no/such/route")).text(), "404: Not Found");
    assert.strictEqual((await fetch(s.url + "/prompt", { method: "DELETE" })).status, 405);
  });

  it("answers any OPTIONS with 200, / and /api/ with a page, a plain GET /ws with 400", async () => {
    assert.strictEqual((await fetch(s.url + "/whatever", { method: "OPTIONS" })).status, 200);
    assert.strictEqual((await fetch(s.url + "/")).status, 200);
    assert.strictEqual((await fetch(s.url + "/api/")).status, 200);
    assert.strictEqual((await fetch(s.url + "/ws")).status, 400);
  });

  it("GET /prompt counts pending + running, /system_stats says 0.3.64 on a cpu device, /features the upload limit", async () => {
    assert.deepStrictEqual(await getJson(s.url + "/prompt"), { exec_info: { queue_remaining: 0 } });
    const st = await getJson(s.url + "/system_stats");
    assert.strictEqual(st.system.comfyui_version, "0.3.64");
    assert.strictEqual(st.system.os, "posix");
    assert.strictEqual(st.devices[0].type, "cpu");
    assert.ok(Number.isInteger(st.system.ram_total) && st.system.ram_total > 0);
    assert.deepStrictEqual(await getJson(s.url + "/features"), { supports_preview_metadata: true, max_upload_size: 100 * 1024 * 1024 });
  });

  it("object_info: every class the fixture workflows use, with real specs; unknown class → {} with 200", async () => {
    const all = await getJson(s.url + "/object_info");
    const used = new Set<string>();
    for (const f of fs.readdirSync("/work/shared/fixtures/workflows")) for (const n of Object.values(fixture(f)) as any[]) used.add(n.class_type);
    for (const c of [...used, "PreviewImage", "LoadImage", "KSampler"]) assert.ok(all[c], `missing ${c}`);
    const ck = all.CheckpointLoaderSimple;
    assert.deepStrictEqual(ck.input.required.ckpt_name[0], (await getJson(s.url + "/models/checkpoints")));
    assert.deepStrictEqual(ck.output, ["MODEL", "CLIP", "VAE"]);
    assert.strictEqual(ck.python_module, "nodes");
    assert.strictEqual(all.SaveImage.output_node, true);
    assert.strictEqual(all.KSampler.output_node, false);
    assert.ok(all.KSampler.input.required.sampler_name[0].includes("dpmpp_2m_sde_gpu"));
    assert.ok(all.KSampler.input.required.scheduler[0].includes("kl_optimal"));
    assert.deepStrictEqual(all.KSampler.input_order.required.slice(0, 3), ["model", "seed", "steps"]);
    // V3 node: GET_NODE_INFO_V1 shape, COMBO spec
    assert.deepStrictEqual(all.TripleCLIPLoader.input.required.clip_name1[0], "COMBO");
    assert.strictEqual(all.TripleCLIPLoader.python_module, "comfy_extras.nodes_sd3");
    // The seed maximum is 2^64 - 1 on the wire, as Python prints it.
    const raw = await (await fetch(s.url + "/object_info/KSampler")).text();
    assert.ok(raw.includes('"max":18446744073709551615'), raw.slice(0, 200));
    assert.deepStrictEqual(await getJson(s.url + "/object_info/Primitive%20boolean%20%5BCrystools%5D"), {});
    assert.deepStrictEqual(Object.keys(await getJson(s.url + "/api/object_info/SaveImage")), ["SaveImage"]);
  });

  it("experiment/models and internal routes: model_manager.py and internal_routes.py shapes", async () => {
    const folders = await getJson(s.url + "/experiment/models");
    assert.ok(!folders.some((f: any) => f.name === "configs" || f.name === "custom_nodes"));
    assert.strictEqual(folders.find((f: any) => f.name === "text_encoders").folders.length, 2);
    const te = await getJson(s.url + "/experiment/models/text_encoders");
    assert.deepStrictEqual(te.map((m: any) => [m.name, m.pathIndex]).sort(), [["clip_g.safetensors", 0], ["clip_l.safetensors", 0], ["t5xxl_fp16.safetensors", 0]]);
    assert.deepStrictEqual(Object.keys(te[0]), ["name", "pathIndex", "modified", "created", "size"]);
    assert.strictEqual((await fetch(s.url + "/experiment/models/nope")).status, 404);
    assert.strictEqual((await fetch(s.url + "/internal/logs/subscribe", { method: "PATCH", body: "{}" })).status, 500);
    const bad = await fetch(s.url + "/internal/files/models");
    assert.deepStrictEqual([bad.status, await bad.json()], [400, { error: "Invalid directory type" }]);
    assert.ok(Array.isArray(await getJson(s.url + "/internal/files/output")));
  });

  it("models, embeddings: folder keys, sorted files, 404 for unknown or legacy folders", async () => {
    const folders = await getJson(s.url + "/models");
    assert.ok(folders.includes("checkpoints") && folders.includes("text_encoders") && folders.includes("diffusion_models"));
    assert.deepStrictEqual(await getJson(s.url + "/models/vae"), ["ae.safetensors"]);
    for (const f of ["clip", "unet", "nope"]) assert.strictEqual((await fetch(s.url + "/models/" + f)).status, 404, f);
    assert.deepStrictEqual(await getJson(s.url + "/embeddings"), []);
  });

  it("parses JSON whatever the Content-Type, and answers invalid JSON with 500 (interrupt tolerates it)", async () => {
    const r = await post(s.url + "/prompt", { prompt: t2i(1) }, { "Content-Type": "text/plain" });
    assert.strictEqual(r.status, 200);
    for (const p of ["/prompt", "/queue", "/history", "/free"]) {
      const bad = await post(s.url + p, "{not json");
      assert.strictEqual(bad.status, 500, p);
      assert.match(bad.text, /500 Internal Server Error/);
    }
    assert.strictEqual((await fetch(s.url + "/interrupt", { method: "POST" })).status, 200);
    assert.strictEqual((await post(s.url + "/interrupt", "{not json")).status, 200);
  });

  it("rejects a browser Origin that differs from a loopback Host with an empty 403 (HTTP and WS)", async () => {
    const r = await fetch(s.url + "/prompt", { headers: { Origin: "http://evil.example" } });
    assert.strictEqual(r.status, 403);
    assert.strictEqual(await r.text(), "");
    assert.strictEqual((await fetch(s.url + "/prompt", { headers: { Origin: s.url } })).status, 200);
    await assert.rejects(Recorder.open(s.url, "o", "/ws", { Origin: "http://evil.example" }), /403/);
  });
});

describe("ComfyUI stand-in: validation (execution.py validate_prompt)", function () {
  let s: StandIn;
  before(async () => (s = await startStandIn({ stepMs: 1 })));
  after(() => s.close());

  const bad = async (prompt: unknown) => {
    const r = await post(s.url + "/prompt", { prompt });
    assert.strictEqual(r.status, 400, r.text);
    return r.json;
  };

  it("no prompt → no_prompt", async () => {
    const r = await post(s.url + "/prompt", { client_id: "x" });
    assert.strictEqual(r.status, 400);
    assert.deepStrictEqual(r.json, { error: { type: "no_prompt", message: "No prompt provided", details: "No prompt provided", extra_info: {} }, node_errors: {} });
  });

  it("missing class_type and unknown class → invalid_prompt naming the node", async () => {
    const p = t2i();
    delete p["7"].class_type;
    assert.deepStrictEqual((await bad(p)).error, { type: "invalid_prompt", message: "Cannot execute because a node is missing the class_type property.", details: "Node ID '#7'", extra_info: {} });
    const q = t2i();
    q["7"].class_type = "NoSuchNode";
    assert.deepStrictEqual((await bad(q)).error, { type: "invalid_prompt", message: "Cannot execute because node NoSuchNode does not exist.", details: "Node ID '#7'", extra_info: {} });
  });

  it("no output node → prompt_no_outputs", async () => {
    const p = t2i();
    delete p["9"];
    assert.deepStrictEqual(await bad(p), { error: { type: "prompt_no_outputs", message: "Prompt has no outputs", details: "", extra_info: {} }, node_errors: {} });
  });

  it("value_not_in_list for a missing checkpoint, with the list; (list of length N) and null input_config above 20 options", async () => {
    const p = t2i();
    p["4"].inputs.ckpt_name = "x.safetensors";
    p["3"].inputs.sampler_name = "nope";
    const r = await bad(p);
    assert.strictEqual(r.error.type, "prompt_outputs_failed_validation");
    assert.strictEqual(r.error.message, "Prompt outputs failed validation");
    const ck = r.node_errors["4"];
    assert.strictEqual(ck.class_type, "CheckpointLoaderSimple");
    assert.deepStrictEqual(ck.dependent_outputs, ["9"]);
    const models = await getJson(s.url + "/models/checkpoints");
    assert.deepStrictEqual(ck.errors, [
      {
        type: "value_not_in_list",
        message: "Value not in list",
        details: `ckpt_name: 'x.safetensors' not in [${models.map((m: string) => `'${m}'`).join(", ")}]`,
        extra_info: { input_name: "ckpt_name", input_config: [models, { tooltip: "The name of the checkpoint (model) to load." }], received_value: "x.safetensors" },
      },
    ]);
    const samplers = (await getJson(s.url + "/object_info/KSampler")).KSampler.input.required.sampler_name[0];
    assert.ok(samplers.length > 20);
    assert.deepStrictEqual(r.node_errors["3"].errors[0], {
      type: "value_not_in_list",
      message: "Value not in list",
      details: `sampler_name: 'nope' not in (list of length ${samplers.length})`,
      extra_info: { input_name: "sampler_name", input_config: null, received_value: "nope" },
    });
    // Downstream nodes without errors of their own are not reported.
    assert.deepStrictEqual(Object.keys(r.node_errors).sort(), ["3", "4"]);
  });

  it("required_input_missing, bad_linked_input, return_type_mismatch, invalid_input_type, min/max", async () => {
    const p = t2i();
    delete p["3"].inputs.steps;
    p["3"].inputs.positive = ["6"];
    p["3"].inputs.negative = ["4", 0];
    p["3"].inputs.cfg = "lots";
    p["3"].inputs.denoise = 2;
    p["5"].inputs.width = 8;
    const r = await bad(p);
    const errs = Object.fromEntries(r.node_errors["3"].errors.map((e: any) => [e.extra_info.input_name, e]));
    assert.deepStrictEqual(errs.steps, { type: "required_input_missing", message: "Required input is missing", details: "steps", extra_info: { input_name: "steps" } });
    assert.strictEqual(errs.positive.type, "bad_linked_input");
    assert.deepStrictEqual(errs.positive.extra_info.received_value, ["6"]);
    assert.strictEqual(errs.negative.type, "return_type_mismatch");
    assert.strictEqual(errs.negative.details, "negative, received_type(MODEL) mismatch input_type(CONDITIONING)");
    assert.strictEqual(errs.negative.extra_info.received_type, "MODEL");
    assert.deepStrictEqual(errs.negative.extra_info.linked_node, ["4", 0]);
    assert.strictEqual(errs.cfg.type, "invalid_input_type");
    assert.strictEqual(errs.cfg.message, "Failed to convert an input value to a FLOAT value");
    assert.strictEqual(errs.cfg.details, "cfg, lots, could not convert string to float: 'lots'");
    assert.deepStrictEqual(errs.denoise, {
      type: "value_bigger_than_max",
      message: "Value 2.0 bigger than max of 1.0",
      details: "denoise",
      extra_info: { input_name: "denoise", input_config: ["FLOAT", { default: 1, min: 0, max: 1, step: 0.01, tooltip: errs.denoise.extra_info.input_config[1].tooltip }], received_value: 2 },
    });
    assert.deepStrictEqual(r.node_errors["5"].errors[0].message, "Value 8 smaller than min of 16");
    assert.strictEqual(r.node_errors["5"].errors[0].type, "value_smaller_than_min");
  });

  it("a link to a missing node: exception_during_validation on the output, exception_during_inner_validation below it", async () => {
    const p = t2i();
    p["9"].inputs.images = ["99", 0];
    const r = await bad(p);
    assert.deepStrictEqual(r.node_errors["9"].errors.map((e: any) => [e.type, e.details]), [["exception_during_validation", "'99'"]]);
    assert.strictEqual(r.node_errors["9"].errors[0].extra_info.exception_type, "KeyError");
    assert.strictEqual(r.error.details, "Exception when validating node: '99'");
    const q = t2i();
    q["8"].inputs.samples = ["99", 0];
    const r2 = await bad(q);
    assert.deepStrictEqual(r2.node_errors["8"].errors.map((e: any) => [e.type, e.details]), [["exception_during_inner_validation", "'99'"]]);
  });

  it("coerces constants like Python (int(\"20\"), float(), str(), the queued prompt holds the coerced values)", async () => {
    const p = t2i(2);
    p["3"].inputs.steps = "2";
    p["3"].inputs.seed = 7.9;
    p["6"].inputs.text = 5;
    p["3"].inputs.denoise = { __value__: 1 };
    const r = await post(s.url + "/prompt", { prompt: p });
    assert.strictEqual(r.status, 200, r.text);
    await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1);
    const h = (await getJson(`${s.url}/history/${r.json.prompt_id}`))[r.json.prompt_id];
    assert.deepStrictEqual([h.prompt[2]["3"].inputs.steps, h.prompt[2]["3"].inputs.seed, h.prompt[2]["6"].inputs.text, h.prompt[2]["3"].inputs.denoise], [2, 7, "5", 1]);
  });

  it("partial success: 200 with node_errors for the dropped output; only the valid output runs", async () => {
    const p = t2i(1);
    p["10"] = { class_type: "SaveImage", inputs: { images: ["8", 0], filename_prefix: 3 } };
    p["11"] = { class_type: "PreviewImage", inputs: { images: ["12", 0] } };
    p["12"] = { class_type: "VAEDecode", inputs: { samples: ["3", 0], vae: ["3", 0] } };
    const r = await post(s.url + "/prompt", { prompt: p });
    assert.strictEqual(r.status, 200, r.text);
    assert.deepStrictEqual(Object.keys(r.json.node_errors), ["12"]);
    assert.deepStrictEqual(r.json.node_errors["12"].dependent_outputs, ["11"]);
    await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1);
    const h = (await getJson(`${s.url}/history/${r.json.prompt_id}`))[r.json.prompt_id];
    assert.deepStrictEqual(h.prompt[4].sort(), ["10", "9"]);
    assert.deepStrictEqual(Object.keys(h.outputs).sort(), ["10", "9"]);
  });

  it("partial_execution_targets limits the outputs that run", async () => {
    const p = t2i(1, 4242); // a seed no other test in this block uses: cached UI of node 9 would be reported too
    p["10"] = { class_type: "PreviewImage", inputs: { images: ["8", 0] } };
    const r = await post(s.url + "/prompt", { prompt: p, partial_execution_targets: ["10"] });
    assert.strictEqual(r.status, 200, r.text);
    await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1);
    const h = (await getJson(`${s.url}/history/${r.json.prompt_id}`))[r.json.prompt_id];
    assert.deepStrictEqual(h.prompt[4], ["10"]);
    assert.deepStrictEqual(Object.keys(h.outputs), ["10"]);
    const none = await post(s.url + "/prompt", { prompt: p, partial_execution_targets: ["4"] });
    assert.strictEqual(none.json.error.type, "prompt_no_outputs");
  });

  it("takes a client-chosen prompt_id as is (0.3.64 does not check it) and echoes it", async () => {
    const id = "0b4a2f8e-2a4b-4c7e-9d2e-0f1e2d3c4b5a";
    const r = await post(s.url + "/prompt", { prompt: t2i(1), prompt_id: id });
    assert.strictEqual(r.json.prompt_id, id);
    const odd = await post(s.url + "/prompt", { prompt: t2i(1), prompt_id: 12 });
    assert.strictEqual(odd.json.prompt_id, "12");
  });
});

describe("ComfyUI stand-in: queue, priority, events, history", function () {
  let s: StandIn;
  beforeEach(async () => (s = await startStandIn({ stepMs: 5 })));
  afterEach(() => s.close());

  it("sends the §3.3 event sequence to the submitter only, with timestamps; others get status broadcasts", async () => {
    const a = await Recorder.open(s.url, "alice");
    const b = await Recorder.open(s.url, "bob");
    try {
      assert.deepStrictEqual(a.events[0], { type: "status", data: { status: { exec_info: { queue_remaining: 0 } }, sid: "alice" } });
      const r = await post(s.url + "/prompt", { prompt: t2i(3), client_id: "alice" });
      const id = r.json.prompt_id;
      await a.done(id);
      const seq = a.events.slice(1).map((e) => (e.type === "executing" ? `executing:${e.data.node}` : e.type === "progress" ? `progress:${e.data.value}/${e.data.max}` : e.type));
      const start = seq.indexOf("execution_start");
      assert.deepStrictEqual(seq.slice(0, start), ["status", "status"], "queued, then picked up");
      const sampler = seq.indexOf("executing:3");
      assert.deepStrictEqual(seq.slice(sampler, sampler + 8), ["executing:3", "progress_state", "progress:1/3", "progress_state", "progress:2/3", "progress_state", "progress:3/3", "progress_state"]);
      assert.deepStrictEqual(seq.slice(-5), ["executed", "progress_state", "execution_success", "status", "executing:null"]);
      assert.strictEqual(seq[start + 1], "execution_cached");
      for (const e of a.events.filter((x) => x.type.startsWith("execution_"))) {
        assert.strictEqual(e.data.prompt_id, id);
        assert.ok(Math.abs(e.data.timestamp - Date.now()) < 10000);
      }
      const executed = a.of("executed")[0].data;
      assert.deepStrictEqual(executed, { node: "9", display_node: "9", output: executed.output, prompt_id: id });
      assert.match(executed.output.images[0].filename, /^ComfyUI_\d{5}_\.png$/);
      const ps = a.of("progress_state").at(-1)?.data;
      assert.deepStrictEqual(ps.nodes["3"], { value: 3, max: 3, state: "finished", node_id: "3", prompt_id: id, display_node_id: "3", parent_node_id: null, real_node_id: "3" });
      assert.deepStrictEqual([...new Set(b.events.map((e) => e.type))], ["status"]);
      // The final status comes after the history entry exists.
      assert.deepStrictEqual(Object.keys(await getJson(`${s.url}/history/${id}`)), [id]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("sends no binary frames by default (--preview-method none)", async () => {
    const a = await Recorder.open(s.url, "nobin");
    try {
      const r = await post(s.url + "/prompt", { prompt: t2i(3), client_id: "nobin" });
      await a.done(r.json.prompt_id);
      assert.strictEqual(a.binary, 0);
    } finally {
      await a.close();
    }
  });

  it("with a preview method: a type-1 frame per step, type 4 (with metadata) for clients that negotiated supports_preview_metadata", async () => {
    await s.close();
    s = await startStandIn({ stepMs: 5, previewMethod: "auto" });
    const plain = await Recorder.open(s.url, "plain");
    const meta = await Recorder.open(s.url, "meta");
    const frames: Buffer[] = [];
    meta.ws.on("message", (d, isBinary) => isBinary && frames.push(d as Buffer));
    const plainFrames: Buffer[] = [];
    plain.ws.on("message", (d, isBinary) => isBinary && plainFrames.push(d as Buffer));
    try {
      meta.ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      await until(() => meta.of("feature_flags").length === 1);
      const r1 = await post(s.url + "/prompt", { prompt: t2i(3, 1), client_id: "plain" });
      await plain.done(r1.json.prompt_id);
      assert.strictEqual(plainFrames.length, 3);
      assert.deepStrictEqual([plainFrames[0].readUInt32BE(0), plainFrames[0].readUInt32BE(4)], [1, 2]);
      assert.strictEqual(plainFrames[0].subarray(8, 12).toString("latin1"), "\x89PNG");
      const r2 = await post(s.url + "/prompt", { prompt: t2i(2, 2), client_id: "meta" });
      await meta.done(r2.json.prompt_id);
      assert.strictEqual(frames.length, 2);
      assert.strictEqual(frames[0].readUInt32BE(0), 4);
      const len = frames[0].readUInt32BE(4);
      const md = JSON.parse(frames[0].subarray(8, 8 + len).toString());
      assert.deepStrictEqual(md, { node_id: "3", prompt_id: r2.json.prompt_id, display_node_id: "3", parent_node_id: null, real_node_id: "3", image_type: "image/png" });
      assert.strictEqual(frames[0].subarray(9 + len, 12 + len).toString("latin1"), "PNG");
      assert.strictEqual(plainFrames.length, 3, "previews go to the submitter only");
    } finally {
      await plain.close();
      await meta.close();
    }
  });

  it("without client_id: progress and progress_state are broadcast, per-prompt events are not", async () => {
    const w = await Recorder.open(s.url, "watcher");
    try {
      const r = await post(s.url + "/prompt", { prompt: t2i(2) });
      await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1);
      const types = new Set(w.events.map((e) => e.type));
      assert.ok(types.has("progress") && types.has("progress_state"));
      for (const t of ["execution_start", "executing", "executed", "execution_success"]) assert.ok(!types.has(t), t);
    } finally {
      await w.close();
    }
  });

  it("mints a 32-hex sid without clientId, answers the feature_flags handshake once, never pings", async () => {
    const r = await Recorder.open(s.url);
    let pinged = false;
    r.ws.on("ping", () => (pinged = true));
    try {
      assert.match(r.events[0].data.sid, /^[0-9a-f]{32}$/);
      r.ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      await until(() => r.of("feature_flags").length === 1);
      assert.deepStrictEqual(r.of("feature_flags")[0].data, { supports_preview_metadata: true, max_upload_size: 104857600 });
      r.ws.send(JSON.stringify({ type: "feature_flags", data: {} }));
      await new Promise((res) => setTimeout(res, 100));
      assert.strictEqual(r.of("feature_flags").length, 1, "only the first message is looked at");
      assert.strictEqual(pinged, false);
    } finally {
      await r.close();
    }
  });

  it("a reconnecting submitter gets `executing` with the current node (no prompt_id) and the rest of the events", async () => {
    await s.close();
    s = await startStandIn({ stepMs: 30 });
    const a = await Recorder.open(s.url, "carol");
    const r = await post(s.url + "/prompt", { prompt: t2i(20), client_id: "carol" });
    await until(() => a.of("progress").length > 0);
    await a.close();
    const b = await Recorder.open(s.url, "carol");
    try {
      await until(() => b.events.length >= 2);
      assert.deepStrictEqual(b.events[1], { type: "executing", data: { node: "3" } });
      await b.done(r.json.prompt_id);
      assert.ok(b.of("execution_success").length === 1);
    } finally {
      await b.close();
    }
  });

  it("runs one job at a time in (number, prompt_id) order: front jumps ahead, explicit number places it", async () => {
    const block = await post(s.url + "/prompt", { prompt: t2i(40, 1) });
    await until(() => s.executed().length === 1);
    const p1 = (await post(s.url + "/prompt", { prompt: t2i(1, 2) })).json;
    const p2 = (await post(s.url + "/prompt", { prompt: t2i(1, 3), front: true })).json;
    const p3 = (await post(s.url + "/prompt", { prompt: t2i(1, 4), number: 1.5 })).json;
    assert.deepStrictEqual([p1.number, p2.number, p3.number], [1, -2, 1.5]);
    // `front` is read with Python truthiness: an empty list is false.
    const p4 = (await post(s.url + "/prompt", { prompt: t2i(1, 5), front: [] })).json;
    assert.strictEqual(p4.number, 3);
    await post(s.url + "/queue", { delete: [p4.prompt_id] });
    const q = await getJson(s.url + "/queue");
    assert.strictEqual(q.queue_running.length, 1);
    assert.strictEqual(q.queue_running[0][1], block.json.prompt_id);
    assert.deepStrictEqual(q.queue_pending.map((i: any) => i[1]).sort(), [p1.prompt_id, p2.prompt_id, p3.prompt_id].sort());
    for (const item of q.queue_pending) {
      assert.strictEqual(item.length, 5);
      assert.deepStrictEqual(item[4], ["9"]);
      assert.strictEqual(item[2]["4"].class_type, "CheckpointLoaderSimple");
    }
    assert.deepStrictEqual(await getJson(s.url + "/prompt"), { exec_info: { queue_remaining: 4 } });
    await until(() => s.executed().length === 4, 15000);
    assert.deepStrictEqual(s.executed(), [block.json.prompt_id, p2.prompt_id, p1.prompt_id, p3.prompt_id]);
  });

  it("POST /queue deletes pending items and clears, broadcasting status; running items stay", async () => {
    const w = await Recorder.open(s.url, "w");
    try {
      const block = (await post(s.url + "/prompt", { prompt: t2i(60, 1) })).json;
      await until(() => s.executed().length === 1);
      const ids = [];
      for (let i = 0; i < 3; i++) ids.push((await post(s.url + "/prompt", { prompt: t2i(1, 10 + i) })).json.prompt_id);
      const before = w.of("status").length;
      assert.strictEqual((await post(s.url + "/queue", { delete: [ids[1], "unknown"] })).status, 200);
      let q = await getJson(s.url + "/queue");
      assert.deepStrictEqual(q.queue_pending.map((i: any) => i[1]).sort(), [ids[0], ids[2]].sort());
      await until(() => w.of("status").length > before);
      await post(s.url + "/queue", { clear: true, delete: [block.prompt_id] });
      q = await getJson(s.url + "/queue");
      assert.deepStrictEqual(q.queue_pending, []);
      assert.strictEqual(q.queue_running[0][1], block.prompt_id);
      assert.strictEqual(w.of("status").at(-1)?.data.status.exec_info.queue_remaining, 1);
    } finally {
      await w.close();
    }
  });

  it("interrupt: execution_interrupted, history status error; a prompt_id that is not running changes nothing", async () => {
    const a = await Recorder.open(s.url, "dave");
    try {
      const r = (await post(s.url + "/prompt", { prompt: t2i(100), client_id: "dave" })).json;
      await until(() => a.of("progress").length >= 2);
      await post(s.url + "/interrupt", { prompt_id: "not-running" });
      await new Promise((res) => setTimeout(res, 50));
      assert.strictEqual(a.of("execution_interrupted").length, 0);
      await post(s.url + "/interrupt", { prompt_id: r.prompt_id });
      await a.done(r.prompt_id);
      const ev = a.of("execution_interrupted")[0].data;
      assert.deepStrictEqual(Object.keys(ev).sort(), ["executed", "node_id", "node_type", "prompt_id", "timestamp"]);
      assert.deepStrictEqual([ev.node_id, ev.node_type], ["3", "KSampler"]);
      assert.ok(ev.executed.includes("4") && !ev.executed.includes("3"));
      assert.strictEqual(a.of("execution_success").length, 0);
      assert.ok(a.of("progress").length < 100);
      const h = (await getJson(`${s.url}/history/${r.prompt_id}`))[r.prompt_id];
      assert.deepStrictEqual([h.status.status_str, h.status.completed], ["error", false]);
      assert.deepStrictEqual(h.status.messages.map((m: any) => m[0]), ["execution_start", "execution_cached", "execution_interrupted"]);
      assert.deepStrictEqual(h.outputs, {});
    } finally {
      await a.close();
    }
  });

  it("history: {} for unknown or unfinished ids, max_items/offset windows, delete and clear", async () => {
    assert.deepStrictEqual(await getJson(s.url + "/history/nope"), {});
    const ids: string[] = [(await post(s.url + "/prompt", { prompt: t2i(40, 99) })).json.prompt_id];
    for (let i = 0; i < 3; i++) ids.push((await post(s.url + "/prompt", { prompt: t2i(1, 100 + i) })).json.prompt_id);
    assert.deepStrictEqual(await getJson(`${s.url}/history/${ids[3]}`), {}, "queued behind a 40-step job");
    await until(async () => Object.keys(await getJson(s.url + "/history")).length === 4);
    assert.deepStrictEqual(Object.keys(await getJson(s.url + "/history")), ids);
    assert.deepStrictEqual(Object.keys(await getJson(s.url + "/history?max_items=2")), ids.slice(2));
    assert.deepStrictEqual(Object.keys(await getJson(s.url + "/history?max_items=2&offset=1")), ids.slice(1, 3));
    assert.strictEqual((await fetch(s.url + "/history?max_items=x")).status, 500);
    const e = (await getJson(`${s.url}/history/${ids[0]}`))[ids[0]];
    assert.deepStrictEqual(Object.keys(e), ["prompt", "outputs", "status", "meta"]);
    assert.deepStrictEqual(e.meta["9"], { node_id: "9", display_node: "9", parent_node: null, real_node_id: "9" });
    await post(s.url + "/history", { delete: [ids[1]] });
    assert.deepStrictEqual(Object.keys(await getJson(s.url + "/history")), [ids[0], ids[2], ids[3]]);
    await post(s.url + "/history", { clear: true });
    assert.deepStrictEqual(await getJson(s.url + "/history"), {});
  });

  it("history drops sensitive extra_data keys but keeps the rest", async () => {
    const r = (await post(s.url + "/prompt", { prompt: t2i(1), client_id: "z", extra_data: { api_key_comfy_org: "secret", auth_token_comfy_org: "t", note: 1 } })).json;
    await until(async () => Object.keys(await getJson(`${s.url}/history/${r.prompt_id}`)).length === 1);
    const e = (await getJson(`${s.url}/history/${r.prompt_id}`))[r.prompt_id];
    assert.deepStrictEqual(e.prompt[3], { note: 1, client_id: "z" });
  });
});

describe("ComfyUI stand-in: SaveImage, caching, /free", function () {
  let s: StandIn;
  beforeEach(async () => (s = await startStandIn({ stepMs: 1 })));
  afterEach(() => s.close());

  const run = async (body: Record<string, unknown>, rec?: Recorder) => {
    const r = await post(s.url + "/prompt", body);
    assert.strictEqual(r.status, 200, r.text);
    if (rec) await rec.done(r.json.prompt_id);
    else await until(async () => Object.keys(await getJson(`${s.url}/history/${r.json.prompt_id}`)).length === 1);
    return (await getJson(`${s.url}/history/${r.json.prompt_id}`))[r.json.prompt_id];
  };

  it("writes real PNGs <prefix>_<NNNNN>_.png (width/8 × height/8) with prompt and workflow tEXt chunks, served by /view", async () => {
    const workflow = { nodes: [{ id: 4 }], version: 0.4 };
    const h = await run({ prompt: t2i(1, 1, "cats/run"), extra_data: { extra_pnginfo: { workflow } } });
    const img = h.outputs["9"].images[0];
    assert.deepStrictEqual(img, { filename: "run_00001_.png", subfolder: "cats", type: "output" });
    const v = await fetch(`${s.url}/view?filename=${img.filename}&subfolder=cats&type=output`);
    assert.strictEqual(v.status, 200);
    assert.strictEqual(v.headers.get("content-type"), "image/png");
    assert.strictEqual(v.headers.get("content-disposition"), 'filename="run_00001_.png"');
    const buf = Buffer.from(await v.arrayBuffer());
    const { PNG } = await import("pngjs");
    const png = PNG.sync.read(buf);
    assert.deepStrictEqual([png.width, png.height], [8, 6]);
    const chunks = Object.fromEntries(readTextChunks(buf));
    assert.deepStrictEqual(JSON.parse(chunks.prompt)["3"].inputs.seed, 1);
    assert.match(chunks.prompt, /"cfg": 8\.0/, "json.dumps of the coerced float");
    assert.deepStrictEqual(JSON.parse(chunks.workflow), workflow);
    const h2 = await run({ prompt: t2i(1, 2, "cats/run") });
    assert.strictEqual(h2.outputs["9"].images[0].filename, "run_00002_.png");
    assert.ok(!("workflow" in Object.fromEntries(readTextChunks(fs.readFileSync(path.join(s.dataDir, "output/cats/run_00002_.png"))))));
  });

  it("counter = 1 + highest existing for that prefix in that folder, one per batch image", async () => {
    fs.writeFileSync(path.join(s.dataDir, "output", "ComfyUI_00041_.png"), "x");
    fs.writeFileSync(path.join(s.dataDir, "output", "ComfyUIX_00090_.png"), "x");
    const p = t2i(1);
    p["5"].inputs.batch_size = 2;
    const h = await run({ prompt: p });
    assert.deepStrictEqual(h.outputs["9"].images.map((i: any) => i.filename), ["ComfyUI_00042_.png", "ComfyUI_00043_.png"]);
  });

  it("a prefix escaping the output folder fails at run time with execution_error (not at validation)", async () => {
    const a = await Recorder.open(s.url, "esc");
    try {
      const h = await run({ prompt: t2i(1, 1, "../../etc/x"), client_id: "esc" }, a);
      assert.strictEqual(h.status.status_str, "error");
      const ev = a.of("execution_error")[0].data;
      assert.strictEqual(ev.node_id, "9");
      assert.strictEqual(ev.exception_type, "Exception");
      assert.match(ev.exception_message, /Saving image outside the output folder is not allowed/);
    } finally {
      await a.close();
    }
  });

  it("PreviewImage writes to temp with type temp", async () => {
    const p = t2i(1);
    p["9"] = { class_type: "PreviewImage", inputs: { images: ["8", 0] } };
    const h = await run({ prompt: p });
    const img = h.outputs["9"].images[0];
    assert.match(img.filename, /^ComfyUI_temp_[a-z]{5}_00001_\.png$/);
    assert.strictEqual(img.type, "temp");
    assert.strictEqual((await fetch(`${s.url}/view?filename=${img.filename}&type=temp`)).status, 200);
    assert.strictEqual((await fetch(`${s.url}/view?filename=${img.filename}&type=output`)).status, 404);
  });

  it("identical resubmission: every node cached, cached executed output, no new file; a new seed reruns only the sampler and below", async () => {
    const a = await Recorder.open(s.url, "cache");
    try {
      const h1 = await run({ prompt: t2i(2, 5), client_id: "cache" }, a);
      a.events = [];
      const h2 = await run({ prompt: t2i(2, 5), client_id: "cache" }, a);
      assert.deepStrictEqual(a.of("execution_cached")[0].data.nodes.sort(), ["3", "4", "5", "6", "7", "8", "9"]);
      assert.deepStrictEqual(a.of("executing").map((e) => e.data.node), [null]);
      assert.deepStrictEqual(a.of("executed")[0].data.output, h1.outputs["9"]);
      assert.deepStrictEqual(h2.outputs, h1.outputs);
      assert.deepStrictEqual(fs.readdirSync(path.join(s.dataDir, "output")), ["ComfyUI_00001_.png"]);
      a.events = [];
      await run({ prompt: t2i(2, 6), client_id: "cache" }, a);
      assert.deepStrictEqual(a.of("execution_cached")[0].data.nodes.sort(), ["4", "5", "6", "7"]);
      assert.deepStrictEqual(a.of("executing").map((e) => e.data.node), ["3", "8", "9", null]);
      // /free with free_memory drops the cache: the next run recomputes everything.
      await post(s.url + "/free", { unload_models: true, free_memory: true });
      a.events = [];
      await run({ prompt: t2i(2, 6), client_id: "cache" }, a);
      assert.deepStrictEqual(a.of("execution_cached")[0].data.nodes, []);
    } finally {
      await a.close();
    }
  });
});

describe("ComfyUI stand-in: readiness, limits and faults", function () {
  it("answers 503 on every route (and WS) until readyAfterMs, and forever with neverReady", async () => {
    const s = await startStandIn({ readyAfterMs: 300 });
    try {
      assert.strictEqual((await fetch(s.url + "/prompt")).status, 503);
      assert.strictEqual((await fetch(s.url + "/object_info")).status, 503);
      await assert.rejects(Recorder.open(s.url, "x"), /503/);
      await new Promise((r) => setTimeout(r, 350));
      assert.strictEqual((await fetch(s.url + "/prompt")).status, 200);
    } finally {
      await s.close();
    }
    const n = await startStandIn({ neverReady: true });
    try {
      assert.strictEqual((await post(n.url + "/prompt", { prompt: t2i() })).status, 503);
    } finally {
      await n.close();
    }
  });

  it("answers 413 above maxUploadMb", async () => {
    const s = await startStandIn({ maxUploadMb: 0.01 });
    try {
      const r = await post(s.url + "/prompt", { prompt: t2i(), pad: "x".repeat(20000) });
      assert.strictEqual(r.status, 413);
      assert.strictEqual((await post(s.url + "/prompt", { prompt: t2i(1) })).status, 200);
    } finally {
      await s.close();
    }
  });

  it("crash: drops every socket without a close frame and stops listening", async () => {
    const s = await startStandIn({ stepMs: 5, fault: { kind: "crash", afterSteps: 2 } });
    const a = await Recorder.open(s.url, "c");
    try {
      await post(s.url + "/prompt", { prompt: t2i(5), client_id: "c" });
      await until(() => a.closeCode !== undefined);
      assert.strictEqual(a.closeCode, 1006);
      assert.strictEqual(a.of("progress").length, 2);
      await assert.rejects(fetch(s.url + "/prompt"));
      assert.strictEqual(s.executed().length, 1);
    } finally {
      await s.close();
      await s.close();
    }
  });

  it("hang: no more progress, the job stays running, HTTP still answers; setFault(undefined) affects later prompts only", async () => {
    const s = await startStandIn({ stepMs: 5, fault: { kind: "hang", afterSteps: 1 } });
    const a = await Recorder.open(s.url, "h");
    try {
      const r = (await post(s.url + "/prompt", { prompt: t2i(5), client_id: "h" })).json;
      await until(() => a.of("progress").length === 1);
      s.setFault(undefined);
      await post(s.url + "/interrupt", {});
      await new Promise((res) => setTimeout(res, 150));
      assert.strictEqual(a.of("progress").length, 1);
      const q = await getJson(s.url + "/queue");
      assert.strictEqual(q.queue_running[0][1], r.prompt_id);
      assert.deepStrictEqual(await getJson(`${s.url}/history/${r.prompt_id}`), {});
    } finally {
      await a.close();
      await s.close();
    }
  });

  it("execution_error: event with ComfyUI's fields, history status error, then the next prompt still runs once cleared", async () => {
    const s = await startStandIn({ stepMs: 1, fault: { kind: "execution_error" } });
    const a = await Recorder.open(s.url, "e");
    try {
      const r = (await post(s.url + "/prompt", { prompt: t2i(2), client_id: "e" })).json;
      await a.done(r.prompt_id);
      const ev = a.of("execution_error")[0].data;
      assert.deepStrictEqual(Object.keys(ev).sort(), ["current_inputs", "current_outputs", "exception_message", "exception_type", "executed", "node_id", "node_type", "prompt_id", "timestamp", "traceback"]);
      assert.deepStrictEqual([ev.node_id, ev.node_type, ev.exception_type], ["3", "KSampler", "RuntimeError"]);
      assert.deepStrictEqual(ev.current_inputs.steps, [2]);
      assert.ok(Array.isArray(ev.traceback));
      const h = (await getJson(`${s.url}/history/${r.prompt_id}`))[r.prompt_id];
      assert.deepStrictEqual([h.status.status_str, h.status.completed, h.status.messages.at(-1)[0]], ["error", false, "execution_error"]);
      s.setFault(undefined);
      const r2 = (await post(s.url + "/prompt", { prompt: t2i(2), client_id: "e" })).json;
      await a.done(r2.prompt_id);
      assert.strictEqual((await getJson(`${s.url}/history/${r2.prompt_id}`))[r2.prompt_id].status.status_str, "success");
      s.setFault({ kind: "execution_error", nodeId: "9" });
      const r3 = (await post(s.url + "/prompt", { prompt: t2i(2, 9), client_id: "e" })).json;
      await a.done(r3.prompt_id);
      assert.strictEqual(a.of("execution_error").at(-1)?.data.node_id, "9");
    } finally {
      await a.close();
      await s.close();
    }
  });
});

import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { PNG } from "pngjs";
import { startStandIn, type StandIn } from "./standin";
import { get, openWs, post, startGateway, t2i, until } from "./helpers";

describe("gateway end to end (local mode, in-process, 2 stand-ins)", function () {
  this.timeout(60000);
  let pods: StandIn[] = [];
  let gw: Awaited<ReturnType<typeof startGateway>>;

  before(async () => {
    pods = await Promise.all([startStandIn({ stepMs: 5 }), startStandIn({ stepMs: 5 })]);
    gw = await startGateway(pods.map((p) => p.url), ["--max-upload-mb", "1"]);
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
  });
  after(async () => {
    await gw?.close();
    await Promise.all(pods.map((p) => p.close()));
  });

  it("plain client: POST /prompt, /ws until executing null, /history, /view gets the PNG", async () => {
    const clientId = randomUUID();
    const sock = await openWs(gw.url, clientId);
    try {
      const res = await post(gw.url, "/prompt", { prompt: t2i(1), client_id: clientId });
      assert.equal(res.status, 200, res.text);
      const id = res.json.prompt_id as string;
      assert.match(id, /^[0-9a-f-]{36}$/);
      assert.deepEqual(res.json.node_errors, {});
      await until(async () => sock.messages.find((m) => m.type === "executing" && m.data.node === null && m.data.prompt_id === id));
      const types = sock.messages.filter((m) => m.data?.prompt_id === id).map((m) => m.type);
      assert.ok(types.indexOf("execution_start") < types.indexOf("executed"), types.join());
      assert.ok(types.indexOf("executed") < types.lastIndexOf("executing"), types.join());
      const progress = sock.messages.filter((m) => m.type === "progress" && m.data.prompt_id === id);
      assert.deepEqual(progress.map((m) => m.data.value), [1, 2], "every step once, in order");
      assert.ok(types.lastIndexOf("progress") < types.indexOf("executed"), types.join());
      assert.equal(sock.messages[0].type, "status");
      assert.equal(sock.messages[0].data.sid, clientId);
      const executed = sock.messages.find((m) => m.type === "executed" && m.data.prompt_id === id);
      assert.equal(executed.data.output.images[0].subfolder, id, "outputs are renamed under the prompt's subfolder");
      const h = await get(gw.url, `/history/${id}`);
      const entry = h.json[id];
      assert.equal(entry.status.status_str, "success");
      assert.equal(entry.prompt[1], id);
      const img = entry.outputs["9"].images[0];
      assert.deepEqual(img, executed.data.output.images[0]);
      const view = await get(gw.url, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=output`);
      assert.equal(view.status, 200);
      const png = PNG.sync.read(view.buf);
      assert.ok(png.width > 0);
      assert.equal((await get(gw.url, "/queue")).json.queue_running.length, 0);
    } finally {
      await sock.close();
    }
  });

  it("history polling without a WebSocket; a client-chosen prompt_id is honoured and never run twice", async () => {
    const id = randomUUID();
    const a = await post(gw.url, "/prompt", { prompt: t2i(2), prompt_id: id });
    assert.equal(a.status, 200);
    assert.equal(a.json.prompt_id, id);
    const again = await post(gw.url, "/api/prompt", { prompt: t2i(2), prompt_id: id });
    assert.equal(again.json.prompt_id, id);
    assert.equal(again.json.number, a.json.number);
    const entry = await until(async () => (await get(gw.url, `/history/${id}`)).json[id]);
    assert.equal(entry.status.status_str, "success");
    const runs = pods.flatMap((p) => p.executed()).filter((x) => x === id);
    assert.equal(runs.length, 1);
    const all = await get(gw.url, "/history?max_items=200");
    assert.ok(all.json[id]);
  });

  it("a batch of 40 prompts from one client spreads over every stand-in", async () => {
    const before = pods.map((p) => p.executed().length);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await post(gw.url, "/prompt", { prompt: t2i(1000 + i), client_id: "batch" })).json.prompt_id);
    await until(async () => {
      const h = await get(gw.url, "/history");
      return ids.every((id) => h.json[id]?.status?.status_str === "success");
    }, 40000, 100);
    const ran = pods.map((p, i) => p.executed().length - before[i]);
    assert.equal(ran.reduce((a, b) => a + b, 0), 40, `each prompt ran once: ${ran}`);
    for (const n of ran) assert.ok(n >= 10, `every stand-in got a share: ${ran}`);
  });

  it("bad input gets ComfyUI's errors and leaves the store unchanged", async () => {
    const q0 = (await get(gw.url, "/queue")).json;
    const h0 = Object.keys((await get(gw.url, "/history")).json).length;
    const bad = await post(gw.url, "/prompt", "{not json");
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.type, "invalid_json");
    const none = await post(gw.url, "/prompt", { client_id: "x" });
    assert.equal(none.status, 400);
    assert.equal(none.json.error.type, "no_prompt");
    const pid = await post(gw.url, "/prompt", { prompt: t2i(3), prompt_id: "NOT-A-UUID" });
    assert.equal(pid.status, 400);
    assert.equal(pid.json.error.type, "invalid_prompt_id");
    const upper = await post(gw.url, "/prompt", { prompt: t2i(3), prompt_id: randomUUID().toUpperCase() });
    assert.equal(upper.json.error.type, "invalid_prompt_id");
    const missing = await post(gw.url, "/prompt", { prompt: t2i(3, "nope.safetensors") });
    assert.equal(missing.status, 400);
    assert.equal(missing.json.error.type, "prompt_outputs_failed_validation");
    assert.equal(missing.json.node_errors["4"].errors[0].type, "value_not_in_list");
    assert.deepEqual(missing.json.node_errors["4"].dependent_outputs, ["9"]);
    const unknown = await post(gw.url, "/prompt", { prompt: { "1": { class_type: "NoSuchNode", inputs: {} } } });
    assert.equal(unknown.json.error.type, "invalid_prompt");
    const noOut = await post(gw.url, "/prompt", { prompt: { "5": { class_type: "EmptyLatentImage", inputs: { width: 64, height: 64, batch_size: 1 } } } });
    assert.equal(noOut.json.error.type, "prompt_no_outputs");
    const g = t2i(4) as any;
    g["3"].inputs.steps = 0;
    const small = await post(gw.url, "/prompt", { prompt: g });
    assert.equal(small.json.node_errors["3"].errors[0].type, "value_smaller_than_min");
    for (const p of ["/view?filename=../x.png", "/view?filename=/etc/passwd"]) assert.equal((await get(gw.url, p)).status, 400, p);
    assert.equal((await get(gw.url, "/view?filename=x.png&subfolder=../..")).status, 403);
    assert.equal((await get(gw.url, "/view?filename=nothere.png")).status, 404);
    assert.deepEqual((await get(gw.url, `/history/${randomUUID()}`)).json, {});
    const form = new FormData();
    form.append("image", new Blob([new Uint8Array([1, 2, 3])]), "../evil.png");
    const up = await fetch(gw.url + "/upload/image", { method: "POST", body: form });
    assert.equal(up.status, 400);
    const big = new FormData();
    big.append("image", new Blob([new Uint8Array(2 * 1024 * 1024)]), "big.png");
    assert.equal((await fetch(gw.url + "/upload/image", { method: "POST", body: big })).status, 413);
    assert.deepEqual((await get(gw.url, "/queue")).json, q0);
    assert.equal(Object.keys((await get(gw.url, "/history")).json).length, h0);
    assert.equal((await get(gw.url, "/view?type=input&filename=big.png")).status, 404);
  });
});

import { strict as assert } from "node:assert";
import { startStandIn, type StandIn } from "./standin";
import { get, post, startGateway, t2i, tmpDir, until } from "./helpers";

describe("gateway lifecycle", function () {
  this.timeout(60000);

  it("scaling figure counts waiting prompts, then returns to 0 when they fail past the startup deadline (pod never ready)", async () => {
    const good = await startStandIn({ stepMs: 1 });
    const dir = tmpDir();
    // First run with a ready pod fills the discovery cache, so prompts validate while no pod is ready.
    let gw = await startGateway([good.url], [], dir);
    await until(async () => (await get(gw.url, "/object_info/KSampler")).json.KSampler);
    await gw.close();
    await good.close();
    const never = await startStandIn({ neverReady: true });
    gw = await startGateway([never.url], ["--startup-deadline", "1"], dir);
    try {
      assert.deepEqual((await get(gw.adminUrl, "/gateway/scaling")).json, { prompts: 0, waiting: 0, running: 0 });
      const ids = [];
      for (let i = 0; i < 3; i++) {
        const r = await post(gw.url, "/prompt", { prompt: t2i(i) });
        assert.equal(r.status, 200, r.text);
        ids.push(r.json.prompt_id);
      }
      assert.equal((await get(gw.adminUrl, "/gateway/scaling")).json.prompts, 3);
      await until(async () => (await get(gw.adminUrl, "/gateway/scaling")).json.prompts === 0, 5000);
      for (const id of ids) {
        const e = (await get(gw.url, `/history/${id}`)).json[id];
        assert.equal(e.status.status_str, "error");
        assert.match(e.status.messages[0][1].exception_message, /no ComfyUI pod became ready within 1 s/);
      }
    } finally {
      await gw.close();
      await never.close();
    }
  });

  it("saved workflows, settings and history survive restarts of every stand-in and of the gateway", async () => {
    const dir = tmpDir();
    let pod: StandIn = await startStandIn({ stepMs: 1 });
    let gw = await startGateway([pod.url], [], dir);
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    const wf = JSON.stringify({ nodes: [1, 2, 3] });
    const saved = await fetch(gw.url + "/api/userdata/workflows%2Fmine.json", { method: "POST", body: wf });
    assert.equal(saved.status, 200);
    assert.equal((await fetch(gw.url + "/api/userdata/workflows%2Fmine.json?overwrite=false", { method: "POST", body: "x" })).status, 409);
    assert.equal((await post(gw.url, "/api/settings", { "Comfy.Theme": "dark" })).status, 200);
    const id = (await post(gw.url, "/prompt", { prompt: t2i(7) })).json.prompt_id;
    await until(async () => (await get(gw.url, `/history/${id}`)).json[id]);
    await gw.close();
    const port = pod.port;
    await pod.close();
    pod = await startStandIn({ stepMs: 1, port });
    gw = await startGateway([pod.url], [], dir);
    try {
      assert.equal((await get(gw.url, "/api/userdata/workflows%2Fmine.json")).buf.toString(), wf);
      assert.deepEqual((await get(gw.url, "/api/userdata?dir=workflows")).json, ["mine.json"]);
      assert.equal((await get(gw.url, "/api/settings/Comfy.Theme")).json, "dark");
      assert.equal((await get(gw.url, `/history/${id}`)).json[id].status.status_str, "success");
      const img = (await get(gw.url, `/history/${id}`)).json[id].outputs["9"].images[0];
      assert.equal((await get(gw.url, `/view?filename=${img.filename}&subfolder=${img.subfolder}`)).status, 200, "outputs outlive the pod");
      assert.equal((await get(gw.url, "/api/userdata/..%2Fescape.json")).status, 400);
    } finally {
      await gw.close();
      await pod.close();
    }
  });
});

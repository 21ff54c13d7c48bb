import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import { PNG } from "pngjs";
import { startStandIn, type StandIn } from "./standin";
import { freePort, spawnGateway, type GatewayProcess } from "./cli";
import { get, openWs, post, t2i, tmpDir, until } from "./helpers";

describe("gateway CLI (npm run gateway, child process, 2 stand-ins)", function () {
  this.timeout(90000);
  let a: StandIn | undefined;
  let b: StandIn | undefined;
  let gw: GatewayProcess | undefined;
  const dir = tmpDir("gw-cli-");

  after(async () => {
    await gw?.killAll();
    await a?.close();
    await b?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("prints its address, serves a plain client, reports an unreachable ComfyUI and holds prompts until it comes up; SIGTERM exits 0", async () => {
    a = await startStandIn({ stepMs: 5 });
    const portB = await freePort();
    const urlB = `http://127.0.0.1:${portB}`;
    gw = await spawnGateway(["--comfyui", a.url, "--comfyui", urlB, "--port", "0", "--data-dir", dir], { via: "npm" });
    assert.match(gw.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(gw.lines.some((l) => l.includes(`over ${a!.url}, ${urlB}`)), "the address line names both ComfyUI servers");

    // The unreachable one is reported (once, as a warning naming its URL); the reachable one is not.
    await until(async () => gw!.logs().find((l) => l.msg === "pod unreachable; prompts wait for it" && l.url === urlB), 10000);
    assert.equal(gw.logs().filter((l) => l.msg === "pod unreachable; prompts wait for it" && l.url === urlB).length, 1, "reported once, not on every retry");
    assert.ok(!gw.logs().some((l) => l.msg === "pod unreachable; prompts wait for it" && l.url === a!.url));
    await until(async () => (await get(gw!.adminUrl, "/gateway/pods")).json?.ready === 1);
    await until(async () => (await get(gw!.url, "/object_info/KSampler")).json?.KSampler);

    // A plain client: POST /prompt → /ws until executing null → /history → /view.
    const clientId = randomUUID();
    const sock = await openWs(gw.url, clientId);
    let first: string;
    try {
      const res = await post(gw.url, "/prompt", { prompt: t2i(11), client_id: clientId });
      assert.equal(res.status, 200, res.text);
      first = res.json.prompt_id;
      await until(async () => sock.messages.find((m) => m.type === "executing" && m.data.node === null && m.data.prompt_id === first));
    } finally {
      await sock.close();
    }
    const img = (await get(gw.url, `/history/${first}`)).json[first].outputs["9"].images[0];
    const view = await get(gw.url, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=output`);
    assert.equal(view.status, 200);
    assert.ok(PNG.sync.read(view.buf).width > 0);
    assert.deepEqual(a.executed(), [first], "ran on the reachable stand-in");

    // Only the unreachable ComfyUI is left: a prompt is accepted (validated from the cache) and waits.
    await a.close();
    a = undefined;
    await until(async () => (await get(gw!.adminUrl, "/gateway/pods")).json?.ready === 0);
    const waiting = await post(gw.url, "/prompt", { prompt: t2i(12) });
    assert.equal(waiting.status, 200, waiting.text);
    const id = waiting.json.prompt_id as string;
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual((await get(gw.url, `/history/${id}`)).json, {}, "not finished while no ComfyUI is up");
    assert.deepEqual((await get(gw.url, "/queue")).json.queue_pending.map((i: unknown[]) => i[1]), [id]);
    assert.equal((await get(gw.adminUrl, "/gateway/scaling")).json.prompts, 1);

    // The ComfyUI that was unreachable starts: the waiting prompt runs there and completes.
    b = await startStandIn({ stepMs: 5, port: portB });
    const entry = await until(async () => (await get(gw!.url, `/history/${id}`)).json[id], 20000, 100);
    assert.equal(entry.status.status_str, "success");
    assert.deepEqual(b.executed(), [id]);
    const img2 = entry.outputs["9"].images[0];
    assert.equal((await get(gw.url, `/view?filename=${encodeURIComponent(img2.filename)}&subfolder=${encodeURIComponent(img2.subfolder)}&type=output`)).status, 200);
    assert.equal((await get(gw.adminUrl, "/gateway/scaling")).json.prompts, 0);

    const end = await gw.kill("SIGTERM");
    assert.deepEqual(end, { code: 0, signal: null }, "SIGTERM closes cleanly");
  });

  it("refuses bad flags with every problem named and exit code 2", async () => {
    const p = spawnGateway(["--comfyui", "ftp://x", "--port", "99999", "--bogus"], { via: "node", startTimeoutMs: 30000 });
    await assert.rejects(p, (err: Error) => {
      assert.match(err.message, /exited \(2\)/);
      assert.match(err.message, /--comfyui ftp:\/\/x: must be http\(s\)/);
      assert.match(err.message, /GATEWAY_PORT must be a number in 0…65535/);
      assert.match(err.message, /unknown argument --bogus/);
      return true;
    });
  });
});

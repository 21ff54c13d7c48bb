import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { Children, ComfyStandIn, refusedUrl } from "./drainHelpers";

const DRAIN_PY = path.join(__dirname, "..", "..", "workload", "drain", "drain.py");

describe("drain preStop hook (workload/drain/drain.py)", function () {
  this.timeout(20000);
  const children = new Children();
  const standIns: ComfyStandIn[] = [];
  const timers: NodeJS.Timeout[] = [];

  before(function () {
    // The ComfyUI image runs the hook with its own Python; the test needs one too.
    if (spawnSync("python3", ["--version"]).error) this.skip();
  });

  afterEach(async () => {
    children.killAll();
    timers.splice(0).forEach(clearTimeout);
    await Promise.all(standIns.splice(0).map((s) => s.close()));
  });

  async function comfyWithQueue(n: number): Promise<ComfyStandIn> {
    const s = await ComfyStandIn.start("ready", n);
    standIns.push(s);
    return s;
  }

  const drain = (url: string, deadline: number, interval = 0.1) =>
    children.run("python3", [DRAIN_PY, "--url", url, "--deadline-seconds", String(deadline), "--interval-seconds", String(interval)]);

  it("exits at once when the queue is empty", async () => {
    const comfy = await comfyWithQueue(0);
    const r = await drain(comfy.url, 30);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.ms < 1000, `took ${r.ms} ms`);
    assert.match(r.stderr, /nothing to drain/);
    assert.ok(comfy.requests.some((q) => q.url === "/prompt"));
  });

  it("waits while prompts are queued and exits once the queue is empty", async () => {
    const comfy = await comfyWithQueue(2);
    const run = drain(comfy.url, 10, 0.1);
    timers.push(setTimeout(() => comfy.setQueue(0), 1500));
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.ms >= 1500 && r.ms < 10000, `exited after ${r.ms} ms, expected after the queue emptied at 1.5 s`);
    assert.ok(r.ms < 3000, `exited soon after the queue emptied: ${r.ms} ms`);
    // One line per change, not per poll.
    assert.equal(r.stderr.match(/draining: 2 prompts left/g)?.length, 1, r.stderr);
    assert.match(r.stderr, /drained/);
    assert.ok(!/deadline/.test(r.stderr));
  });

  it("stops waiting at the deadline and says so", async () => {
    const comfy = await comfyWithQueue(3);
    const r = await drain(comfy.url, 2, 0.2);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.ms >= 1900 && r.ms < 3500, `exited after ${r.ms} ms, expected about 2 s`);
    assert.equal(r.stderr.match(/draining: 3 prompts left/g)?.length, 1, r.stderr);
    assert.match(r.stderr, /deadline of 2 s passed with 3 left/);
  });

  it("exits 0 quickly when ComfyUI is unreachable", async () => {
    const r = await drain(await refusedUrl(), 30);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.ms < 1500, `took ${r.ms} ms`);
    assert.match(r.stderr, /did not answer GET \/prompt: nothing to drain/);
  });
});

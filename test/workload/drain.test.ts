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

  // What is checked is the hook's behaviour as the ComfyUI stand-in saw it (which polls, what each was
  // answered, and when the process ended relative to them), not wall time from spawn: a Python start on
  // a busy machine takes anywhere from 0.1 to several seconds and says nothing about the hook.
  const polls = (c: ComfyStandIn) => c.requests.filter((q) => q.url === "/prompt");

  it("exits at once when the queue is empty: one poll, no interval slept", async () => {
    const comfy = await comfyWithQueue(0);
    const r = await drain(comfy.url, 30, 5);
    const end = Date.now();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /nothing to drain/);
    assert.deepEqual(polls(comfy).map((q) => q.queue), [0]);
    assert.ok(end - polls(comfy)[0].at < 5000, "it did not wait a 5 s interval after the empty answer");
  });

  it("waits while prompts are queued and exits on the first poll that sees the queue empty", async () => {
    const comfy = await comfyWithQueue(2);
    const run = drain(comfy.url, 60, 0.1);
    // The queue empties once the hook has seen it non-empty three times (whenever its Python got going).
    let emptied = false;
    const watch = setInterval(() => {
      if (!emptied && polls(comfy).length >= 3) {
        comfy.setQueue(0);
        emptied = true;
      }
    }, 5);
    timers.push(watch);
    const r = await run;
    clearInterval(watch);
    assert.equal(r.code, 0, r.stderr);
    const seen = polls(comfy).map((q) => q.queue);
    assert.ok(emptied, "it was still waiting when the queue emptied");
    assert.ok(seen.length >= 4 && seen.slice(0, -1).every((n) => n === 2), `waited through the non-empty polls: ${seen}`);
    assert.equal(seen[seen.length - 1], 0, "the last poll saw the empty queue, and it exited on that one");
    // One line per change, not per poll.
    assert.equal(r.stderr.match(/draining: 2 prompts left/g)?.length, 1, r.stderr);
    assert.match(r.stderr, /drained/);
    assert.ok(!/deadline/.test(r.stderr));
  });

  it("stops waiting at the deadline and says so", async () => {
    const comfy = await comfyWithQueue(3);
    const r = await drain(comfy.url, 2, 0.2);
    assert.equal(r.code, 0, r.stderr);
    // The deadline runs from the hook's own start, which is after the spawn: never sooner than 2 s.
    assert.ok(r.ms >= 2000, `exited after ${r.ms} ms, before its 2 s deadline`);
    assert.ok(polls(comfy).length <= 2 / 0.2 + 1, `no polling past the deadline: ${polls(comfy).length} polls`);
    assert.ok(polls(comfy).every((q) => q.queue === 3));
    assert.equal(r.stderr.match(/draining: 3 prompts left/g)?.length, 1, r.stderr);
    assert.match(r.stderr, /deadline of 2 s passed with 3 left/);
  });

  it("exits 0 when ComfyUI is unreachable instead of waiting for its deadline", async () => {
    const r = await drain(await refusedUrl(), 60);
    assert.equal(r.code, 0, r.stderr);
    // Waiting would take the whole 60 s deadline (past this test's 20 s limit).
    assert.match(r.stderr, /did not answer GET \/prompt: nothing to drain/);
    assert.ok(!/deadline/.test(r.stderr));
  });
});

/**
 * The model agent against a real S3 API (s3rver on loopback, behind a proxy that can slow, refuse,
 * corrupt or fail answers): ensure, verification, single flight, the LRU with pins and holds, the
 * errors a prompt can fail with, path refusals, bucket changes (apply), and a restart.
 */
import { strict as assert } from "node:assert";
import { randomBytes, createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { AGENT_PATHS, AGENT_PRIVATE_DIR, parseChangeLines } from "../../contracts/modelsAgent";
import { RunningAgent, startAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import {
  S3Proxy,
  TOKEN,
  call,
  deleteObject,
  ensure,
  listFiles,
  makeTempDir,
  multipartEtag,
  putObject,
  removeDir,
  s3Client,
  startS3,
  startS3Proxy,
  until,
  watchForPartialFiles,
} from "./helpers";

const BUCKET = "models";
const MB = 1_000_000;

describe("model agent (s3rver)", function () {
  let scratch: string;
  let s3: Awaited<ReturnType<typeof startS3>>;
  let proxy: S3Proxy;
  let client: ReturnType<typeof s3Client>;
  const agents: RunningAgent[] = [];
  const objects = new Map<string, Buffer>();

  const put = async (key: string, bytes: number): Promise<Buffer> => {
    const body = randomBytes(bytes);
    await putObject(client, BUCKET, key, body);
    objects.set(key, body);
    return body;
  };

  /** An agent over the proxy with its own models folder; stopped after each test. */
  const agent = async (
    opts: { cacheMb?: number; rangeMb?: number; connections?: number; pins?: string[]; dir?: string; socket?: boolean; health?: boolean; log?: (msg: string, fields?: Record<string, unknown>) => void } = {},
  ) => {
    const dir = opts.dir ?? join(scratch, `node-${agents.length}-${Date.now()}`);
    const args = ["--models-dir", dir, "--bucket", BUCKET, "--endpoint", proxy.endpoint, "--cache-gb", String((opts.cacheMb ?? 1000) / 1000), "--port", "0", "--token", TOKEN];
    args.push("--range-mb", String(opts.rangeMb ?? 1), "--connections", String(opts.connections ?? 8));
    for (const p of opts.pins ?? []) args.push("--pin", p);
    if (opts.socket) args.push("--socket", "auto");
    if (opts.health) args.push("--health-port", "0");
    const a = await startAgent(parseAgentArgs(args, { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" }), opts.log ?? (() => undefined));
    agents.push(a);
    return { ...a, dir };
  };

  before(async () => {
    scratch = makeTempDir("models-agent-");
    // The SDK's default credential chain reads these in the agent (as Pod Identity's would in EKS).
    process.env.AWS_ACCESS_KEY_ID ??= "S3RVER";
    process.env.AWS_SECRET_ACCESS_KEY ??= "S3RVER";
    s3 = await startS3(join(scratch, "s3rver"), BUCKET);
    client = s3Client(s3.endpoint);
    proxy = await startS3Proxy(s3.endpoint, BUCKET);
    await put("checkpoints/a.safetensors", 1 * MB);
    await put("checkpoints/b.safetensors", 1 * MB);
    await put("checkpoints/c.safetensors", 1 * MB);
    await put("loras/d.safetensors", 1 * MB);
    await put("loras/e.safetensors", 1 * MB);
    await put("vae/big.safetensors", 5 * MB);
  });

  afterEach(async () => {
    proxy.bytesPerSecond = 0;
    proxy.denied.clear();
    proxy.corrupt.clear();
    proxy.fail500.clear();
    proxy.multipart.clear();
    proxy.replaceOnGet.clear();
    proxy.releaseHeld();
    proxy.requests.length = 0;
    for (const a of agents.splice(0)) await a.stop();
  });

  after(async () => {
    client.destroy();
    await proxy?.close();
    await s3?.close();
    removeDir(scratch);
  });

  it("fetches by ranged GETs into staging and renames: the model folder never shows a partial file", async () => {
    const body = await put("checkpoints/streamed.safetensors", 6 * MB);
    const a = await agent({ rangeMb: 1, connections: 3 });
    // Slow enough that the watcher sees the download in progress many times.
    proxy.bytesPerSecond = 2 * MB;
    const staging = join(a.dir, AGENT_PRIVATE_DIR, "staging");
    const watcher = watchForPartialFiles(join(a.dir, "checkpoints"), new Map([["streamed.safetensors", body]]));
    let sawStaging = false;
    const started = proxy.bodyStarted("checkpoints/streamed.safetensors");
    const res = ensure(a.url, ["checkpoints/streamed.safetensors"]);
    await started;
    await until(() => {
      sawStaging = readdirSync(staging).some((f) => f.endsWith(".part"));
      return sawStaging;
    }, "a staging file while the body streams");
    // Mid-download: in staging, not in the model folder.
    assert.ok(!existsSync(join(a.dir, "checkpoints", "streamed.safetensors")), "no file in the model folder while it downloads");
    const inv = await call(a.url, "GET", AGENT_PATHS.inventory);
    assert.equal(inv.body.fetching.length, 1);
    assert.equal(inv.body.fetching[0].path, "checkpoints/streamed.safetensors");
    const r = await res;
    const seen = await watcher.stop();
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.files[0].status, "fetched");
    assert.deepEqual(seen.problems, []);
    assert.ok(seen.polls > 10, `the watcher polled ${seen.polls} times`);
    assert.ok(readFileSync(join(a.dir, "checkpoints", "streamed.safetensors")).equals(body));
    assert.deepEqual(readdirSync(staging), [], "staging is empty afterwards");
    // Six 1 MiB ranges (6 MB = 5.72 MiB), each pinned to the version the HEAD saw.
    const gets = proxy.requests.filter((q) => q.method === "GET" && q.key === "checkpoints/streamed.safetensors");
    assert.equal(gets.length, 6);
    assert.ok(gets.every((g) => /^bytes=\d+-\d+$/.test(g.range ?? "")), "every GET is ranged");
    const again = await ensure(a.url, ["checkpoints/streamed.safetensors"]);
    assert.equal(again.body.files[0].status, "present");
    const inv2 = await call(a.url, "GET", AGENT_PATHS.inventory);
    const f = inv2.body.files.find((x: any) => x.path === "checkpoints/streamed.safetensors");
    assert.equal(f.verified, "md5");
    assert.equal(f.etag, createHash("md5").update(body).digest("hex"));
    assert.deepEqual([inv2.body.metrics.hits, inv2.body.metrics.misses, inv2.body.metrics.fetchesCompleted], [1, 1, 1]);
  });

  it("verifies: bytes that do not match the ETag fail verify_failed and leave nothing behind", async () => {
    const a = await agent();
    proxy.corrupt.add("checkpoints/a.safetensors");
    const r = await ensure(a.url, ["checkpoints/a.safetensors"]);
    assert.equal(r.status, 502);
    assert.equal(r.body.error.code, "verify_failed");
    assert.match(r.body.error.message, /checkpoints\/a\.safetensors: the downloaded bytes hash to [0-9a-f]{32}, the object's ETag is/);
    assert.equal(r.body.files[0].status, "failed");
    assert.deepEqual(listFiles(join(a.dir, "checkpoints")), []);
    assert.deepEqual(readdirSync(join(a.dir, AGENT_PRIVATE_DIR, "staging")), []);
    // The next try (the corruption was one flipped byte per GET: now none) succeeds.
    proxy.corrupt.clear();
    assert.equal((await ensure(a.url, ["checkpoints/a.safetensors"])).status, 200);
  });

  it("verifies a multipart upload by recomputing its part ETag", async () => {
    const body = await put("checkpoints/multi.safetensors", 3 * MB + 123);
    const partBytes = 1024 * 1024;
    proxy.multipart.set("checkpoints/multi.safetensors", { ...multipartEtag(body, partBytes), partBytes });
    const a = await agent({ rangeMb: 1 });
    const r = await ensure(a.url, ["checkpoints/multi.safetensors"]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const inv = await call(a.url, "GET", AGENT_PATHS.inventory);
    assert.equal(inv.body.files.find((x: any) => x.path === "checkpoints/multi.safetensors").verified, "multipart-md5");
    // And a wrong part layout is caught, not trusted.
    proxy.multipart.set("checkpoints/multi.safetensors", { ...multipartEtag(randomBytes(body.length), partBytes), partBytes });
    const b = await agent({ rangeMb: 1 });
    const bad = await ensure(b.url, ["checkpoints/multi.safetensors"]);
    assert.equal(bad.body.error?.code, "verify_failed");
  });

  it("concurrent ensures of one file fetch it once; a transient 500 on a range is retried", async () => {
    const a = await agent({ rangeMb: 1 });
    proxy.fail500.set("checkpoints/b.safetensors", 1);
    const results = await Promise.all(Array.from({ length: 6 }, () => ensure(a.url, ["checkpoints/b.safetensors"])));
    for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
    const heads = proxy.requests.filter((q) => q.method === "HEAD" && q.key === "checkpoints/b.safetensors");
    const gets = proxy.requests.filter((q) => q.method === "GET" && q.key === "checkpoints/b.safetensors");
    assert.equal(heads.length, 1, "one HEAD");
    // 1 MB in 1 MiB ranges: one range, plus the one retry after the 500.
    assert.deepEqual(
      gets.map((g) => g.status),
      [500, 206],
    );
    const inv = await call(a.url, "GET", AGENT_PATHS.inventory);
    assert.equal(inv.body.metrics.fetches, 1);
  });

  it("an object replaced during its download (412 on If-Match) is fetched again from the new version", async () => {
    const old = await put("loras/replaced.safetensors", 1 * MB);
    const a = await agent({ rangeMb: 1 });
    let replacement: Buffer = Buffer.alloc(0);
    proxy.replaceOnGet.set("loras/replaced.safetensors", async (key) => {
      replacement = await put(key, 1500_000);
    });
    const r = await ensure(a.url, ["loras/replaced.safetensors"]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(readFileSync(join(a.dir, "loras/replaced.safetensors")).equals(replacement), "the new version, whole");
    const reqs = proxy.requests.filter((q) => q.key === "loras/replaced.safetensors");
    assert.deepEqual(
      reqs.slice(0, 3).map((q) => `${q.method} ${q.status}`),
      ["HEAD 200", "GET 412", "HEAD 200"],
    );
    // Every GET names the ETag its HEAD saw: the old one first, then the new one.
    const md5 = (b: Buffer) => `"${createHash("md5").update(b).digest("hex")}"`;
    assert.equal(reqs[1].ifMatch, md5(old));
    assert.ok(reqs.slice(3).every((q) => q.method !== "GET" || q.ifMatch === md5(replacement)));
    const inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.equal(inv.files[0].etag, md5(replacement).replace(/"/g, ""));
    assert.equal(inv.metrics.fetches, 1);
  });

  it("LRU: evicts the least recently used file that is neither pinned nor held; never a pinned or held one", async () => {
    // Room for three 1 MB files.
    const a = await agent({ cacheMb: 3.5, pins: ["checkpoints/a.safetensors"] });
    await until(async () => (await call(a.url, "GET", AGENT_PATHS.inventory)).body.files.length === 1, "the pinned file fetched at start");
    assert.equal((await ensure(a.url, ["checkpoints/b.safetensors"], { hold: { id: "prompt-1", ttlSeconds: 600 } })).status, 200);
    assert.equal((await ensure(a.url, ["checkpoints/c.safetensors"])).status, 200);
    // Full: a (pinned), b (held), c (free). d needs room: only c may go.
    const d = await ensure(a.url, ["loras/d.safetensors"]);
    assert.equal(d.status, 200, JSON.stringify(d.body));
    let inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.deepEqual(inv.files.map((f: any) => f.path).sort(), ["checkpoints/a.safetensors", "checkpoints/b.safetensors", "loras/d.safetensors"]);
    assert.equal(inv.metrics.evictions, 1);
    assert.ok(inv.files.find((f: any) => f.path === "checkpoints/a.safetensors").pinned);
    assert.ok(inv.files.find((f: any) => f.path === "checkpoints/b.safetensors").held);
    // A prompt holding d: now a, b and d are all needed, so e cannot come in, and says why.
    await call(a.url, "PUT", `${AGENT_PATHS.holds}/prompt-2`, { files: ["loras/d.safetensors"], ttlSeconds: 600 });
    const e = await ensure(a.url, ["loras/e.safetensors"]);
    assert.equal(e.status, 507);
    assert.equal(e.body.error.code, "no_space");
    assert.equal(e.body.error.retryable, true);
    assert.match(e.body.error.message, /loras\/e\.safetensors \(1\.0 MB\) does not fit: 1\.0 MB pinned, 2\.0 MB held by running or buffered prompts/);
    inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.equal(inv.files.length, 3, "nothing pinned or held was evicted");
    // The prompt holding b ends: b is the one to go.
    assert.equal((await call(a.url, "DELETE", `${AGENT_PATHS.holds}/prompt-1`)).status, 200);
    assert.equal((await ensure(a.url, ["loras/e.safetensors"])).status, 200);
    inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.deepEqual(inv.files.map((f: any) => f.path).sort(), ["checkpoints/a.safetensors", "loras/d.safetensors", "loras/e.safetensors"]);
    // Least recently used first: touch d, release its hold; then b comes back in place of e, not d.
    await call(a.url, "DELETE", `${AGENT_PATHS.holds}/prompt-2`);
    await ensure(a.url, ["loras/d.safetensors"]);
    assert.equal((await ensure(a.url, ["checkpoints/b.safetensors"])).status, 200);
    inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.deepEqual(inv.files.map((f: any) => f.path).sort(), ["checkpoints/a.safetensors", "checkpoints/b.safetensors", "loras/d.safetensors"]);
    // The files of one request never evict each other: a hold on all three of a request's files, one of them new.
    const both = await ensure(a.url, ["loras/d.safetensors", "checkpoints/b.safetensors", "checkpoints/c.safetensors"], { hold: { id: "p3", ttlSeconds: 60 } });
    assert.equal(both.status, 507, "three 1 MB files plus the pinned one do not fit 3.5 MB");
    assert.deepEqual(
      both.body.files.map((f: any) => f.status),
      ["present", "present", "failed"],
    );
  });

  describe("a prompt's files before pinned ones", () => {
    const PINS = ["controlnet/pin-a.safetensors", "controlnet/pin-b.safetensors", "controlnet/pin-c.safetensors"];
    const X = "checkpoints/x.safetensors";
    const inventory = async (url: string) => (await call(url, "GET", AGENT_PATHS.inventory)).body;
    const priorityOf = async (url: string, path: string) => (await inventory(url)).fetching.find((f: any) => f.path === path)?.priority;

    before(async () => {
      // Four 1 MiB ranges each (4 MB = 3.8 MiB); x has two.
      for (const k of PINS) await put(k, 4 * MB);
      await put(X, 2 * MB);
    });

    /**
     * Both of the agent's two connections parked at the proxy on ranges of the pinned files: at that point
     * at most two of the eight ranges of pin-a and pin-b have been granted, so neither can be complete
     * before the ranges that follow. What comes next is decided by the agent alone, not by timing.
     */
    const pinsStarted = async () => {
      const fetched: string[] = [];
      const seenAt = new Map<string, number>();
      for (const k of PINS) proxy.hold.add(k);
      const a = await agent({
        rangeMb: 1,
        connections: 2,
        pins: PINS,
        log: (msg, f) => {
          if (msg !== "fetched") return;
          fetched.push(String(f?.path));
          seenAt.set(String(f?.path), proxy.requests.length);
        },
      });
      await until(() => proxy.held.length === 2, "both connections on pinned ranges");
      assert.ok(proxy.held.every((q) => PINS.includes(q.key)));
      return { a, fetched, seenAt };
    };

    it("an ensure's ranges take the next free connections and it completes before the pinned files being fetched", async () => {
      const { a, fetched, seenAt } = await pinsStarted();
      const x = ensure(a.url, [X], { hold: { id: "prompt-1", ttlSeconds: 60 } });
      await until(async () => (await priorityOf(a.url, X)) === "prompt", "x fetching as a prompt's");
      assert.equal(await priorityOf(a.url, "controlnet/pin-a.safetensors"), "background");
      proxy.releaseHeld();
      const r = await x;
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.files[0].status, "fetched");
      // The GETs after the two parked ranges are x's two: the parked ranges finished (nothing is cut), then x
      // had the connections to itself.
      const gets = proxy.requests.filter((q) => q.method === "GET");
      assert.deepEqual(
        gets.slice(2, 4).map((g) => g.key),
        [X, X],
      );
      await until(() => fetched.length === 4, "the pinned files fetched after x");
      assert.equal(fetched[0], X, `completion order: ${fetched.join(", ")}`);
      assert.deepEqual(fetched.slice(1).sort(), PINS);
      // pin-c had not even started (no HEAD) when x was in.
      assert.ok(!proxy.requests.slice(0, seenAt.get(X)).some((q) => q.key === "controlnet/pin-c.safetensors"));
      const inv = await inventory(a.url);
      assert.ok(inv.files.find((f: any) => f.path === X).held, "held for its prompt");
    });

    it("a pinned file a prompt asks for while it downloads becomes the prompt's download and finishes first", async () => {
      const fetched: string[] = [];
      for (const k of PINS) proxy.hold.add(k);
      const a = await agent({ rangeMb: 1, connections: 1, pins: PINS, log: (msg, f) => msg === "fetched" && fetched.push(String(f?.path)) });
      // One connection, parked on the first range of whichever pinned file asked first: that file's other
      // ranges queued at once, before any of the second file's (each download asks for all its ranges together).
      await until(() => proxy.held.length === 1, "the connection on a pinned range");
      const first = proxy.held[0].key;
      const second = PINS.slice(0, 2).find((k) => k !== first)!;
      await until(async () => (await priorityOf(a.url, second)) === "background", "the second pinned file downloading too");
      const b = ensure(a.url, [second], { hold: { id: "prompt-2", ttlSeconds: 60 } });
      await until(async () => (await priorityOf(a.url, second)) === "prompt", "the second pinned file now the prompt's");
      proxy.releaseHeld();
      const r = await b;
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await until(() => fetched.length === 3, "every pinned file");
      assert.equal(fetched[0], second, `completion order: ${fetched.join(", ")}`);
      // One download of it, shared by the pin and the prompt.
      assert.equal(proxy.requests.filter((q) => q.method === "HEAD" && q.key === second).length, 1);
    });

    it("a pinned file not yet started waits while a prompt's fetch runs (here a wait:false ensure, as the gateway's prefetch sends)", async () => {
      let xAt = -1;
      const a = await agent({ rangeMb: 1, connections: 2, log: (msg, f) => msg === "fetched" && f?.path === X && (xAt = proxy.requests.length) });
      proxy.hold.add(X);
      const x = await ensure(a.url, [X], { hold: { id: "prefetch-1", ttlSeconds: 60 }, wait: false });
      assert.equal(x.status, 202, JSON.stringify(x.body));
      assert.deepEqual(x.body.files, [{ path: X, status: "fetching" }]);
      await until(() => proxy.held.length === 2, "x's two ranges on both connections");
      const pinned = await call(a.url, "PUT", AGENT_PATHS.pins, { entries: ["controlnet/pin-a.safetensors"] });
      assert.equal(pinned.status, 202, JSON.stringify(pinned.body));
      proxy.releaseHeld();
      await until(async () => (await inventory(a.url)).files.length === 2, "x, then the pinned file");
      assert.ok(xAt > 0);
      assert.ok(!proxy.requests.slice(0, xAt).some((q) => q.key === "controlnet/pin-a.safetensors"), "no request for the pinned file before x was in");
      assert.deepEqual((await inventory(a.url)).holds.map((h: any) => h.id), ["prefetch-1"]);
    });
  });

  it("a file larger than the whole cache fails at once with that reason (no download)", async () => {
    const a = await agent({ cacheMb: 3.5 });
    const r = await ensure(a.url, ["vae/big.safetensors"]);
    assert.equal(r.status, 507);
    assert.equal(r.body.error.code, "too_large_for_cache");
    assert.equal(r.body.error.retryable, false);
    assert.match(r.body.error.message, /^vae\/big\.safetensors \(5\.0 MB\) is larger than this node's whole model cache \(3\.5 MB/);
    assert.equal(proxy.requests.filter((q) => q.method === "GET").length, 0);
  });

  it("a missing object and a denied one fail with distinct codes", async () => {
    const a = await agent();
    const missing = await ensure(a.url, ["checkpoints/nope.safetensors"]);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, "object_missing");
    assert.match(missing.body.error.message, /checkpoints\/nope\.safetensors: not in the models bucket models/);
    proxy.denied.add("checkpoints/c.safetensors");
    const denied = await ensure(a.url, ["checkpoints/c.safetensors"]);
    assert.equal(denied.status, 403);
    assert.equal(denied.body.error.code, "object_denied");
    assert.match(denied.body.error.message, /checkpoints\/c\.safetensors: S3 denied the read/);
    const inv = (await call(a.url, "GET", AGENT_PATHS.inventory)).body;
    assert.equal(inv.metrics.fetchesFailed, 2);
  });

  it("refuses paths outside the model folders (400) and callers without the token (401)", async () => {
    const a = await agent();
    for (const bad of ["../etc/passwd", "/etc/passwd", "checkpoints/../../x", "notafolder/x.safetensors", "checkpoints/", "checkpoints//x", "x.safetensors", "checkpoints/a;rm -rf"]) {
      const r = await ensure(a.url, ["checkpoints/a.safetensors", bad]);
      assert.equal(r.status, 400, bad);
      assert.equal(r.body.error.code, "path_refused", bad);
      assert.equal(r.body.error.path, bad);
      const h = await call(a.url, "PUT", `${AGENT_PATHS.holds}/x`, { files: [bad], ttlSeconds: 5 });
      assert.equal(h.body.error.code, "path_refused", `hold ${bad}`);
      const ap = await call(a.url, "POST", AGENT_PATHS.apply, { changes: [{ action: "delete", key: bad }] });
      assert.equal(ap.body.error.code, "path_refused", `apply ${bad}`);
    }
    assert.equal((await call(a.url, "PUT", AGENT_PATHS.pins, { entries: ["clip"] })).body.error.code, "path_refused", "a bare prefix is not a folder");
    // Nothing was fetched for a refused request, not even its valid paths.
    assert.equal(proxy.requests.length, 0);
    assert.equal((await call(a.url, "GET", AGENT_PATHS.inventory, undefined, { token: null })).status, 401);
    assert.equal((await call(a.url, "GET", AGENT_PATHS.inventory, undefined, { token: "wrong-token-wrong-token-x" })).body.error.code, "unauthorized");
    assert.equal((await call(a.url, "GET", AGENT_PATHS.health, undefined, { token: null })).status, 200);
  });

  it("the probes' port answers /healthz and nothing else, without a token", async () => {
    const a = await agent({ health: true });
    assert.ok(a.healthUrl);
    assert.deepEqual(await call(a.healthUrl!, "GET", AGENT_PATHS.health, undefined, { token: null }), { status: 200, body: { ok: true } });
    for (const p of [AGENT_PATHS.inventory, AGENT_PATHS.metrics]) {
      assert.equal((await call(a.healthUrl!, "GET", p)).status, 404, `${p} is not served on the probes' port, token or not`);
    }
    assert.equal((await call(a.healthUrl!, "POST", AGENT_PATHS.ensure, { files: ["checkpoints/a.safetensors"] })).status, 404);
  });

  it("applies bucket changes: replace and delete reach the file held; a new object only if pinned", async () => {
    await put("loras/x.safetensors", 200_000);
    await put("loras/y.safetensors", 200_000);
    const a = await agent({ socket: true, pins: ["loras/"] });
    await until(async () => (await call(a.url, "GET", AGENT_PATHS.inventory)).body.files.length >= 4, "the pinned folder fetched");
    await ensure(a.url, ["checkpoints/c.safetensors"]);
    // Replace x, delete y, upload a new pinned lora and a new unpinned checkpoint; a stale delete for c.
    const x2 = await put("loras/x.safetensors", 300_000);
    await deleteObject(client, BUCKET, "loras/y.safetensors");
    const z = await put("loras/z.safetensors", 100_000);
    await put("checkpoints/new.safetensors", 100_000);
    const lines = "put\tloras/x.safetensors\ndelete\tloras/y.safetensors\nput\tloras/z.safetensors\nput\tcheckpoints/new.safetensors\ndelete\tcheckpoints/c.safetensors\n";
    assert.equal(parseChangeLines(lines).length, 5);
    // Through the Unix socket, as the node's SSM command does (no token there).
    const res = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const req = httpRequest(
        { socketPath: a.socketPath, path: AGENT_PATHS.apply, method: "POST", headers: { "content-type": "text/plain" } },
        (r) => {
          let t = "";
          r.setEncoding("utf8").on("data", (d: string) => (t += d));
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body: JSON.parse(t) }));
        },
      );
      req.on("error", reject);
      req.end(lines);
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const outcome = Object.fromEntries(res.body.results.map((r: any) => [r.key, r.outcome]));
    assert.deepEqual(outcome, {
      "loras/x.safetensors": "replaced",
      "loras/y.safetensors": "removed",
      "loras/z.safetensors": "fetched",
      "checkpoints/new.safetensors": "not-cached",
      "checkpoints/c.safetensors": "unchanged",
    });
    assert.ok(readFileSync(join(a.dir, "loras/x.safetensors")).equals(x2));
    assert.ok(!existsSync(join(a.dir, "loras/y.safetensors")));
    assert.ok(readFileSync(join(a.dir, "loras/z.safetensors")).equals(z));
    assert.ok(!existsSync(join(a.dir, "checkpoints/new.safetensors")));
    // The same lines again: nothing to do (idempotent, as SQS may redeliver).
    const again = await call(a.url, "POST", AGENT_PATHS.apply, lines, { contentType: "text/plain" });
    assert.deepEqual(
      again.body.results.map((r: any) => r.outcome),
      ["unchanged", "absent", "unchanged", "not-cached", "unchanged"],
    );
    // A denied key fails the call (the SSM invocation then fails and the Lambda retries).
    proxy.denied.add("loras/x.safetensors");
    const denied = await call(a.url, "POST", AGENT_PATHS.apply, { changes: [{ action: "put", key: "loras/x.safetensors" }] });
    assert.equal(denied.status, 502);
    assert.equal(denied.body.results[0].code, "object_denied");
    assert.ok(existsSync(join(a.dir, "loras/x.safetensors")), "a denied read does not remove the file");
  });

  it("a restart keeps the inventory (rebuilt from disk), drops staging leftovers and adopts files found on disk", async () => {
    const dir = join(scratch, "restart-node");
    const first = await agent({ dir, pins: ["checkpoints/a.safetensors"] });
    await until(async () => (await call(first.url, "GET", AGENT_PATHS.inventory)).body.files.length === 1, "the pin fetched");
    await ensure(first.url, ["loras/d.safetensors"]);
    const before = (await call(first.url, "GET", AGENT_PATHS.inventory)).body;
    await first.stop();
    agents.splice(agents.indexOf(first), 1);
    // A crash leaves a partial download; an operator copies a file in by hand.
    writeFileSync(join(dir, AGENT_PRIVATE_DIR, "staging", "dead.part"), "partial");
    mkdirSync(join(dir, "vae"), { recursive: true });
    writeFileSync(join(dir, "vae", "hand.safetensors"), "by hand");
    proxy.requests.length = 0;
    const second = await agent({ dir });
    const after = (await call(second.url, "GET", AGENT_PATHS.inventory)).body;
    const byPath = (inv: any) => Object.fromEntries(inv.files.map((f: any) => [f.path, f]));
    assert.deepEqual(byPath(after)["checkpoints/a.safetensors"], byPath(before)["checkpoints/a.safetensors"]);
    assert.deepEqual(byPath(after)["loras/d.safetensors"], byPath(before)["loras/d.safetensors"]);
    assert.deepEqual(after.pins, ["checkpoints/a.safetensors"], "pins survive the restart");
    assert.equal(byPath(after)["vae/hand.safetensors"].verified, "none");
    assert.deepEqual(readdirSync(join(dir, AGENT_PRIVATE_DIR, "staging")), []);
    assert.equal((await ensure(second.url, ["loras/d.safetensors"])).body.files[0].status, "present");
    assert.equal(proxy.requests.filter((q) => q.method === "GET").length, 0, "nothing fetched again");
  });

  it("serves its counters on /metrics", async () => {
    const a = await agent();
    await ensure(a.url, ["checkpoints/a.safetensors"]);
    await ensure(a.url, ["checkpoints/a.safetensors"]);
    const m = await call(a.url, "GET", AGENT_PATHS.metrics);
    assert.equal(m.status, 200);
    assert.match(m.body, /^comfyui_models_agent_fetches_total 1$/m);
    assert.match(m.body, /^comfyui_models_agent_fetched_bytes_total 1000000$/m);
    assert.match(m.body, /^comfyui_models_agent_hits_total 1$/m);
    assert.match(m.body, /^comfyui_models_agent_evictions_total 0$/m);
  });
});

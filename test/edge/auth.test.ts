/**
 * The CloudFront Function that guards the site, executed for real: the file that is deployed is
 * loaded into a VM with stand-ins for CloudFront's `cloudfront` KeyValueStore module and `crypto`.
 */
import { strict as assert } from "node:assert";
import * as crypto from "node:crypto";
import * as vm from "node:vm";
import { authFunctionCode, credentialRecords } from "../../edge";

type Handler = (event: unknown) => Promise<any>;

interface Loaded {
  handler: Handler;
  logs: string[];
  /** Calls of String.prototype.charCodeAt inside the function's VM since the last reset. */
  charReads: () => number;
  resetCharReads: () => void;
}

function loadFull(store: Record<string, string>): Loaded {
  const code = authFunctionCode("kvs-id")
    .replace(/^import cf from 'cloudfront';$/m, "")
    .replace(/^import crypto from 'crypto';$/m, "");
  const kvsIds: string[] = [];
  // Like CloudFront's KeyValueStore helper: get() rejects for a key the store does not (yet) hold.
  const cf = { kvs: (id: string) => (kvsIds.push(id), { get: async (k: string) => { if (!(k in store)) throw new Error("key not found"); return store[k]; } }) };
  const logs: string[] = [];
  const ctx = vm.createContext({ cf, crypto, Date, console: { log: (m: unknown) => logs.push(String(m)) } });
  // Counts character reads inside the function's realm, to tell a full comparison from `===`.
  vm.runInContext(
    "var __reads = 0; var __cca = String.prototype.charCodeAt;" +
      "String.prototype.charCodeAt = function (i) { __reads++; return __cca.call(this, i); };",
    ctx,
  );
  vm.runInContext(code + "\nthis.handler = handler;", ctx);
  assert.deepEqual(kvsIds, ["kvs-id"]);
  const c = ctx as unknown as { handler: Handler; __reads: number };
  return { handler: c.handler, logs, charReads: () => c.__reads, resetCharReads: () => { c.__reads = 0; } };
}

function load(store: Record<string, string>): Handler {
  return loadFull(store).handler;
}

const request = (headers: Record<string, string> = {}, cookies: Record<string, string> = {}) => ({
  method: "GET",
  uri: "/",
  headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, { value: v }])),
  cookies: Object.fromEntries(Object.entries(cookies).map(([k, v]) => [k, { value: v }])),
});
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`;

describe("edge access control (CloudFront Function)", () => {
  const rec = credentialRecords("studio", "correct horse battery staple");
  const handler = load({ "basic-sha256": rec.basicSha256, "session-key": rec.sessionKey });
  const viewerRequest = (req: unknown) => handler({ context: { eventType: "viewer-request" }, request: req });

  it("answers 401 with a Basic challenge and no-store when no credentials come", async () => {
    const r = await viewerRequest(request());
    assert.equal(r.statusCode, 401);
    assert.match(r.headers["www-authenticate"].value, /^Basic realm="ComfyUI"/);
    assert.equal(r.headers["cache-control"].value, "no-store");
  });

  it("rejects a wrong password and a wrong user", async () => {
    assert.equal((await viewerRequest(request({ authorization: basic("studio", "wrong") }))).statusCode, 401);
    assert.equal((await viewerRequest(request({ authorization: basic("someone", "correct horse battery staple") }))).statusCode, 401);
  });

  it("passes the right credentials through and issues a signed HttpOnly session cookie", async () => {
    const req = request({ authorization: basic("studio", "correct horse battery staple") });
    const passed = await viewerRequest(req);
    assert.equal(passed, req);
    const res = await handler({ context: { eventType: "viewer-response" }, request: req, response: { statusCode: 200, headers: {}, cookies: {} } });
    const cookie = res.cookies.comfyui_session;
    assert.match(cookie.attributes, /Secure/);
    assert.match(cookie.attributes, /HttpOnly/);
    // The browser's next request (and its WebSocket handshake) carries only the cookie.
    const ws = request({ upgrade: "websocket" }, { comfyui_session: cookie.value });
    assert.equal(await viewerRequest(ws), ws);
  });

  it("rejects tampered and expired cookies", async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const good = `${exp}.${crypto.createHmac("sha256", rec.sessionKey).update(String(exp)).digest("hex")}`;
    assert.notEqual((await viewerRequest(request({}, { comfyui_session: good }))).statusCode, 401);
    const tampered = `${exp + 99999}.${good.split(".")[1]}`;
    assert.equal((await viewerRequest(request({}, { comfyui_session: tampered }))).statusCode, 401);
    const old = Math.floor(Date.now() / 1000) - 10;
    const expired = `${old}.${crypto.createHmac("sha256", rec.sessionKey).update(String(old)).digest("hex")}`;
    assert.equal((await viewerRequest(request({}, { comfyui_session: expired }))).statusCode, 401);
    const otherKey = credentialRecords("studio", "another password entirely").sessionKey;
    const foreign = `${exp}.${crypto.createHmac("sha256", otherKey).update(String(exp)).digest("hex")}`;
    assert.equal((await viewerRequest(request({}, { comfyui_session: foreign }))).statusCode, 401);
  });

  it("sets no cookie on responses to cookie-only requests", async () => {
    const res = await handler({ context: { eventType: "viewer-response" }, request: request(), response: { statusCode: 200, headers: {}, cookies: {} } });
    assert.deepEqual(res.cookies, {});
  });

  it("answers 401 (not an exception) while the store's keys have not reached the edge", async () => {
    const empty = loadFull({});
    const vr = (req: unknown) => empty.handler({ context: { eventType: "viewer-request" }, request: req });
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const cookie = `${exp}.${crypto.createHmac("sha256", rec.sessionKey).update(String(exp)).digest("hex")}`;
    for (const req of [request({ authorization: basic("studio", "correct horse battery staple") }), request({}, { comfyui_session: cookie })]) {
      const r = await vr(req);
      assert.equal(r.statusCode, 401);
      assert.equal(r.headers["cache-control"].value, "no-store");
    }
    // Only one of the two keys there: Basic still works, a cookie is refused, no throw either way.
    const half = load({ "basic-sha256": rec.basicSha256 });
    const req = request({ authorization: basic("studio", "correct horse battery staple") });
    assert.equal(await half({ context: { eventType: "viewer-request" }, request: req }), req);
    assert.equal((await half({ context: { eventType: "viewer-request" }, request: request({}, { comfyui_session: cookie }) })).statusCode, 401);
    // Without the session key the response goes out without a cookie instead of failing.
    const res = await half({ context: { eventType: "viewer-response" }, request: req, response: { statusCode: 200, headers: {}, cookies: {} } });
    assert.deepEqual(res.cookies, {});
    // The log names what was missing, never a secret value.
    assert.ok(empty.logs.some((l) => l.includes("session-key")));
    for (const l of empty.logs) assert.ok(!l.includes(rec.sessionKey) && !l.includes(rec.basicSha256), l);
  });

  it("refuses a session signature that differs in one character, wherever it differs", async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const sig = crypto.createHmac("sha256", rec.sessionKey).update(String(exp)).digest("hex");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "0" ? "1" : "0") + s.slice(i + 1);
    for (const i of [0, 1, 31, 62, 63]) {
      const forged = flip(sig, i);
      assert.equal(forged.length, sig.length);
      assert.equal((await viewerRequest(request({}, { comfyui_session: `${exp}.${forged}` }))).statusCode, 401, `position ${i}`);
    }
    assert.equal((await viewerRequest(request({}, { comfyui_session: `${exp}.${sig.toUpperCase()}` }))).statusCode, 401);
  });

  it("compares signatures and password hashes in constant time (every character is read, first mismatch or last)", async () => {
    const f = loadFull({ "basic-sha256": rec.basicSha256, "session-key": rec.sessionKey });
    const vr = (req: unknown) => f.handler({ context: { eventType: "viewer-request" }, request: req });
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const sig = crypto.createHmac("sha256", rec.sessionKey).update(String(exp)).digest("hex");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "0" ? "1" : "0") + s.slice(i + 1);
    const reads: number[] = [];
    for (const i of [0, 63]) {
      f.resetCharReads();
      assert.equal((await vr(request({}, { comfyui_session: `${exp}.${flip(sig, i)}` }))).statusCode, 401);
      reads.push(f.charReads());
    }
    // Both operands of all 64 hex characters are read whether the first or the last one differs.
    assert.ok(reads[0] >= 128, `only ${reads[0]} characters read: the comparison stops early`);
    assert.equal(reads[0], reads[1]);
    const wrong: number[] = [];
    for (const pw of ["a", "a much longer wrong password than the real one"]) {
      f.resetCharReads();
      assert.equal((await vr(request({ authorization: basic("studio", pw) }))).statusCode, 401);
      wrong.push(f.charReads());
    }
    assert.ok(wrong[0] >= 128, "the password hash is compared character by character");
    assert.equal(wrong[0], wrong[1]);
  });
});

/**
 * The CloudFront Function that guards the site, executed for real: the file that is deployed is
 * loaded into a VM with stand-ins for CloudFront's `cloudfront` KeyValueStore module and `crypto`.
 */
import { strict as assert } from "node:assert";
import * as crypto from "node:crypto";
import * as vm from "node:vm";
import { authFunctionCode, credentialRecords } from "../../edge";

type Handler = (event: unknown) => Promise<any>;

function load(store: Record<string, string>): Handler {
  const code = authFunctionCode("kvs-id")
    .replace(/^import cf from 'cloudfront';$/m, "")
    .replace(/^import crypto from 'crypto';$/m, "");
  const kvsIds: string[] = [];
  const cf = { kvs: (id: string) => (kvsIds.push(id), { get: async (k: string) => { if (!(k in store)) throw new Error("key not found"); return store[k]; } }) };
  const ctx = vm.createContext({ cf, crypto, Date });
  vm.runInContext(code + "\nthis.handler = handler;", ctx);
  assert.deepEqual(kvsIds, ["kvs-id"]);
  return (ctx as unknown as { handler: Handler }).handler;
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
});

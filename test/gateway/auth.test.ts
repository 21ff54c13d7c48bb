// Sign-in, API keys and the same-origin rule, at the HTTP level: a real OpenID Connect provider
// (oidc-provider) on loopback, the gateway in front of a stand-in, and a cookie-keeping client walking the
// redirects as a browser does. (The browser tests drive the real frontend in Chromium.)
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import * as http from "node:http";
import { promisify } from "node:util";
import WebSocket from "ws";
import { MemoryAuthStore } from "../../workload/gateway/auth/stores";
import { mintKey } from "../../workload/gateway/auth/keys";
import { run as keysCli } from "../../workload/gateway/keys";
import { DynamoStore, startEmbeddedStore } from "../../workload/gateway/store";
import { freePort } from "./cli";
import { get, startGateway, t2i, tmpDir, until } from "./helpers";
import { Browser, startIdp, type Idp } from "./oidcHarness";
import { startStandIn, type StandIn } from "./standin";

/* eslint-disable @typescript-eslint/no-require-imports */
const { ComfyApi, CallWrapper, PromptBuilder } = require("@saintno/comfyui-sdk");
const { Client } = require("@stable-canvas/comfyui-client");
/* eslint-enable @typescript-eslint/no-require-imports */

const json = (b: unknown) => ({ method: "POST", body: JSON.stringify(b), headers: { "content-type": "application/json" } });

describe("gateway sign-in, API keys and the same-origin rule", function () {
  this.timeout(60000);
  let idp: Idp;
  let pod: StandIn;
  let gw: Awaited<ReturnType<typeof startGateway>>;
  let base: string;
  const auth = new MemoryAuthStore();

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    idp = await startIdp([`${base}/auth/callback`], [`${base}/`]);
    idp.accounts.set("alice", { sub: "alice", name: "Alice", email: "alice@studio.example", groups: ["artist"] });
    idp.accounts.set("root", { sub: "root", name: "Root", email: "root@studio.example", groups: ["admin"] });
    pod = await startStandIn({ stepMs: 1 });
    // The client secret comes from the environment (a Kubernetes Secret), never a flag.
    gw = await startGateway([pod.url], ["--port", String(port), "--auth", "oidc", "--oidc-issuer", idp.issuer, "--oidc-client-id", idp.clientId, "--public-url", base], tmpDir(), { auth }, { GATEWAY_OIDC_CLIENT_SECRET: idp.clientSecret });
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
  });
  after(async () => {
    await gw?.close();
    await pod?.close();
    await idp?.close();
  });

  it("nothing is served without a credential: a page sends the browser to sign in, an API call gets 401", async () => {
    const page = await fetch(base + "/", { headers: { accept: "text/html" }, redirect: "manual" });
    assert.equal(page.status, 302);
    assert.equal(page.headers.get("location"), "/auth/login?return_to=%2F");
    for (const p of ["/queue", "/api/object_info", "/view?filename=x.png", "/api/gateway/me"]) assert.equal((await fetch(base + p)).status, 401, p);
    assert.equal((await fetch(base + "/prompt", json({ prompt: t2i(1) }))).status, 401);
    const ws = new WebSocket(base.replace("http", "ws") + "/ws?clientId=x");
    assert.equal(await new Promise((r) => ws.on("unexpected-response", (_q, res) => r(res.statusCode)).on("open", () => r(101))), 401);
    assert.equal((await fetch(base + "/healthz")).status, 200, "the ALB's health check stays open");
    // From another address of the network (as a ComfyUI pod's would be): no address is trusted.
    const fromPod = await new Promise<number>((resolve, reject) => {
      const u = new URL(base + "/queue");
      http.request(u, { localAddress: "127.0.0.2", agent: false }, (res) => (res.resume(), resolve(res.statusCode!))).on("error", reject).end();
    });
    assert.equal(fromPod, 401, "a request from a pod's address without a session or key");
  });

  it("an artist signs in through the authorization-code flow and works same-origin; another site cannot act for them", async () => {
    const b = new Browser();
    const landed = await b.signIn(base + "/queue", "alice");
    assert.equal(landed.status, 200, await landed.clone().text());
    assert.ok(b.cookies(base).has("__Host-comfyui-session"));
    const { session, ...me } = await (await b.fetch(base + "/api/gateway/me", { site: "same-origin" })).json();
    assert.deepEqual(me, { user: "alice", name: "Alice", admin: false, via: "session", scopes: ["submit", "read"] });
    assert.match(session, /^[0-9a-f]{64}$/, "the session's store id (a hash, not the cookie), for revoke-session");
    assert.ok(!Object.values(Object.fromEntries(b.cookies(base))).includes(session));
    const ok = await b.fetch(base + "/prompt", { ...json({ prompt: t2i(2), client_id: "alice-tab" }), site: "same-origin" });
    assert.equal(ok.status, 200, await ok.clone().text());
    // The same request made by a page of another site: the browser says so, and the cookie does not help.
    const forged = await b.fetch(base + "/prompt", { ...json({ prompt: t2i(3) }), site: "cross-site", headers: { "content-type": "application/json", origin: "http://evil.localhost" } });
    assert.equal(forged.status, 403);
    const oldBrowser = await b.fetch(base + "/queue", { method: "POST", body: JSON.stringify({ clear: true }), headers: { "content-type": "application/json", origin: "http://evil.localhost" } });
    assert.equal(oldBrowser.status, 403, "Origin of another host, without Sec-Fetch-Site");
    const bare = await b.fetch(base + "/history", { method: "POST", body: JSON.stringify({ clear: true }), headers: { "content-type": "application/json" } });
    assert.equal(bare.status, 403, "a cookie without Origin or Sec-Fetch-Site is not a browser's same-origin request");
    const form = await b.fetch(base + "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(4) }), headers: { "content-type": "text/plain" }, site: "same-origin" });
    assert.equal(form.status, 415, "cookie-authenticated JSON routes take application/json only");
    const sock = await new Promise<number>((r) => {
      const ws = new WebSocket(base.replace("http", "ws") + "/ws?clientId=alice-tab", { headers: { cookie: `__Host-comfyui-session=${b.cookies(base).get("__Host-comfyui-session")}`, origin: "http://evil.localhost" } });
      ws.on("unexpected-response", (_q, res) => r(res.statusCode!)).on("open", () => (ws.close(), r(101)));
    });
    assert.equal(sock, 403, "a WebSocket from another site is refused");
    const own = await new Promise<number>((r) => {
      const ws = new WebSocket(base.replace("http", "ws") + "/ws?clientId=alice-tab", { headers: { cookie: `__Host-comfyui-session=${b.cookies(base).get("__Host-comfyui-session")}`, origin: base } });
      ws.on("unexpected-response", (_q, res) => r(res.statusCode!)).on("open", () => (ws.close(), r(101)));
    });
    assert.equal(own, 101);
  });

  it("logout ends the session; a revoked user and a user disabled at the IdP lose access", async () => {
    const b = new Browser();
    await b.signIn(base + "/", "alice");
    const cookie = b.cookies(base).get("__Host-comfyui-session")!;
    const q = (c: string) => fetch(base + "/queue", { headers: { cookie: `__Host-comfyui-session=${c}` } });
    assert.equal((await q(cookie)).status, 200);
    assert.equal((await b.fetch(base + "/auth/logout", { method: "POST", site: "cross-site" })).status, 403, "no logout from another site");
    assert.equal((await b.fetch(base + "/auth/logout", { method: "POST", site: "same-origin" })).status, 200);
    assert.equal((await q(cookie)).status, 401, "the old cookie is refused");

    // One session, revoked by the id the artist sees at /api/gateway/me (npm run keys -- revoke-session).
    const c1 = new Browser();
    await c1.signIn(base + "/", "alice");
    const one = ((await (await c1.fetch(base + "/api/gateway/me", { site: "same-origin" })).json()) as { session: string }).session;
    const other = new Browser();
    await other.signIn(base + "/", "alice");
    await auth.deleteSession(one);
    assert.equal((await q(c1.cookies(base).get("__Host-comfyui-session")!)).status, 401, "that session ended");
    assert.equal((await q(other.cookies(base).get("__Host-comfyui-session")!)).status, 200, "the artist's other session goes on");

    const c2 = new Browser();
    await c2.signIn(base + "/", "alice");
    const cookie2 = c2.cookies(base).get("__Host-comfyui-session")!;
    await auth.revokeUser("alice", Date.now());
    assert.equal((await q(cookie2)).status, 401, "revoked per user");

    const c3 = new Browser();
    await c3.signIn(base + "/", "alice");
    const cookie3 = c3.cookies(base).get("__Host-comfyui-session")!;
    assert.equal((await q(cookie3)).status, 200);
    idp.accounts.get("alice")!.disabled = true;
    // The next refresh (due at once here) asks the IdP, which no longer knows the user.
    const s = await auth.getSession((await import("../../workload/gateway/auth/keys")).sha256(cookie3));
    await auth.updateSession(s!.id, { refreshAt: 0 });
    assert.equal((await q(cookie3)).status, 401, "disabled at the IdP: gone at the next refresh");
    idp.accounts.get("alice")!.disabled = false;
  });

  it("every artist sees only their own prompts, history, outputs, events and saved files; an admin sees everyone's", async () => {
    idp.accounts.set("bob", { sub: "bob", name: "Bob", email: "bob@studio.example", groups: ["artist"] });
    const [alice, bob, root] = [new Browser(), new Browser(), new Browser()];
    await alice.signIn(base + "/", "alice");
    await bob.signIn(base + "/", "bob");
    await root.signIn(base + "/", "root");
    const call = (b: Browser, p: string, init: RequestInit = {}) => b.fetch(base + p, { ...init, site: "same-origin" });
    const jsonOf = async (b: Browser, p: string) => (await call(b, p)).json() as Promise<any>;
    const socket = async (b: Browser, clientId: string) => {
      const got: any[] = [];
      const ws = new WebSocket(base.replace("http", "ws") + `/ws?clientId=${clientId}`, { headers: { cookie: `__Host-comfyui-session=${b.cookies(base).get("__Host-comfyui-session")}`, origin: base } });
      ws.on("message", (d, bin) => !bin && got.push(JSON.parse(d.toString())));
      await new Promise((r) => ws.once("open", r));
      return { ws, got };
    };
    // Both listen on the same client id: ids name sockets of their own user only.
    const [aSock, bSock] = [await socket(alice, "tab-1"), await socket(bob, "tab-1")];
    try {
      // Long enough (1,000 steps of the 1 ms stand-in each) that both are still open while the others look.
      const a = await (await call(alice, "/prompt", json({ prompt: t2i(11, undefined, 1000), client_id: "tab-1" }))).json() as { prompt_id: string };
      const waiting = await (await call(alice, "/prompt", json({ prompt: t2i(12, undefined, 1000), client_id: "tab-1" }))).json() as { prompt_id: string };
      await call(bob, "/prompt", json({ prompt: t2i(13), client_id: "tab-1" }));
      const ids = (q: any) => [...q.queue_running, ...q.queue_pending].map((i: unknown[]) => i[1]);
      const bobQueue = await jsonOf(bob, "/queue");
      const rootQueue = await jsonOf(root, "/queue");
      assert.ok(ids(rootQueue).includes(a.prompt_id) && ids(rootQueue).includes(waiting.prompt_id), "the admin's queue shows everyone's");
      assert.ok(!ids(bobQueue).includes(a.prompt_id) && !ids(bobQueue).includes(waiting.prompt_id), "bob's queue shows none of alice's prompts");
      assert.ok((await jsonOf(bob, "/prompt")).exec_info.queue_remaining >= 2, "but they count in the queue figure");
      // Bob's clear and delete reach only his own.
      assert.equal((await call(bob, "/queue", json({ clear: true }))).status, 200);
      assert.equal((await call(bob, "/queue", json({ delete: [waiting.prompt_id] }))).status, 200);
      assert.equal((await call(bob, "/interrupt", json({ prompt_id: a.prompt_id }))).status, 200);
      const done = await until(async () => (await jsonOf(alice, `/history/${a.prompt_id}`))[a.prompt_id], 30000, 100);
      assert.equal(done.status.status_str, "success", "bob's interrupt did not touch it");
      // Bob's clear and delete did not touch alice's waiting prompt: it ran.
      assert.equal((await until(async () => (await jsonOf(alice, `/history/${waiting.prompt_id}`))[waiting.prompt_id], 30000, 100)).status.status_str, "success");
      assert.deepEqual(await jsonOf(bob, `/history/${a.prompt_id}`), {}, "another's history entry is unknown");
      assert.ok(!(a.prompt_id in (await jsonOf(bob, "/history"))));
      assert.ok(a.prompt_id in (await jsonOf(root, "/history")) && a.prompt_id in (await jsonOf(alice, "/history?max_items=10")));
      const img = done.outputs["9"].images[0];
      const view = (bw: Browser) => call(bw, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=output`);
      assert.equal((await view(alice)).status, 200);
      assert.equal((await view(bob)).status, 404, "another's output is not there for him");
      assert.equal((await view(root)).status, 200, "the admin sees it");
      assert.ok(aSock.got.some((m) => m.data?.prompt_id === a.prompt_id), "alice's socket got her events");
      assert.ok(!bSock.got.some((m) => m.data?.prompt_id === a.prompt_id || m.data?.prompt_id === waiting.prompt_id), "bob's socket with the same client id got none of them");
      // Saved workflows and settings are per user.
      assert.equal((await call(alice, "/userdata/workflows%2Fsecret.json", { method: "POST", body: JSON.stringify({ nodes: [] }) })).status, 200);
      assert.equal((await call(alice, "/settings/Comfy.ColorPalette", { method: "POST", body: JSON.stringify("dark") })).status, 200);
      assert.equal((await call(bob, "/userdata/workflows%2Fsecret.json")).status, 404);
      assert.equal((await call(bob, "/userdata?dir=workflows")).status, 404);
      assert.deepEqual(await jsonOf(alice, "/userdata?dir=workflows"), ["secret.json"]);
      assert.equal((await jsonOf(bob, "/settings"))["Comfy.ColorPalette"], undefined);
      assert.equal((await jsonOf(alice, "/settings"))["Comfy.ColorPalette"], "dark");
      assert.equal((await call(alice, "/free", json({ unload_models: true }))).status, 403, "unloading every GPU's models is an admin's call");
    } finally {
      aSock.ws.close();
      bSock.ws.close();
    }
  });

  it("the audit trail: one line per state change, naming the user, the action, its target and where it came from", async () => {
    const b = new Browser();
    await b.signIn(base + "/", "alice");
    const id = ((await (await b.fetch(base + "/prompt", { ...json({ prompt: t2i(21) }), site: "same-origin" })).json()) as { prompt_id: string }).prompt_id;
    await b.fetch(base + "/settings/Comfy.Audit", { method: "POST", body: "1", site: "same-origin" });
    await b.fetch(base + "/userdata/workflows%2Faudited.json", { method: "POST", body: "{}", site: "same-origin" });
    await b.fetch(base + "/history", { ...json({ clear: true }), site: "cross-site" }); // refused: a line too
    const lines = async () => (await import("node:fs")).readFileSync(`${gw.dataDir}/audit.log`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    await until(async () => (await lines()).some((l) => l.action === "prompt finished" && l.target === id), 20000, 100).catch(async (e) => { console.log(JSON.stringify((await lines()).slice(-3)), JSON.stringify(await (await b.fetch(base + "/queue", { site: "same-origin" })).json()).slice(0, 300), JSON.stringify(await (await b.fetch(base + "/history/" + id, { site: "same-origin" })).json()).slice(0, 500)); throw e; });
    const all = await lines();
    const mine = all.filter((l) => l.user === "alice");
    assert.ok(mine.some((l) => l.action === "sign-in"), "sign-in");
    assert.ok(mine.some((l) => l.action === "POST /prompt" && l.target === id && l.status === 200 && /127\.0\.0\.1/.test(l.from)), "the prompt, with where it came from");
    assert.ok(mine.some((l) => l.action === "POST /settings/:id" && l.target === "Comfy.Audit"));
    assert.ok(mine.some((l) => l.action === "POST /userdata/:file" && l.target === "workflows/audited.json"));
    assert.ok(mine.some((l) => l.status === 403 && l.detail?.refused), "a refused cross-site request");
    const finished = mine.find((l) => l.action === "prompt finished" && l.target === id)!;
    assert.equal(finished.detail.outcome, "success");
    assert.ok(finished.detail.gpuSeconds >= 0, "GPU-seconds recorded with the owner");
    for (const l of all) assert.ok(typeof l.user === "string" && l.user && typeof l.time === "string", JSON.stringify(l));
  });

  it("API keys: a Bearer key works on HTTP and /ws, a one-time ticket opens /ws for a browser, a revoked key is refused at once", async () => {
    const { token, record } = mintKey({ owner: "pipeline-1", name: "render farm", scopes: ["submit", "read"], days: 30 });
    await auth.putKey(record);
    const h = { authorization: `Bearer ${token}` };
    assert.equal((await fetch(base + "/queue", { headers: h })).status, 200);
    // curl, as the README shows it (Debian's curl; .ci/run installs it).
    const curl = await promisify(execFile)("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", `Authorization: Bearer ${token}`, "-X", "POST", "-H", "content-type: application/json", "-d", JSON.stringify({ prompt: t2i(6), client_id: "curl-1" }), base + "/prompt"]);
    assert.equal(curl.stdout, "200", "curl with the key queues a prompt");
    const r = await fetch(base + "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(5) }), headers: { ...h } });
    assert.equal(r.status, 200, "a non-browser client with a key needs no Origin or Content-Type");
    const opened = await new Promise<number>((res) => {
      const ws = new WebSocket(base.replace("http", "ws") + "/ws?clientId=farm", { headers: h });
      ws.on("unexpected-response", (_q, x) => res(x.statusCode!)).on("open", () => (ws.close(), res(101)));
    });
    assert.equal(opened, 101);
    const { ticket } = await (await fetch(base + "/api/gateway/ws-ticket", { method: "POST", headers: h })).json() as { ticket: string };
    const withTicket = (t: string) => new Promise<number>((res) => {
      const ws = new WebSocket(base.replace("http", "ws") + `/ws?clientId=farm&ticket=${t}`);
      ws.on("unexpected-response", (_q, x) => res(x.statusCode!)).on("open", () => (ws.close(), res(101)));
    });
    assert.equal(await withTicket(ticket), 101);
    assert.equal(await withTicket(ticket), 401, "a ticket opens one socket");
    assert.equal((await fetch(base + "/queue", { headers: { authorization: "Bearer cgw_notarealkeyid0000.notarealsecret000000000000000000000000000000" } })).status, 401);
    await auth.revokeKey(record.id, Date.now());
    assert.equal((await fetch(base + "/queue", { headers: h })).status, 401, "revoked: refused at once");
  });

  it("API keys in both npm clients, exactly as the README says: HTTP, the WebSocket, and the images", async () => {
    const { token, record } = mintKey({ owner: "pipeline-2", name: "clients", scopes: ["submit", "read"], days: 1 });
    await auth.putKey(record);
    // @saintno/comfyui-sdk: its credentials option puts the Bearer header on every fetch and, in Node, on the WebSocket.
    const api = new ComfyApi(base, "saintno-key", { credentials: { type: "bearer_token", token } });
    try {
      await api.init(3, 200).waitForReady();
      await until(async () => api.socket?.client?.readyState === WebSocket.OPEN, 10000, 20);
      const wf = new PromptBuilder(t2i(31), ["seed"], ["images"]).setInputNode("seed", "3.inputs.seed").setOutputNode("images", "9").input("seed", 31);
      const out = await new CallWrapper(api, wf).run();
      assert.ok(out && out.images?.images?.length === 1, `saintno ran the prompt: ${JSON.stringify(out)}`);
      const png = await api.getImage(out.images.images[0]);
      assert.equal(png.type === "" ? "image/png" : png.type, "image/png");
      assert.ok(png.size > 0, "the image downloads with the key");
    } finally {
      api.destroy();
    }
    // @stable-canvas/comfyui-client: a fetch that adds the header, and a WebSocket class that sends it on the upgrade.
    const authFetch = (input: Parameters<typeof fetch>[0], init: RequestInit = {}) => fetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` } });
    class AuthWebSocket extends WebSocket {
      constructor(url: string) {
        super(url, { headers: { authorization: `Bearer ${token}` } });
      }
    }
    const client = new Client({ api_host: base.replace("http://", ""), clientId: "stable-canvas-key", WebSocket: AuthWebSocket, fetch: authFetch });
    try {
      await client.connect();
      const res = await client.enqueue(t2i(32));
      const url = res.images.find((i: { type: string }) => i.type === "url").data;
      assert.equal((await fetch(url)).status, 401, "an image URL needs the key too");
      assert.equal((await authFetch(url)).status, 200);
    } finally {
      client.close();
    }
  });

  it("npm run keys: create prints the key once, the store keeps only its hash; list and revoke", async () => {
    const db = await startEmbeddedStore({});
    const env = { AWS_ENDPOINT_URL_DYNAMODB: db.endpoint, AWS_ACCESS_KEY_ID: "local", AWS_SECRET_ACCESS_KEY: "local" };
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
    Object.assign(process.env, env);
    try {
      const out: string[] = [];
      await keysCli(["create", "--owner", "bob", "--scope", "read", "--days", "7", "--table", "comfyui-gateway", "--region", "local"], (l) => out.push(l));
      const token = out[1].trim();
      assert.match(token, /^cgw_[\w-]{16}\.[\w-]{43}$/);
      const client = new DynamoDBClient({ endpoint: db.endpoint, region: "local", credentials: { accessKeyId: "local", secretAccessKey: "local" } });
      const keys = await new DynamoStore({ table: "comfyui-gateway", client }).authStore().listKeys();
      client.destroy();
      assert.equal(keys.length, 1);
      assert.ok(!JSON.stringify(keys).includes(token.split(".")[1]), "the secret is not stored");
      const listed: string[] = [];
      await keysCli(["list", "--table", "comfyui-gateway", "--region", "local"], (l) => listed.push(l));
      assert.match(listed[0], new RegExp(`^${keys[0].id}\\tbob\\tbob\\tread\\texpires `));
      const revoked: string[] = [];
      await keysCli(["revoke", keys[0].id, "--table", "comfyui-gateway", "--region", "local"], (l) => revoked.push(l));
      await keysCli(["list", "--table", "comfyui-gateway", "--region", "local"], (l) => revoked.push(l));
      assert.match(revoked[1], /\trevoked /);
      await assert.rejects(keysCli(["create", "--table", "comfyui-gateway", "--region", "local"], () => undefined), /--owner/);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
      await db.close();
    }
  });
});

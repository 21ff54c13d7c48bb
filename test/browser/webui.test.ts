// The real ComfyUI web frontend (1.27.10, the build ComfyUI 0.3.64 pins) in Debian's chromium, through the
// gateway in local mode, in front of a stand-in ComfyUI that serves the frontend the way server.py does.
// The GPU pod is down while the UI opens, queues and browses: everything it reads then comes from the
// gateway's discovery cache, filled when the pod last ran (the "before" step, like a deployment's first pod).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { get, startGateway, tmpDir, until } from "../gateway/helpers";
import { FRONTEND_FIXTURE, startStandIn, type StandIn } from "../gateway/standin";
import { WebUi } from "./webui";

// What the pod holds: the default workflow's checkpoint (frontend 1.27.10 defaultGraph), and one file in
// a few more folders so the model library has something to list in each.
const MODELS = {
  checkpoints: ["v1-5-pruned-emaonly-fp16.safetensors", "sd_xl_base_1.0.safetensors"],
  loras: ["film-grain.safetensors"],
  vae: ["ae.safetensors"],
};

describe("the ComfyUI web UI through the gateway, in chromium", function () {
  // Module loading and the first paint of a 30 MB frontend on a busy 2-core machine; every wait inside
  // is on a condition.
  this.timeout(240_000);
  const root = tmpDir("webui-");
  const shots = path.join(root, "screenshots");
  const podDir = path.join(root, "pod");
  const gwDir = path.join(root, "gateway");
  let pod: StandIn | undefined;
  let podPort = 0;
  let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
  let gwPort = 0;
  let ui: WebUi | undefined;
  const startPod = async () => {
    pod = await startStandIn({ frontendRoot: FRONTEND_FIXTURE, dataDir: podDir, models: MODELS, stepMs: 20, port: podPort });
    podPort = pod.port;
  };
  const startGw = async () => {
    gw = await startGateway([`http://127.0.0.1:${podPort}`], gwPort ? ["--port", String(gwPort)] : [], gwDir);
    gwPort = Number(new URL(gw.url).port);
    ui?.rebase(gw.url);
  };
  const podsReady = async () => (await get(gw!.adminUrl, "/gateway/pods")).json.ready as number;

  before(async () => {
    await startPod();
    await startGw();
    await until(async () => (await podsReady()) === 1, 30_000);
    await gw!.gateway.services.discovery.settled();
    const crawled = await get(gw!.url, "/templates/index.json");
    assert.equal(crawled.status, 200, "the pod's frontend was read into the cache");
    // The pod scales to zero: from here on, until a prompt waits, no ComfyUI runs.
    await pod!.close();
    pod = undefined;
    await until(async () => (await podsReady()) === 0, 30_000);
    ui = await WebUi.open(gw!.url, shots);
  });

  afterEach(async function () {
    if (this.currentTest?.state === "failed") await ui?.screenshot(`FAILED-${(this.currentTest.title ?? "").replace(/\W+/g, "-").slice(0, 60)}`).catch(() => undefined);
    // Whatever the step, the frontend got no error answer a real ComfyUI would not give.
    assert.deepEqual(ui?.unexpected ?? [], [], `unexpected error answers in "${this.currentTest?.title}"`);
  });

  after(async () => {
    await ui?.close();
    await gw?.close();
    await pod?.close();
    // WEBUI_KEEP=1 keeps the screenshots (and the rest of the temp folder) for a look after the run.
    if (process.env.WEBUI_KEEP) console.log(`webui test files kept in ${root}`);
    else fs.rmSync(root, { recursive: true, force: true });
  });

  it("opens with no pod running, and the templates browser lists its entries", async () => {
    const page = ui!.page;
    const thumbnail = page.waitForResponse((r) => r.url().endsWith("/templates/default-1.webp"));
    await ui!.load();
    // A first visit (no settings yet) opens the templates browser (workflowService.loadDefaultWorkflow).
    const card = page.getByText("Image Generation", { exact: true });
    await card.waitFor();
    // The card fetches its thumbnail into a blob (the frontend's media cache) and shows it once decoded.
    const thumb = await thumbnail;
    assert.equal(thumb.status(), 200);
    assert.equal(thumb.headers()["content-type"], "image/webp");
    const img = page.locator('img[alt="Image Generation"][src^="blob:"]').first();
    await img.waitFor({ state: "attached" });
    await page.waitForFunction((el) => (el as HTMLImageElement).complete && (el as HTMLImageElement).naturalWidth > 0, await img.elementHandle());
    await ui!.screenshot("opened-no-pod-templates");
    assert.equal(await podsReady(), 0);
    await page.getByRole("dialog").getByRole("button", { name: "Close" }).click();
    await card.waitFor({ state: "detached" });
  });

  it("lists the model library with no pod", async () => {
    const page = ui!.page;
    await page.locator(".model-library-tab-button").click();
    const folder = page.getByText("checkpoints", { exact: true });
    await folder.waitFor();
    const files = page.waitForResponse((r) => r.url().endsWith("/api/experiment/models/checkpoints"));
    await folder.click();
    assert.equal((await files).status(), 200);
    await page.getByText("sd_xl_base_1.0", { exact: true }).waitFor();
    await page.getByText("v1-5-pruned-emaonly-fp16", { exact: true }).waitFor();
    await ui!.screenshot("model-library-no-pod");
    await page.locator(".model-library-tab-button").click();
    assert.equal(await podsReady(), 0);
  });

  let promptId = "";
  it("queues the default workflow with no pod", async () => {
    const page = ui!.page;
    await ui!.command("Comfy.LoadDefaultWorkflow");
    await page.waitForFunction(() => (window as unknown as { app: { graph: { nodes: { type: string }[] } } }).app.graph.nodes.some((n) => n.type === "SaveImage"));
    // The whole graph in view: LiteGraph loads a node's output images only for nodes it draws.
    await ui!.command("Comfy.Canvas.FitView");
    const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST");
    // Ctrl+Enter: Comfy.QueuePrompt (frontend 1.27.10 core key bindings).
    await page.keyboard.press("Control+Enter");
    const res = await queued;
    assert.equal(res.status(), 200, await res.text());
    promptId = ((await res.json()) as { prompt_id: string }).prompt_id;
    const q = await get(gw!.url, "/queue");
    assert.deepEqual(q.json.queue_pending.map((i: unknown[]) => i[1]), [promptId], "accepted and waiting for a pod");
    await ui!.screenshot("queued-no-pod");
  });

  it("a pod starts: the image shows on the SaveImage node and in the queue panel", async () => {
    const page = ui!.page;
    const view = page.waitForResponse((r) => r.url().includes("/api/view?") && r.url().includes(encodeURIComponent(promptId)));
    await startPod();
    assert.equal((await view).status(), 200);
    await page.waitForFunction(() => {
      const save = (window as unknown as { app: { graph: { nodes: { type: string; imgs?: HTMLImageElement[] }[] } } }).app.graph.nodes.find((n) => n.type === "SaveImage");
      return (save?.imgs?.[0]?.naturalWidth ?? 0) > 0;
    });
    // The image can show (from `executed`) before the prompt's ending is written: wait for the entry.
    const entry = await until(async () => (await get(gw!.url, `/history/${promptId}`)).json[promptId], 60000, 100);
    assert.equal(entry?.status?.status_str, "success");
    await ui!.screenshot("image-on-save-node");
    await page.locator(".queue-tab-button").click();
    const item = page.locator(".task-item").first();
    await item.locator(`img[src*="${encodeURIComponent(promptId)}"]`).waitFor();
    await ui!.screenshot("queue-panel");
    await page.locator(".queue-tab-button").click();
  });

  it("a workflow saved with Ctrl+S is listed after a reload and after a gateway restart", async () => {
    const page = ui!.page;
    const name = "browser-test-workflow";
    await page.keyboard.press("Control+s");
    // A workflow never saved asks for its name first (workflowService.saveWorkflow → promptSave).
    const input = page.getByRole("dialog").locator("input");
    await input.fill(name);
    const saved = page.waitForResponse((r) => r.request().method() === "POST" && r.url().includes(`/api/userdata/${encodeURIComponent(`workflows/${name}.json`)}`));
    await input.press("Enter");
    assert.equal((await saved).status(), 200);
    const listed = async (shot: string) => {
      await ui!.load();
      await page.locator(".workflows-tab-button").click();
      // The workflows panel's "Browse" tree names each file of workflows/ (the ".json" kept).
      await page.getByText(`${name}.json`, { exact: true }).waitFor();
      await ui!.screenshot(shot);
      await page.locator(".workflows-tab-button").click();
    };
    await listed("workflow-listed-after-reload");
    // The pod goes away and the gateway restarts on the same data: the saved workflow and the UI itself
    // (frontend files, node definitions) come from what the gateway stored.
    await pod!.close();
    pod = undefined;
    await gw!.close();
    await startGw();
    assert.equal(await podsReady(), 0);
    await listed("workflow-listed-after-gateway-restart");
  });

  it("a setting changed in the settings dialog survives a reload", async () => {
    const page = ui!.page;
    const row = () => page.locator(".setting-item").filter({ hasText: "Validate workflows" });
    const open = async () => {
      await page.keyboard.press("Control+,");
      await page.locator(".settings-search-box input").fill("Validate workflows");
      await row().waitFor();
      return row().locator('input[role="switch"]');
    };
    const toggle = await open();
    assert.equal(await toggle.isChecked(), true, "on by default");
    const stored = page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/api/settings/Comfy.Validation.Workflows"));
    await toggle.click();
    const res = await stored;
    assert.equal(res.status(), 200);
    assert.equal(res.request().postData(), "false");
    await ui!.screenshot("setting-changed");
    await ui!.load();
    const again = await open();
    assert.equal(await again.isChecked(), false, "the changed value came back from the gateway");
    await ui!.screenshot("setting-after-reload");
    await page.keyboard.press("Escape");
  });
});

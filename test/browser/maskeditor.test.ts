// The mask editor of the real ComfyUI web frontend (1.27.10, the build ComfyUI 0.3.64 pins) in Debian's
// chromium, through the gateway (local mode, GATEWAY_AUTH=none, loopback) in front of a stand-in pod: an
// uploaded image on a LoadImage node gets a mask stroke, the editor saves it (POST /upload/mask with
// original_ref, which the gateway composites as server.py's upload_mask does), and a queued prompt's LoadImage
// reads that file, its MASK being 1 - the composited alpha (nodes.py LoadImage).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Request, Response as PwResponse } from "playwright-core";
import { PNG } from "pngjs";
import { get, startGateway, tmpDir, until } from "../gateway/helpers";
import { FRONTEND_FIXTURE, startStandIn, type StandIn } from "../gateway/standin";
import { FakeMask } from "../gateway/standin/nodes";
import { WebUi } from "./webui";

// The uploaded picture: opaque RGB, every pixel different, so a composite that moved, scaled or recoloured
// anything shows.
const W = 96;
const H = 64;
const rgbAt = (x: number, y: number): [number, number, number] => [(x * 5 + 7) & 255, (y * 7 + 3) & 255, (x * 3 + y * 2) & 255];
function pictureRgb(): Buffer {
  const png = new PNG({ width: W, height: H, colorType: 2, inputHasAlpha: false });
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) png.data.set([...rgbAt(x, y), 255], (y * W + x) * 4);
  return PNG.sync.write(png, { colorType: 2 });
}
const PICTURE = "maskeditor-picture.png";
// The stroke, in image pixels: a horizontal line across the middle. The brush's smoothing draws a stroke's
// last few points only with the next move, so the checks look at its first 70%.
const STROKE = { y: 32, x0: 20, x1: 76 };
const STROKE_DRAWN_TO = Math.round(STROKE.x0 + (STROKE.x1 - STROKE.x0) * 0.7);

interface Upload {
  url: string;
  fields: Record<string, string>;
  file: { name: string; bytes: Buffer };
}

/** The multipart form the frontend posted (image, original_ref, type, subfolder). */
async function formOf(req: Request): Promise<Upload> {
  const body = req.postDataBuffer();
  assert.ok(body, `${req.url()} carries its form`);
  const form = await new Response(new Uint8Array(body), { headers: { "content-type": req.headers()["content-type"] } }).formData();
  const fields: Record<string, string> = {};
  let file: Upload["file"] | undefined;
  for (const k of ["image", "original_ref", "type", "subfolder"]) {
    const v = form.get(k);
    if (typeof v === "string") fields[k] = v;
    else if (v !== null) file = { name: v.name, bytes: Buffer.from(await v.arrayBuffer()) };
  }
  assert.ok(file, `${req.url()} uploads a file`);
  return { url: new URL(req.url()).pathname, fields, file };
}

describe("the mask editor through the gateway, in chromium", function () {
  // A 30 MB frontend's module loading and first paint on a busy 2-core machine; every wait inside is on a condition.
  this.timeout(240_000);
  const root = tmpDir("maskeditor-");
  const shots = path.join(root, "screenshots");
  let pod: StandIn | undefined;
  let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
  let ui: WebUi | undefined;

  before(async () => {
    pod = await startStandIn({ frontendRoot: FRONTEND_FIXTURE, dataDir: path.join(root, "pod"), stepMs: 20 });
    gw = await startGateway([pod.url], [], path.join(root, "gateway"), {}, { GATEWAY_AUTH: "none" });
    await until(async () => (await get(gw!.adminUrl, "/gateway/pods")).json.ready === 1, 30_000);
    await gw.gateway.services.discovery.settled();
    ui = await WebUi.open(gw.url, shots);
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
    // MASKEDITOR_KEEP=1 keeps the screenshots (and the rest of the temp folder) for a look after the run.
    if (process.env.MASKEDITOR_KEEP) console.log(`mask editor test files kept in ${root}`);
    else fs.rmSync(root, { recursive: true, force: true });
  });

  // What the steps hand on.
  let maskUpload: Upload | undefined;
  let widgetValue = "";

  it("paints a mask on an uploaded image and saves it: the gateway composites it onto the original", async () => {
    const page = ui!.page;
    // The picture is in the input folder (the artist uploaded it earlier), and this artist has used ComfyUI
    // before: no templates browser on load (workflowService.loadDefaultWorkflow shows it only for a first visit).
    const form = new FormData();
    form.append("image", new Blob([new Uint8Array(pictureRgb())], { type: "image/png" }), PICTURE);
    const up = await fetch(gw!.url + "/upload/image", { method: "POST", body: form });
    assert.equal(up.status, 200, await up.text());
    const seen = await fetch(gw!.url + "/settings/Comfy.TutorialCompleted", { method: "POST", body: "true" });
    assert.equal(seen.status, 200);

    await ui!.load();
    // The default workflow is in place before ours replaces it (else the start-up load could land after ours).
    await page.waitForFunction(() => (window as unknown as { app: { graph: { nodes: { type: string }[] } } }).app.graph.nodes.some((n) => n.type === "SaveImage"));
    // Open a workflow with the picture on a LoadImage node, as a workflow file dropped on the canvas does.
    await page.evaluate(async (image) => {
      const app = (window as unknown as { app: { loadGraphData(g: unknown): Promise<void> } }).app;
      await app.loadGraphData({
        last_node_id: 2,
        last_link_id: 1,
        nodes: [
          { id: 1, type: "LoadImage", pos: [40, 40], size: [320, 360], flags: {}, order: 0, mode: 0, inputs: [], outputs: [{ name: "IMAGE", type: "IMAGE", links: [1] }, { name: "MASK", type: "MASK", links: null }], properties: { "Node name for S&R": "LoadImage" }, widgets_values: [image, "image"] },
          { id: 2, type: "PreviewImage", pos: [420, 40], size: [300, 300], flags: {}, order: 1, mode: 0, inputs: [{ name: "images", type: "IMAGE", link: 1 }], outputs: [], properties: { "Node name for S&R": "PreviewImage" }, widgets_values: [] },
        ],
        links: [[1, 1, 0, 2, 0, "IMAGE"]],
        groups: [],
        config: {},
        extra: {},
        version: 0.4,
      });
    }, PICTURE);
    // LiteGraph loads a node's image only for nodes it draws: the whole graph in view.
    await ui!.command("Comfy.Canvas.FitView");
    await page.waitForFunction(() => {
      const n = (window as unknown as { app: { graph: { nodes: { type: string; imgs?: HTMLImageElement[] }[] } } }).app.graph.nodes.find((x) => x.type === "LoadImage");
      return (n?.imgs?.[0]?.naturalWidth ?? 0) > 0;
    });
    await ui!.screenshot("picture-on-load-image");

    // Right-click the node: its LiteGraph menu offers "Open in MaskEditor | Image Canvas" for an image node.
    const at = await page.evaluate(() => {
      const w = window as unknown as { app: { canvas: { canvas: HTMLCanvasElement; ds: { convertOffsetToCanvas(p: number[]): number[] } }; graph: { nodes: { type: string; pos: number[]; size: number[] }[] } } };
      const n = w.app.graph.nodes.find((x) => x.type === "LoadImage")!;
      const [x, y] = w.app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + n.size[1] - 30]);
      const r = w.app.canvas.canvas.getBoundingClientRect();
      return { x: r.left + x, y: r.top + y };
    });
    await page.mouse.click(at.x, at.y, { button: "right" });
    await page.locator(".litecontextmenu .litemenu-entry", { hasText: "Open in MaskEditor" }).click();

    // The editor is ready when it has read the picture (channel=rgb) and its alpha (channel=a) into canvases
    // of the picture's size and laid them out (PanAndZoomManager.invalidatePanZoom sizes the container).
    const maskCanvas = page.locator("#maskCanvas");
    await maskCanvas.waitFor();
    await page.waitForFunction(
      ([w, h]) => {
        const c = document.getElementById("maskCanvas") as HTMLCanvasElement | null;
        const box = document.getElementById("maskEditorCanvasContainer");
        return !!c && c.width === w && c.height === h && !!box && box.style.width !== "" && c.getBoundingClientRect().width > 0;
      },
      [W, H],
    );
    await ui!.screenshot("mask-editor-open");

    // One stroke with the pen, the editor's default tool and brush (a drag with the left button).
    const box = (await maskCanvas.boundingBox())!;
    const toScreen = (x: number, y: number) => ({ x: box.x + ((x + 0.5) * box.width) / W, y: box.y + ((y + 0.5) * box.height) / H });
    const from = toScreen(STROKE.x0, STROKE.y);
    const to = toScreen(STROKE.x1, STROKE.y);
    await page.mouse.move(from.x, from.y);
    await page.mouse.down();
    await page.mouse.move(to.x, to.y, { steps: 24 });
    await page.mouse.up();
    // The brush draws in animation frames: wait until the stroke is on the mask canvas along its first 70%, then
    // for the frames already asked for to run.
    await page.waitForFunction(
      ([y, xs]) => {
        const c = document.getElementById("maskCanvas") as HTMLCanvasElement;
        const ctx = c.getContext("2d", { willReadFrequently: true })!;
        return xs.every((x) => ctx.getImageData(x, y, 1, 1).data[3] > 0);
      },
      [STROKE.y, [STROKE.x0, (STROKE.x0 + STROKE.x1) >> 1, STROKE_DRAWN_TO]] as const,
    );
    await page.evaluate(() => new Promise<void>((r) => requestAnimationFrame(() => requestAnimationFrame(() => r()))));
    await ui!.screenshot("mask-painted");

    // Save: the editor posts the mask layer (/upload/mask, original_ref = the picture), the paint layer and the
    // picture with paint (/upload/image), then the mask again onto that (/upload/mask), all into input/clipspace/.
    const uploads: Promise<Upload>[] = [];
    const onRequest = (r: Request) => {
      if (r.method() === "POST" && /\/upload\/(mask|image)$/.test(new URL(r.url()).pathname)) uploads.push(formOf(r));
    };
    page.on("request", onRequest);
    const uploadAnswers: number[] = [];
    const onResponse = (r: PwResponse) => {
      if (r.request().method() === "POST" && /\/upload\/(mask|image)$/.test(new URL(r.url()).pathname)) uploadAnswers.push(r.status());
    };
    page.on("response", onResponse);
    await page.locator("#maskEditor_topBarSaveButton").click();
    // The editor closes once every upload succeeded (MaskEditorDialog.save → destroy), and the node's image widget
    // names the masked file (ComfyApp.pasteFromClipspace).
    await page.locator("#maskEditor").waitFor({ state: "detached" });
    widgetValue = await (
      await page.waitForFunction(() => {
        const n = (window as unknown as { app: { graph: { nodes: { type: string; widgets: { name: string; value: unknown }[] }[] } } }).app.graph.nodes.find((x) => x.type === "LoadImage")!;
        const v = n.widgets.find((x) => x.name === "image")!.value;
        return typeof v === "string" && v.startsWith("clipspace/") ? v : undefined;
      })
    ).jsonValue() as string;
    page.off("request", onRequest);
    page.off("response", onResponse);
    const posted = await Promise.all(uploads);
    assert.deepEqual(posted.map((u) => u.url), ["/api/upload/mask", "/api/upload/image", "/api/upload/image", "/api/upload/mask"]);
    assert.deepEqual(uploadAnswers, [200, 200, 200, 200]);
    const [mask, , painted, paintedMask] = posted;
    assert.match(mask.file.name, /^clipspace-mask-\d+\.png$/);
    assert.deepEqual(JSON.parse(mask.fields.original_ref), { filename: PICTURE, subfolder: "", type: "input" });
    assert.equal(mask.fields.subfolder, "clipspace");
    assert.deepEqual(JSON.parse(paintedMask.fields.original_ref), { filename: painted.file.name, subfolder: "clipspace", type: "input" });
    assert.equal(widgetValue, `clipspace/${paintedMask.file.name} [input]`);

    // What the editor uploaded is a mask only: black, its alpha inverted from the mask canvas (0 where painted,
    // 255 where not: removeImageRgbValuesAndInvertAlpha).
    const sent = PNG.sync.read(mask.file.bytes);
    assert.deepEqual([sent.width, sent.height], [W, H]);
    const sentAlpha = (x: number, y: number) => sent.data[(y * W + x) * 4 + 3];
    for (let x = STROKE.x0; x <= STROKE_DRAWN_TO; x++) assert.ok(sentAlpha(x, STROKE.y) < 128, `painted at (${x}, ${STROKE.y}): mask alpha ${sentAlpha(x, STROKE.y)}`);
    for (let x = 0; x < W; x++) for (const y of [0, 1, 2, H - 3, H - 2, H - 1]) assert.equal(sentAlpha(x, y), 255, `unpainted (${x}, ${y})`);

    // Each saved composite: the original's RGB, pixel for pixel, with the uploaded mask's alpha (server.py
    // upload_mask: original_pil.putalpha(mask_pil.getchannel('A'))) — transparent where painted, opaque elsewhere.
    for (const name of [mask.file.name, paintedMask.file.name]) {
      const res = await get(gw!.url, `/view?filename=${encodeURIComponent(name)}&type=input&subfolder=clipspace`);
      assert.equal(res.status, 200, name);
      const out = PNG.sync.read(res.buf);
      assert.deepEqual([out.width, out.height], [W, H], name);
      let transparent = 0;
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = (y * W + x) * 4;
          assert.deepEqual([...out.data.subarray(i, i + 3)], rgbAt(x, y), `${name}: RGB at (${x}, ${y})`);
          assert.equal(out.data[i + 3], sent.data[i + 3], `${name}: alpha at (${x}, ${y})`);
          if (out.data[i + 3] === 0) transparent++;
        }
      }
      assert.ok(transparent > 0, `${name} is fully transparent along the stroke`);
      // /view?channel=a (how the editor reads a mask back): black, carrying the alpha alone.
      const a = await get(gw!.url, `/view?filename=${encodeURIComponent(name)}&type=input&subfolder=clipspace&channel=a`);
      assert.equal(a.status, 200);
      const alpha = PNG.sync.read(a.buf);
      for (let i = 0; i < W * H * 4; i += 4) assert.deepEqual([...alpha.data.subarray(i, i + 4)], [0, 0, 0, out.data[i + 3]], `${name}: channel=a at pixel ${i / 4}`);
    }
    await ui!.screenshot("mask-saved-on-node");
    maskUpload = mask;
  });

  it("a queued prompt's LoadImage reads the masked file: its MASK is 1 - the composited alpha", async () => {
    assert.ok(maskUpload, "the previous step saved a mask");
    const page = ui!.page;
    // The node shows the masked picture (the editor's last upload) before the prompt goes.
    await page.waitForFunction(() => {
      const n = (window as unknown as { app: { graph: { nodes: { type: string; imgs?: HTMLImageElement[] }[] } } }).app.graph.nodes.find((x) => x.type === "LoadImage");
      const img = n?.imgs?.[0];
      return !!img && img.src.includes("clipspace-painted-masked-") && img.complete && img.naturalWidth > 0;
    });
    const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST");
    // Ctrl+Enter: Comfy.QueuePrompt (frontend 1.27.10 core key bindings).
    await page.keyboard.press("Control+Enter");
    const res = await queued;
    assert.equal(res.status(), 200, await res.text());
    const promptId = ((await res.json()) as { prompt_id: string }).prompt_id;
    const sentPrompt = JSON.parse(res.request().postData() ?? "{}").prompt as Record<string, { class_type: string; inputs: Record<string, unknown> }>;
    const loadId = Object.keys(sentPrompt).find((id) => sentPrompt[id].class_type === "LoadImage")!;
    assert.equal(sentPrompt[loadId].inputs.image, widgetValue);

    // The preview shows once the pod ran it.
    await page.waitForFunction(() => {
      const n = (window as unknown as { app: { graph: { nodes: { type: string; imgs?: HTMLImageElement[] }[] } } }).app.graph.nodes.find((x) => x.type === "PreviewImage");
      return (n?.imgs?.[0]?.naturalWidth ?? 0) > 0;
    });
    await ui!.screenshot("prompt-ran");
    // The `executed` event that shows the preview comes before the history entries (the pod's, then the gateway's).
    await until(async () => (await get(gw!.url, `/history/${promptId}`)).json[promptId]?.status?.status_str === "success", 30_000);

    // The pod got the prompt naming the masked file, and the file itself (the gateway pushes inputs before a
    // prompt): the same bytes the gateway stored.
    const onPod = await until(async () => (await get(pod!.url, `/history/${promptId}`)).json[promptId]);
    assert.equal(onPod.prompt[2][loadId].inputs.image, widgetValue);
    const rel = widgetValue.replace(/ \[input\]$/, "");
    const stored = await get(gw!.url, `/view?filename=${encodeURIComponent(path.posix.basename(rel))}&type=input&subfolder=clipspace`);
    const podFile = fs.readFileSync(path.join(pod!.dataDir, "input", ...rel.split("/")));
    assert.ok(podFile.equals(stored.buf), "the pod read the file the gateway composited");

    // nodes.py LoadImage: MASK = 1. - alpha.astype(float32) / 255, at the picture's size.
    const outputs = pod!.nodeOutputs(promptId);
    assert.ok(outputs?.[loadId], "the LoadImage node ran on the pod");
    const m = outputs[loadId][1];
    assert.ok(m instanceof FakeMask, `LoadImage's MASK output: ${String(m)}`);
    assert.deepEqual([m.width, m.height], [W, H]);
    const alpha = PNG.sync.read(podFile).data;
    let masked = 0;
    for (let i = 0; i < W * H; i++) {
      assert.equal(m.values[i], Math.fround(1 - Math.fround(alpha[i * 4 + 3] / 255)), `mask at pixel ${i}`);
      if (m.values[i] === 1) masked++;
    }
    assert.ok(masked > 0, "fully masked where painted");
    assert.equal(m.values[0], 0, "unmasked away from the stroke");
  });
});

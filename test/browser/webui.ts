// Helpers for driving the real ComfyUI web frontend (the fixture 1.27.10 build, served by the stand-in)
// through the gateway in Debian's chromium. Reusable by other browser tests (e.g. the mask editor's).
import * as fs from "node:fs";
import * as path from "node:path";
import { chromium, type Browser, type Page, type Response } from "playwright-core";

/** Debian's chromium (.ci/run installs the `chromium` package); playwright-core brings no browser of its own. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/**
 * The 4xx answers a real ComfyUI 0.3.64 gives the frontend too, each with its reason; any other 4xx/5xx the
 * frontend gets through the gateway fails the test.
 */
export const EXPECTED_ERRORS: { method: string; path: RegExp; status: number; why: string }[] = [
  { method: "GET", path: /^\/user\.css$/, status: 404, why: "index.html links /user.css; a stock web root has none (server.py web.static('/', web_root))" },
  { method: "GET", path: /^\/api\/userdata\/user\.css$/, status: 404, why: "index.html links the user's own CSS; none saved yet (app/user_manager.py getuserdata: file missing → 404)" },
  {
    method: "GET", path: /^\/api\/userdata\?dir=(workflows|subgraphs%2F)&/, status: 404,
    why: "the workflows/subgraphs folders exist only after a first save (user_manager.py listuserdata: 'Directory not found' → 404; the frontend treats it as empty)",
  },
  { method: "GET", path: /^\/api\/userdata\/workflows%2F\.index\.json$/, status: 404, why: "the frontend reads the workflows folder's .index.json, which nothing has written (user_manager.py getuserdata: 404)" },
  { method: "GET", path: /^\/api\/userdata\/comfy\.templates\.json$/, status: 404, why: "no node templates saved (user_manager.py getuserdata: 404)" },
  { method: "GET", path: /^\/api\/view_metadata\/[a-z_]+\?filename=/, status: 404, why: "the stand-in's model files carry no safetensors __metadata__ (server.py view_metadata: 404)" },
  { method: "GET", path: /^\/api\/experiment\/models\/preview\//, status: 404, why: "a model without a preview image (app/model_manager.py get_model_preview: 404)" },
];

export interface Failure {
  method: string;
  url: string;
  status: number;
}

/** A page on the gateway that records every unexpected 4xx/5xx and stays off the internet (CI has none). */
export class WebUi {
  readonly unexpected: Failure[] = [];
  readonly expected: (Failure & { why: string })[] = [];
  private shot = 0;

  private constructor(
    readonly browser: Browser,
    readonly page: Page,
    private base: string,
    private readonly shotsDir: string,
  ) {}

  static async open(base: string, shotsDir: string): Promise<WebUi> {
    fs.mkdirSync(shotsDir, { recursive: true });
    // --no-sandbox: CI runs as root, where chromium refuses its sandbox.
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
      const ui = new WebUi(browser, page, base, shotsDir);
      // The frontend asks api.comfy.org for release notes; only the gateway is under test here.
      await page.route((u) => !u.href.startsWith(ui.base + "/"), (r) => r.abort("blockedbyclient"));
      page.on("response", (r) => ui.judge(r));
      return ui;
    } catch (err) {
      await browser.close();
      throw err;
    }
  }

  /** The gateway moved (a restart on another port): follow it. */
  rebase(base: string): void {
    this.base = base;
  }

  private judge(r: Response): void {
    if (r.status() < 400 || !r.url().startsWith(this.base + "/")) return;
    const f = { method: r.request().method(), url: r.url().slice(this.base.length), status: r.status() };
    const known = EXPECTED_ERRORS.find((e) => e.method === f.method && e.status === f.status && e.path.test(f.url));
    if (known) this.expected.push({ ...f, why: known.why });
    else this.unexpected.push(f);
  }

  /** Writes `NN-name.png` into the screenshots folder. */
  async screenshot(name: string): Promise<string> {
    const file = path.join(this.shotsDir, `${String(++this.shot).padStart(2, "0")}-${name}.png`);
    await this.page.screenshot({ path: file });
    return file;
  }

  /** Loads the UI and waits until the app has its node definitions and a graph on the canvas. */
  async load(): Promise<void> {
    await this.page.goto(this.base + "/");
    await this.page.locator("#graph-canvas").waitFor();
    await this.page.waitForFunction(() => {
      const w = window as unknown as { app?: { graph?: unknown; extensionManager?: unknown }; LiteGraph?: { registered_node_types?: Record<string, unknown> } };
      return !!w.app?.graph && !!w.app.extensionManager && !!w.LiteGraph?.registered_node_types?.SaveImage;
    });
    await frontendConnected(this.page);
  }

  /** Runs a frontend command (the same ones its menus and key bindings run). */
  async command(id: string): Promise<void> {
    await this.page.evaluate(async (cmd) => {
      const app = (window as unknown as { app: { extensionManager: { command: { execute(id: string): Promise<void> } } } }).app;
      await app.extensionManager.command.execute(cmd);
    }, id);
  }

  async close(): Promise<void> {
    await this.browser.close();
  }
}

/**
 * Waits until the frontend's WebSocket is open and has its session id. The frontend queues a prompt
 * with `client_id: this.clientId ?? ""` and learns its id from the first `status` message on the socket
 * (ComfyApi #createSocket and queuePrompt, frontend 1.27.10 assets/index-*.js); a prompt queued before
 * that has no client, so its `executed` reaches no page and the image never shows. A person takes longer
 * than that to press Ctrl+Enter; a test on a busy machine may not.
 */
export async function frontendConnected(page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const api = (window as unknown as { app?: { api?: { clientId?: string; socket?: { readyState: number } } } }).app?.api;
    return !!api?.clientId && api.socket?.readyState === 1;
  });
}

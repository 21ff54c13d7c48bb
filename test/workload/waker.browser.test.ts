import { strict as assert } from "node:assert";
import { existsSync } from "node:fs";
import * as http from "node:http";
import { chromium, type Browser, type Page } from "playwright-core";
import { createWaker } from "../../workload/waker/waker";
import { closeServer, ComfyStandIn, listen, request, waitFor } from "./wakerHelpers";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOT = "/tmp/waker-page.png";

/**
 * Plays the ALB: every request goes to the waker until `flip()`, then to ComfyUI. It forwards
 * to these two loopback servers and nowhere else.
 */
class TestAlb {
  private flipped = false;
  private readonly server = http.createServer((req, res) => {
    const port = this.flipped ? this.comfyPort : this.wakerPort;
    const upstream = http.request(
      { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("502 Bad Gateway");
    });
    req.pipe(upstream);
  });

  constructor(
    private readonly wakerPort: number,
    private readonly comfyPort: number,
  ) {}

  async start(): Promise<string> {
    return `http://127.0.0.1:${await listen(this.server)}`;
  }

  flip(): void {
    this.flipped = true;
  }

  close(): Promise<void> {
    return closeServer(this.server);
  }
}

describe("waker waiting page in headless Chromium", function () {
  this.timeout(45000);
  let comfy: ComfyStandIn | undefined;
  let waker: ReturnType<typeof createWaker> | undefined;
  let alb: TestAlb | undefined;
  let browser: Browser | undefined;

  before(function () {
    if (!existsSync(CHROMIUM)) this.skip(); // Chromium is an apt package (.ci/run installs it); without it there is no browser to drive.
  });

  after(async () => {
    await browser?.close();
    await alb?.close();
    await waker?.close();
    await comfy?.close();
  });

  it("shows the wait, then lands on ComfyUI by itself once the ALB switches over", async () => {
    comfy = await ComfyStandIn.start("starting");
    waker = createWaker({
      comfyuiUrl: comfy.url,
      host: "127.0.0.1",
      port: 0,
      metricsPort: 0,
      // 62 s reads "about 2 minutes" and turns into "about 1 minute" two seconds later.
      expectedWakeSeconds: 62,
      reloadDelaySeconds: 1,
      checkIntervalSeconds: 0.2,
      log: () => undefined,
    });
    const ports = await waker.start();
    const wakerUrl = `http://127.0.0.1:${ports.port}`;
    const comfyPort = Number(new URL(comfy.url).port);
    alb = new TestAlb(ports.port, comfyPort);
    const albUrl = await alb.start();

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const page: Page = await browser.newPage({ viewport: { width: 900, height: 560 } });
    const problems: string[] = [];
    page.on("console", (msg) => {
      // The 503 of the page itself and ComfyUI's 404 for /waker/status are expected HTTP statuses;
      // anything else at error level (a CSP "Refused to ..." above all) is a bug.
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource: the server responded")) {
        problems.push(msg.text());
      }
    });
    page.on("pageerror", (err) => problems.push(err.message));

    const response = await page.goto(`${albUrl}/`);
    assert.equal(response?.status(), 503);
    const status = page.locator("#status");
    assert.equal(await status.getAttribute("role"), "status");
    assert.equal(await status.getAttribute("aria-live"), "polite");
    assert.equal(await status.textContent(), "GPU starting — about 2 minutes");
    assert.match(await page.locator("h1").innerText(), /Starting a GPU/);
    assert.match(await page.locator("#elapsed").innerText(), /^Waiting for 0:0\d$/);

    // The status region and the elapsed time move on without any user action.
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "GPU starting — about 1 minute", null, {
      timeout: 6000,
    });
    assert.match(await page.locator("#elapsed").innerText(), /^Waiting for 0:0[2-9]$/);
    assert.ok(Number(await page.locator("#progress").getAttribute("value")) >= 0);
    await page.screenshot({ path: SCREENSHOT });

    // A GPU pod becomes ready: the page says so while the ALB still routes to the waker...
    await comfy.setState("ready");
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "Ready, connecting…", null, {
      timeout: 6000,
    });
    // ...and the ALB takes the waker out once its health check fails.
    await waitFor(
      "the waker to fail its ALB health check",
      async () => (await request(wakerUrl, { headers: { "user-agent": "ELB-HealthChecker/2.0" } })).status === 503,
    );
    alb.flip();

    await waitFor("the browser to reach ComfyUI", async () => (await page.title().catch(() => "")) === "ComfyUI", 10000, 100);
    assert.equal(await page.locator("h1").innerText(), "ComfyUI stand-in");
    assert.ok(
      comfy.requests.some((r) => r.method === "GET" && r.url === "/" && r.accept.includes("text/html")),
      "the page was reloaded through the ALB onto ComfyUI",
    );
    assert.deepEqual(problems, [], "no script errors or CSP violations");
  });
});

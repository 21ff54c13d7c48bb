/** Loopback helpers for the drain hook test: a minimal ComfyUI queue stand-in (GET /prompt) and child-process bookkeeping. */
import { ChildProcess, spawn } from "node:child_process";
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export type HttpResult = { status: number; headers: http.IncomingHttpHeaders; body: string };

/** One HTTP request without a pooled agent, so nothing stays open after a test. */
export function request(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? "GET", headers: init.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
      );
      res.on("error", reject);
    });
    req.setTimeout(5000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on("error", reject);
    req.end(init.body);
  });
}

export async function getJson<T>(url: string): Promise<T> {
  const res = await request(url);
  return JSON.parse(res.body) as T;
}

export function listen(server: http.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

export function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

/** A loopback URL whose port refuses connections, like a ClusterIP Service with no endpoints. */
export async function refusedUrl(): Promise<string> {
  const server = http.createServer();
  const port = await listen(server);
  await closeServer(server);
  return `http://127.0.0.1:${port}`;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  intervalMs = 25,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export type StandInState = "down" | "starting" | "ready";

/**
 * A GPU-free ComfyUI: GET /prompt, GET /queue and GET / (a page titled "ComfyUI"). "down" closes
 * the listener (connection refused), "starting" answers 503, "ready" answers like ComfyUI.
 */
export class ComfyStandIn {
  /** Every request, when it came and (for GET /prompt) the queue figure it was answered with. */
  readonly requests: { method: string; url: string; accept: string; at: number; queue?: number }[] = [];
  private server = http.createServer((req, res) => this.handle(req, res));
  private state: StandInState = "down";
  private queue = 0;
  private port = 0;

  static async start(state: StandInState, queue = 0): Promise<ComfyStandIn> {
    const standIn = new ComfyStandIn();
    standIn.queue = queue;
    standIn.port = await listen(standIn.server);
    await standIn.setState(state);
    return standIn;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  setQueue(n: number): void {
    this.queue = n;
  }

  async setState(state: StandInState): Promise<void> {
    this.state = state;
    // Same port again, so the waker's configured URL stays valid across down/up.
    if (state === "down") await closeServer(this.server);
    else if (!this.server.listening) await listen(this.server, this.port);
  }

  close(): Promise<void> {
    return closeServer(this.server);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    req.resume();
    const seen: { method: string; url: string; accept: string; at: number; queue?: number } = { method: req.method ?? "", url: req.url ?? "", accept: String(req.headers.accept ?? ""), at: Date.now() };
    this.requests.push(seen);
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(value));
    };
    if (this.state !== "ready") {
      res.writeHead(503, { "content-type": "text/plain" });
      res.end("starting");
      return;
    }
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && (path === "/prompt" || path === "/api/prompt")) {
      seen.queue = this.queue;
      json(200, { exec_info: { queue_remaining: this.queue } });
    } else if (req.method === "GET" && (path === "/queue" || path === "/api/queue")) {
      json(200, { queue_running: [], queue_pending: [] });
    } else if (req.method === "GET" && path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end('<!doctype html><html lang="en"><head><title>ComfyUI</title></head><body><h1>ComfyUI stand-in</h1></body></html>');
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("404: Not Found");
    }
  }
}

export type ProcessResult = { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number };

/** Child processes a test started; `killAll` in an after hook guarantees none survives a failure. */
export class Children {
  private readonly running = new Set<ChildProcess>();

  spawn(command: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
    const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.running.add(child);
    child.on("exit", () => this.running.delete(child));
    return child;
  }

  /** Runs to completion; killed (and the test failed) if it outlives `timeoutMs`. */
  run(command: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 15000): Promise<ProcessResult> {
    const started = Date.now();
    const child = this.spawn(command, args, env);
    return collect(child, started, timeoutMs);
  }

  killAll(): void {
    for (const child of this.running) child.kill("SIGKILL");
    this.running.clear();
  }
}

export function collect(child: ChildProcess, started: number, timeoutMs: number): Promise<ProcessResult> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`process did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

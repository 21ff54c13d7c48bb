// The gateway CLI as a child process, for tests that need the real process edge (address line, logs,
// SIGTERM, SIGKILL + restart on the same --data-dir).
import { ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import * as readline from "node:readline";

const ROOT = path.resolve(__dirname, "../..");
const MAIN = path.join(ROOT, "workload/gateway/main.ts");

export interface GatewayProcess {
  url: string;
  /** The internal port (probes, scaling figure, pods, drain hook). */
  adminUrl: string;
  pid: number;
  /** every stdout/stderr line so far */
  lines: string[];
  /** parsed pino log lines so far */
  logs(): Record<string, unknown>[];
  /** resolves with the first line matching, waiting up to timeoutMs */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** the gateway's own pid (from its logs; with "npm" the child is npm, which forwards no signals) */
  gatewayPid: number;
  /** signal (default SIGTERM) to the gateway process, then wait for the child (npm exits with its code) */
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL to the whole process group (cleanup), then wait */
  killAll(): Promise<void>;
}

/**
 * Starts `npm run gateway -- ARGS` (via "npm") or the same entry point straight under node (via "node":
 * the pid is the gateway's own, so SIGKILL hits it and not a wrapper), or a compiled main.js (as the image runs it). Types are checked by `npm test`'s
 * tsc, so ts-node only transpiles here (a type-checking start takes ~30 s on this machine).
 */
export async function spawnGateway(args: string[], opts: { via?: "npm" | "node"; startTimeoutMs?: number; env?: NodeJS.ProcessEnv; compiledMain?: string; nodeArgs?: string[] } = {}): Promise<GatewayProcess> {
  const via = opts.via ?? "node";
  const env = { ...process.env, TS_NODE_TRANSPILE_ONLY: "true", GATEWAY_LOG_LEVEL: process.env.GATEWAY_TEST_LOG ?? "info", ...opts.env };
  const child: ChildProcess =
    opts.compiledMain
      ? spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.compiledMain, ...args], { cwd: ROOT, env: { ...env, NODE_PATH: path.join(ROOT, "node_modules") }, stdio: ["ignore", "pipe", "pipe"], detached: true })
      : via === "npm"
      ? spawn("npm", ["run", "--silent", "gateway", "--", ...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true })
      : spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, ...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const onLine = (l: string) => {
    lines.push(l);
    for (const w of [...waiters]) {
      if (w.re.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  readline.createInterface({ input: child.stdout! }).on("line", onLine);
  readline.createInterface({ input: child.stderr! }).on("line", onLine);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const waitForLine = (re: RegExp, timeoutMs = 10000) => {
    const hit = lines.find((l) => re.test(l));
    if (hit) return Promise.resolve(hit);
    return new Promise<string>((resolve, reject) => {
      const w = { re, resolve: (l: string) => (clearTimeout(t), resolve(l)) };
      const t = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`no line matching ${re} within ${timeoutMs} ms; output:\n${lines.slice(-30).join("\n")}`));
      }, timeoutMs);
      waiters.push(w);
      void exited.then(({ code, signal }) => {
        if (!waiters.includes(w)) return;
        clearTimeout(t);
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`gateway exited (${code ?? signal}) before a line matching ${re}; output:\n${lines.slice(-30).join("\n")}`));
      });
    });
  };
  const killGroup = async (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      /* already gone */
    }
    await exited;
  };
  let line: string;
  try {
    line = await waitForLine(/^comfyui-gateway serving ComfyUI at (http:\/\/\S+) /, opts.startTimeoutMs ?? 60000);
  } catch (err) {
    await killGroup("SIGKILL");
    throw err;
  }
  const url = /at (http:\/\/\S+) /.exec(line)![1];
  const adminUrl = /\(internal: (http:\/\/[^)\s]+)\)/.exec(line)![1];
  // Under node the child is the gateway itself; under npm it is npm, and pino's lines carry the gateway's pid.
  const gatewayPid = via === "npm" && !opts.compiledMain ? (JSON.parse(await waitForLine(/^\{.*"pid":\d+/, 5000)) as { pid: number }).pid : child.pid!;
  return {
    url,
    adminUrl,
    pid: child.pid!,
    gatewayPid,
    lines,
    async kill(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(gatewayPid, signal);
        } catch {
          /* already gone */
        }
      }
      return exited;
    },
    killAll: () => killGroup("SIGKILL"),
    logs: () =>
      lines.flatMap((l) => {
        if (!l.startsWith("{")) return [];
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    waitForLine,
    exited,
  };
}

/** A loopback port nothing listens on right now (for a ComfyUI that is started later). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

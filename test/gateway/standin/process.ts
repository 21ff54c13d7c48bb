// Runs the stand-in CLI (main.ts) as a child process: lets tests SIGKILL a "pod" and bring it back on
// the same port with the same data dir.
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as readline from "readline";

export interface StandInProcess {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** sends `signal` (default SIGKILL) and waits until the process is gone */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** kills the current process if it still runs, then starts a new one on the same port and data dir, without a fault unless given */
  restart(opts?: { fault?: string }): Promise<void>;
  /** exit code of the current process (null when ended by a signal) */
  readonly exited: Promise<number | null>;
  /** SIGTERM, wait, remove the data dir if this helper created it; idempotent */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  port?: number;
  stepMs?: number;
  dataDir?: string;
  fault?: string;
  models?: Record<string, string[]>;
  /** how long to wait for the LISTENING line (default 30 s: ts-node compiles on start) */
  startTimeoutMs?: number;
}

const MAIN = path.join(__dirname, "main.ts");

function launch(args: string[], timeoutMs: number): Promise<{ child: ChildProcess; url: string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, ...args], {
    cwd: path.resolve(__dirname, "../../.."),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`stand-in did not print its LISTENING line within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    const rl = readline.createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.once("line", (line) => {
      const m = /^STANDIN LISTENING (http:\/\/\S+)$/.exec(line);
      clearTimeout(timer);
      if (!m) {
        child.kill("SIGKILL");
        reject(new Error(`unexpected first line from the stand-in: ${JSON.stringify(line)}`));
        return;
      }
      resolve({ child, url: m[1], exited });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`stand-in exited (${code}) before listening; stderr: ${stderr}`));
    });
  });
}

export async function spawnStandIn(opts: SpawnOptions): Promise<StandInProcess> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "comfy-standin-proc-"));
  const timeout = opts.startTimeoutMs ?? 30000;
  let modelsFile: string | undefined;
  if (opts.models) {
    modelsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "comfy-standin-models-")), "models.json");
    fs.writeFileSync(modelsFile, JSON.stringify(opts.models));
  }
  const args = (port: number, fault: string | undefined) => [
    "--port", String(port), "--step-ms", String(opts.stepMs ?? 10), "--data-dir", dataDir,
    ...(modelsFile ? ["--models-json", modelsFile] : []),
    ...(fault ? ["--fault", fault] : []),
  ];
  let cur = await launch(args(opts.port ?? 0, opts.fault), timeout);
  const port = Number(new URL(cur.url).port);
  let stopped: Promise<void> | undefined;
  const killCurrent = async (signal: NodeJS.Signals) => {
    if (cur.child.exitCode === null && cur.child.signalCode === null) cur.child.kill(signal);
    await cur.exited;
  };
  return {
    get url() {
      return cur.url;
    },
    port,
    get pid() {
      return cur.child.pid as number;
    },
    get exited() {
      return cur.exited;
    },
    kill: (signal = "SIGKILL") => killCurrent(signal),
    restart: async (r) => {
      await killCurrent("SIGKILL");
      cur = await launch(args(port, r?.fault), timeout);
    },
    stop: () =>
      (stopped ??= (async () => {
        await killCurrent("SIGTERM");
        if (ownDir) fs.rmSync(dataDir, { recursive: true, force: true });
        if (modelsFile) fs.rmSync(path.dirname(modelsFile), { recursive: true, force: true });
      })()),
  };
}

/**
 * Helpers for userdata.test.ts: a real S3 (s3rver) on loopback, the real AWS CLI, and the node tool
 * run as a child process so the test can watch its folders while it works.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import type { GpuUserDataArgs } from "../../karpenter/userdata/gpuUserData";

const execFileAsync = promisify(execFile);

export const REPO_ROOT = join(__dirname, "..", "..");
export const TOOL_PATH = join(REPO_ROOT, "karpenter", "userdata", "comfyui-models.sh");

/** Render arguments with pins of every kind (a file, folders, a name with quotes, parentheses and é). */
export const RENDER_ARGS: GpuUserDataArgs = {
  modelsBucket: "comfyui-models-123456789012",
  toolsBucket: "comfyui-nodetools-123456789012",
  region: "us-east-1",
  pins: ["diffusion_models/z_image_turbo_bf16.safetensors", "text_encoders/", "vae/", "loras/it's (v2) é.safetensors"],
  parallel: 8,
  bootFillSeconds: 600,
  reserveGb: 70,
};

/** s3rver ships no types; this is the part the test uses. */
interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require("s3rver") as S3rverCtor;

export interface S3 {
  readonly endpoint: string;
  readonly bucket: string;
  close(): Promise<void>;
}

export async function startS3(dataDir: string, bucket: string): Promise<S3> {
  const server = new S3rver({
    port: 0,
    address: "127.0.0.1",
    silent: true,
    directory: dataDir,
    configureBuckets: [{ name: bucket }],
  });
  const { port } = await server.run();
  return { endpoint: `http://127.0.0.1:${port}`, bucket, close: () => server.close() };
}

export function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * PATH for the children. The AMI ships AWS CLI v2; where Debian's v2 (/usr/bin/aws) is installed
 * next to another CLI earlier on PATH, a one-link bin dir makes the tool run the same major version.
 */
export function childPath(binDir: string): string {
  if (existsSync("/usr/bin/aws") && !existsSync(join(binDir, "aws"))) {
    mkdirSync(binDir, { recursive: true });
    symlinkSync("/usr/bin/aws", join(binDir, "aws"));
  }
  return `${binDir}:${process.env.PATH ?? "/usr/bin:/bin"}`;
}

/** AWS settings s3rver accepts, and nothing from the developer's own AWS configuration. */
export function awsEnv(s3: S3, path: string, home: string): NodeJS.ProcessEnv {
  return {
    PATH: path,
    HOME: home,
    LANG: "C.UTF-8",
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_CONFIG_FILE: "/dev/null",
    AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
    AWS_PAGER: "",
  };
}

export async function aws(env: NodeJS.ProcessEnv, args: string[]): Promise<string> {
  const endpoint = env.AWS_ENDPOINT_URL ?? "";
  const { stdout } = await execFileAsync("aws", ["--endpoint-url", endpoint, ...args], { env });
  return stdout;
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a bash script asynchronously, so the event loop (and a watcher) keeps going meanwhile. */
export function runBash(script: string, args: string[], env: NodeJS.ProcessEnv, input = ""): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [script, ...args], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    // A child that never reads stdin may exit before the write lands; its exit code tells the story.
    child.stdin.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") reject(err);
    });
    child.stdin.end(input);
  });
}

export async function shellcheck(file: string, extraArgs: string[] = []): Promise<string> {
  try {
    await execFileAsync("shellcheck", [...extraArgs, file]);
    return "";
  } catch (err: unknown) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return `${e.stdout ?? ""}${e.stderr ?? ""}` || e.message;
  }
}

/** Relative paths of all regular files under `dir` (sorted), or [] if it does not exist. */
export function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

export function fileSize(path: string): number {
  return statSync(path).size;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Polls `dir` while a fill runs and checks every file it can see against the source bytes: the tool
 * promises that a file is never visible before it is complete, so any mismatch is a torn read.
 */
export function watchForPartialFiles(dir: string, sources: ReadonlyMap<string, Buffer>, intervalMs = 3, skip: (rel: string) => boolean = () => false) {
  const seen = new Set<string>();
  const problems: string[] = [];
  let polls = 0;
  let stopped = false;
  const poll = async (): Promise<void> => {
    while (!stopped) {
      polls++;
      for (const rel of listFilesQuietly(dir)) {
        if (skip(rel)) continue;
        const p = join(dir, rel);
        let ino: number;
        let content: Buffer;
        try {
          ino = statSync(p).ino;
          if (seen.has(`${rel}:${ino}`)) continue;
          content = await readFile(p);
        } catch {
          continue; // gone between listing and reading: that is allowed
        }
        const expected = sources.get(rel);
        if (!expected) problems.push(`unexpected file ${rel}`);
        else if (!content.equals(expected)) problems.push(`${rel} visible with ${content.length}/${expected.length} bytes or different content`);
        seen.add(`${rel}:${ino}`);
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  };
  const running = poll();
  return {
    async stop(): Promise<{ problems: string[]; polls: number; observed: number }> {
      stopped = true;
      await running;
      return { problems, polls, observed: seen.size };
    },
  };
}

function listFilesQuietly(dir: string): string[] {
  try {
    return listFiles(dir);
  } catch {
    return []; // a folder created or renamed mid-walk
  }
}

export interface Proxy {
  readonly endpoint: string;
  close(): Promise<void>;
}

/**
 * An S3 that answers slowly: forwards every request to `target` and sends response bodies at
 * `bytesPerSecond`, so a transfer is still in flight when a deadline passes.
 */
export async function startThrottledProxy(target: string, bytesPerSecond: number): Promise<Proxy> {
  const upstream = new URL(target);
  const slice = 16 * 1024;
  const server = createServer((req, res) => {
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      async (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pause();
        const chunks: Buffer[] = [];
        up.on("data", (c: Buffer) => chunks.push(c));
        await new Promise<void>((r) => {
          up.on("end", r);
          up.on("error", () => r());
          up.resume();
        });
        const body = Buffer.concat(chunks);
        for (let i = 0; i < body.length && !res.destroyed; i += slice) {
          const part = body.subarray(i, i + slice);
          await new Promise((r) => setTimeout(r, (part.length / bytesPerSecond) * 1000));
          if (!res.destroyed) res.write(part);
        }
        res.end();
      },
    );
    out.on("error", () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** One request the fake CloudWatch Logs endpoint received. */
export interface LogsCall {
  readonly target: string;
  readonly body: Record<string, unknown>;
}

export interface FakeLogs {
  readonly endpoint: string;
  readonly calls: LogsCall[];
  /** Events PutLogEvents accepted, by stream ("<group>|<stream>"). */
  readonly events: Map<string, { timestamp: number; message: string }[]>;
  close(): Promise<void>;
}

export interface FakeLogsOptions {
  /** Every request answers HTTP 500 (CloudWatch Logs down). */
  readonly fail500?: boolean;
  /** Streams that already exist ("<group>|<stream>"): CreateLogStream answers ResourceAlreadyExistsException. */
  readonly existingStreams?: readonly string[];
}

/**
 * A CloudWatch Logs endpoint on loopback speaking the service's AWS JSON 1.1 protocol (botocore
 * logs/2014-03-28/service-2.json: "protocol": "json", "jsonVersion": "1.1", targetPrefix
 * Logs_20140328): POST / with X-Amz-Target naming the operation; errors are HTTP 400 with
 * {"__type", "message"}. Only what the node tool calls: CreateLogStream and PutLogEvents.
 */
export async function startFakeLogs(opts: FakeLogsOptions = {}): Promise<FakeLogs> {
  const calls: LogsCall[] = [];
  const events = new Map<string, { timestamp: number; message: string }[]>();
  const streams = new Set(opts.existingStreams ?? []);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const answer = (status: number, body: unknown): void => {
        res.writeHead(status, { "Content-Type": "application/x-amz-json-1.1" });
        res.end(JSON.stringify(body));
      };
      const error = (type: string, message: string): void => answer(400, { __type: type, message });
      const target = String(req.headers["x-amz-target"] ?? "");
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown>;
      } catch {
        return error("SerializationException", "body is not JSON");
      }
      calls.push({ target, body });
      if (opts.fail500) return answer(500, { __type: "ServiceUnavailableException", message: "The service is unavailable" });
      if (req.method !== "POST" || req.url !== "/") return error("UnknownOperationException", `${req.method} ${req.url}`);
      const key = `${String(body.logGroupName)}|${String(body.logStreamName)}`;
      switch (target) {
        case "Logs_20140328.CreateLogStream":
          if (streams.has(key)) return error("ResourceAlreadyExistsException", "The specified log stream already exists");
          streams.add(key);
          return answer(200, {});
        case "Logs_20140328.PutLogEvents":
          if (!streams.has(key)) return error("ResourceNotFoundException", "The specified log stream does not exist.");
          events.set(key, [...(events.get(key) ?? []), ...(body.logEvents as { timestamp: number; message: string }[])]);
          return answer(200, { nextSequenceToken: "1" });
        default:
          return error("UnknownOperationException", `unknown operation ${target}`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    calls,
    events,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

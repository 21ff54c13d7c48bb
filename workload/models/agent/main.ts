/**
 * The model agent's process edge: flags → settings, the S3 client, the cache, the listeners, and a
 * clean stop on SIGTERM/SIGINT (downloads in flight are cancelled; their staging files removed).
 *
 *   npm run models-agent -- --models-dir DIR --bucket NAME [--endpoint URL] --cache-gb N --port P
 *
 * In the DaemonSet (workload/modelsAgent.ts) the image runs `node dist/workload/models/agent/main.js`
 * with the same flags. Exit codes: 0 stopped, 1 failed at start, 2 bad flags.
 */
import { S3Client } from "@aws-sdk/client-s3";
import type { FastifyInstance } from "fastify";
import { chmod, rm } from "node:fs/promises";
import { createServer, Server } from "node:http";
import { join } from "node:path";
import { AGENT_PATHS, AGENT_SOCKET_NAME } from "../../../contracts/modelsAgent";
import { ModelCache } from "./cache";
import { Fetcher, Semaphore } from "./fetcher";
import { AgentSettings, OptionsError, USAGE, parseAgentArgs } from "./options";
import { buildAgentServer } from "./server";

export interface RunningAgent {
  cache: ModelCache;
  server: FastifyInstance;
  /** The TCP address it listens on, e.g. http://127.0.0.1:8190. */
  url: string;
  socketPath?: string;
  /** The probes' port's address, when --health-port is given. */
  healthUrl?: string;
  stop(): Promise<void>;
}

/** One JSON line per event on stdout (the container log). */
function logLine(msg: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), msg, ...fields }) + "\n");
}

/** The S3 client of the agent: enough sockets for every ranged GET, path-style for a local S3 API. */
export function agentS3Client(s: Pick<AgentSettings, "region" | "endpoint" | "connections">): S3Client {
  const agent = { keepAlive: true, maxSockets: s.connections + 8 };
  return new S3Client({
    region: s.region,
    ...(s.endpoint ? { endpoint: s.endpoint, forcePathStyle: true } : {}),
    // The fetcher retries ranges itself (whole ranges, at known offsets); the SDK's own retries stay for HEAD/LIST.
    maxAttempts: 3,
    requestHandler: { httpAgent: agent, httpsAgent: agent, connectionTimeout: 5_000, socketTimeout: 60_000 },
  });
}

/** Starts an agent in this process (the CLI, the tests and the bench use this). */
export async function startAgent(s: AgentSettings, log: (msg: string, fields?: Record<string, unknown>) => void = logLine): Promise<RunningAgent> {
  const s3 = agentS3Client(s);
  const fetcher = new Fetcher({ s3, bucket: s.bucket, rangeBytes: s.rangeBytes, connections: new Semaphore(s.connections), verify: s.verify });
  const cache = new ModelCache({ modelsDir: s.modelsDir, fetcher, quotaBytes: s.quotaBytes, reserveBytes: s.reserveBytes, reservePercent: s.reservePercent, pins: s.pins, log });
  await cache.start();
  const server = buildAgentServer(cache, { token: s.token });
  if (!s.token) log("no token: the API is open to anything that can reach " + s.host);
  await server.listen({ port: s.port, host: s.host });
  const addr = server.server.address();
  const port = typeof addr === "object" && addr ? addr.port : s.port;
  const url = `http://${s.host.includes(":") ? `[${s.host}]` : s.host}:${port}`;

  let socketServer: FastifyInstance | undefined;
  let socketPath: string | undefined;
  if (s.socket) {
    socketPath = s.socket === "auto" ? join(cache.privateDir, AGENT_SOCKET_NAME) : s.socket;
    await rm(socketPath, { force: true });
    socketServer = buildAgentServer(cache, {});
    await socketServer.listen({ path: socketPath });
    await chmod(socketPath, 0o600);
  }
  // The probes' port: nothing but "the process answers", so the node may reach it.
  let health: Server | undefined;
  if (s.healthPort !== undefined) {
    health = createServer((req, res) => {
      const ok = req.method === "GET" && req.url === AGENT_PATHS.health;
      res.writeHead(ok ? 200 : 404, { "content-type": "application/json" }).end(ok ? '{"ok":true}' : '{"error":"only GET /healthz here"}');
    });
    await new Promise<void>((r) => health!.listen(s.healthPort, s.host, r));
  }
  const ha = health?.address();
  const healthUrl = ha && typeof ha === "object" ? `http://${s.host.includes(":") ? `[${s.host}]` : s.host}:${ha.port}` : undefined;
  log("listening", { url, socket: socketPath, healthPort: s.healthPort, bucket: s.bucket, endpoint: s.endpoint, modelsDir: s.modelsDir });
  let stopped: Promise<void> | undefined;
  return {
    cache,
    server,
    url,
    socketPath,
    healthUrl,
    stop: () =>
      (stopped ??= (async () => {
        await Promise.all([server.close(), socketServer?.close(), health && new Promise((r) => health!.close(r))]);
        await cache.stop();
        s3.destroy();
        if (socketPath) await rm(socketPath, { force: true });
      })()),
  };
}

async function main(): Promise<void> {
  let settings: AgentSettings;
  try {
    settings = parseAgentArgs(process.argv.slice(2));
  } catch (err) {
    if (err instanceof OptionsError) {
      for (const p of err.problems) process.stderr.write(`models-agent: ${p}\n`);
      process.stderr.write(USAGE + "\n");
      process.exit(2);
    }
    throw err;
  }
  let agent: RunningAgent;
  try {
    agent = await startAgent(settings);
  } catch (err) {
    process.stderr.write(`models-agent: could not start: ${(err as Error).message}\n`);
    process.exit(1);
  }
  const stop = (signal: string) => {
    logLine("stopping", { signal });
    void agent.stop().then(() => process.exit(0));
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

if (require.main === module) void main();

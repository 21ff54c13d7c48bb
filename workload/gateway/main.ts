/**
 * Process edge: flags/env → config, stores, the app, listen; SIGTERM/SIGINT → not ready, stop dispatching,
 * release the Lease, close. `npm run gateway -- --comfyui URL [--comfyui URL …] [--port 8188] [--data-dir DIR]`.
 */
import * as path from "node:path";
import pino from "pino";
import { buildApp, type Gateway, type GatewayDeps } from "./app";
import { fileAudit } from "./audit";
import { metricsSinkFor } from "./telemetry";
import { ConfigError, loadConfig, type GatewayConfig } from "./config";
import { startEmbeddedStore } from "./store/embedded";
import { LocalObjectStore } from "./store/objects";
import { modelsS3Client, s3Lister } from "./models/library";

export interface Running {
  gateway: Gateway;
  /** ComfyUI's protocol. */
  url: string;
  /** The internal port (probes, scaling figure, drain hook). */
  adminUrl: string;
  close(): Promise<void>;
}

/** Local mode: embedded DynamoDB-compatible store and local files under --data-dir, pods from --comfyui. */
export async function startLocal(config: GatewayConfig, log = pino({ level: config.logLevel }), overrides: Partial<GatewayDeps> = {}): Promise<Running> {
  const dir = path.resolve(config.dataDir);
  const db = await startEmbeddedStore({ dbPath: path.join(dir, "db"), table: config.table });
  const gateway = await buildApp(config, {
    store: db.store,
    auth: db.store.authStore(),
    objects: new LocalObjectStore(path.join(dir, "objects", "gateway")),
    inputs: new LocalObjectStore(path.join(dir, "objects", "inputs")),
    users: new LocalObjectStore(path.join(dir, "objects", "users")),
    log,
    metrics: metricsSinkFor(config, log),
    audit: fileAudit(config.auditFile ?? path.join(dir, "audit.log")),
    modelsLister: config.modelsBucket ? s3Lister(modelsS3Client(config), config.modelsBucket) : undefined,
    ...overrides,
  });
  await gateway.library?.start();
  // One process owns a data dir: it leads, with a fencing token above any earlier process's.
  await gateway.lead({ epoch: await db.store.takeEpoch() });
  gateway.setPods(config.comfyuiUrls.map((url, i) => ({ key: url, url, ready: true, terminating: false, agentUrl: config.modelsAgentUrls[i] })));
  const addr = await gateway.app.listen({ port: config.port, host: config.host });
  const adminAddr = await gateway.admin.listen({ port: config.adminPort, host: config.host });
  let closing: Promise<void> | undefined;
  return {
    gateway,
    url: addr,
    adminUrl: adminAddr,
    close() {
      closing ??= (async () => {
        await gateway.close();
        await db.close();
      })();
      return closing;
    },
  };
}

async function main(): Promise<void> {
  let config: GatewayConfig;
  try {
    config = loadConfig(process.argv.slice(2), process.env);
  } catch (err: unknown) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  const log = pino({ level: config.logLevel });
  let running: { close(): Promise<void> };
  if (config.mode === "local") {
    const r = await startLocal(config, log);
    running = r;
    console.log(`comfyui-gateway serving ComfyUI at ${r.url} over ${config.comfyuiUrls.join(", ")} (internal: ${r.adminUrl})`);
  } else {
    const { startKubernetes } = await import("./kube/run");
    const r = await startKubernetes(config, log);
    running = r;
    console.log(`comfyui-gateway serving ComfyUI at ${r.url} as ${config.podName} in ${config.namespace} (internal: ${r.adminUrl})`);
  }
  const stop = (sig: string) => {
    log.info({ sig }, "shutting down");
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}

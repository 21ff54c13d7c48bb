/* eslint-disable @typescript-eslint/no-explicit-any -- Kubernetes API objects are untyped JSON here; only the few fields read are checked. */
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";

/** Minimal Kubernetes API client: the few calls the gateway's Role allows, each with a timeout. */
export class KubeClient {
  private readonly agent: http.Agent;
  constructor(readonly baseUrl: string, private readonly token?: string, ca?: Buffer) {
    this.agent = baseUrl.startsWith("https:") ? new https.Agent({ ca, keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  /**
   * In-cluster: service account token + CA (mounted by the kubelet). `GATEWAY_KUBE_API_URL` (plain http,
   * no token) points at another API server instead: the tests' fake one.
   */
  static inCluster(env: NodeJS.ProcessEnv = process.env): KubeClient {
    if (env.GATEWAY_KUBE_API_URL) return new KubeClient(env.GATEWAY_KUBE_API_URL);
    const dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    const host = env.KUBERNETES_SERVICE_HOST;
    const port = env.KUBERNETES_SERVICE_PORT ?? "443";
    if (!host) throw new Error("KUBERNETES_SERVICE_HOST is not set: not running in a pod");
    return new KubeClient(`https://${host.includes(":") ? `[${host}]` : host}:${port}`, fs.readFileSync(`${dir}/token`, "utf8").trim(), fs.readFileSync(`${dir}/ca.crt`));
  }

  request(method: string, path: string, body?: unknown, opts: { contentType?: string; timeoutMs?: number } = {}): Promise<{ status: number; json: any }> {
    return new Promise((resolve, reject) => {
      const url = new URL(this.baseUrl + path);
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const headers: Record<string, string> = { accept: "application/json" };
      // The token is only sent, never logged.
      if (this.token) headers.authorization = `Bearer ${this.token}`;
      if (data) headers["content-type"] = opts.contentType ?? "application/json";
      const mod = url.protocol === "https:" ? https : http;
      const req = mod.request(url, { method, headers, agent: this.agent, timeout: opts.timeoutMs ?? 10000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`kubernetes ${method} ${path} timed out`)));
      req.on("error", reject);
      req.end(data);
    });
  }

  /** A watch stream: calls onEvent per line until stop() or the server ends it (then resolves). */
  watch(path: string, onEvent: (ev: { type: string; object: any }) => void): { done: Promise<void>; stop(): void } {
    const url = new URL(this.baseUrl + path);
    const headers: Record<string, string> = { accept: "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const mod = url.protocol === "https:" ? https : http;
    let req: http.ClientRequest | undefined;
    const done = new Promise<void>((resolve, reject) => {
      req = mod.request(url, { method: "GET", headers, agent: this.agent }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`watch ${path} answered ${res.statusCode}`));
          return;
        }
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          buf += c;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i).trim();
            buf = buf.slice(i + 1);
            if (line) onEvent(JSON.parse(line));
          }
        });
        res.on("end", () => resolve());
        res.on("error", () => resolve());
        res.on("aborted", () => resolve());
      });
      req.on("error", (err) => ((err as NodeJS.ErrnoException).code === "ECONNRESET" ? resolve() : reject(err)));
      req.end();
    });
    return { done, stop: () => req?.destroy() };
  }
}

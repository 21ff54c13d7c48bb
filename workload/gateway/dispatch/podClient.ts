import { createHash } from "node:crypto";

/** One ComfyUI pod's HTTP API, every call with a timeout and without an Origin header (protocol §1). */
export class PodClient {
  constructor(readonly baseUrl: string, private readonly timeoutMs = 10000) {}

  async request(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<{ status: number; body: Buffer; headers: Headers }> {
    const init: RequestInit = { method, signal: AbortSignal.timeout(timeoutMs), headers: {} };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)["content-type"] = "application/json";
    }
    const res = await fetch(this.baseUrl + path, init);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
  }

  async json<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
    const r = await this.request(method, path, body);
    const text = r.body.toString("utf8");
    return { status: r.status, json: (text ? JSON.parse(text) : undefined) as T };
  }
}

/**
 * The client_id the gateway submits with on one pod under one leadership: ComfyUI keeps one socket per
 * client_id and drops the registration when any socket under that id closes (server.py
 * `websocket_handler` pops the sid in its `finally`, a125cd84), so a new leader must never share the old
 * one's id — the old process's late close would cut the new leader's events.
 */
export function podClientId(podKey: string, epoch: number): string {
  return "gateway-" + createHash("sha256").update(`${podKey}\n${epoch}`).digest("hex").slice(0, 24);
}

/**
 * The gateway's side of the model agent's API (contracts/modelsAgent.ts: paths, token header, shapes).
 * One client per GPU node; every call has a timeout, and a connection failure is told apart from an answer
 * (an unreachable agent is a lost node: the prompt runs elsewhere).
 */
import { AGENT_ERRORS, AGENT_PATHS, TOKEN_HEADER, type AgentErrorCode, type EnsureResponse, type InventoryResponse } from "../../../contracts/modelsAgent";

/** The agent did not answer at all (connection refused, reset, timeout): its node is gone or going. */
export class AgentUnreachable extends Error {}

/** The agent refused or failed an ensure: its code, and whether trying again (here or elsewhere) may help. */
export class EnsureFailed extends Error {
  constructor(readonly code: AgentErrorCode | string, message: string, readonly retryable: boolean, readonly path?: string) {
    super(message);
  }
}

export class AgentClient {
  constructor(readonly baseUrl: string, private readonly token: string | undefined, private readonly timeoutMs = 10_000) {}

  private async call(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<{ status: number; json: unknown }> {
    const headers: Record<string, string> = {};
    if (this.token) headers[TOKEN_HEADER] = this.token;
    if (body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) });
    } catch (err: unknown) {
      throw new AgentUnreachable(`model agent ${this.baseUrl} unreachable: ${(err as Error).message}`);
    }
    const text = await res.text().catch(() => "");
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json };
  }

  async inventory(): Promise<InventoryResponse> {
    const r = await this.call("GET", AGENT_PATHS.inventory);
    if (r.status !== 200) throw new AgentUnreachable(`model agent ${this.baseUrl} inventory answered ${r.status}`);
    return r.json as InventoryResponse;
  }

  /**
   * Makes `files` present on the node, held for `holdId` (a running or buffered prompt) so the LRU cannot evict
   * them. Waits for the downloads (a file of tens of GB at the node's NIC speed takes minutes: the timeout is long).
   */
  async ensure(files: string[], holdId: string, ttlSeconds: number, timeoutMs = 30 * 60_000): Promise<EnsureResponse> {
    const r = await this.call("POST", AGENT_PATHS.ensure, { files, hold: { id: holdId, ttlSeconds }, wait: true }, timeoutMs);
    const body = r.json as EnsureResponse | undefined;
    if (r.status === 200 && body) return body;
    const e = body?.error ?? (r.json as { error?: { code?: string; message?: string; retryable?: boolean; path?: string } } | undefined)?.error;
    const code = e?.code ?? `http_${r.status}`;
    const known = (AGENT_ERRORS as Record<string, { retryable: boolean }>)[code];
    throw new EnsureFailed(code, e?.message ?? `model agent answered ${r.status}`, e?.retryable ?? known?.retryable ?? r.status >= 500, e?.path);
  }

  /**
   * Starts fetching `files` without waiting (the agent answers 202 while it downloads, 200 when all are
   * present), held for `holdId`: the cold-start prefetch (prefetch.ts). Throws as `ensure` does.
   */
  async prefetch(files: string[], holdId: string, ttlSeconds: number): Promise<EnsureResponse> {
    const r = await this.call("POST", AGENT_PATHS.ensure, { files, hold: { id: holdId, ttlSeconds }, wait: false });
    const body = r.json as EnsureResponse | undefined;
    if ((r.status === 200 || r.status === 202) && body) return body;
    const e = body?.error;
    const code = e?.code ?? `http_${r.status}`;
    throw new EnsureFailed(code, e?.message ?? `model agent answered ${r.status}`, e?.retryable ?? r.status >= 500, e?.path);
  }

  /** Renews a prompt's hold (its files stay protected while it runs past the first TTL). */
  async hold(id: string, files: string[], ttlSeconds: number): Promise<void> {
    await this.call("PUT", `${AGENT_PATHS.holds}/${encodeURIComponent(id)}`, { files, ttlSeconds });
  }

  /** The prompt ended or left this node: its files may be evicted again. */
  async release(id: string): Promise<void> {
    await this.call("DELETE", `${AGENT_PATHS.holds}/${encodeURIComponent(id)}`, undefined, 5000);
  }
}

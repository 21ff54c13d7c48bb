import type { Logger } from "pino";
import type { Dispatcher } from "./dispatch/dispatcher";
import type { Discovery } from "./discovery";
import { GatewayError } from "./protocol/errors";
import type { LeaderLink } from "./replicas/link";
import type { ObjectStore } from "./store/objects";
import { PromptClock, type PromptBody, type PromptMeta, type PromptRecord, type Store } from "./store/types";

export type Files = { output: ObjectStore; temp: ObjectStore; input: ObjectStore; user: ObjectStore };

/** ComfyUI's queue item: [number, prompt_id, prompt, extra_data, outputs_to_execute]. */
export type QueueItem = [number, string, Record<string, unknown>, Record<string, unknown>, string[]];
export interface QueueView { queue_running: QueueItem[]; queue_pending: QueueItem[] }

export function queueItem(m: PromptMeta, body: PromptBody | undefined): QueueItem {
  return [m.number, m.id, body?.prompt ?? {}, body?.extraData ?? {}, body?.outputs ?? []];
}

/**
 * What every route uses (decorated on the fastify instance as `gw`). Every replica serves: a route asks
 * here, and the answer comes from this process when it leads, from the leader over the replica link when
 * it follows, and from the store when no leader is known (a hand-over).
 */
export class Services {
  dispatcher: Dispatcher | undefined;
  link: LeaderLink | undefined;
  closing = false;
  /** The queue figure the leader last published (followers). */
  remaining: number | undefined;
  /** Told of every newly stored prompt (the accepted-prompts figure). */
  onAccepted: () => void = () => {};
  /** Ready GPU pods and the cold-start estimate, for the UI extension (set by the app). */
  gpuStatus: () => Promise<unknown> = async () => ({ ready: 0, pods: [] });
  readonly clock = new PromptClock();

  constructor(
    readonly store: Store,
    readonly files: Files,
    readonly discovery: Discovery,
    readonly log: Logger,
    readonly maxUploadBytes: number,
  ) {}

  get leading(): boolean {
    return this.dispatcher !== undefined;
  }

  get role(): "leader" | "follower" | "no leader" {
    return this.dispatcher ? "leader" : this.link?.up ? "follower" : "no leader";
  }

  /** A prompt this replica stored: the leader places it (told directly, or through the link; its sweep finds any notice lost). */
  submitted(r: PromptRecord): void {
    this.onAccepted();
    if (this.dispatcher) this.dispatcher.submitted(r);
    else if (this.link?.up) {
      this.link.call("POST", "/gateway/leader/submitted", r).catch((err: unknown) => this.log.warn({ promptId: r.id, err: (err as Error).message }, "leader not told of a prompt; its sweep will find it"));
    }
  }

  /** Studio-wide prompts waiting + running. */
  async queueRemaining(): Promise<number> {
    if (this.dispatcher) return this.dispatcher.queueRemaining();
    if (this.link?.up && this.remaining !== undefined) return this.remaining;
    const c = await this.store.counts();
    return c.waiting + c.running;
  }

  /** The queue as ComfyUI shows it. */
  async queue(): Promise<QueueView> {
    if (this.dispatcher) {
      const v = await this.dispatcher.queueView();
      return { queue_running: v.running.map((m) => queueItem(m, v.bodies.get(m.id))), queue_pending: v.pending.map((m) => queueItem(m, v.bodies.get(m.id))) };
    }
    const fromLeader = await this.askLeader<QueueView>("GET", "/gateway/leader/queue");
    if (fromLeader) return fromLeader;
    // No leader: the store's view (a prompt buffered on a pod shows as running).
    const open = await this.store.listOpen();
    const bodies = await this.store.getBodies(open.map((m) => m.id));
    const pending = open.filter((m) => m.state === "queued").sort((a, b) => a.number - b.number || a.seq - b.seq);
    return { queue_running: open.filter((m) => m.state === "dispatched").map((m) => queueItem(m, bodies.get(m.id))), queue_pending: pending.map((m) => queueItem(m, bodies.get(m.id))) };
  }

  /**
   * Queue delete (`ids`) or clear (undefined): waiting prompts are deleted in the store by whichever
   * replica is asked; prompts already buffered on a pod are taken off it by the leader.
   */
  async deleteFromQueue(ids: readonly string[] | undefined): Promise<void> {
    const deleted = await this.store.deleteQueued(ids);
    if (this.dispatcher) {
      this.dispatcher.deleted(deleted);
      const rest = ids ? ids.filter((id) => !deleted.includes(id)) : [...this.dispatcher.open.keys()];
      if (rest.length) await this.dispatcher.cancel(rest);
      return;
    }
    await this.askLeader("POST", "/gateway/leader/queue", { deleted, cancel: ids ? ids.filter((id) => !deleted.includes(id)) : "all" });
  }

  /** Interrupts running prompts: `ids`, or the running prompts of `clientId`. Needs the leader. */
  async interrupt(q: { ids?: string[]; clientId?: string }): Promise<void> {
    if (this.dispatcher) {
      const ids = q.ids ?? [...this.dispatcher.open.values()].filter((r) => r.clientId === q.clientId && r.state === "dispatched").map((r) => r.id);
      await this.dispatcher.interrupt(ids);
      return;
    }
    await this.requireLeader("POST", "/gateway/leader/interrupt", q);
  }

  /** ComfyUI's /free on every ready pod. Needs the leader. */
  async free(body: unknown): Promise<void> {
    if (this.dispatcher) {
      await Promise.all([...this.dispatcher.workers.values()].filter((w) => w.ready).map((w) => w.client.request("POST", "/free", body, 5000).catch(() => undefined)));
      return;
    }
    await this.requireLeader("POST", "/gateway/leader/free", body);
  }

  /** A ready pod of this leader, for reads the discovery cache does not hold yet. */
  readyWorker() {
    return [...(this.dispatcher?.workers.values() ?? [])].find((w) => w.ready);
  }

  /** "x.png", "sub/x.png", "x.png [output]": exists in the gateway's stores? */
  async fileExists(v: string): Promise<boolean> {
    const m = /^(.*) \[(input|output|temp)\]$/.exec(v);
    const type = (m?.[2] ?? "input") as "input" | "output" | "temp";
    const name = m ? m[1] : v;
    if (!name || name.startsWith("/") || name.split("/").includes("..")) return false;
    try {
      return (await this.files[type].get(name)) !== undefined;
    } catch {
      return false;
    }
  }

  /** The leader's answer, or undefined when there is no reachable leader (the caller has a store fallback). */
  async askLeader<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T | undefined> {
    if (!this.link?.up) return undefined;
    try {
      const r = await this.link.call(method, path, body);
      return r.status === 200 ? (r.json as T) : undefined;
    } catch (err: unknown) {
      this.log.warn({ path, err: (err as Error).message }, "leader did not answer");
      return undefined;
    }
  }

  /** The leader's answer, or 503 not_leader when none answers (the client retries; ALB/browser do). */
  async requireLeader<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    if (!this.link?.leaderUrl) throw new GatewayError("GW_ERR_NO_LEADER");
    let r: { status: number; json: unknown };
    try {
      r = await this.link.call(method, path, body);
    } catch (err: unknown) {
      throw new GatewayError("GW_ERR_NO_LEADER", (err as Error).message);
    }
    if (r.status !== 200) throw new GatewayError("GW_ERR_NO_LEADER", `leader answered ${r.status}`);
    return r.json as T;
  }
}

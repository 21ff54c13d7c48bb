import type { Logger } from "pino";
import type { Dispatcher } from "./dispatch/dispatcher";
import type { Discovery } from "./discovery";
import { GatewayError } from "./protocol/errors";
import type { LeaderLink } from "./replicas/link";
import type { ObjectStore } from "./store/objects";
import type { Caller } from "./auth/types";
import { ownerPrefix } from "./protocol/outputs";
import { PromptClock, type PromptBody, type PromptMeta, type PromptRecord, type Store } from "./store/types";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

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
  private readonly owners = new Map<string, string>();

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

  /**
   * The queue as ComfyUI shows it, of one user's prompts (`owner`), or everyone's (undefined: admins).
   * Everyone's prompts count in `queue_remaining` (positions stay honest); only one's own are shown.
   */
  async queue(owner: string | undefined): Promise<QueueView> {
    const mine = (m: PromptMeta) => owner === undefined || m.owner === owner;
    if (this.dispatcher) {
      const v = await this.dispatcher.queueView();
      return { queue_running: v.running.filter(mine).map((m) => queueItem(m, v.bodies.get(m.id))), queue_pending: v.pending.filter(mine).map((m) => queueItem(m, v.bodies.get(m.id))) };
    }
    const fromLeader = await this.askLeader<QueueView>("GET", `/gateway/leader/queue${owner === undefined ? "" : `?owner=${encodeURIComponent(owner)}`}`);
    if (fromLeader) return fromLeader;
    // No leader: the store's view (a prompt buffered on a pod shows as running).
    const open = (await this.store.listOpen()).filter(mine);
    const bodies = await this.store.getBodies(open.map((m) => m.id));
    const pending = open.filter((m) => m.state === "queued").sort((a, b) => a.number - b.number || a.seq - b.seq);
    return { queue_running: open.filter((m) => m.state === "dispatched").map((m) => queueItem(m, bodies.get(m.id))), queue_pending: pending.map((m) => queueItem(m, bodies.get(m.id))) };
  }

  /**
   * Queue delete (`ids`) or clear (undefined) of `owner`'s prompts (undefined: anyone's, admins): waiting
   * prompts are deleted in the store by whichever replica is asked; prompts already buffered on a pod are
   * taken off it by the leader.
   */
  async deleteFromQueue(ids: readonly string[] | undefined, owner: string | undefined): Promise<void> {
    const deleted = await this.store.deleteQueued(ids, owner);
    if (this.dispatcher) {
      this.dispatcher.deleted(deleted);
      const candidates = ids ? ids.filter((id) => !deleted.includes(id)) : [...this.dispatcher.open.keys()];
      const rest = candidates.filter((id) => {
        const m = this.dispatcher!.open.get(id);
        return m !== undefined && (owner === undefined || m.owner === owner);
      });
      if (rest.length) {
        const cancelled = await this.dispatcher.cancel(rest);
        // One whose placement failed went back to the queue meanwhile: delete it there.
        const back = rest.filter((id) => !cancelled.includes(id));
        if (back.length) this.dispatcher.deleted(await this.store.deleteQueued(back, owner));
      }
      return;
    }
    await this.askLeader("POST", "/gateway/leader/queue", { deleted, cancel: ids ? ids.filter((id) => !deleted.includes(id)) : "all", ...(owner === undefined ? {} : { owner }) });
  }

  /** Interrupts running prompts — `ids`, or the running prompts of `clientId` — of `owner` only (undefined: anyone's). */
  async interrupt(q: { ids?: string[]; clientId?: string; owner?: string }): Promise<void> {
    if (this.dispatcher) {
      const open = [...this.dispatcher.open.values()].filter((r) => q.owner === undefined || r.owner === q.owner);
      const ids = q.ids ? open.filter((r) => q.ids!.includes(r.id)).map((r) => r.id) : open.filter((r) => r.clientId === q.clientId && r.state === "dispatched").map((r) => r.id);
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

  /** Who submitted a prompt (cached: it never changes), or undefined when `id` is no prompt of the store. */
  async ownerOf(id: string): Promise<string | undefined> {
    const hit = this.owners.get(id);
    if (hit !== undefined) return hit;
    if (!UUID.test(id)) return undefined;
    const r = await this.store.get(id);
    if (!r) return undefined;
    if (this.owners.size >= 10_000) this.owners.delete(this.owners.keys().next().value!);
    this.owners.set(id, r.owner);
    return r.owner;
  }

  /**
   * An output or temp file for `caller`: its key starts with the prompt id, and the prompt's owner (or an
   * admin) may read it, from the owner's prefix (or the layout before per-user prefixes).
   */
  async outputFile(caller: Caller, type: "output" | "temp", key: string) {
    const owner = await this.ownerOf(key.split("/")[0]);
    if (owner === undefined ? !caller.admin : owner !== caller.userId && !caller.admin) return undefined;
    const store = this.files[type];
    return (owner !== undefined ? await store.stream(`${ownerPrefix(owner)}/${key}`) : undefined) ?? (await store.stream(key));
  }

  /** "x.png", "sub/x.png", "x.png [output]": exists in the gateway's stores for `caller`? */
  async fileExists(v: string, caller: Caller): Promise<boolean> {
    const m = /^(.*) \[(input|output|temp)\]$/.exec(v);
    const type = (m?.[2] ?? "input") as "input" | "output" | "temp";
    const name = m ? m[1] : v;
    if (!name || name.startsWith("/") || name.split("/").includes("..")) return false;
    try {
      if (type === "input") return (await this.files.input.stat(name)) !== undefined;
      const f = await this.outputFile(caller, type, name);
      f?.body.destroy();
      return f !== undefined;
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

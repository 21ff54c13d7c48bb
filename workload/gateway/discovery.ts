import type { Logger } from "pino";
import type { Worker } from "./dispatch/worker";
import type { ObjectStore } from "./store/objects";
import type { ObjectInfo } from "./protocol/validate";

/** The discovery answers read from a pod and cached, so the UI opens and prompts validate with no GPU running. */
export const DISCOVERY = ["object_info", "embeddings", "models", "extensions", "system_stats", "features"] as const;

/**
 * Cache of a pod's discovery routes and frontend files, keyed per image (kubernetes: the pod's image id;
 * local: ComfyUI's version) and persisted in the object store (`cache/<version>/…`, `cache/current`).
 */
export class Discovery {
  private version: string | undefined;
  private readonly mem = new Map<string, Buffer>();
  private info: ObjectInfo | undefined;

  /** Told when a refresh moved the cache to another version (the leader tells its followers). */
  onVersion: (version: string) => void = () => {};

  constructor(private readonly store: ObjectStore, private readonly log: Logger) {}

  async load(): Promise<void> {
    const cur = await this.store.get("current");
    if (cur) this.useVersion(cur.toString("utf8"));
  }

  get currentVersion(): string | undefined {
    return this.version;
  }

  /** Serve another version's cache, or re-read this one's (a follower told by the leader that it refreshed). */
  useVersion(version: string, reread = false): void {
    if (version === this.version && !reread) return;
    this.version = version;
    this.info = undefined;
    this.mem.clear();
  }

  private key(name: string) {
    return `${encodeURIComponent(this.version ?? "none")}/${name}`;
  }

  async get(name: string): Promise<Buffer | undefined> {
    if (!this.version) return undefined;
    const k = this.key(name);
    const hit = this.mem.get(k);
    if (hit) return hit;
    const v = await this.store.get(k);
    if (v) this.mem.set(k, v);
    return v;
  }

  async put(name: string, body: Buffer): Promise<void> {
    if (!this.version) return;
    const k = this.key(name);
    this.mem.set(k, body);
    await this.store.put(k, body);
  }

  async objectInfo(): Promise<ObjectInfo | undefined> {
    if (this.info) return this.info;
    const b = await this.get("object_info.json");
    if (b) this.info = JSON.parse(b.toString("utf8")) as ObjectInfo;
    return this.info;
  }

  /** Called when a pod becomes ready: re-read everything from it (model lists change while pods run). */
  async refresh(w: Worker): Promise<void> {
    try {
      const stats = await w.client.json<{ system?: { comfyui_version?: string } }>("GET", "/system_stats");
      const version = w.imageId ?? `comfyui-${stats.json.system?.comfyui_version ?? "unknown"}`;
      if (version !== this.version) {
        this.version = version;
        this.info = undefined;
      }
      for (const name of DISCOVERY) {
        const r = await w.client.request("GET", `/${name}`);
        if (r.status === 200) await this.put(`${name}.json`, r.body);
      }
      const models = JSON.parse((await this.get("models.json"))?.toString("utf8") ?? "[]") as string[];
      for (const folder of models) {
        const r = await w.client.request("GET", `/models/${encodeURIComponent(folder)}`);
        if (r.status === 200) await this.put(`models/${folder}.json`, r.body);
      }
      this.info = undefined;
      await this.store.put("current", Buffer.from(version));
      this.log.info({ pod: w.key, version }, "discovery cache refreshed");
      this.onVersion(version);
    } catch (err: unknown) {
      this.log.warn({ pod: w.key, err: (err as Error).message }, "discovery refresh failed");
    }
  }
}

import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Worker } from "./dispatch/worker";
import type { ObjectStore } from "./store/objects";
import type { ObjectInfo } from "./protocol/validate";
import { learnModelInputs, LOADER_INPUTS, withLibrary, type ModelInputs } from "./models/inputs";
import type { ModelLibrary } from "./models/library";

/**
 * The read-only JSON answers cached from a pod, so the UI opens, its panels fill and prompts validate with no
 * GPU running: everything frontend 1.27.10 (the one ComfyUI 0.3.64 pins) asks for at start and in its panels.
 * Re-read from every pod that turns ready (model lists and node lists change while pods run).
 */
export const DISCOVERY = ["object_info", "embeddings", "models", "extensions", "system_stats", "features", "i18n", "workflow_templates", "experiment/models"] as const;

/** Where a static (non-API) GET is cached: its path, plus a digest of its query string when it has one. */
export function staticKey(pathname: string, search = ""): string {
  const p = pathname === "/" ? "/index.html" : pathname;
  if (search === "" || search === "?") return `static${p}`;
  return `static${p}@${createHash("sha256").update(search).digest("hex").slice(0, 32)}`;
}

/** Where a model's `/view_metadata/{folder}?filename=` answer is cached. */
export function metadataKey(folder: string, filename: string): string {
  return `view_metadata/${encodeURIComponent(folder)}/${createHash("sha256").update(filename).digest("hex").slice(0, 32)}.json`;
}

/** The most frontend files one crawl reads (frontend 1.27.10 has about 700; a runaway crawl stops here). */
export const CRAWL_MAX_FILES = 5000;
// Text files whose references the crawl follows, and the extensions a reference must have to be fetched
// (a frontend file, never an API route: the crawl only reads what a browser would load as a file).
const FOLLOW = /^(text\/html|text\/css|text\/javascript|application\/javascript|application\/json)/;
const FILE_EXT = "js|mjs|css|json|woff2?|ttf|eot|svg|png|webp|jpe?g|gif|ico|wasm";
const JS_REF = new RegExp(`["'\`]((?:\\.{1,2}/|/)?[\\w@.\\-/]+\\.(?:${FILE_EXT}))["'\`]`, "g");
const CSS_REF = /url\(\s*['"]?([^'")\s]+)['"]?\s*\)/g;
const HTML_REF = /(?:src|href)\s*=\s*["']([^"']+)["']/g;

/**
 * Cache of a pod's discovery routes and frontend files, keyed per image (kubernetes: the pod's image id;
 * local: ComfyUI's version) and persisted in the object store (`cache/<version>/…`, `cache/current`).
 *
 * When a pod turns ready the leader re-reads the JSON answers (DISCOVERY, each model folder of `/models`
 * and `/experiment/models`, each safetensors model's `/view_metadata`, `/internal/folder_paths`) and, once per version, crawls the frontend the pod
 * serves: index.html and what it references, transitively (scripts, modules, style sheets, fonts, images),
 * the `/extensions` scripts, and the workflow templates `/templates/index.json` and `/workflow_templates`
 * list. So every panel works with no pod, after a restart too, and a follower never needs the leader for it.
 */
export class Discovery {
  private version: string | undefined;
  private readonly mem = new Map<string, Buffer>();
  private info: ObjectInfo | undefined;
  /** The node list with the model library merged in, and the library version it was built at. */
  private merged: { info: ObjectInfo; raw: ObjectInfo; version: number } | undefined;
  private inputs: ModelInputs | undefined;
  private running: Promise<void> = Promise.resolve();

  /** Told when a refresh moved the cache to another version (the leader tells its followers). */
  onVersion: (version: string) => void = () => {};

  constructor(private readonly store: ObjectStore, private readonly log: Logger, readonly library?: ModelLibrary) {}

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
    this.merged = undefined;
    this.inputs = undefined;
    this.mem.clear();
  }

  private key(name: string, version = this.version) {
    return `${encodeURIComponent(version ?? "none")}/${name}`;
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

  /** The pod's node list as cached, without the library. */
  async rawObjectInfo(): Promise<ObjectInfo | undefined> {
    if (this.info) return this.info;
    const b = await this.get("object_info.json");
    if (b) this.info = JSON.parse(b.toString("utf8")) as ObjectInfo;
    return this.info;
  }

  /** The node list prompts are validated against and clients are served: every loader lists the whole library. */
  async objectInfo(): Promise<ObjectInfo | undefined> {
    const raw = await this.rawObjectInfo();
    return raw && this.withLibrary(raw);
  }

  /** Which inputs name model files: learned at the last refresh (model_inputs.json), else ComfyUI's own loaders. */
  async modelInputs(): Promise<ModelInputs> {
    if (this.inputs) return this.inputs;
    const b = await this.get("model_inputs.json").catch(() => undefined);
    const learned = b ? (JSON.parse(b.toString("utf8")) as ModelInputs) : undefined;
    // Not memoized without a version: a cache filled later must be read then.
    if (this.version) this.inputs = learned ?? LOADER_INPUTS;
    return learned ?? LOADER_INPUTS;
  }

  /** `raw` (a pod's /object_info answer) with the library's files in every model input. */
  async withLibrary(raw: ObjectInfo): Promise<ObjectInfo> {
    const lib = this.library;
    if (!lib?.ready) return raw;
    if (this.merged && this.merged.raw === raw && this.merged.version === lib.version) return this.merged.info;
    const info = withLibrary(raw, await this.modelInputs(), lib);
    this.merged = { info, raw, version: lib.version };
    return info;
  }

  /** Resolves when the refreshes started so far (and their crawls) have ended. */
  settled(): Promise<void> {
    return this.running;
  }

  /** Called when a pod becomes ready: re-read everything from it (model lists change while pods run). */
  refresh(w: Worker): Promise<void> {
    // One refresh at a time: two pods turning ready together would otherwise crawl the same files twice.
    this.running = this.running.then(() => this.refreshNow(w));
    return this.running;
  }

  private async refreshNow(w: Worker): Promise<void> {
    try {
      const stats = await w.client.json<{ system?: { comfyui_version?: string } }>("GET", "/system_stats");
      const version = w.imageId ?? `comfyui-${stats.json.system?.comfyui_version ?? "unknown"}`;
      if (version !== this.version) {
        this.version = version;
        this.info = undefined;
      }
      const json = async (name: string, podPath: string) => {
        const r = await w.client.request("GET", podPath);
        if (r.status === 200) await this.put(name, r.body);
        return r.status === 200 ? (JSON.parse(r.body.toString("utf8")) as unknown) : undefined;
      };
      for (const name of DISCOVERY) await json(`${name}.json`, `/${name}`);
      // folder_paths: what /internal/folder_paths lists; /models and /experiment/models name the same folders.
      await json("internal/folder_paths.json", "/internal/folder_paths");
      const models = JSON.parse((await this.get("models.json"))?.toString("utf8") ?? "[]") as string[];
      for (const folder of models) {
        const files = await json(`models/${folder}.json`, `/models/${encodeURIComponent(folder)}`);
        // The model library shows a model's safetensors metadata (server.py view_metadata: 404 when none).
        for (const f of Array.isArray(files) ? files : []) {
          if (typeof f !== "string" || !f.endsWith(".safetensors")) continue;
          await json(metadataKey(folder, f), `/view_metadata/${encodeURIComponent(folder)}?filename=${encodeURIComponent(f)}`);
        }
      }
      const experiment = JSON.parse((await this.get("experiment/models.json"))?.toString("utf8") ?? "[]") as { name?: unknown }[];
      for (const f of experiment) {
        if (typeof f.name === "string") await json(`experiment/models/${f.name}.json`, `/experiment/models/${encodeURIComponent(f.name)}`);
      }
      this.info = undefined;
      this.inputs = undefined;
      this.merged = undefined;
      // Which combos list which folder, read from this pod's node list and folder listings together.
      const info = await this.rawObjectInfo();
      if (info) {
        const lists: Record<string, string[]> = {};
        for (const folder of models) {
          const b = await this.get(`models/${folder}.json`);
          const v = b ? (JSON.parse(b.toString("utf8")) as unknown) : undefined;
          if (Array.isArray(v)) lists[folder] = v.filter((x): x is string => typeof x === "string");
        }
        await this.put("model_inputs.json", Buffer.from(JSON.stringify(learnModelInputs(info, lists))));
      }
      await this.store.put("current", Buffer.from(version));
      this.log.info({ pod: w.key, version }, "discovery cache refreshed");
      this.onVersion(version);
      if (!(await this.store.get(this.key("static.crawled", version)))) await this.crawl(w, version);
    } catch (err: unknown) {
      this.log.warn({ pod: w.key, err: (err as Error).message }, "discovery refresh failed");
    }
  }

  /**
   * Read the frontend files a browser loads from this pod into the cache (once per version: an image's
   * frontend never changes). References are found in the text of each file; one that answers 404 (a string
   * that only looked like a file name) is skipped.
   */
  private async crawl(w: Worker, version: string): Promise<void> {
    const started = Date.now();
    const seen = new Set<string>();
    const queue: string[] = [];
    const add = (p: string) => {
      const u = new URL(p, "http://pod");
      const key = u.pathname + u.search;
      if (u.host !== "pod" || seen.has(key) || seen.size >= CRAWL_MAX_FILES) return;
      // API routes are not files (the JSON answers above cover them), but custom nodes' example workflows are.
      if (/^\/(api\/|internal\/|ws$|view\b)/.test(u.pathname) && !u.pathname.startsWith("/api/workflow_templates/")) return;
      seen.add(key);
      queue.push(key);
    };
    add("/");
    add("/templates/index.json");
    const extensions = JSON.parse((await this.get("extensions.json"))?.toString("utf8") ?? "[]") as unknown[];
    for (const e of extensions) if (typeof e === "string") add(e);
    const custom = JSON.parse((await this.get("workflow_templates.json"))?.toString("utf8") ?? "{}") as Record<string, unknown>;
    // Frontend 1.27.10 useTemplateWorkflows: a custom node's template is <name>.json with a <name>.jpg thumbnail.
    for (const [module, names] of Object.entries(custom)) {
      for (const n of Array.isArray(names) ? names : []) {
        const base = `/api/workflow_templates/${encodeURIComponent(module)}/${encodeURIComponent(String(n))}`;
        add(`${base}.json`);
        add(`${base}.jpg`);
      }
    }
    let files = 0;
    let bytes = 0;
    const one = async (p: string) => {
      const r = await w.client.request("GET", p, undefined, 60_000).catch(() => undefined);
      if (!r || r.status !== 200) return;
      const type = r.headers.get("content-type") ?? "application/octet-stream";
      const u = new URL(p, "http://pod");
      const name = staticKey(u.pathname, u.search);
      // Straight to the store, not the memory map: the whole frontend is tens of MB, most of it rarely read.
      await this.store.put(this.key(name, version), r.body);
      await this.store.put(this.key(`${name}.type`, version), Buffer.from(type));
      files++;
      bytes += r.body.length;
      if (!FOLLOW.test(type)) return;
      const text = r.body.toString("utf8");
      const base = new URL(u.pathname, "http://pod");
      if (u.pathname === "/templates/index.json") {
        // comfyui-workflow-templates' index: each template's workflow and its thumbnails (-1, and -2 for the
        // two-image variants), as frontend 1.27.10's getTemplateThumbnailUrl / fetchTemplateJson name them.
        const index = JSON.parse(text) as { moduleName?: string; templates?: { name?: string; mediaSubtype?: string }[] }[];
        for (const c of Array.isArray(index) ? index : []) {
          if (c.moduleName !== "default") continue;
          for (const t of c.templates ?? []) {
            if (typeof t.name !== "string") continue;
            add(`/templates/${t.name}.json`);
            for (const i of [1, 2]) add(`/templates/${t.name}-${i}.${t.mediaSubtype ?? "webp"}`);
          }
        }
        return;
      }
      const refs = type.startsWith("text/css") ? CSS_REF : type.startsWith("text/html") ? HTML_REF : type.startsWith("application/json") ? undefined : JS_REF;
      if (type.startsWith("text/html")) {
        // The import map's targets ("./assets/lib/vue/…") are module URLs too.
        for (const m of text.matchAll(JS_REF)) add(new URL(m[1], base).href);
      }
      for (const m of refs ? text.matchAll(refs) : []) {
        const ref = m[1];
        if (/^(data|blob|https?):/.test(ref) && !ref.startsWith("http://pod")) continue;
        add(new URL(ref, base).href);
        // A bare name in a script is either Vite's preload list, which names chunks from the site root
        // ("assets/x.js"), or `new URL("images/x.svg", import.meta.url)`, relative to the script: try both.
        if (!/^(\.{1,2}\/|\/)/.test(ref) && refs === JS_REF) add(new URL(ref, "http://pod/").href);
      }
    };
    const worker = async () => {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) await one(p);
    };
    // A few at a time: the pod also answers the browsers and the dispatcher meanwhile.
    await Promise.all([worker(), worker(), worker(), worker()]);
    // The queue can refill after a worker found it empty; drain what is left.
    while (queue.length) await Promise.all([worker(), worker(), worker(), worker()]);
    await this.store.put(this.key("static.crawled", version), Buffer.from(JSON.stringify({ files, bytes, at: new Date().toISOString() })));
    this.log.info({ pod: w.key, version, files, bytes, ms: Date.now() - started, capped: seen.size >= CRAWL_MAX_FILES }, "frontend files cached");
  }
}

/**
 * The node's model cache: what is in the model folders, what may go, and the one way a file gets in.
 *
 * - A file appears in a model folder only by rename(2) from the agent's staging folder on the same
 *   mount, after its bytes were verified and flushed (fetcher.ts): ComfyUI never sees a partial file.
 * - Space: the cache holds at most `quotaBytes`, and never takes the filesystem's free space below
 *   its floor (`reserveBytes` + `reservePercent` of the filesystem: kubelet's eviction line, the
 *   image, ComfyUI's scratch). To make room it removes the least recently used files that are not
 *   pinned, not held (a hold names the files a running or buffered prompt needs, until it expires)
 *   and not part of the request being served. A file larger than the whole cache fails at once
 *   (`too_large_for_cache`); one that would fit but for pinned and held files fails `no_space`.
 * - Concurrency: one download per path however many callers ask (single flight); a per-path lock
 *   orders downloads, bucket changes and removals of the same file.
 * - Restart: the index (ETag, how verified, last use) is kept in the private folder and reconciled
 *   with the disk at start: files on disk the index does not know are adopted (`verified: none`),
 *   records without a file are dropped, and the staging folder is emptied (anything there is a
 *   download that did not finish).
 */
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, statfs, unlink, writeFile, lstat, chmod } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import {
  AGENT_PRIVATE_DIR,
  AgentMetrics,
  ApplyChange,
  ApplyResult,
  EnsureFileResult,
  HoldSpec,
  InventoryFile,
  InventoryResponse,
  MAX_HOLD_SECONDS,
  MODEL_FOLDERS,
  checkModelPath,
  checkPinEntry,
  pinCovers,
} from "../../../contracts/modelsAgent";
import { AgentError, Fetcher, ObjectInfo } from "./fetcher";

export interface CacheOptions {
  modelsDir: string;
  fetcher: Fetcher;
  /** Most bytes the cache may hold; 0: the filesystem's size less the reserve, read at start. */
  quotaBytes: number;
  /** Free space the cache never eats into, bytes. @defaultValue 0 */
  reserveBytes?: number;
  /** And this share of the filesystem's size, percent. @defaultValue 0 */
  reservePercent?: number;
  /** Pin entries to start with; undefined: the ones the index kept. */
  pins?: string[];
  /** Pinned files fetched at once. @defaultValue 2 */
  pinConcurrency?: number;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  now?: () => number;
}

interface Entry {
  bytes: number;
  etag?: string;
  verified: InventoryFile["verified"];
  lastUsed: number;
}

interface Fetching {
  bytes: number;
  received: number;
  startedAt: number;
  promise: Promise<Entry>;
  /** A prompt waits for it (an ensure asked): its ranges go before background ones (fetcher.ts Semaphore). */
  urgent: boolean;
  endUrgent?: () => void;
}

interface IndexFile {
  version: 1;
  files: Record<string, Entry>;
  pins: string[];
}

const INDEX = "index.json";

export class ModelCache {
  readonly modelsDir: string;
  readonly privateDir: string;
  readonly stagingDir: string;
  private quotaBytes: number;
  private readonly entries = new Map<string, Entry>();
  private readonly fetching = new Map<string, Fetching>();
  private readonly holds = new Map<string, { files: Set<string>; expiresAt: number }>();
  private readonly locks = new Map<string, Promise<void>>();
  private readonly pinErrors = new Map<string, { code: string; message: string }>();
  private pins: string[] = [];
  /** Bytes promised to downloads in flight (not yet in `entries`). */
  private reserved = 0;
  private readonly stopping = new AbortController();
  private saveTimer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();
  private pinRun: Promise<void> = Promise.resolve();
  private readonly now: () => number;
  private readonly log: NonNullable<CacheOptions["log"]>;
  readonly metrics: AgentMetrics = {
    fetches: 0,
    fetchesCompleted: 0,
    fetchesFailed: 0,
    bytesFetched: 0,
    hits: 0,
    misses: 0,
    evictions: 0,
    evictedBytes: 0,
    applied: 0,
    appliedChanges: 0,
  };

  constructor(private readonly o: CacheOptions) {
    this.modelsDir = o.modelsDir;
    this.privateDir = join(o.modelsDir, AGENT_PRIVATE_DIR);
    this.stagingDir = join(this.privateDir, "staging");
    this.quotaBytes = o.quotaBytes;
    this.now = o.now ?? Date.now;
    this.log = o.log ?? (() => undefined);
  }

  get bucket(): string {
    return this.o.fetcher.bucket;
  }

  /** Rebuilds the inventory from the index and the disk; empties staging; applies the quota. */
  async start(): Promise<void> {
    await mkdir(this.modelsDir, { recursive: true });
    await mkdir(this.privateDir, { recursive: true, mode: 0o700 });
    await chmod(this.privateDir, 0o700);
    await rm(this.stagingDir, { recursive: true, force: true });
    await mkdir(this.stagingDir, { recursive: true, mode: 0o700 });
    const [m, s] = await Promise.all([stat(this.modelsDir), stat(this.stagingDir)]);
    if (m.dev !== s.dev) throw new Error(`staging folder ${this.stagingDir} is not on the filesystem of ${this.modelsDir}: the final rename would not be atomic`);
    if (this.quotaBytes === 0) {
      const fs = await this.fsSpace();
      this.quotaBytes = Math.max(0, fs.size - fs.floor);
    }

    let saved: IndexFile | undefined;
    try {
      saved = JSON.parse(await readFile(join(this.privateDir, INDEX), "utf8")) as IndexFile;
      if (saved.version !== 1 || typeof saved.files !== "object") saved = undefined;
    } catch {
      saved = undefined;
    }
    let adopted = 0;
    for (const [path, bytes, mtimeMs] of await this.scan()) {
      const rec = saved?.files[path];
      if (rec && rec.bytes === bytes) this.entries.set(path, { ...rec });
      else {
        this.entries.set(path, { bytes, verified: "none", lastUsed: mtimeMs });
        adopted++;
      }
    }
    const pins = this.o.pins ?? saved?.pins ?? [];
    this.setPinEntries(pins);
    this.log("inventory rebuilt from disk", { files: this.entries.size, adopted, usedBytes: this.usedBytes(), quotaBytes: this.quotaBytes, pins: this.pins });
    await this.enforceQuota();
    await this.save();
    this.fetchMissingPins();
  }

  /** Stops downloads in flight (their staging files are removed) and writes the index. */
  async stop(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.fetching.values()].map((f) => f.promise));
    await this.pinRun.catch(() => undefined);
    if (this.saveTimer) clearTimeout(this.saveTimer);
    await this.save();
  }

  // ---- what the API serves ------------------------------------------------------------------

  async inventory(): Promise<InventoryResponse & { pinErrors: { path: string; code: string; message: string }[] }> {
    const fs = await this.fsSpace();
    const files = [...this.entries.entries()]
      .map(([path, e]): InventoryFile => ({ path, bytes: e.bytes, etag: e.etag, verified: e.verified, pinned: this.isPinned(path), held: this.isHeld(path), lastUsed: e.lastUsed }))
      .sort((a, b) => (a.path < b.path ? -1 : 1));
    this.pruneHolds();
    return {
      files,
      usedBytes: this.usedBytes(),
      quotaBytes: this.quotaBytes,
      capacityBytes: Math.max(0, Math.min(this.quotaBytes, this.usedBytes() + this.reserved + fs.free - fs.floor)),
      freeBytes: fs.free,
      fetching: [...this.fetching.entries()].map(([path, f]) => ({ path, bytes: f.bytes, received: f.received, startedAt: f.startedAt, priority: f.urgent ? "prompt" : "background" })),
      pins: [...this.pins],
      holds: [...this.holds.entries()].map(([id, h]) => ({ id, files: [...h.files], expiresAt: h.expiresAt })),
      metrics: { ...this.metrics },
      pinErrors: [...this.pinErrors.entries()].map(([path, e]) => ({ path, ...e })),
    };
  }

  /**
   * Makes `paths` present: each one present is a hit, each missing one is fetched (once, however many
   * callers ask) as a prompt's download, ahead of pins and bucket changes (a background download of the
   * same file becomes the prompt's). With `hold`, the hold is taken first, so the request's files never
   * evict each other. Paths are validated by the caller (server.ts) and again here.
   */
  async ensure(paths: string[], hold?: HoldSpec, wait = true): Promise<EnsureFileResult[]> {
    for (const p of paths) {
      const c = checkModelPath(p);
      if (!c.ok) throw new AgentError("path_refused", `${c.path}: ${c.reason}`, c.path);
    }
    if (hold) this.setHold(hold.id, paths, hold.ttlSeconds);
    const unique = [...new Set(paths)];
    const protect = new Set(unique);
    const results = unique.map(async (path): Promise<EnsureFileResult> => {
      const present = await this.present(path);
      if (present) {
        this.metrics.hits++;
        present.lastUsed = this.now();
        this.saveSoon();
        return { path, status: "present", bytes: present.bytes };
      }
      this.metrics.misses++;
      const t0 = this.now();
      const running = this.fetch(path, protect, undefined, true);
      if (!wait) {
        running.catch(() => undefined);
        return { path, status: "fetching" };
      }
      try {
        const e = await running;
        return { path, status: "fetched", bytes: e.bytes, seconds: (this.now() - t0) / 1000 };
      } catch (err) {
        const e = asAgentError(err, path);
        return { path, status: "failed", code: e.code, message: e.message };
      }
    });
    return Promise.all(results);
  }

  /** Replaces the pinned set; missing pinned files are fetched in the background. */
  setPins(entries: string[]): { entries: string[]; fetching: string[] } {
    this.setPinEntries(entries);
    this.saveSoon();
    const fetching = this.fetchMissingPins();
    return { entries: [...this.pins], fetching };
  }

  setHold(id: string, files: string[], ttlSeconds: number): void {
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(id)) throw new AgentError("bad_request", `hold id must be 1-128 of A-Z a-z 0-9 . _ : -, got ${JSON.stringify(id).slice(0, 80)}`);
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_HOLD_SECONDS) {
      throw new AgentError("bad_request", `ttlSeconds must be in (0, ${MAX_HOLD_SECONDS}], got ${ttlSeconds}`);
    }
    for (const p of files) {
      const c = checkModelPath(p);
      if (!c.ok) throw new AgentError("path_refused", `${c.path}: ${c.reason}`, c.path);
    }
    this.holds.set(id, { files: new Set(files), expiresAt: this.now() + ttlSeconds * 1000 });
  }

  deleteHold(id: string): boolean {
    return this.holds.delete(id);
  }

  /**
   * Brings each key to what the bucket holds now (the SSM path from the sync Lambda). The action only
   * names the report: a stale delete for a key uploaded again keeps (or refreshes) the file, a stale
   * put for a key deleted since removes it. A new object is fetched only if pinned.
   */
  async apply(changes: ApplyChange[]): Promise<ApplyResult[]> {
    for (const c of changes) {
      if (c.action !== "put" && c.action !== "delete") throw new AgentError("bad_request", `unknown action ${JSON.stringify(c.action)}`);
      const k = checkModelPath(c.key);
      if (!k.ok) throw new AgentError("path_refused", `${k.path}: ${k.reason}`, k.path);
    }
    // One outcome per key; the last line for a key names it (deletes first would only reorder reports).
    const last = new Map<string, ApplyChange>();
    for (const c of changes) last.set(c.key, c);
    const queue = [...last.values()];
    const results: ApplyResult[] = [];
    const worker = async () => {
      for (let c = queue.shift(); c; c = queue.shift()) results.push(await this.applyOne(c));
    };
    await Promise.all(Array.from({ length: Math.min(4, queue.length) }, worker));
    const order = new Map([...last.keys()].map((k, i) => [k, i]));
    return results.sort((a, b) => order.get(a.key)! - order.get(b.key)!);
  }

  // ---- internals ----------------------------------------------------------------------------

  private async applyOne(c: ApplyChange): Promise<ApplyResult> {
    this.metrics.applied++;
    const key = c.key;
    // A download of the same key in flight finishes first; then this key is judged afresh.
    await this.fetching.get(key)?.promise.catch(() => undefined);
    const result = (outcome: ApplyResult["outcome"], extra: Partial<ApplyResult> = {}): ApplyResult => ({ action: c.action, key, outcome, ...extra });
    let info: ObjectInfo | undefined;
    try {
      info = await this.o.fetcher.head(key, this.stopping.signal);
    } catch (err) {
      const e = asAgentError(err, key);
      if (e.code !== "object_missing") return result("failed", { code: e.code, message: e.message });
    }
    if (!info) {
      const removed = await this.withLock(key, () => this.remove(key));
      if (removed) this.metrics.appliedChanges++;
      return result(removed ? "removed" : "absent");
    }
    const local = await this.present(key);
    if (local && local.etag === info.etag) return result("unchanged");
    if (!local && !this.isPinned(key)) return result("not-cached");
    try {
      await this.fetch(key, new Set([key]), info);
      this.metrics.appliedChanges++;
      return result(local ? "replaced" : "fetched");
    } catch (err) {
      const e = asAgentError(err, key);
      return result("failed", { code: e.code, message: e.message });
    }
  }

  /** The entry of a file that is really on disk (adopting one placed there by something else). */
  private async present(path: string): Promise<Entry | undefined> {
    const e = this.entries.get(path);
    let st;
    try {
      st = await lstat(join(this.modelsDir, path));
    } catch {
      st = undefined;
    }
    if (!st || !st.isFile()) {
      if (e && !this.fetching.has(path)) {
        this.entries.delete(path);
        this.saveSoon();
      }
      return undefined;
    }
    if (e && e.bytes === st.size) return e;
    const adopted: Entry = { bytes: st.size, verified: "none", lastUsed: st.mtimeMs };
    this.entries.set(path, adopted);
    this.saveSoon();
    return adopted;
  }

  /** Single flight: one download per path; later callers share it (an urgent caller makes it urgent). */
  private fetch(path: string, protect: Set<string>, known?: ObjectInfo, urgent = false): Promise<Entry> {
    const running = this.fetching.get(path);
    if (running) {
      if (urgent) this.markUrgent(running);
      return running.promise;
    }
    const f: Fetching = { bytes: 0, received: 0, startedAt: this.now(), promise: Promise.resolve(undefined as unknown as Entry), urgent: false };
    f.promise = this.withLock(path, () => this.download(path, f, protect, known)).finally(() => {
      if (this.fetching.get(path) === f) this.fetching.delete(path);
      f.endUrgent?.();
    });
    this.fetching.set(path, f);
    if (urgent) this.markUrgent(f);
    return f.promise;
  }

  private markUrgent(f: Fetching): void {
    if (f.urgent) return;
    f.urgent = true;
    f.endUrgent = this.o.fetcher.connections.beginUrgent();
  }

  private async download(path: string, f: Fetching, protect: Set<string>, known?: ObjectInfo): Promise<Entry> {
    if (this.stopping.signal.aborted) throw new AgentError("shutting_down", `${path}: the agent is stopping`, path);
    this.metrics.fetches++;
    for (let attempt = 1; ; attempt++) {
      const info = attempt === 1 && known ? known : await this.o.fetcher.head(path, this.stopping.signal).catch((err) => this.failed(err, path));
      f.bytes = info.bytes;
      await this.makeRoom(path, info.bytes, protect).catch((err) => this.failed(err, path));
      this.reserved += info.bytes;
      const staging = join(this.stagingDir, `${randomUUID()}.part`);
      try {
        const { verified, syncSeconds } = await this.o.fetcher.download(path, info, staging, (n) => (f.received += n), this.stopping.signal, () => f.urgent);
        const target = join(this.modelsDir, path);
        await mkdir(dirname(target), { recursive: true });
        // The moment the file becomes visible: complete, or not at all.
        await rename(staging, target);
        const entry: Entry = { bytes: info.bytes, etag: info.etag, verified, lastUsed: this.now() };
        this.entries.set(path, entry);
        this.metrics.fetchesCompleted++;
        this.metrics.bytesFetched += info.bytes;
        this.pinErrors.delete(path);
        this.log("fetched", { path, bytes: info.bytes, verified, seconds: (this.now() - f.startedAt) / 1000, syncSeconds });
        this.saveSoon();
        return entry;
      } catch (err) {
        await rm(staging, { force: true });
        const e = asAgentError(err, path);
        // Replaced while we read it: once more from the new version.
        if (e.code === "object_changed" && attempt < 2) {
          f.received = 0;
          continue;
        }
        this.failed(e, path);
      } finally {
        this.reserved -= info.bytes;
      }
    }
  }

  private failed(err: unknown, path: string): never {
    const e = asAgentError(err, path);
    this.metrics.fetchesFailed++;
    this.log("fetch failed", { path, code: e.code, message: e.message });
    throw e;
  }

  /** Frees space for `bytes` more (evicting LRU files nobody needs) or throws why it cannot. */
  private async makeRoom(path: string, bytes: number, protect: Set<string>): Promise<void> {
    const fs = await this.fsSpace();
    const ceiling = Math.min(this.quotaBytes, fs.size - fs.floor);
    if (bytes > ceiling) {
      throw new AgentError(
        "too_large_for_cache",
        `${path} (${gb(bytes)}) is larger than this node's whole model cache (${gb(ceiling)}: quota ${gb(this.quotaBytes)}, filesystem ${gb(fs.size)} less a reserve of ${gb(fs.floor)})`,
        path,
      );
    }
    this.pruneHolds();
    // Two limits: the quota over what the cache holds, and the filesystem's free space over the floor
    // (downloads in flight have promised `reserved` bytes of which `written` are already on disk).
    const overQuota = () => this.usedBytes() + this.reserved + bytes - this.quotaBytes;
    let free = fs.free;
    const written = [...this.fetching.values()].reduce((n, x) => n + Math.max(0, x.received), 0);
    const overDisk = () => bytes + (this.reserved - written) - (free - fs.floor);
    if (overQuota() <= 0 && overDisk() <= 0) return;
    const candidates = [...this.entries.entries()]
      .filter(([p]) => !protect.has(p) && !this.isPinned(p) && !this.isHeld(p) && !this.fetching.has(p))
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [p, e] of candidates) {
      if (overQuota() <= 0 && overDisk() <= 0) return;
      if (await this.withLock(p, () => this.remove(p, "evicted"))) {
        this.metrics.evictions++;
        this.metrics.evictedBytes += e.bytes;
        free += e.bytes;
      }
    }
    if (overQuota() <= 0 && overDisk() <= 0) return;
    const pinned = this.sumBytes((p) => this.isPinned(p));
    const held = this.sumBytes((p) => this.isHeld(p) && !this.isPinned(p));
    throw new AgentError(
      "no_space",
      `${path} (${gb(bytes)}) does not fit: ${gb(pinned)} pinned, ${gb(held)} held by running or buffered prompts, ${gb(this.reserved)} downloading, ` +
        `quota ${gb(this.quotaBytes)}, ${gb(Math.max(0, free - fs.floor))} free above the reserve`,
      path,
    );
  }

  /** Removes a file from its model folder (and the index); true if there was one. */
  private async remove(path: string, why = "removed"): Promise<boolean> {
    const had = this.entries.delete(path);
    let unlinked = false;
    try {
      await unlink(join(this.modelsDir, path));
      unlinked = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    if (had || unlinked) {
      this.log(why, { path });
      this.saveSoon();
    }
    return had || unlinked;
  }

  private async enforceQuota(): Promise<void> {
    const over = this.usedBytes() - this.quotaBytes;
    if (over <= 0) return;
    await this.makeRoom("(quota at start)", 0, new Set()).catch((err: unknown) => this.log("over quota at start", { message: (err as Error).message }));
  }

  private setPinEntries(entries: string[]): void {
    for (const e of entries) {
      const c = checkPinEntry(e);
      if (!c.ok) throw new AgentError("path_refused", `pin ${c.path}: ${c.reason}`, c.path);
    }
    this.pins = [...new Set(entries)];
    for (const p of [...this.pinErrors.keys()]) if (!this.isPinned(p)) this.pinErrors.delete(p);
  }

  /** Starts fetching pinned files that are not present (folders listed from the bucket); returns the file entries started. */
  private fetchMissingPins(): string[] {
    const files = this.pins.filter((p) => !p.endsWith("/") && !this.entries.has(p));
    const folders = this.pins.filter((p) => p.endsWith("/"));
    const pins = this.pins;
    const run = async () => {
      const wanted = [...files];
      for (const folder of folders) {
        try {
          for (const o of await this.o.fetcher.list(folder, this.stopping.signal)) if (checkModelPath(o.key).ok && !this.entries.has(o.key)) wanted.push(o.key);
        } catch (err) {
          const e = asAgentError(err, folder);
          this.pinErrors.set(folder, { code: e.code, message: e.message });
        }
      }
      const queue = [...new Set(wanted)];
      const worker = async () => {
        for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
          // A pinned file not yet started waits while a prompt's files are fetched: started now, it would
          // reserve (and evict for) its space beside the prompt's download, and only then wait for connections.
          await this.o.fetcher.connections.urgentIdle();
          if (this.stopping.signal.aborted || this.pins !== pins) return;
          if (!this.isPinned(p) || (await this.present(p))) continue;
          try {
            await this.fetch(p, new Set([p]));
          } catch (err) {
            const e = asAgentError(err, p);
            this.pinErrors.set(p, { code: e.code, message: e.message });
          }
        }
      };
      await Promise.all(Array.from({ length: this.o.pinConcurrency ?? 2 }, worker));
    };
    this.pinRun = this.pinRun.then(run, run);
    return files;
  }

  private isPinned(path: string): boolean {
    return this.pins.some((e) => pinCovers(e, path));
  }

  private isHeld(path: string): boolean {
    const now = this.now();
    for (const h of this.holds.values()) if (h.expiresAt > now && h.files.has(path)) return true;
    return false;
  }

  private pruneHolds(): void {
    const now = this.now();
    for (const [id, h] of this.holds) if (h.expiresAt <= now) this.holds.delete(id);
  }

  private usedBytes(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.bytes;
    return n;
  }

  private sumBytes(pred: (p: string) => boolean): number {
    let n = 0;
    for (const [p, e] of this.entries) if (pred(p)) n += e.bytes;
    return n;
  }

  private async fsSpace(): Promise<{ free: number; size: number; floor: number }> {
    const s = await statfs(this.modelsDir);
    const size = s.blocks * s.bsize;
    const floor = (this.o.reserveBytes ?? 0) + Math.ceil((size * (this.o.reservePercent ?? 0)) / 100);
    return { free: s.bavail * s.bsize, size, floor };
  }

  /** Runs `fn` with the path's lock held (downloads, applies and removals of one file never overlap). */
  private async withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(path) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = prev.then(() => mine);
    this.locks.set(path, chained);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(path) === chained) this.locks.delete(path);
    }
  }

  /** Regular files under the model folders: [path, bytes, mtimeMs]. Symlinks and odd names are skipped. */
  private async scan(): Promise<[string, number, number][]> {
    const out: [string, number, number][] = [];
    const walk = async (dir: string): Promise<void> => {
      let items;
      try {
        items = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const it of items) {
        const full = join(dir, it.name);
        if (it.isDirectory()) await walk(full);
        else if (it.isFile()) {
          const rel = relative(this.modelsDir, full).split(sep).join("/");
          if (!checkModelPath(rel).ok) continue;
          const st = await stat(full);
          out.push([rel, st.size, st.mtimeMs]);
        }
      }
    };
    for (const folder of MODEL_FOLDERS) await walk(join(this.modelsDir, folder));
    return out;
  }

  private saveSoon(): void {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      void this.save();
    }, 500);
    this.saveTimer.unref();
  }

  /** The index, written to a temporary file and renamed (a crash leaves the old or the new one). */
  private save(): Promise<void> {
    this.saving = this.saving.then(async () => {
      const doc: IndexFile = { version: 1, files: Object.fromEntries(this.entries), pins: this.pins };
      const tmp = join(this.privateDir, `${INDEX}.${process.pid}.tmp`);
      try {
        await writeFile(tmp, JSON.stringify(doc), { mode: 0o600 });
        await rename(tmp, join(this.privateDir, INDEX));
      } catch (err) {
        this.log("could not write the index", { message: (err as Error).message });
      }
    });
    return this.saving;
  }
}

export function asAgentError(err: unknown, path?: string): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError("fetch_failed", `${path ? `${path}: ` : ""}${(err as Error)?.message ?? String(err)}`, path);
}

function gb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

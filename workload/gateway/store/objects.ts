import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, NoSuchKey, NotFound, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { createReadStream, promises as fsp } from "node:fs";
import * as path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** Blobs the gateway keeps outside the pods: outputs, inputs, user files, the discovery cache. */
export interface ObjectStore {
  get(key: string): Promise<Buffer | undefined>;
  /** The object as a stream (large outputs and uploads never sit in memory whole). */
  stream(key: string): Promise<{ body: Readable; size: number } | undefined>;
  put(key: string, body: Buffer): Promise<void>;
  /** Streams a local file into the object; `sha256` is kept with it (uploads compare by it). */
  putFile(key: string, file: string, meta?: { sha256?: string }): Promise<void>;
  /** Size and (when it was stored through putFile) the SHA-256 of the content. */
  stat(key: string): Promise<{ size: number; sha256?: string } | undefined>;
  /**
   * Read-modify-write without lost updates: `fn` gets the current content and returns the new one; the
   * write is conditional on nothing else having written in between (S3 If-Match / If-None-Match), and
   * retried on a conflict. Returns what was written.
   */
  update(key: string, fn: (current: Buffer | undefined) => Buffer): Promise<Buffer>;
  delete(key: string): Promise<void>;
  /** Keys under `prefix` (recursive), sorted. */
  list(prefix: string): Promise<{ key: string; size: number; modified: number }[]>;
}

/** One writer per key at a time in this process (the conditional write guards against other processes). */
class KeyLocks {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

/** SHA-256 of an object's content: the stored one, else read through. */
export async function sha256Of(store: ObjectStore, key: string): Promise<string | undefined> {
  const st = await store.stat(key);
  if (!st) return undefined;
  if (st.sha256) return st.sha256;
  const s = await store.stream(key);
  if (!s) return undefined;
  const h = createHash("sha256");
  await pipeline(s.body, h);
  return h.digest("hex");
}

/** Rejects keys that could leave the store's root; callers validate user input first, this is the backstop. */
export function checkKey(key: string): string {
  if (key === "" || key.startsWith("/") || key.includes("\\") || key.split("/").some((s) => s === ".." || s === "." || s === "") || key.includes("\0")) {
    throw new Error(`invalid object key ${JSON.stringify(key)}`);
  }
  return key;
}

export class LocalObjectStore implements ObjectStore {
  private readonly locks = new KeyLocks();
  constructor(private readonly root: string) {}
  /** Local mode has one process per data dir: the per-key lock is the whole guard. */
  update(key: string, fn: (current: Buffer | undefined) => Buffer): Promise<Buffer> {
    return this.locks.run(key, async () => {
      const next = fn(await this.get(key));
      await this.put(key, next);
      return next;
    });
  }
  private file(key: string) {
    return path.join(this.root, ...checkKey(key).split("/"));
  }
  async get(key: string) {
    try {
      return await fsp.readFile(this.file(key));
    } catch (err: unknown) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "EISDIR") return undefined;
      throw err;
    }
  }
  async stream(key: string) {
    const f = this.file(key);
    try {
      const st = await fsp.stat(f);
      if (!st.isFile()) return undefined;
      return { body: createReadStream(f), size: st.size };
    } catch (err: unknown) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }
  private tmpOf(f: string) {
    return `${f}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  }
  async put(key: string, body: Buffer) {
    const f = this.file(key);
    await fsp.mkdir(path.dirname(f), { recursive: true });
    // Write then rename: a reader never sees a half-written file.
    const tmp = this.tmpOf(f);
    await fsp.writeFile(tmp, body);
    await fsp.rename(tmp, f);
    await fsp.rm(`${f}.sha256`, { force: true });
  }
  async putFile(key: string, file: string, meta: { sha256?: string } = {}) {
    const f = this.file(key);
    await fsp.mkdir(path.dirname(f), { recursive: true });
    const tmp = this.tmpOf(f);
    await fsp.copyFile(file, tmp);
    await fsp.rename(tmp, f);
    if (meta.sha256) await fsp.writeFile(`${f}.sha256`, meta.sha256);
    else await fsp.rm(`${f}.sha256`, { force: true });
  }
  async stat(key: string) {
    const f = this.file(key);
    try {
      const st = await fsp.stat(f);
      if (!st.isFile()) return undefined;
      const sha256 = await fsp.readFile(`${f}.sha256`, "utf8").catch(() => undefined);
      return { size: st.size, ...(sha256 ? { sha256 } : {}) };
    } catch (err: unknown) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }
  async delete(key: string) {
    await fsp.rm(this.file(key), { force: true });
    await fsp.rm(`${this.file(key)}.sha256`, { force: true });
  }
  async list(prefix: string) {
    const out: { key: string; size: number; modified: number }[] = [];
    const walk = async (dir: string, rel: string) => {
      let entries: import("node:fs").Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) await walk(path.join(dir, e.name), r);
        else if (e.isFile() && !e.name.endsWith(".tmp") && !e.name.endsWith(".sha256")) {
          const st = await fsp.stat(path.join(dir, e.name));
          out.push({ key: r, size: st.size, modified: st.mtimeMs });
        }
      }
    };
    await walk(this.root, "");
    return out.filter((o) => o.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : 1));
  }
}

export class S3ObjectStore implements ObjectStore {
  private readonly locks = new KeyLocks();
  constructor(private readonly s3: S3Client, private readonly bucket: string, private readonly prefix = "", private readonly timeoutMs = 15000) {}
  update(key: string, fn: (current: Buffer | undefined) => Buffer): Promise<Buffer> {
    const Key = this.prefix + checkKey(key);
    return this.locks.run(key, async () => {
      for (let attempt = 0; ; attempt++) {
        let current: Buffer | undefined;
        let etag: string | undefined;
        try {
          const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key }), this.opts());
          current = Buffer.from(await out.Body!.transformToByteArray());
          etag = out.ETag;
        } catch (err: unknown) {
          if (!(err instanceof NoSuchKey || (err as { name?: string }).name === "NoSuchKey")) throw err;
        }
        const next = fn(current);
        try {
          // S3 conditional writes (PutObject If-Match / If-None-Match): 412 when another writer came first.
          await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: next, ...(etag ? { IfMatch: etag } : { IfNoneMatch: "*" }) }), this.opts());
          return next;
        } catch (err: unknown) {
          const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
          if ((status === 412 || status === 409) && attempt < 10) continue;
          throw err;
        }
      }
    });
  }
  private opts() {
    return { abortSignal: AbortSignal.timeout(this.timeoutMs) };
  }
  async get(key: string) {
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key) }), this.opts());
      return Buffer.from(await out.Body!.transformToByteArray());
    } catch (err: unknown) {
      if (err instanceof NoSuchKey || (err as { name?: string }).name === "NoSuchKey") return undefined;
      throw err;
    }
  }
  async stream(key: string) {
    try {
      // No overall timeout on a body that may take minutes to stream; the socket's own timeouts apply.
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key) }));
      return { body: out.Body as Readable, size: out.ContentLength ?? 0 };
    } catch (err: unknown) {
      if (err instanceof NoSuchKey || (err as { name?: string }).name === "NoSuchKey") return undefined;
      throw err;
    }
  }
  async put(key: string, body: Buffer) {
    await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key), Body: body }), this.opts());
  }
  async putFile(key: string, file: string, meta: { sha256?: string } = {}) {
    const size = (await fsp.stat(file)).size;
    await this.s3.send(new PutObjectCommand({
      Bucket: this.bucket, Key: this.prefix + checkKey(key), Body: createReadStream(file), ContentLength: size,
      ...(meta.sha256 ? { Metadata: { sha256: meta.sha256 } } : {}),
    }));
  }
  async stat(key: string) {
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key) }), this.opts());
      return { size: out.ContentLength ?? 0, ...(out.Metadata?.sha256 ? { sha256: out.Metadata.sha256 } : {}) };
    } catch (err: unknown) {
      const name = (err as { name?: string }).name;
      if (err instanceof NotFound || name === "NotFound" || name === "NoSuchKey") return undefined;
      throw err;
    }
  }
  async delete(key: string) {
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key) }), this.opts());
  }
  async list(prefix: string) {
    const out: { key: string; size: number; modified: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ContinuationToken: token }), this.opts());
      for (const o of page.Contents ?? []) out.push({ key: o.Key!.slice(this.prefix.length), size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => (a.key < b.key ? -1 : 1));
  }
}

/** A view of another store under a fixed prefix ("output/", "cache/" …). */
export class PrefixedStore implements ObjectStore {
  constructor(private readonly inner: ObjectStore, private readonly prefix: string) {}
  get(key: string) { return this.inner.get(this.prefix + checkKey(key)); }
  stream(key: string) { return this.inner.stream(this.prefix + checkKey(key)); }
  put(key: string, body: Buffer) { return this.inner.put(this.prefix + checkKey(key), body); }
  putFile(key: string, file: string, meta?: { sha256?: string }) { return this.inner.putFile(this.prefix + checkKey(key), file, meta); }
  stat(key: string) { return this.inner.stat(this.prefix + checkKey(key)); }
  update(key: string, fn: (current: Buffer | undefined) => Buffer) { return this.inner.update(this.prefix + checkKey(key), fn); }
  delete(key: string) { return this.inner.delete(this.prefix + checkKey(key)); }
  async list(prefix: string) {
    return (await this.inner.list(this.prefix + prefix)).map((o) => ({ ...o, key: o.key.slice(this.prefix.length) }));
  }
}

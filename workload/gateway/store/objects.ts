import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, NoSuchKey, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { promises as fsp } from "node:fs";
import * as path from "node:path";

/** Blobs the gateway keeps outside the pods: outputs, inputs, user files, the discovery cache. */
export interface ObjectStore {
  get(key: string): Promise<Buffer | undefined>;
  put(key: string, body: Buffer): Promise<void>;
  delete(key: string): Promise<void>;
  /** Keys under `prefix` (recursive), sorted. */
  list(prefix: string): Promise<{ key: string; size: number; modified: number }[]>;
}

/** Rejects keys that could leave the store's root; callers validate user input first, this is the backstop. */
export function checkKey(key: string): string {
  if (key === "" || key.startsWith("/") || key.includes("\\") || key.split("/").some((s) => s === ".." || s === "." || s === "") || key.includes("\0")) {
    throw new Error(`invalid object key ${JSON.stringify(key)}`);
  }
  return key;
}

export class LocalObjectStore implements ObjectStore {
  constructor(private readonly root: string) {}
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
  async put(key: string, body: Buffer) {
    const f = this.file(key);
    await fsp.mkdir(path.dirname(f), { recursive: true });
    // Write then rename: a reader never sees a half-written file.
    const tmp = `${f}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await fsp.writeFile(tmp, body);
    await fsp.rename(tmp, f);
  }
  async delete(key: string) {
    await fsp.rm(this.file(key), { force: true });
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
        else if (e.isFile() && !e.name.endsWith(".tmp")) {
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
  constructor(private readonly s3: S3Client, private readonly bucket: string, private readonly prefix = "", private readonly timeoutMs = 15000) {}
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
  async put(key: string, body: Buffer) {
    await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + checkKey(key), Body: body }), this.opts());
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
  put(key: string, body: Buffer) { return this.inner.put(this.prefix + checkKey(key), body); }
  delete(key: string) { return this.inner.delete(this.prefix + checkKey(key)); }
  async list(prefix: string) {
    return (await this.inner.list(this.prefix + prefix)).map((o) => ({ ...o, key: o.key.slice(this.prefix.length) }));
  }
}

/**
 * One object from the models bucket into one staging file: parallel ranged GETs (the only way one
 * object reaches a node's NIC speed: S3 serves each connection at tens of MB/s, so a node fills a
 * 10–25 Gbit/s link with tens of connections), every range pinned to one version of the object,
 * and the bytes checked before the caller renames the file into a model folder.
 *
 * Verification, strongest first, from what S3 tells us about the object:
 * - a single-part upload's ETag is the MD5 of its bytes, unless SSE-KMS/DSSE or SSE-C encrypted it
 *   (S3 API reference, Common response headers "ETag"; S3 UG "Checking object integrity"): `md5`;
 * - a multipart upload's ETag is MD5(MD5(part 1) ‖ … ‖ MD5(part N)) + "-N". HeadObject with
 *   PartNumber=1 gives part 1's length and PartsCount (S3 API reference HeadObject `partNumber`,
 *   `x-amz-mp-parts-count`); when every part but the last has that length (what the CLI and the SDKs'
 *   uploaders write) the ETag can be recomputed: `multipart-md5`;
 * - otherwise the size, and that every range came from the version the HEAD saw: `size`.
 * Hashing reads the staging file back in order, overlapped with the downloads of later ranges, so
 * it adds little beyond the last range's hash.
 *
 * Every range GET carries `If-Match: <the HEAD's ETag>` (S3 answers 412 Precondition Failed when the
 * object changed; S3 API reference GetObject "If-Match"), so a replace during the download cannot mix
 * two objects into one file; the cache then starts once more from the new version. Not VersionId:
 * a GET by version needs s3:GetObjectVersion, and the agent's role has s3:GetObject and
 * s3:ListBucket only (workload/modelsAgent.ts).
 */
import { GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import type { AgentErrorCode, InventoryFile } from "../../../contracts/modelsAgent";

/** An error with the agent's code (contract.ts AGENT_ERRORS). */
export class AgentError extends Error {
  constructor(
    readonly code: AgentErrorCode,
    message: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

export interface ObjectInfo {
  bytes: number;
  /** Without quotes. */
  etag: string;
  /** How the bytes can be checked (see the header). */
  check: { kind: "md5"; hex: string } | { kind: "multipart-md5"; hex: string; parts: number; partBytes: number } | { kind: "size" };
}

/**
 * The node-wide limit on open GETs, shared by every download, with a prompt's downloads first (issue 19:
 * "the first waiting prompt's files are fetched first"). A download is urgent while a prompt waits for it
 * (an ensure); pins and bucket changes are background work. While any urgent download is in progress a
 * background range gets no connection, even a free one: the prompt's file gets the node's whole NIC, and
 * a pinned set of tens of GB being filled cannot stand between a prompt and its model. Ranges already open
 * are never cut (a half-read range would be read again); an urgent range takes the next connection that
 * frees. Urgent ranges among themselves, and background ones among themselves, go in the order they asked.
 */
export class Semaphore {
  private readonly waiting: { urgent: () => boolean; go: () => void }[] = [];
  private urgentDownloads = 0;
  private idleWaiters: (() => void)[] = [];
  constructor(private free: number) {}

  /** `urgent` is read at each grant: a background download a prompt starts waiting for is urgent from then on. */
  async acquire(urgent: () => boolean = () => true): Promise<void> {
    if (this.free > 0 && (this.urgentDownloads === 0 || urgent())) {
      this.free--;
      return;
    }
    await new Promise<void>((go) => this.waiting.push({ urgent, go }));
  }

  release(): void {
    this.free++;
    this.grant();
  }

  /** An urgent download begins; the function returned ends it (once). */
  beginUrgent(): () => void {
    this.urgentDownloads++;
    // A waiting range may have become urgent (its download was upgraded): it may take a free connection now.
    this.grant();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.urgentDownloads--;
      if (this.urgentDownloads === 0) {
        const idle = this.idleWaiters;
        this.idleWaiters = [];
        for (const r of idle) r();
      }
      this.grant();
    };
  }

  /** Resolves when no urgent download is in progress (a background download not yet started waits for it). */
  urgentIdle(): Promise<void> {
    if (this.urgentDownloads === 0) return Promise.resolve();
    return new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private grant(): void {
    while (this.free > 0 && this.waiting.length > 0) {
      let i = this.waiting.findIndex((w) => w.urgent());
      if (i < 0 && this.urgentDownloads === 0) i = 0;
      if (i < 0) return;
      const [w] = this.waiting.splice(i, 1);
      this.free--;
      w.go();
    }
  }
}

export interface FetcherOptions {
  s3: S3Client;
  bucket: string;
  /** Bytes per ranged GET. */
  rangeBytes: number;
  /** Open GETs at once across every download. */
  connections: Semaphore;
  /** Tries of one range after a transient failure (network, 5xx). @defaultValue 4 */
  attempts?: number;
  /** Base of the exponential backoff between tries, ms. @defaultValue 250 */
  backoffMs?: number;
  /**
   * "md5": recompute the ETag where S3's ETag allows it (see the header); "size": the size and If-Match
   * only, for a node whose CPU cannot hash at its network speed. @defaultValue "md5"
   */
  verify?: "md5" | "size";
}

interface S3ErrorLike {
  name?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as S3ErrorLike)?.$metadata?.httpStatusCode;
}

function describe(err: unknown): string {
  const e = err as S3ErrorLike & { code?: string };
  const status = statusOf(err);
  return [e?.name ?? e?.Code ?? e?.code, status ? `HTTP ${status}` : undefined, e?.message].filter(Boolean).join(": ");
}

/** Worth another try: the network, throttling or a server error; never 403/404/412. */
function transient(err: unknown): boolean {
  if (err instanceof AgentError) return false;
  const status = statusOf(err);
  if (status === undefined) return (err as Error)?.name !== "AbortError";
  return status === 429 || status >= 500;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

export class Fetcher {
  private readonly attempts: number;
  private readonly backoffMs: number;
  /** Epoch ms until which the bucket is known to answer (a 404 is then the object's, not the bucket's). */
  private bucketOkUntil = 0;

  constructor(private readonly o: FetcherOptions) {
    this.attempts = o.attempts ?? 4;
    this.backoffMs = o.backoffMs ?? 250;
  }

  get bucket(): string {
    return this.o.bucket;
  }

  /** The node-wide connection limit (the cache marks a prompt's downloads urgent on it). */
  get connections(): Semaphore {
    return this.o.connections;
  }

  /**
   * What the bucket holds at `key` now. A 404 is `object_missing` only once the bucket itself answers
   * (HeadObject says 404 for a missing bucket too, and a wrong bucket name must never read as "every
   * model was deleted"); 403 is `object_denied`.
   */
  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo> {
    const h = await this.retrying(key, signal, () => this.o.s3.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key: key }), { abortSignal: signal }));
    const bytes = Number(h.ContentLength ?? NaN);
    const etag = (h.ETag ?? "").replace(/"/g, "");
    if (!Number.isFinite(bytes) || bytes < 0 || !etag) throw new AgentError("fetch_failed", `${key}: HeadObject gave no size or ETag`, key);
    const info: ObjectInfo = { bytes, etag, check: { kind: "size" } };
    // Under SSE-KMS, DSSE-KMS or SSE-C the ETag is not an MD5 of the bytes.
    const encryptedWithKey = /^aws:kms/.test(h.ServerSideEncryption ?? "") || Boolean(h.SSECustomerAlgorithm);
    if (encryptedWithKey || this.o.verify === "size") return info;
    if (/^[0-9a-f]{32}$/.test(etag)) {
      info.check = { kind: "md5", hex: etag };
    } else {
      const m = /^([0-9a-f]{32})-(\d+)$/.exec(etag);
      if (m) {
        const parts = Number(m[2]);
        const p1 = await this.retrying(key, signal, () =>
          this.o.s3.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key: key, PartNumber: 1, ...this.pin(info) }), { abortSignal: signal }),
        );
        const partBytes = Number(p1.ContentLength ?? NaN);
        // Uniform parts (all but the last of part 1's length) are the only layout we can recompute.
        if (Number(p1.PartsCount ?? parts) === parts && partBytes > 0 && Math.ceil(bytes / partBytes) === parts) {
          info.check = { kind: "multipart-md5", hex: m[1], parts, partBytes };
        }
      }
    }
    return info;
  }

  /** Every key under `prefix` with its size (for pinned folders). */
  async list(prefix: string, signal?: AbortSignal): Promise<{ key: string; bytes: number }[]> {
    const out: { key: string; bytes: number }[] = [];
    let token: string | undefined;
    do {
      const page = await this.retrying(prefix, signal, () =>
        this.o.s3.send(new ListObjectsV2Command({ Bucket: this.o.bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: signal }),
      );
      for (const c of page.Contents ?? []) if (c.Key) out.push({ key: c.Key, bytes: Number(c.Size ?? 0) });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /**
   * Downloads `info`'s object into `stagingPath` (created, sized, written by ranges) and verifies it.
   * `onBytes` reports progress; `urgent` says, at each range, whether a prompt waits for this download
   * (Semaphore). Throws AgentError; the caller removes the staging file on failure.
   */
  async download(
    key: string,
    info: ObjectInfo,
    stagingPath: string,
    onBytes: (n: number) => void,
    signal?: AbortSignal,
    urgent: () => boolean = () => true,
  ): Promise<{ verified: InventoryFile["verified"]; syncSeconds: number }> {
    const fh = await open(stagingPath, "w+", 0o644);
    try {
      await fh.truncate(info.bytes);
      const rangeBytes = Math.max(1, this.o.rangeBytes);
      const count = Math.max(1, Math.ceil(info.bytes / rangeBytes));
      const done: { promise: Promise<void>; resolve: () => void }[] = [];
      for (let i = 0; i < count; i++) {
        let resolve!: () => void;
        const promise = new Promise<void>((r) => (resolve = r));
        done.push({ promise, resolve });
      }
      const local = new AbortController();
      const onAbort = () => local.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      let next = 0;
      let failure: unknown;
      const worker = async (): Promise<void> => {
        while (failure === undefined && !local.signal.aborted) {
          const i = next++;
          if (i >= count) return;
          const start = i * rangeBytes;
          const end = Math.min(info.bytes, start + rangeBytes) - 1;
          await this.o.connections.acquire(urgent);
          try {
            if (info.bytes > 0) await this.range(key, info, fh, start, end, onBytes, local.signal);
            done[i].resolve();
          } catch (err) {
            failure ??= err;
            local.abort();
          } finally {
            this.o.connections.release();
          }
        }
      };
      // The hash follows the ranges in order, reading back what they wrote (from the page cache).
      const hashing = this.verify(key, info, fh, done, count, rangeBytes, local.signal).catch((err: unknown) => {
        failure ??= err;
        local.abort();
      });
      // As many workers as ranges, up to the node's limit: the shared semaphore decides how many run.
      await Promise.all(Array.from({ length: Math.min(count, 256) }, worker));
      if (failure === undefined && local.signal.aborted) failure = new AgentError("shutting_down", `${key}: download cancelled`, key);
      // Unblock the hasher if a range failed.
      for (const d of done) d.resolve();
      await hashing;
      signal?.removeEventListener("abort", onAbort);
      if (failure !== undefined) throw failure instanceof AgentError ? failure : new AgentError("fetch_failed", `${key}: ${describe(failure)}`, key);
      // On disk before it is visible: a renamed file whose blocks were never written would come back
      // after a crash as a complete-looking model full of zeros.
      const t0 = process.hrtime.bigint();
      await fh.datasync();
      return { verified: info.check.kind, syncSeconds: Number(process.hrtime.bigint() - t0) / 1e9 };
    } finally {
      await fh.close();
    }
  }

  /** Every read after the HEAD is of the object the HEAD saw (412 otherwise). */
  private pin(info: ObjectInfo): { IfMatch: string } {
    return { IfMatch: `"${info.etag}"` };
  }

  private async range(key: string, info: ObjectInfo, fh: import("node:fs/promises").FileHandle, start: number, end: number, onBytes: (n: number) => void, signal: AbortSignal): Promise<void> {
    const want = end - start + 1;
    await this.retrying(key, signal, async () => {
      const res = await this.o.s3.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: key, Range: `bytes=${start}-${end}`, ...this.pin(info) }), { abortSignal: signal });
      const body = res.Body as Readable | undefined;
      if (!body) throw new AgentError("fetch_failed", `${key}: GetObject returned no body`, key);
      let pos = start;
      let batch: Buffer[] = [];
      let batchBytes = 0;
      // writev of ~1 MiB batches: few syscalls, no copy of the network buffers.
      const flush = async () => {
        if (batchBytes === 0) return;
        const bufs = batch;
        const at = pos;
        pos += batchBytes;
        batch = [];
        batchBytes = 0;
        await fh.writev(bufs, at);
      };
      let got = 0;
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          got += chunk.length;
          if (got > want) throw new AgentError("verify_failed", `${key}: range ${start}-${end} returned more than ${want} bytes`, key);
          batch.push(chunk);
          batchBytes += chunk.length;
          onBytes(chunk.length);
          if (batchBytes >= 1 << 20) await flush();
        }
        await flush();
      } catch (err) {
        body.destroy();
        onBytes(-got);
        throw err;
      }
      if (got !== want) {
        onBytes(-got);
        // A short body is a broken connection: retried like one.
        throw Object.assign(new Error(`range ${start}-${end}: ${got} of ${want} bytes`), { name: "ShortBody" });
      }
    });
  }

  private async verify(
    key: string,
    info: ObjectInfo,
    fh: import("node:fs/promises").FileHandle,
    done: { promise: Promise<void> }[],
    count: number,
    rangeBytes: number,
    signal: AbortSignal,
  ): Promise<void> {
    const check = info.check;
    if (check.kind === "size") {
      await Promise.all(done.map((d) => d.promise));
      return;
    }
    const segment = check.kind === "md5" ? Math.max(1, info.bytes) : check.partBytes;
    const digests: Buffer[] = [];
    let hash = createHash("md5");
    let segLeft = check.kind === "md5" ? info.bytes : Math.min(segment, info.bytes);
    const buf = Buffer.allocUnsafe(4 << 20);
    let pos = 0;
    for (let i = 0; i < count; i++) {
      await done[i].promise;
      if (signal.aborted) return;
      const end = Math.min(info.bytes, (i + 1) * rangeBytes);
      while (pos < end) {
        const n = Math.min(buf.length, end - pos, segLeft);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead !== n) throw new AgentError("verify_failed", `${key}: short read of the staging file`, key);
        hash.update(buf.subarray(0, n));
        pos += n;
        segLeft -= n;
        if (segLeft === 0 && check.kind === "multipart-md5") {
          digests.push(hash.digest());
          hash = createHash("md5");
          segLeft = Math.min(segment, info.bytes - pos);
        }
      }
    }
    const actual = check.kind === "md5" ? hash.digest("hex") : createHash("md5").update(Buffer.concat(digests)).digest("hex");
    if (check.kind === "multipart-md5" && digests.length !== check.parts) {
      throw new AgentError("verify_failed", `${key}: ${digests.length} parts hashed, the ETag says ${check.parts}`, key);
    }
    if (actual !== check.hex) {
      throw new AgentError("verify_failed", `${key}: the downloaded bytes hash to ${actual}${check.kind === "multipart-md5" ? `-${check.parts}` : ""}, the object's ETag is ${info.etag}`, key);
    }
  }

  /** Runs one S3 call with retries on transient failures; maps 403/404/412 to the agent's errors. */
  private async retrying<T>(key: string, signal: AbortSignal | undefined, call: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (signal?.aborted) throw new AgentError("shutting_down", `${key}: cancelled`, key);
        const status = statusOf(err);
        if (status === 403) throw new AgentError("object_denied", `${key}: S3 denied the read (${describe(err)}); the agent's role may read only the models bucket ${this.o.bucket}`, key);
        if (status === 404) {
          if (await this.bucketAnswers(signal)) throw new AgentError("object_missing", `${key}: not in the models bucket ${this.o.bucket}`, key);
          throw new AgentError("fetch_failed", `${key}: bucket ${this.o.bucket} does not answer (HeadBucket failed)`, key);
        }
        if (status === 412) throw new AgentError("object_changed", `${key}: the object changed during the download`, key);
        if (err instanceof AgentError || !transient(err) || attempt >= this.attempts) {
          if (err instanceof AgentError) throw err;
          throw new AgentError("fetch_failed", `${key}: ${describe(err)} (after ${attempt} attempt${attempt > 1 ? "s" : ""})`, key);
        }
        await sleep(Math.min(8000, this.backoffMs * 2 ** (attempt - 1)), signal);
      }
    }
  }

  private async bucketAnswers(signal?: AbortSignal): Promise<boolean> {
    if (Date.now() < this.bucketOkUntil) return true;
    try {
      await this.o.s3.send(new HeadBucketCommand({ Bucket: this.o.bucket }), { abortSignal: signal });
      this.bucketOkUntil = Date.now() + 60_000;
      return true;
    } catch {
      return false;
    }
  }
}

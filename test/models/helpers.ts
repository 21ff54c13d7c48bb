/**
 * Helpers for the model agent's tests: s3rver on loopback (test/karpenter/userdataHelpers.ts starts
 * it), an S3 client for it, and an S3 proxy in front of it that can slow bodies down, refuse keys
 * (403 AccessDenied, as S3 answers a read the role may not make), corrupt a byte, fail with 500,
 * present an object as a multipart upload, and log every request it forwards.
 */
import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createHash } from "node:crypto";
import { createServer, request as httpRequest, IncomingMessage } from "node:http";
import { AGENT_PATHS, TOKEN_HEADER } from "../../contracts/modelsAgent";

export { startS3, makeTempDir, removeDir, listFiles, watchForPartialFiles } from "../karpenter/userdataHelpers";

export const TOKEN = "test-token-0123456789abcdef";

export function s3Client(endpoint: string): S3Client {
  return new S3Client({ region: "us-east-1", endpoint, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
}

export async function putObject(s3: S3Client, bucket: string, key: string, body: Buffer): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

export async function deleteObject(s3: S3Client, bucket: string, key: string): Promise<void> {
  await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}

export interface ProxyRequest {
  method: string;
  key: string;
  range?: string;
  ifMatch?: string;
  query: string;
  status: number;
}

export interface S3Proxy {
  readonly endpoint: string;
  readonly requests: ProxyRequest[];
  /** Keys answered 403 AccessDenied. */
  readonly denied: Set<string>;
  /** Keys whose GET bodies get one byte flipped. */
  readonly corrupt: Set<string>;
  /** Body bytes per second per response; 0 = as fast as s3rver answers. */
  bytesPerSecond: number;
  /** Keys whose next N GETs answer 500 InternalError. */
  readonly fail500: Map<string, number>;
  /**
   * Keys replaced in the bucket by the next GET, which then answers 412 as S3 does for a GET whose
   * If-Match names the old ETag (s3rver ignores If-Match).
   */
  readonly replaceOnGet: Map<string, (key: string) => Promise<void>>;
  /** Keys shown as multipart uploads: the ETag HEAD/GET report, and part 1's length for HEAD ?partNumber=1. */
  readonly multipart: Map<string, { etag: string; partBytes: number; parts: number }>;
  /** Resolves when a GET of `key` has started streaming its body. */
  bodyStarted(key: string): Promise<void>;
  /**
   * Keys whose GETs are parked before they reach s3rver (the agent's connection stays open, waiting for
   * the body) until `releaseHeld()`; `held` counts the parked ones. A test can thus know exactly which
   * ranges hold the agent's connections.
   */
  readonly hold: Set<string>;
  readonly held: ProxyRequest[];
  /** Lets every parked GET through and stops holding. */
  releaseHeld(): void;
  close(): Promise<void>;
}

function keyOf(req: IncomingMessage, bucket: string): { key: string; query: string } {
  const u = new URL(req.url ?? "/", "http://x");
  const prefix = `/${bucket}/`;
  const key = u.pathname.startsWith(prefix) ? decodeURIComponent(u.pathname.slice(prefix.length)) : "";
  return { key, query: u.search };
}

/** The ETag S3 gives a multipart upload of `body` in parts of `partBytes`. */
export function multipartEtag(body: Buffer, partBytes: number): { etag: string; parts: number } {
  const digests: Buffer[] = [];
  for (let i = 0; i < body.length; i += partBytes) digests.push(createHash("md5").update(body.subarray(i, i + partBytes)).digest());
  return { etag: `${createHash("md5").update(Buffer.concat(digests)).digest("hex")}-${digests.length}`, parts: digests.length };
}

export async function startS3Proxy(target: string, bucket: string): Promise<S3Proxy> {
  const upstream = new URL(target);
  const waiters = new Map<string, (() => void)[]>();
  let parked: (() => void)[] = [];
  const proxy: Omit<S3Proxy, "endpoint" | "close"> = {
    requests: [],
    denied: new Set(),
    corrupt: new Set(),
    bytesPerSecond: 0,
    fail500: new Map(),
    replaceOnGet: new Map(),
    multipart: new Map(),
    bodyStarted: (key) => new Promise<void>((r) => waiters.set(key, [...(waiters.get(key) ?? []), r])),
    hold: new Set(),
    held: [],
    releaseHeld: () => {
      proxy.hold.clear();
      proxy.held.length = 0;
      const go = parked;
      parked = [];
      for (const g of go) g();
    },
  };
  const xmlError = (res: import("node:http").ServerResponse, status: number, code: string, message: string) => {
    res.writeHead(status, { "Content-Type": "application/xml" });
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
  };
  const server = createServer((req, res) => {
    const { key, query } = keyOf(req, bucket);
    const entry: ProxyRequest = { method: req.method ?? "", key, range: req.headers.range, ifMatch: req.headers["if-match"], query, status: 0 };
    proxy.requests.push(entry);
    if (req.method === "GET" && proxy.hold.has(key)) {
      proxy.held.push(entry);
      parked.push(() => handle(req, res, key, query, entry));
      return;
    }
    handle(req, res, key, query, entry);
  });
  const handle = (req: IncomingMessage, res: import("node:http").ServerResponse, key: string, query: string, entry: ProxyRequest) => {
    if (key && proxy.denied.has(key)) {
      entry.status = 403;
      // HEAD responses carry no body; the SDK maps the status alone.
      if (req.method === "HEAD") {
        res.writeHead(403);
        return res.end();
      }
      return xmlError(res, 403, "AccessDenied", "Access Denied");
    }
    const failures = proxy.fail500.get(key) ?? 0;
    if (req.method === "GET" && failures > 0) {
      proxy.fail500.set(key, failures - 1);
      entry.status = 500;
      return xmlError(res, 500, "InternalError", "We encountered an internal error. Please try again.");
    }
    const replace = req.method === "GET" ? proxy.replaceOnGet.get(key) : undefined;
    if (replace) {
      proxy.replaceOnGet.delete(key);
      entry.status = 412;
      void replace(key).then(() => xmlError(res, 412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold"));
      return;
    }
    const mp = proxy.multipart.get(key);
    const partOne = mp && /[?&]partNumber=1(&|$)/.test(query);
    // s3rver does not know partNumber: ask it for part 1 as a range instead.
    const headers = { ...req.headers };
    let path = req.url;
    if (partOne && mp) {
      headers.range = `bytes=0-${mp.partBytes - 1}`;
      path = (req.url ?? "").replace(/[?&]partNumber=1/, "");
    }
    const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path, headers }, (up) => {
      entry.status = up.statusCode ?? 0;
      const h = { ...up.headers };
      if (mp) {
        h.etag = `"${mp.etag}"`;
        if (partOne) {
          h["x-amz-mp-parts-count"] = String(mp.parts);
          delete h["content-range"];
        }
      }
      res.writeHead(partOne ? 206 : (up.statusCode ?? 502), h);
      let flipped = !(req.method === "GET" && proxy.corrupt.has(key));
      let announced = false;
      const pump = async () => {
        for await (const chunk of up as AsyncIterable<Buffer>) {
          if (!announced && req.method === "GET") {
            announced = true;
            for (const w of waiters.get(key) ?? []) w();
            waiters.delete(key);
          }
          let data = chunk;
          if (!flipped && data.length > 0) {
            data = Buffer.from(data);
            data[0] ^= 0xff;
            flipped = true;
          }
          const slice = 16 * 1024;
          for (let i = 0; i < data.length; i += slice) {
            if (res.destroyed) return;
            const part = data.subarray(i, i + slice);
            if (proxy.bytesPerSecond > 0) await new Promise((r) => setTimeout(r, (part.length / proxy.bytesPerSecond) * 1000));
            if (!res.write(part)) await new Promise((r) => res.once("drain", r));
          }
        }
        res.end();
      };
      pump().catch(() => res.destroy());
    });
    out.on("error", () => res.destroy());
    req.pipe(out);
  };
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return Object.assign(proxy, {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

/** A call to the agent's API (JSON in, JSON or text out). */
export async function call(
  url: string,
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string | null; contentType?: string } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (opts.token !== null) headers[TOKEN_HEADER] = opts.token ?? TOKEN;
  let payload: string | undefined;
  if (body !== undefined) {
    headers["content-type"] = opts.contentType ?? "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(url + path, { method, headers, body: payload });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (the metrics text)
  }
  return { status: res.status, body: parsed };
}

export const ensure = (url: string, files: string[], extra: Record<string, unknown> = {}) => call(url, "POST", AGENT_PATHS.ensure, { files, ...extra });

/** Polls `check` until it returns true (no fixed sleeps: the machine may be busy). */
export async function until(check: () => boolean | Promise<boolean>, what: string, limitMs = 30_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

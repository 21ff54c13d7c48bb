/**
 * The replica link: every gateway replica serves clients; the leader alone hears the pods. The leader
 * publishes every client-bound event on `GET /gateway/link` (a WebSocket on the internal port) and each
 * other replica subscribes, delivering to its own client sockets. Followers call the leader's internal
 * HTTP routes (`/gateway/leader/…`) for what only the leader knows (the live queue, what a pod runs).
 *
 * Frames, leader → follower:
 * - text `{"o": owner, "c": clientId|null, "b": broadcastIfNoClient, "m": "<ComfyUI message JSON>"}` — one event;
 * - text `{"q": N}` — the studio-wide queue figure changed;
 * - text `{"d": "<version>"}` — the discovery cache moved to another ComfyUI image;
 * - binary: 4-byte big-endian header length, header JSON `{"o", "c", "b"}`, then the ComfyUI binary frame.
 */
import type { Logger } from "pino";
import WebSocket from "ws";
import { PATHS } from "../../../contracts/gateway";
import type { EventSink, Recipient } from "../dispatch/dispatcher";

export const LINK_PATH = PATHS.link;
/** A follower that cannot keep up is dropped (it reconnects and its clients see the next events). */
const MAX_BACKLOG_BYTES = 16 * 1024 * 1024;

export interface LinkEvents {
  event(to: Recipient, message: string | Buffer, broadcastIfNoClient: boolean): void;
  queue(remaining: number): void;
  discovery(version: string): void;
}

export function encodeEvent(to: Recipient, message: string | Buffer, broadcast: boolean): string | Buffer {
  if (typeof message === "string") return JSON.stringify({ o: to.owner, c: to.clientId, b: broadcast, m: message });
  const head = Buffer.from(JSON.stringify({ o: to.owner, c: to.clientId, b: broadcast }));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(head.length);
  return Buffer.concat([len, head, message]);
}

export function decodeFrame(data: Buffer, isBinary: boolean, on: LinkEvents): void {
  if (isBinary) {
    const n = data.readUInt32BE(0);
    const head = JSON.parse(data.subarray(4, 4 + n).toString("utf8")) as { o: string; c: string | null; b: boolean };
    on.event({ owner: head.o, clientId: head.c }, data.subarray(4 + n), head.b);
    return;
  }
  const f = JSON.parse(data.toString("utf8")) as { o?: string; c?: string | null; b?: boolean; m?: string; q?: number; d?: string };
  if (typeof f.m === "string" && typeof f.o === "string") on.event({ owner: f.o, clientId: f.c ?? null }, f.m, f.b === true);
  else if (typeof f.q === "number") on.queue(f.q);
  else if (typeof f.d === "string") on.discovery(f.d);
}

/** Leader side: fans every event out to the subscribed followers. */
export class LinkHub implements EventSink {
  private readonly followers = new Set<WebSocket>();
  private remaining = 0;
  private version: string | undefined;

  attach(ws: WebSocket): void {
    this.followers.add(ws);
    ws.on("close", () => this.followers.delete(ws));
    ws.on("error", () => ws.terminate());
    ws.send(JSON.stringify({ q: this.remaining }));
    if (this.version) ws.send(JSON.stringify({ d: this.version }));
  }

  private send(frame: string | Buffer): void {
    for (const ws of this.followers) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      if (ws.bufferedAmount > MAX_BACKLOG_BYTES) {
        ws.terminate();
        continue;
      }
      ws.send(frame, { binary: Buffer.isBuffer(frame) });
    }
  }

  toClient(to: Recipient, message: string | Buffer, opts?: { broadcastIfNoClient?: boolean }): void {
    if (this.followers.size) this.send(encodeEvent(to, message, opts?.broadcastIfNoClient === true));
  }

  queueChanged(remaining: number): void {
    this.remaining = remaining;
    this.send(JSON.stringify({ q: remaining }));
  }

  discoveryChanged(version: string): void {
    this.version = version;
    this.send(JSON.stringify({ d: version }));
  }

  get size(): number {
    return this.followers.size;
  }

  /** Leadership ends: followers reconnect to whoever leads next. */
  close(): void {
    for (const ws of this.followers) ws.close(1012, "leader stepping down");
    this.followers.clear();
  }
}

/** Several sinks as one (the leader's own client hub, and the link to every follower). */
export function fanOut(...sinks: EventSink[]): EventSink {
  return {
    toClient: (c, m, o) => sinks.forEach((s) => s.toClient(c, m, o)),
    queueChanged: (n) => sinks.forEach((s) => s.queueChanged(n)),
  };
}

/**
 * Follower side: one subscription to the current leader, re-made when the leader changes or the socket
 * drops; plus the leader's internal HTTP routes. `up` says whether the leader is reachable now.
 */
export class LeaderLink {
  private ws: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private target: string | undefined;
  private stopped = false;
  up = false;

  constructor(private readonly on: LinkEvents, private readonly log: Logger, private readonly token: string) {}

  /** The leader's internal base URL (`http://host:port`), or undefined while none is known. */
  get leaderUrl(): string | undefined {
    return this.target;
  }

  follow(url: string | undefined): void {
    if (url === this.target || this.stopped) return;
    this.target = url;
    this.drop();
    if (url) this.connect();
  }

  private drop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const ws = this.ws;
    this.ws = undefined;
    this.up = false;
    ws?.terminate();
  }

  private connect(): void {
    const url = this.target;
    if (!url || this.stopped) return;
    const ws = new WebSocket(url.replace(/^http/, "ws") + LINK_PATH, { handshakeTimeout: 5000, headers: { "x-gateway-token": this.token } });
    this.ws = ws;
    ws.on("open", () => {
      this.up = true;
      this.log.info({ leader: url }, "following the leader");
    });
    ws.on("message", (data, isBinary) => {
      try {
        decodeFrame(Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), isBinary, this.on);
      } catch (err: unknown) {
        this.log.warn({ err: (err as Error).message }, "malformed frame from the leader");
      }
    });
    ws.on("error", () => undefined);
    ws.on("close", () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.up = false;
      if (!this.stopped && this.target === url) this.timer = setTimeout(() => this.connect(), 500);
    });
  }

  /** One call to the leader's internal HTTP API; throws when there is no leader to ask. */
  async call(method: "GET" | "POST", path: string, body?: unknown, timeoutMs = 10000): Promise<{ status: number; json: unknown }> {
    const url = this.target;
    if (!url) throw new NoLeader();
    const res = await fetch(url + path, {
      method,
      signal: AbortSignal.timeout(timeoutMs),
      headers: { "x-gateway-token": this.token, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : undefined };
  }

  stop(): void {
    this.stopped = true;
    this.drop();
  }
}

export class NoLeader extends Error {
  constructor() {
    super("no gateway leader is known yet");
    this.name = "NoLeader";
  }
}

import { randomBytes } from "node:crypto";
import type { FastifyPluginAsync } from "fastify";
import "@fastify/websocket";
import type WebSocket from "ws";
import type { EventSink, Recipient } from "../dispatch/dispatcher";

interface Client { ws: WebSocket; id: string; owner: string; metadata: boolean; lastSent: number; alive: boolean }

/** Sockets are filed under their user and client id together: a client id names a socket of that user only. */
const keyOf = (owner: string, clientId: string) => `${owner}\n${clientId}`;

/**
 * Client WebSockets (/ws?clientId=): each prompt's events go to its owner's sockets under the client id it
 * was submitted with — another user opening a socket with the same client id hears nothing of it;
 * `status` (the studio-wide queue figure, counted for everyone) to all. Ping frames every `pingMs` (CloudFront drops sockets silent for 10 min; ComfyUI never
 * pings) and a `status` to a socket that got nothing for `keepaliveMs` (the saintno SDK reconnects
 * after 10 s without a message).
 */
export class Hub implements EventSink {
  private readonly clients = new Map<string, Set<Client>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: { pingMs: number; keepaliveMs: number; maxUploadBytes: number; queueRemaining: () => number; maxBacklogBytes?: number }) {}

  start(): void {
    const every = Math.min(this.opts.pingMs, this.opts.keepaliveMs, 1000);
    let lastPing = Date.now();
    this.timer = setInterval(() => {
      const now = Date.now();
      const ping = now - lastPing >= this.opts.pingMs;
      if (ping) lastPing = now;
      for (const set of this.clients.values()) {
        for (const c of set) {
          if (ping) {
            if (!c.alive) {
              c.ws.terminate();
              continue;
            }
            c.alive = false;
            c.ws.ping();
          }
          if (now - c.lastSent >= this.opts.keepaliveMs) this.send(c, this.status());
        }
      }
    }, every);
    this.timer.unref();
  }

  close(code = 1012): void {
    if (this.timer) clearInterval(this.timer);
    this.disconnectAll(code);
  }

  /** Closes every client socket (1012: service restart; ComfyUI's frontend and the npm clients reconnect). */
  disconnectAll(code = 1012): void {
    for (const set of this.clients.values()) for (const c of set) c.ws.close(code, "gateway restarting");
    this.clients.clear();
  }

  count(): number {
    let n = 0;
    for (const s of this.clients.values()) n += s.size;
    return n;
  }

  private status(sid?: string): string {
    return JSON.stringify({ type: "status", data: { status: { exec_info: { queue_remaining: this.opts.queueRemaining() } }, ...(sid ? { sid } : {}) } });
  }

  private send(c: Client, msg: string | Buffer): void {
    if (c.ws.readyState !== 1) return;
    // A client that does not read (a stalled tab, a slow link) is dropped before its backlog grows without
    // bound; ComfyUI's frontend reconnects and reads the queue and history afresh.
    if (c.ws.bufferedAmount > (this.opts.maxBacklogBytes ?? 8 * 1024 * 1024)) {
      c.ws.terminate();
      return;
    }
    if (Buffer.isBuffer(msg)) {
      const type = msg.readUInt32BE(0);
      if (type === 4 && !c.metadata) return;
    }
    c.lastSent = Date.now();
    c.ws.send(msg, { binary: Buffer.isBuffer(msg) });
  }

  attach(ws: WebSocket, requested: string | undefined, owner: string): void {
    const id = requested && requested.length <= 256 ? requested : randomBytes(16).toString("hex");
    const c: Client = { ws, id, owner, metadata: false, lastSent: 0, alive: true };
    const key = keyOf(owner, id);
    let set = this.clients.get(key);
    if (!set) this.clients.set(key, (set = new Set()));
    set.add(c);
    let first = true;
    ws.on("pong", () => (c.alive = true));
    ws.on("message", (data, isBinary) => {
      if (!first || isBinary) return;
      first = false;
      try {
        const m = JSON.parse(data.toString()) as { type?: string; data?: { supports_preview_metadata?: boolean } };
        if (m.type === "feature_flags") {
          c.metadata = m.data?.supports_preview_metadata === true;
          this.send(c, JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true, max_upload_size: this.opts.maxUploadBytes } }));
        }
      } catch {
        /* ComfyUI ignores anything else */
      }
    });
    ws.on("close", () => {
      set!.delete(c);
      if (set!.size === 0 && this.clients.get(key) === set) this.clients.delete(key);
    });
    this.send(c, this.status(id));
  }

  toClient(to: Recipient, message: string | Buffer, opts?: { broadcastIfNoClient?: boolean }): void {
    if (to.clientId === null) {
      // ComfyUI broadcasts a prompt without a client id to every socket; here: every socket of its owner.
      if (!opts?.broadcastIfNoClient) return;
      for (const set of this.clients.values()) for (const c of set) if (c.owner === to.owner) this.send(c, message);
      return;
    }
    for (const c of this.clients.get(keyOf(to.owner, to.clientId)) ?? []) this.send(c, message);
  }

  queueChanged(remaining: number): void {
    void remaining;
    const msg = this.status();
    for (const set of this.clients.values()) for (const c of set) this.send(c, msg);
  }

}

/** ComfyUI's /ws (registered bare and under /api). */
export function wsRoutes(hub: Hub): FastifyPluginAsync {
  return async (app) => {
    app.get("/ws", { websocket: true }, (socket, req) => hub.attach(socket, (req.query as Record<string, string>).clientId, req.caller.userId));
  };
}

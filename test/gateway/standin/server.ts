// HTTP + WebSocket surface of ComfyUI 0.3.64 (Comfy-Org/ComfyUI@a125cd84: server.py, app/user_manager.py,
// app/app_settings.py, app/model_manager.py, api_server/routes/internal/internal_routes.py), on plain
// node:http + ws so that status codes, empty bodies and aiohttp's error texts can be reproduced exactly.
import { randomUUID } from "crypto";
import * as fs from "fs";
import * as http from "http";
import * as os from "os";
import * as path from "path";
import { PNG } from "pngjs";
import { Duplex } from "stream";
import { WebSocket, WebSocketServer } from "ws";
import { Engine, Hub } from "./engine";
import { cacheControl, StaticTrees } from "./frontend";
import { NODE_CLASSES, NodeContext, nodeInfo } from "./nodes";
import { readTextChunks, withTextChunks } from "./png";
import { PyError, pyBool, pyFloat, pyInt, pyStr } from "./py";
import { validatePrompt } from "./validate";

export interface ServerOptions {
  dataDir: string;
  maxUploadMb: number;
  readyAt: number; // epoch ms; Infinity = never
  ctx: NodeContext;
  dirs: { output: string; input: string; temp: string; user: string; models: string };
  modelFolders: () => string[];
  engine: () => Engine;
  /** The web root and /templates trees (frontend.ts); empty trees answer 404 like a missing file. */
  statics: StaticTrees;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly text: string,
  ) {
    super(text);
  }
}

interface Req {
  method: string;
  path: string;
  query: URLSearchParams;
  params: Record<string, string>;
  headers: http.IncomingHttpHeaders;
  body(): Promise<Buffer>;
  json(): Promise<unknown>;
  raw: http.IncomingMessage;
}
interface Res {
  status: number;
  headers: Record<string, string>;
  body: Buffer | string;
}
type Handler = (req: Req) => Promise<Res> | Res;

// aiohttp's texts for the errors it raises itself.
const empty = (status: number): Res => ({ status, headers: { "Content-Type": "application/octet-stream" }, body: "" });
const text = (status: number, t: string): Res => ({ status, headers: { "Content-Type": "text/plain; charset=utf-8" }, body: t });
const json = (v: unknown, status = 200, raw?: string): Res => ({ status, headers: { "Content-Type": "application/json; charset=utf-8" }, body: raw ?? JSON.stringify(v) });
const MODEL_EXTENSIONS = [".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"];
const SERVER_ERROR = text(500, "500 Internal Server Error\n\nServer got itself in trouble");

const MIME: Record<string, string> = {
  ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp",
  ".tif": "image/tiff", ".tiff": "image/tiff", ".svg": "image/svg+xml", ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
  ".mp3": "audio/mpeg", ".wav": "audio/x-wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".json": "application/json", ".txt": "text/plain",
  ".html": "text/html", ".htm": "text/html", ".js": "text/javascript", ".css": "text/css", ".glb": "model/gltf-binary", ".safetensors": "application/octet-stream",
};
export function guessType(name: string): string | undefined {
  return MIME[path.extname(name).toLowerCase()];
}

/** Python `key in container` for a parsed JSON body; other types raise (→ 500). */
function has(o: unknown, key: string): boolean {
  if (typeof o === "string") return o.includes(key);
  if (Array.isArray(o)) return o.includes(key);
  if (o !== null && typeof o === "object") return key in (o as object);
  throw new PyError("TypeError", "argument of type is not iterable");
}
function get(o: unknown, key: string): unknown {
  if (o === null || typeof o !== "object" || Array.isArray(o)) throw new PyError("TypeError", "indices must be integers");
  return (o as Record<string, unknown>)[key];
}

/** os.path.commonpath((root, p)) == root, for absolute, normalised paths. */
function inside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function annotated(name: string, dirs: ServerOptions["dirs"]): [string, string | undefined] {
  // folder_paths.annotated_filepath: the suffix check ignores the space, the slice assumes it.
  if (name.endsWith("[output]")) return [name.slice(0, -9), dirs.output];
  if (name.endsWith("[input]")) return [name.slice(0, -8), dirs.input];
  if (name.endsWith("[temp]")) return [name.slice(0, -7), dirs.temp];
  return [name, undefined];
}

function fileInfo(p: string, relativeTo: string) {
  const st = fs.statSync(p);
  return { path: path.relative(relativeTo, p).split(path.sep).join("/"), size: st.size, modified: st.mtimeMs / 1000, created: st.ctimeMs / 1000 };
}

export class StandInServer {
  readonly http: http.Server;
  private wss = new WebSocketServer({ noServer: true });
  private sockets = new Map<string, WebSocket>();
  private socketMeta = new Map<string, { feature_flags: unknown }>();
  private rawSockets = new Set<Duplex>();
  private routes: { method: string; re: RegExp; names: string[]; handler: Handler; api: boolean }[] = [];
  readonly hub: Hub;

  constructor(private o: ServerOptions) {
    // send_sync: the executor's messages go through a queue that the event loop drains later (publish_loop),
    // so an HTTP answer written in the same turn (POST /prompt's) reaches the client first.
    this.hub = {
      send: (event, data, sid) => {
        this.outbox.push([JSON.stringify({ type: event, data }), sid]);
        if (this.outbox.length === 1) setImmediate(() => this.flush());
      },
      sendBinary: (type, payload, sid) => {
        const head = Buffer.alloc(4);
        head.writeUInt32BE(type);
        this.outbox.push([Buffer.concat([head, payload]), sid]);
        if (this.outbox.length === 1) setImmediate(() => this.flush());
      },
      supports: (sid, feature) => {
        const flags = typeof sid === "string" ? this.socketMeta.get(sid)?.feature_flags : undefined;
        return flags !== null && typeof flags === "object" && (flags as Record<string, unknown>)[feature] === true;
      },
    };
    this.http = http.createServer((req, res) => void this.handle(req, res));
    this.http.on("connection", (s) => {
      this.rawSockets.add(s);
      s.on("close", () => this.rawSockets.delete(s));
    });
    this.http.on("upgrade", (req, socket, head) => this.upgrade(req, socket, head));
    this.defineRoutes();
  }

  private outbox: [string | Buffer, unknown][] = [];
  private users: Record<string, string> = { default: "default" };

  private flush(): void {
    const batch = this.outbox;
    this.outbox = [];
    for (const [msg, sid] of batch) this.sendNow(msg, sid);
  }

  private sendNow(msg: string | Buffer, sid: unknown): void {
    if (sid === null || sid === undefined) for (const ws of [...this.sockets.values()]) this.sendWs(ws, msg);
    else if (typeof sid === "string") {
      const ws = this.sockets.get(sid);
      if (ws) this.sendWs(ws, msg);
    }
  }

  private sendWs(ws: WebSocket, msg: string | Buffer): void {
    // send_socket_catch_exception: a failing socket only logs.
    if (ws.readyState === WebSocket.OPEN) ws.send(msg, () => undefined);
  }

  /** Drops every connection at once, without close frames or responses (a crashed process). */
  destroyAll(): void {
    this.outbox = [];
    this.http.close();
    for (const ws of this.wss.clients) ws.terminate();
    for (const s of this.rawSockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    await new Promise<void>((r) => {
      this.http.close(() => r());
      for (const ws of this.wss.clients) ws.terminate();
      for (const s of this.rawSockets) s.destroy();
      if (!this.http.listening) r();
    });
    this.sockets.clear();
  }

  private route(method: string, pattern: string, handler: Handler, api = true): void {
    const names: string[] = [];
    const re = new RegExp(
      "^" +
        pattern.replace(/\{(\w+)(?::([^}]+))?\}/g, (_m, n: string, r?: string) => {
          names.push(n);
          return `(${r ?? "[^{}/]+"})`;
        }) +
        "$",
    );
    this.routes.push({ method, re, names, handler, api });
  }

  private ready(): boolean {
    return Date.now() >= this.o.readyAt;
  }

  // middleware: create_origin_only_middleware (no --enable-cors-header)
  private originRejected(headers: http.IncomingHttpHeaders): boolean {
    const host = headers.host;
    const origin = headers.origin;
    if (host === undefined || origin === undefined) return false;
    let hostDomain: string | undefined = host.toLowerCase();
    let originUrl: URL | undefined;
    try {
      originUrl = new URL(origin);
    } catch {
      originUrl = undefined;
    }
    let originDomain: string | undefined = originUrl ? originUrl.host.toLowerCase() : "";
    let hostParsed: URL | undefined;
    try {
      hostParsed = new URL("http://" + hostDomain);
    } catch {
      hostParsed = undefined;
    }
    const hostname = hostParsed?.hostname.replace(/^\[|\]$/g, "");
    const loopback = hostname !== undefined && (hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname) || hostname.endsWith(".localhost"));
    // urlparse(...).port is None when absent; URL normalises default ports away, so look at the text.
    const originHasPort = originUrl !== undefined && /:\d+$/.test(originUrl.host);
    const hostHasPort = /:\d+$/.test(host);
    if (!originHasPort) hostDomain = hostParsed?.hostname;
    if (!hostHasPort) originDomain = originUrl?.hostname;
    if (loopback && hostDomain && originDomain && hostDomain !== originDomain) return true;
    return false;
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://x");
    const reject = (status: number, reason: string) => {
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    };
    if (!this.ready()) return reject(503, "Service Unavailable");
    if (this.originRejected(req.headers)) return reject(403, "Forbidden");
    if (url.pathname !== "/ws" && url.pathname !== "/api/ws") return reject(404, "Not Found");
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onWs(ws, url.searchParams.get("clientId") ?? ""));
  }

  private onWs(ws: WebSocket, clientId: string): void {
    let sid = clientId;
    // "Reusing existing session, remove old": the older socket stays open but no longer gets events.
    if (sid) this.sockets.delete(sid);
    else sid = randomUUID().replace(/-/g, "");
    this.sockets.set(sid, ws);
    this.socketMeta.set(sid, { feature_flags: {} });
    const engine = this.o.engine();
    // The greeting is awaited in the handler itself (self.send), not queued.
    this.sendNow(JSON.stringify({ type: "status", data: { status: engine.queueInfo(), sid } }), sid);
    if (engine.clientId === sid && engine.lastNodeId !== null) this.sendNow(JSON.stringify({ type: "executing", data: { node: engine.lastNodeId } }), sid);
    let first = true;
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let msg: unknown;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        return; // "Invalid JSON received from client": logged, first_message stays set
      }
      if (first && msg !== null && typeof msg === "object" && (msg as Record<string, unknown>).type === "feature_flags") {
        const meta = this.socketMeta.get(sid);
        if (meta) meta.feature_flags = (msg as Record<string, unknown>).data ?? {};
        this.sendNow(JSON.stringify({ type: "feature_flags", data: this.features() }), sid);
      }
      first = false;
    });
    ws.on("close", () => {
      // server.py pops the sid whichever socket holds it now: a late close of a replaced socket
      // unregisters its successor too (ComfyUI 0.3.64 behaviour, kept on purpose).
      this.sockets.delete(sid);
      this.socketMeta.delete(sid);
    });
    ws.on("error", () => undefined);
  }

  features(): Record<string, unknown> {
    return { supports_preview_metadata: true, max_upload_size: this.o.maxUploadMb * 1024 * 1024 };
  }

  /** Feature flags a connected client sent first (tests and preview frames). */
  clientFlags(sid: string): unknown {
    return this.socketMeta.get(sid)?.feature_flags;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const rawPath = url.pathname;
    const send = (r: Res) => {
      const body = typeof r.body === "string" ? Buffer.from(r.body) : r.body;
      // cache_control is the outermost middleware: it sees every answer, the other middlewares' included.
      res.writeHead(r.status, { ...cacheControl(rawPath, r.status, r.headers), "Content-Length": String(body.length) });
      res.end(body);
    };
    if (!this.ready()) return send(empty(503));
    if (this.originRejected(req.headers)) return send(empty(403));
    // origin_only_middleware answers every OPTIONS itself, whatever the path.
    if (req.method === "OPTIONS") return send(empty(200));
    const method = req.method === "HEAD" ? "GET" : (req.method ?? "GET");
    const max = Math.round(this.o.maxUploadMb * 1024 * 1024);
    let bodyPromise: Promise<Buffer> | undefined;
    const readBody = () =>
      (bodyPromise ??= new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        let size = 0;
        req.on("data", (c: Buffer) => {
          size += c.length;
          if (size > max) {
            reject(new HttpError(413, `Maximum request body size ${max} exceeded, actual body size ${size}`));
            req.pause();
            return;
          }
          chunks.push(c);
        });
        req.on("end", () => resolve(Buffer.concat(chunks)));
        req.on("error", reject);
      }));
    let matchedPath = false;
    for (const r of this.routes) {
      let p = rawPath;
      if (r.api) {
        if (p.startsWith("/api/")) p = p.slice(4);
        else if (p === "/api") p = "";
      }
      const m = r.re.exec(p);
      if (!m) continue;
      matchedPath = true;
      if (r.method !== method) continue;
      const params: Record<string, string> = {};
      r.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1])));
      const rq: Req = {
        method,
        path: p,
        query: url.searchParams,
        params,
        headers: req.headers,
        raw: req,
        body: readBody,
        json: async () => {
          const b = await readBody();
          try {
            return JSON.parse(b.toString("utf8"));
          } catch {
            throw new PyError("json.decoder.JSONDecodeError", "Expecting value");
          }
        },
      };
      try {
        const out = await r.handler(rq);
        return send(out);
      } catch (e) {
        if (e instanceof HttpError) {
          res.setHeader("Connection", "close");
          send(text(e.status, e.text));
          req.resume();
          return;
        }
        return send(SERVER_ERROR);
      }
    }
    // web.static('/templates', …) then web.static('/', web_root): every other GET is a static file (or a
    // missing one); other methods are not allowed.
    if (matchedPath || method !== "GET") return send(text(405, "405: Method Not Allowed"));
    return send(this.o.statics.serve(rawPath) ?? text(404, "404: Not Found"));
  }

  private userRoot(): string {
    return path.join(this.o.dirs.user, "default");
  }

  /** UserManager.get_request_user_filepath for user "default" (no --multi-user). */
  private userPath(file: string | undefined, createDir = true): string | undefined {
    const root = path.resolve(this.userRoot());
    let p = root;
    if (file !== undefined) {
      if (file.includes("%")) file = decodeURIComponent(file);
      p = path.resolve(root, file);
      if (!inside(root, p)) return undefined;
    }
    const parent = path.dirname(p);
    if (createDir && !fs.existsSync(parent)) fs.mkdirSync(parent, { recursive: true });
    return p;
  }

  private settingsFile(): string {
    return this.userPath("comfy.settings.json") as string;
  }
  private readSettings(): Record<string, unknown> {
    const f = this.settingsFile();
    if (!fs.existsSync(f)) return {};
    try {
      return JSON.parse(fs.readFileSync(f, "utf8"));
    } catch {
      return {};
    }
  }
  private writeSettings(s: unknown): void {
    fs.writeFileSync(this.settingsFile(), JSON.stringify(s, null, 4));
  }

  private modelFiles(folder: string): string[] {
    return this.o.ctx.models(folder);
  }

  private defineRoutes(): void {
    const o = this.o;
    const eng = () => o.engine();

    // server.py get_root: the web root's index.html (a stub page when the stand-in serves no frontend).
    this.route("GET", "/", () => o.statics.index() ?? { status: 200, headers: { "Content-Type": "text/html", "Cache-Control": "no-cache", Pragma: "no-cache", Expires: "0" }, body: "<!doctype html><title>ComfyUI stand-in</title>" });
    this.route("GET", "/ws", () => text(400, "No WebSocket UPGRADE hdr: None\n Can \"Upgrade\" only to \"WebSocket\"."));
    this.route("GET", "/embeddings", () => json(this.modelFiles("embeddings").map((f) => f.replace(/\.[^./\\]*$/, ""))));
    this.route("GET", "/models", () => json(o.modelFolders()));
    this.route("GET", "/models/{folder}", (r) => (o.modelFolders().includes(r.params.folder) ? json(this.modelFiles(r.params.folder)) : empty(404)));
    this.route("GET", "/extensions", () => json([]));

    this.route("POST", "/upload/image", async (r) => this.upload(r, false));
    this.route("POST", "/upload/mask", async (r) => this.upload(r, true));

    this.route("GET", "/view", (r) => this.view(r));
    this.route("GET", "/view_metadata/{folder_name}", () => empty(404));

    this.route("GET", "/system_stats", () => {
      const total = os.totalmem();
      const free = os.freemem();
      return json({
        system: {
          os: "posix",
          ram_total: total,
          ram_free: free,
          comfyui_version: "0.3.64",
          required_frontend_version: "1.27.10",
          installed_templates_version: "0.1.95",
          required_templates_version: "0.1.95",
          python_version: "3.12.11 (main, Jun  4 2025, 04:14:08) [GCC 12.2.0]",
          pytorch_version: "2.8.0+cpu",
          embedded_python: false,
          argv: ["main.py", "--cpu", "--listen", "127.0.0.1"],
        },
        devices: [{ name: "cpu", type: "cpu", index: null, vram_total: total, vram_free: free, torch_vram_total: total, torch_vram_free: free }],
      });
    });
    this.route("GET", "/features", () => json(this.features()));
    this.route("GET", "/prompt", () => json(eng().queueInfo()));

    const objectInfoJson = (v: unknown) => json(undefined, 200, JSON.stringify(v).replace(/18446744073709552000/g, "18446744073709551615"));
    this.route("GET", "/object_info", () => objectInfoJson(Object.fromEntries([...NODE_CLASSES.values()].map((d) => [d.name, nodeInfo(d, o.ctx)]))));
    this.route("GET", "/object_info/{node_class}", (r) => {
      const d = NODE_CLASSES.get(r.params.node_class);
      return objectInfoJson(d ? { [d.name]: nodeInfo(d, o.ctx) } : {});
    });

    this.route("GET", "/history", (r) => {
      const mi = r.query.get("max_items");
      const off = r.query.get("offset");
      return json(eng().getHistory({ maxItems: mi === null ? undefined : pyInt(mi), offset: off === null ? -1 : pyInt(off) }));
    });
    this.route("GET", "/history/{prompt_id}", (r) => json(eng().getHistory({ promptId: r.params.prompt_id })));
    this.route("GET", "/queue", () => {
      const [running, pending] = eng().currentQueue();
      return json({ queue_running: running, queue_pending: pending });
    });

    this.route("POST", "/prompt", async (r) => {
      const body = await r.json();
      const e = eng();
      let number: number;
      if (has(body, "number")) number = pyFloat(get(body, "number"));
      else {
        number = e.number;
        if (has(body, "front") && pyBool(get(body, "front"))) number = -number;
        e.number += 1;
      }
      if (!has(body, "prompt")) {
        const error = { type: "no_prompt", message: "No prompt provided", details: "No prompt provided", extra_info: {} };
        return json({ error, node_errors: {} }, 400);
      }
      const prompt = get(body, "prompt");
      // 0.3.64 takes a client-chosen prompt_id as str() of whatever was sent, unchecked (newer servers
      // demand a canonical lowercase UUID); the stand-in does the same and leaves UUID checks to the gateway.
      const promptId = has(body, "prompt_id") ? pyStr(get(body, "prompt_id")) : randomUUID();
      const partial = has(body, "partial_execution_targets") ? get(body, "partial_execution_targets") : null;
      if (prompt === null || typeof prompt !== "object" || Array.isArray(prompt)) throw new PyError("AttributeError", "prompt is not a dict");
      const valid = validatePrompt(o.ctx, prompt as never, partial);
      let extra: unknown = has(body, "extra_data") ? get(body, "extra_data") : {};
      if (extra === null || typeof extra !== "object" || Array.isArray(extra)) {
        if (has(body, "client_id")) throw new PyError("TypeError", "extra_data does not support item assignment");
        extra = extra ?? {};
      }
      if (has(body, "client_id")) (extra as Record<string, unknown>).client_id = get(body, "client_id");
      if (valid.ok) {
        e.put({ tuple: [number, promptId, prompt as never, extra as Record<string, unknown>, valid.outputs], floats: valid.floats });
        return json({ prompt_id: promptId, number, node_errors: valid.nodeErrors });
      }
      return json({ error: valid.error, node_errors: valid.nodeErrors }, 400);
    });

    this.route("POST", "/queue", async (r) => {
      const body = await r.json();
      const e = eng();
      if (has(body, "clear") && pyBool(get(body, "clear"))) e.wipeQueue();
      if (has(body, "delete")) {
        const d = get(body, "delete");
        if (!Array.isArray(d)) throw new PyError("TypeError", "not iterable");
        for (const id of d) e.deleteQueueItem(id);
      }
      return empty(200);
    });

    this.route("POST", "/interrupt", async (r) => {
      let body: unknown;
      try {
        body = await r.json();
      } catch (e) {
        if (e instanceof HttpError) throw e;
        body = {};
      }
      const e = eng();
      const pid = get(body, "prompt_id");
      if (pyBool(pid)) {
        if (e.runningIds().includes(pid as string)) e.interrupt();
      } else e.interrupt();
      return empty(200);
    });

    this.route("POST", "/free", async (r) => {
      const body = await r.json();
      const unload = get(body, "unload_models") ?? false;
      const free = get(body, "free_memory") ?? false;
      if (pyBool(unload)) eng().setFlag("unload_models", unload);
      if (pyBool(free)) eng().setFlag("free_memory", free);
      return empty(200);
    });

    this.route("POST", "/history", async (r) => {
      const body = await r.json();
      const e = eng();
      if (has(body, "clear") && pyBool(get(body, "clear"))) e.wipeHistory();
      if (has(body, "delete")) {
        const d = get(body, "delete");
        if (!Array.isArray(d)) throw new PyError("TypeError", "not iterable");
        for (const id of d) e.deleteHistoryItem(id);
      }
      return empty(200);
    });

    // ---- app/app_settings.py ----
    this.route("GET", "/settings", () => json(this.readSettings()));
    this.route("GET", "/settings/{id}", (r) => {
      const s = this.readSettings();
      return json(r.params.id in s ? s[r.params.id] : null);
    });
    this.route("POST", "/settings", async (r) => {
      const s = this.readSettings();
      const n = await r.json();
      if (n === null || typeof n !== "object" || Array.isArray(n)) throw new PyError("TypeError", "not a mapping");
      this.writeSettings({ ...s, ...(n as object) });
      return empty(200);
    });
    this.route("POST", "/settings/{id}", async (r) => {
      const s = this.readSettings();
      s[r.params.id] = await r.json();
      this.writeSettings(s);
      return empty(200);
    });

    // ---- app/user_manager.py (single user "default") ----
    this.route("GET", "/users", () => json({ storage: "server", migrated: fs.existsSync(this.userRoot()) }));
    this.route("POST", "/users", async (r) => {
      const body = await r.json();
      const username = get(body, "username");
      if (username === undefined) throw new PyError("KeyError", "'username'");
      if (Object.values(this.users).includes(username as string)) return json({ error: "Duplicate username." }, 400);
      // Without --multi-user the id is created but the request user stays "default".
      const name = String(username).trim();
      if (!name) throw new PyError("ValueError", "username not provided");
      const id = `${name.replace(/[^a-zA-Z0-9-_]+/g, "-")}_${randomUUID()}`;
      // add_user records it in users.json even without --multi-user (which alone would read it back).
      this.users[id] = name;
      fs.writeFileSync(path.join(this.o.dirs.user, "users.json"), JSON.stringify(this.users));
      return json(id);
    });
    this.route("GET", "/userdata", (r) => {
      const dir = r.query.get("dir") ?? "";
      if (!dir) return text(400, "Directory not provided");
      const p = this.userPath(dir);
      if (!p) return text(403, "Invalid directory");
      if (!fs.existsSync(p)) return text(404, "Directory not found");
      const recurse = (r.query.get("recurse") ?? "").toLowerCase() === "true";
      const fullInfo = (r.query.get("full_info") ?? "").toLowerCase() === "true";
      const split = (r.query.get("split") ?? "").toLowerCase() === "true";
      const files: string[] = [];
      const walk = (d: string, deep: boolean) => {
        for (const ent of fs.readdirSync(d, { withFileTypes: true })) {
          if (ent.name.startsWith(".")) continue; // glob's "*" skips dot files
          const f = path.join(d, ent.name);
          if (ent.isDirectory()) {
            if (deep) walk(f, deep);
          } else if (ent.isFile()) files.push(f);
        }
      };
      walk(p, recurse);
      return json(
        files.map((f) => {
          if (fullInfo) return fileInfo(f, p);
          const rel = path.relative(p, f).split(path.sep).join("/");
          return split ? [rel, ...rel.split("/")] : rel;
        }),
      );
    });
    this.route("GET", "/v2/userdata", (r) => {
      const rel = decodeURIComponent(r.query.get("path") ?? "");
      const base = this.userPath(undefined, false) as string;
      const target = rel ? this.userPath(rel, false) : base;
      if (!target) return text(400, "Invalid path requested");
      if (!fs.existsSync(target)) return target === base ? json([]) : text(404, "Requested path not found");
      if (!fs.statSync(target).isDirectory()) return text(400, "Requested path is not a directory");
      const results: Record<string, unknown>[] = [];
      const walk = (d: string) => {
        const ents = fs.readdirSync(d, { withFileTypes: true });
        for (const e of ents) if (e.isDirectory()) results.push({ name: e.name, path: path.relative(base, path.join(d, e.name)).split(path.sep).join("/"), type: "directory" });
        for (const e of ents) {
          if (e.isDirectory()) continue;
          const f = path.join(d, e.name);
          const st = fs.statSync(f);
          results.push({ name: e.name, path: path.relative(base, f).split(path.sep).join("/"), type: "file", size: st.size, modified: st.mtimeMs / 1000 });
        }
        for (const e of ents) if (e.isDirectory()) walk(path.join(d, e.name));
      };
      walk(target);
      results.sort((a, b) => {
        const da = a.type !== "directory" ? 1 : 0;
        const db = b.type !== "directory" ? 1 : 0;
        if (da !== db) return da - db;
        const na = String(a.name).toLowerCase();
        const nb = String(b.name).toLowerCase();
        return na < nb ? -1 : na > nb ? 1 : 0;
      });
      return json(results);
    });
    const userDataPath = (r: Req, checkExists: boolean, param = "file"): string | Res => {
      const file = r.params[param];
      if (!file) return empty(400);
      const p = this.userPath(file);
      if (!p) return empty(403);
      if (checkExists && !fs.existsSync(p)) return empty(404);
      return p;
    };
    this.route("GET", "/userdata/{file}", (r) => {
      const p = userDataPath(r, true);
      if (typeof p !== "string") return p;
      if (fs.statSync(p).isDirectory()) return text(404, "404: Not Found");
      return { status: 200, headers: { "Content-Type": guessType(p) ?? "application/octet-stream" }, body: fs.readFileSync(p) };
    });
    this.route("POST", "/userdata/{file}", async (r) => {
      const p = userDataPath(r, false);
      if (typeof p !== "string") return p;
      const overwrite = (r.query.get("overwrite") ?? "true") !== "false";
      const fullInfo = (r.query.get("full_info") ?? "false").toLowerCase() === "true";
      if (!overwrite && fs.existsSync(p)) return text(409, "File already exists");
      const body = await r.body();
      try {
        fs.writeFileSync(p, body);
      } catch {
        return empty(400);
      }
      const userRoot = this.userPath(undefined) as string;
      return json(fullInfo ? fileInfo(p, userRoot) : path.relative(userRoot, p));
    });
    this.route("DELETE", "/userdata/{file}", (r) => {
      const p = userDataPath(r, true);
      if (typeof p !== "string") return p;
      fs.rmSync(p);
      return empty(204);
    });
    this.route("POST", "/userdata/{file}/move/{dest}", (r) => {
      const source = userDataPath(r, true);
      if (typeof source !== "string") return source;
      const dest = userDataPath(r, false, "dest");
      if (typeof dest !== "string") return dest;
      const overwrite = (r.query.get("overwrite") ?? "true") !== "false";
      const fullInfo = (r.query.get("full_info") ?? "false").toLowerCase() === "true";
      if (!overwrite && fs.existsSync(dest)) return text(409, "File already exists");
      fs.renameSync(source, dest);
      const userRoot = this.userPath(undefined) as string;
      return json(fullInfo ? fileInfo(dest, userRoot) : path.relative(userRoot, dest));
    });

    // ---- app/model_manager.py ----
    // app/model_manager.py: configs and custom_nodes are not model folders there.
    this.route("GET", "/experiment/models", () =>
      json(o.modelFolders().filter((f) => f !== "configs" && f !== "custom_nodes").map((name) => ({ name, folders: this.folderPaths(name) }))),
    );
    this.route("GET", "/experiment/models/{folder}", (r) => {
      if (!o.modelFolders().includes(r.params.folder)) return empty(404);
      const out: Record<string, unknown>[] = [];
      this.folderPaths(r.params.folder).forEach((dir, pathIndex) => {
        const walk = (d: string) => {
          if (!fs.existsSync(d) || !fs.statSync(d).isDirectory()) return;
          for (const e of fs.readdirSync(d, { withFileTypes: true })) {
            if (e.name.startsWith(".")) continue;
            const f = path.join(d, e.name);
            if (e.isDirectory()) walk(f);
            else if (MODEL_EXTENSIONS.includes(path.extname(e.name).toLowerCase())) {
              const st = fs.statSync(f);
              out.push({ name: path.relative(dir, f), pathIndex, modified: st.mtimeMs / 1000, created: st.ctimeMs / 1000, size: st.size });
            }
          }
        };
        walk(dir);
      });
      return json(out);
    });
    // app/model_manager.py: a model's preview image (<model>.png/.webp… beside it); the stand-in's model files
    // have none, so every preview is the route's 404, as on a ComfyUI whose models came without previews.
    this.route("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.*}", () => empty(404));
    // app/custom_node_manager.py: custom nodes' example workflows and locales; the stand-in has no custom nodes.
    this.route("GET", "/workflow_templates", () => json({}));
    this.route("GET", "/i18n", () => json({}));

    // ---- internal routes (no /api twin) ----
    this.route("GET", "/internal/logs", () => json(""), false);
    this.route("GET", "/internal/logs/raw", () => json({ entries: [], size: { cols: 80, rows: 24 } }), false);
    this.route("PATCH", "/internal/logs/subscribe", async (r) => {
      const body = await r.json();
      for (const k of ["clientId", "enabled"]) if (get(body, k) === undefined) throw new PyError("KeyError", `'${k}'`);
      return empty(200);
    }, false);
    this.route("GET", "/internal/folder_paths", () => json(Object.fromEntries(o.modelFolders().map((f) => [f, this.folderPaths(f)]))), false);
    this.route("GET", "/internal/files/{directory_type}", (r) => {
      const t = r.params.directory_type;
      if (!["output", "input", "temp"].includes(t)) return json({ error: "Invalid directory type" }, 400);
      const dir = o.dirs[t as "output" | "input" | "temp"];
      // os.scandir: top-level files only, newest first
      const files = fs
        .readdirSync(dir, { withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => ({ name: e.name, mtime: fs.statSync(path.join(dir, e.name)).mtimeMs }))
        .sort((a, b) => b.mtime - a.mtime);
      return json(files.map((x) => x.name));
    }, false);
  }

  private folderPaths(folder: string): string[] {
    const m = this.o.dirs.models;
    if (folder === "text_encoders") return [path.join(m, "text_encoders"), path.join(m, "clip")];
    if (folder === "diffusion_models") return [path.join(m, "unet"), path.join(m, "diffusion_models")];
    if (folder === "controlnet") return [path.join(m, "controlnet"), path.join(m, "t2i_adapter")];
    if (folder === "custom_nodes") return [path.join(this.o.dataDir, "custom_nodes")];
    return [path.join(m, folder)];
  }

  private view(r: Req): Res {
    // server.py view_image
    const q = r.query;
    const fn = q.get("filename");
    if (fn === null) return empty(404);
    const [name0, annotatedDir] = annotated(fn, this.o.dirs);
    if (!name0) return empty(400);
    if (name0[0] === "/" || name0.includes("..")) return empty(400);
    let outputDir = annotatedDir;
    if (outputDir === undefined) {
      const t = q.get("type") ?? "output";
      outputDir = t === "output" ? this.o.dirs.output : t === "temp" ? this.o.dirs.temp : t === "input" ? this.o.dirs.input : undefined;
    }
    if (outputDir === undefined) return empty(400);
    const sub = q.get("subfolder");
    if (sub !== null) {
      const full = path.join(outputDir, sub);
      if (!inside(outputDir, path.resolve(full))) return empty(403);
      outputDir = full;
    }
    const filename = path.basename(name0);
    const file = path.join(outputDir, filename);
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) return empty(404);
    const disposition = { "Content-Disposition": `filename="${filename}"` };
    const channel = q.get("channel") ?? "rgba";
    if (q.get("preview") === null && (channel === "rgb" || channel === "a") && guessType(filename) === "image/png") {
      // channel=rgb: the colour channels as PNG; channel=a: black RGBA carrying only the alpha (server.py).
      const img = PNG.sync.read(fs.readFileSync(file));
      const out = new PNG({ width: img.width, height: img.height });
      for (let i = 0; i < img.width * img.height * 4; i += 4) {
        if (channel === "rgb") out.data.set([img.data[i], img.data[i + 1], img.data[i + 2], 255], i);
        else out.data.set([0, 0, 0, img.data[i + 3]], i);
      }
      return { status: 200, headers: { "Content-Type": "image/png", ...disposition }, body: PNG.sync.write(out, channel === "rgb" ? { colorType: 2 } : { colorType: 6 }) };
    }
    // preview= (webp/jpeg re-encoding) is not reproduced: the raw file is served.
    let ct = guessType(filename) ?? "application/octet-stream";
    if (["text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"].includes(ct)) ct = "application/octet-stream";
    const st = fs.statSync(file);
    return {
      status: 200,
      headers: { "Content-Type": ct, ...disposition, "Last-Modified": st.mtime.toUTCString(), "Accept-Ranges": "bytes" },
      body: fs.readFileSync(file),
    };
  }

  private async upload(r: Req, mask: boolean): Promise<Res> {
    // server.py image_upload (+ upload_mask's save function)
    const body = await r.body();
    const ctype = r.headers["content-type"] ?? "";
    let form: FormData;
    try {
      form = await new Request("http://x/", { method: "POST", headers: { "content-type": ctype }, body: new Uint8Array(body) }).formData();
    } catch {
      // aiohttp's request.post() on a body that is not a form yields an empty MultiDict
      return empty(400);
    }
    const image = form.get("image");
    const overwrite = form.get("overwrite");
    const typeField = form.get("type");
    const type = typeField === null ? "input" : String(typeField);
    const dirs = this.o.dirs;
    const uploadDir = type === "input" ? dirs.input : type === "temp" ? dirs.temp : type === "output" ? dirs.output : undefined;
    if (uploadDir === undefined) return SERVER_ERROR; // get_dir_by_type: UnboundLocalError
    if (image === null) return empty(400);
    if (typeof image === "string") return SERVER_ERROR; // a plain field has no .file
    let filename = image.name;
    if (!filename) return empty(400);
    const subfolder = form.get("subfolder") === null ? "" : String(form.get("subfolder"));
    const fullOutputFolder = path.join(uploadDir, path.normalize(subfolder || "."));
    let filepath = path.resolve(fullOutputFolder, filename);
    if (!inside(uploadDir, filepath)) return empty(400);
    fs.mkdirSync(fullOutputFolder, { recursive: true });
    const bytes = Buffer.from(await image.arrayBuffer());
    const ext = path.extname(filename);
    const stem = filename.slice(0, filename.length - ext.length);
    let duplicate = false;
    if (!(overwrite === "true" || overwrite === "1")) {
      let i = 1;
      while (fs.existsSync(filepath)) {
        // compare_image_hash: same bytes under the same name are not stored twice (fix for #3465)
        if (fs.statSync(filepath).isFile() && fs.readFileSync(filepath).equals(bytes)) {
          duplicate = true;
          break;
        }
        filename = `${stem} (${i})${ext}`;
        filepath = path.join(fullOutputFolder, filename);
        i++;
      }
    }
    if (!duplicate) {
      if (mask) {
        const err = this.saveMask(form, bytes, filepath);
        if (err) return err;
      } else fs.writeFileSync(filepath, bytes);
    }
    return json({ name: filename, subfolder, type });
  }

  private saveMask(form: FormData, mask: Buffer, filepath: string): Res | undefined {
    // upload_mask: the original (original_ref) with its alpha replaced by the upload's alpha, text chunks kept.
    // Its early "return web.Response(400)" values are discarded by image_upload, which still answers 200.
    const ref = JSON.parse(String(form.get("original_ref")));
    const [name, annotatedDir] = annotated(String(ref.filename ?? ""), this.o.dirs);
    if (!name || name[0] === "/" || name.includes("..")) return undefined;
    const t = ref.type ?? "output";
    let outDir = annotatedDir ?? (t === "output" ? this.o.dirs.output : t === "temp" ? this.o.dirs.temp : t === "input" ? this.o.dirs.input : undefined);
    if (outDir === undefined) return undefined;
    if ((ref.subfolder ?? "") !== "") {
      const full = path.join(outDir, ref.subfolder);
      if (!inside(outDir, path.resolve(full))) return undefined;
      outDir = full;
    }
    const file = path.join(outDir, name);
    if (!fs.existsSync(file)) return undefined;
    const orig = fs.readFileSync(file);
    const a = PNG.sync.read(orig);
    const m = PNG.sync.read(mask);
    for (let y = 0; y < a.height; y++) {
      for (let x = 0; x < a.width; x++) {
        const i = (y * a.width + x) * 4;
        a.data[i + 3] = x < m.width && y < m.height ? m.data[(y * m.width + x) * 4 + 3] : 0;
      }
    }
    fs.writeFileSync(filepath, withTextChunks(PNG.sync.write(a, { colorType: 6, deflateLevel: 4 }), readTextChunks(orig)));
    return undefined;
  }
}

export { HttpError };

/**
 * Sign-in and request checks, on every replica, before any route runs:
 * - who is asking: an OIDC session (cookie `__Host-comfyui-session`, a random token whose hash is the
 *   session's key in the store), an API key (`Authorization: Bearer cgw_…`), a one-time `/ws` ticket, or —
 *   local mode on loopback only — the machine's own user;
 * - whether the request may come from where it comes from: an unsafe method or a WebSocket upgrade carried
 *   by a cookie must be same-origin (`Sec-Fetch-Site`, else `Origin` against `Host`), and its JSON routes
 *   must say `application/json`; nothing another site can make a browser send passes.
 * Routes: /auth/login, /auth/callback, /auth/logout (POST), /api/gateway/me, /api/gateway/ws-ticket.
 */
import fastifyCookie from "@fastify/cookie";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import type { Logger } from "pino";
import { checkKey, sha256 } from "./keys";
import { OidcClient, type OidcSettings } from "./oidc";
import { SCOPES, type AuthStore, type Caller, type Scope, type SessionRecord } from "./types";

export * from "./types";
export { mintKey, parseKey } from "./keys";

export const SESSION_COOKIE = "__Host-comfyui-session";
/** The web UI extension that shows who is signed in, with a Sign out control (listed in /extensions). */
export const ACCOUNT_EXTENSION = "/extensions/comfyui-gateway/account.js";
const ACCOUNT_JS = `// comfyui-gateway: who is signed in, and Sign out (POST /auth/logout, then the IdP's logout if it has one).
(async function () {
  let me;
  try {
    me = await (await fetch("/api/gateway/me")).json();
  } catch (e) { return; }
  if (!me || me.via !== "session") return; // API keys and local mode have nothing to sign out of
  const box = document.createElement("div");
  box.id = "comfyui-gateway-account";
  box.style.cssText = "position:fixed;bottom:8px;right:8px;z-index:9999;padding:4px 8px;border-radius:4px;background:#333;color:#fff;font:12px sans-serif";
  const who = document.createElement("span");
  who.textContent = (me.name || me.user) + (me.admin ? " (admin)" : "") + " \u00b7 ";
  const out = document.createElement("a");
  out.href = "#";
  out.textContent = "Sign out";
  out.style.color = "#9cf";
  out.onclick = async (ev) => {
    ev.preventDefault();
    const r = await fetch("/auth/logout", { method: "POST" });
    const body = r.ok ? await r.json() : {};
    location.href = body.next || "/";
  };
  box.append(who, out);
  document.body.appendChild(box);
})();
`;
const LOGIN_COOKIE = "__Host-comfyui-login";
const PUBLIC_PREFIXES = ["/auth/"];
const PUBLIC_PATHS = new Set(["/healthz"]);
/** Routes whose body is JSON and which ComfyUI's frontend sends as application/json (its api.ts). */
const JSON_ROUTES = new Set(["/prompt", "/queue", "/history", "/interrupt", "/free"]);
const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

declare module "fastify" {
  interface FastifyRequest {
    /** Who is asking (set by the auth hook on every route that is not public). */
    caller: Caller;
    /** What a state change acted on, for the audit line (a prompt id, a file). */
    auditTarget: string | undefined;
  }
}

export interface AuthSettings {
  /** none: local mode on loopback only; keys: API keys only; oidc: sign-in and API keys. */
  mode: "none" | "keys" | "oidc";
  oidc?: OidcSettings;
  /** A JSON file with the OIDC settings that may appear or change later (a mounted Secret); re-read every 15 s. */
  oidcFile?: string;
  sessionIdleMinutes: number;
  sessionMaxHours: number;
  /** How often a session asks the IdP again (a user disabled there loses access then). */
  refreshMinutes: number;
}

const LOCAL: Caller = { kind: "local", userId: "default", name: "local", admin: true, scopes: new Set(SCOPES) };

export class Auth {
  private oidc: OidcClient | undefined;
  private fileTimer: NodeJS.Timeout | undefined;
  private fileSeen = "";

  constructor(readonly settings: AuthSettings, private readonly store: AuthStore, private readonly log: Logger) {
    if (settings.oidc) this.oidc = new OidcClient(settings.oidc);
  }

  /** Reads the OIDC settings file now and then (a Secret mounted after the stack made the IdP's client). */
  async start(): Promise<void> {
    if (this.settings.mode !== "oidc" || !this.settings.oidcFile) return;
    const read = async () => {
      const text = await fsp.readFile(this.settings.oidcFile!, "utf8").catch(() => "");
      if (!text || text === this.fileSeen) return;
      this.fileSeen = text;
      try {
        const s = JSON.parse(text) as OidcSettings;
        for (const k of ["issuer", "clientId", "publicUrl"] as const) if (typeof s[k] !== "string" || !s[k]) throw new Error(`${k} missing`);
        this.oidc = new OidcClient({ ...this.settings.oidc, ...s });
        this.log.info({ issuer: s.issuer, publicUrl: s.publicUrl }, "sign-in settings loaded");
      } catch (err: unknown) {
        this.log.error({ file: this.settings.oidcFile, err: (err as Error).message }, "sign-in settings file is not valid JSON with issuer, clientId, publicUrl");
      }
    };
    await read();
    this.fileTimer = setInterval(() => void read(), 15_000);
    this.fileTimer.unref();
  }

  stop(): void {
    if (this.fileTimer) clearInterval(this.fileTimer);
  }

  /** The request's caller, or undefined (not signed in, unknown or expired credentials). */
  async authenticate(req: FastifyRequest): Promise<{ caller?: Caller; via?: "cookie" | "bearer" | "ticket" | "local" }> {
    if (this.settings.mode === "none") return { caller: LOCAL, via: "local" };
    const auth = req.headers.authorization;
    if (auth) {
      const m = /^Bearer\s+(\S+)$/i.exec(auth);
      const k = m ? await checkKey(this.store, m[1]) : undefined;
      if (!k) return {};
      return { caller: { kind: "key", userId: k.owner, name: k.name, admin: k.admin, scopes: new Set(k.scopes), credentialId: k.id }, via: "bearer" };
    }
    const ticket = (req.query as Record<string, string | undefined> | undefined)?.ticket;
    if (ticket && req.headers.upgrade?.toLowerCase() === "websocket") {
      const t = await this.store.takeTicket(sha256(ticket));
      if (!t || t.endsAt <= Date.now()) return {};
      const c = t.caller as unknown as Omit<Caller, "scopes"> & { scopes: Scope[] };
      return { caller: { ...c, scopes: new Set(c.scopes) }, via: "ticket" };
    }
    const token = req.cookies?.[SESSION_COOKIE];
    if (!token) return {};
    const s = await this.session(token);
    return s ? { caller: { kind: "session", userId: s.userId, name: s.name, admin: s.admin, scopes: new Set(SCOPES), credentialId: s.id }, via: "cookie" } : {};
  }

  /** A live session for the token: within its absolute end and idle limit, its user not revoked, refreshed when due. */
  private async session(token: string): Promise<SessionRecord | undefined> {
    const id = sha256(token);
    const s = await this.store.getSession(id);
    const now = Date.now();
    if (!s) return undefined;
    if (s.endsAt <= now || s.lastSeenAt + s.idleMs <= now) {
      await this.store.deleteSession(id);
      return undefined;
    }
    const revokedBefore = await this.store.userRevokedBefore(s.userId);
    if (revokedBefore !== undefined && s.createdAt < revokedBefore) return undefined;
    if (s.refreshAt <= now && this.oidc && s.refreshToken) {
      try {
        const who = await this.oidc.refresh(s.refreshToken);
        Object.assign(s, { name: who.name, email: who.email, admin: who.admin, refreshToken: who.refreshToken, refreshAt: now + this.settings.refreshMinutes * 60_000 });
        await this.store.updateSession(id, { name: s.name, email: s.email, admin: s.admin, refreshToken: s.refreshToken, refreshAt: s.refreshAt, lastSeenAt: now });
      } catch (err: unknown) {
        // invalid_grant: the user was disabled or signed out at the IdP, or the grant expired.
        this.log.info({ user: s.userId, err: OidcClient.describe(err) }, "session ended: the IdP refused to refresh it");
        await this.store.deleteSession(id);
        return undefined;
      }
    } else if (now - s.lastSeenAt > 60_000) {
      s.lastSeenAt = now;
      if (!(await this.store.updateSession(id, { lastSeenAt: now }))) return undefined;
    }
    return s;
  }

  /**
   * Same-origin or not sent by a browser at all. A browser marks every request with Sec-Fetch-Site and,
   * on unsafe methods and WebSocket upgrades, Origin; cross-site ones are refused whatever credential
   * they carry. Without either header the request is not a browser's: allowed only with a key.
   */
  sameOrigin(req: FastifyRequest, via: string | undefined): { ok: boolean; why?: string } {
    const site = req.headers["sec-fetch-site"];
    if (typeof site === "string") return site === "same-origin" || (site === "none" && req.method === "GET") ? { ok: true } : { ok: false, why: `Sec-Fetch-Site: ${site}` };
    const origin = req.headers.origin;
    if (typeof origin === "string") {
      let host: string;
      try {
        host = new URL(origin).host;
      } catch {
        return { ok: false, why: `Origin ${origin}` };
      }
      const allowed = new Set([req.headers.host, this.oidc ? new URL(this.oidc.s.publicUrl).host : undefined].filter(Boolean));
      return allowed.has(host) ? { ok: true } : { ok: false, why: `Origin ${origin}` };
    }
    return via === "cookie" ? { ok: false, why: "no Origin on a cookie-authenticated request" } : { ok: true };
  }

  register(app: FastifyInstance, opts: { onDenied?: (req: FastifyRequest, why: string, caller: Caller | undefined) => void; onEvent?: (req: FastifyRequest, action: string, user: string, detail?: Record<string, unknown>) => void } = {}): void {
    void app.register(fastifyCookie);
    app.decorateRequest("caller", undefined as unknown as Caller);
    app.addHook("onRequest", async (req, reply) => {
      const path = req.url.split("?")[0];
      if (PUBLIC_PATHS.has(path) || PUBLIC_PREFIXES.some((p) => path.startsWith(p))) return;
      const unsafe = UNSAFE.has(req.method) || req.headers.upgrade?.toLowerCase() === "websocket";
      const { caller, via } = await this.authenticate(req);
      if (unsafe) {
        const o = this.sameOrigin(req, via);
        if (!o.ok) {
          opts.onDenied?.(req, `cross-site request refused (${o.why})`, caller);
          return reply.code(403).send({ error: { type: "cross_site_request", message: "Requests from another site are refused", details: o.why ?? "", extra_info: {} } });
        }
        const bare = path.replace(/^\/api(?=\/)/, "");
        if (via === "cookie" && req.method === "POST" && JSON_ROUTES.has(bare) && !/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
          return reply.code(415).send({ error: { type: "unsupported_media_type", message: "This route takes application/json", details: String(req.headers["content-type"] ?? "none"), extra_info: {} } });
        }
      }
      if (!caller) {
        const wantsPage = req.method === "GET" && /\btext\/html\b/.test(req.headers.accept ?? "") && !req.headers.upgrade;
        if (wantsPage && this.settings.mode === "oidc") return reply.redirect(`/auth/login?return_to=${encodeURIComponent(req.url)}`, 302);
        return reply.code(401).header("www-authenticate", 'Bearer realm="comfyui"').send({
          error: { type: "unauthorized", message: this.settings.mode === "oidc" ? "Sign in at /auth/login, or send an API key as Authorization: Bearer" : "Send an API key as Authorization: Bearer", details: "", extra_info: {} },
        });
      }
      // A key acts within its scopes: read for looking, submit for anything that changes something.
      const need: Scope = unsafe ? "submit" : "read";
      if (!caller.scopes.has(need)) {
        return reply.code(403).send({ error: { type: "forbidden", message: `This key lacks the ${need} scope`, details: "", extra_info: {} } });
      }
      req.caller = caller;
    });

    const cookie = (reply: FastifyReply, name: string, value: string, maxAgeSeconds: number) =>
      reply.setCookie(name, value, { path: "/", httpOnly: true, secure: true, sameSite: "lax", maxAge: maxAgeSeconds });
    const safeReturn = (r: unknown) => (typeof r === "string" && r.startsWith("/") && !r.startsWith("//") && !r.startsWith("/\\") ? r : "/");

    app.get("/auth/login", async (req, reply) => {
      if (this.settings.mode !== "oidc" || !this.oidc) return reply.code(503).send({ error: { type: "sign_in_unavailable", message: "Sign-in is not configured (yet); API keys work", details: "", extra_info: {} } });
      const s = await this.oidc.start();
      const returnTo = safeReturn((req.query as Record<string, unknown>).return_to);
      await this.store.putLoginState({ state: s.state, verifier: s.verifier, nonce: s.nonce, returnTo, endsAt: Date.now() + 600_000 });
      // Binds the flow to this browser: a callback carrying another browser's code is refused.
      cookie(reply, LOGIN_COOKIE, s.state, 600);
      return reply.redirect(s.url, 302);
    });

    app.get("/auth/callback", async (req, reply) => {
      if (!this.oidc) return reply.code(503).send("sign-in is not configured");
      const q = req.query as Record<string, string | undefined>;
      const bound = req.cookies[LOGIN_COOKIE];
      if (!q.state || !bound || bound !== q.state) return reply.code(400).send({ error: { type: "login_state", message: "This sign-in did not start in this browser; start again at /auth/login", details: "", extra_info: {} } });
      const st = await this.store.takeLoginState(q.state);
      if (!st || st.endsAt <= Date.now()) return reply.code(400).send({ error: { type: "login_state", message: "This sign-in expired; start again at /auth/login", details: "", extra_info: {} } });
      let who;
      try {
        who = await this.oidc.finish(new URL(`${this.oidc.redirectUri}?${req.url.split("?")[1] ?? ""}`), st);
      } catch (err: unknown) {
        this.log.warn({ err: OidcClient.describe(err) }, "sign-in failed at the IdP");
        return reply.code(401).send({ error: { type: "sign_in_failed", message: "Sign-in failed", details: OidcClient.describe(err), extra_info: {} } });
      }
      const token = randomBytes(32).toString("base64url");
      const now = Date.now();
      const session: SessionRecord = {
        id: sha256(token), userId: who.userId, name: who.name, ...(who.email ? { email: who.email } : {}), admin: who.admin,
        createdAt: now, lastSeenAt: now, endsAt: now + this.settings.sessionMaxHours * 3600_000, idleMs: this.settings.sessionIdleMinutes * 60_000,
        ...(who.refreshToken ? { refreshToken: who.refreshToken } : {}), refreshAt: now + this.settings.refreshMinutes * 60_000,
      };
      await this.store.putSession(session);
      req.log.info({ user: who.userId, admin: who.admin }, "signed in");
      opts.onEvent?.(req, "sign-in", who.userId, { admin: who.admin, session: session.id });
      reply.clearCookie(LOGIN_COOKIE, { path: "/" });
      cookie(reply, SESSION_COOKIE, token, this.settings.sessionMaxHours * 3600);
      return reply.redirect(st.returnTo, 302);
    });

    // POST, same-origin only (the hook's rule applies: it is not public for unsafe methods from elsewhere).
    app.post("/auth/logout", async (req, reply) => {
      const o = this.sameOrigin(req, "cookie");
      if (!o.ok) return reply.code(403).send({ error: { type: "cross_site_request", message: "Requests from another site are refused", details: o.why ?? "", extra_info: {} } });
      const token = req.cookies[SESSION_COOKIE];
      if (token) {
        const s = await this.store.getSession(sha256(token));
        await this.store.deleteSession(sha256(token));
        if (s) opts.onEvent?.(req, "sign-out", s.userId);
      }
      reply.clearCookie(SESSION_COOKIE, { path: "/" });
      const next = this.oidc ? await this.oidc.logoutUrl(undefined, `${this.oidc.s.publicUrl.replace(/\/$/, "")}/`).catch(() => undefined) : undefined;
      return { ok: true, ...(next ? { next } : {}) };
    });

    // `session` is the store's id of this session (a hash, not the cookie): what `npm run keys -- revoke-session` takes.
    // The signed-in artist's name and a "Sign out" control in the web UI (ComfyUI's frontend has none).
    app.get(ACCOUNT_EXTENSION, async (_req, reply) => reply.type("text/javascript").header("cache-control", "no-cache").send(ACCOUNT_JS));
    app.get("/api/gateway/me", async (req) => ({
      user: req.caller.userId, name: req.caller.name, admin: req.caller.admin, via: req.caller.kind, scopes: [...req.caller.scopes],
      ...(req.caller.kind === "session" && req.caller.credentialId ? { session: req.caller.credentialId } : {}),
    }));
    // A one-time credential for /ws?ticket= (30 s), for clients that cannot set an Authorization header.
    app.post("/api/gateway/ws-ticket", async (req) => {
      const ticket = randomBytes(24).toString("base64url");
      await this.store.putTicket({ id: sha256(ticket), caller: { ...req.caller, scopes: [...req.caller.scopes] } as unknown as Caller, endsAt: Date.now() + 30_000 });
      return { ticket };
    });
  }
}

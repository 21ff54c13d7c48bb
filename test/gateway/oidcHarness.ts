// A real OpenID Connect provider on loopback (the npm package oidc-provider, with its development login
// form), and a small cookie-keeping client that walks the authorization-code redirects the way a browser
// does: for the gateway's sign-in tests without a browser (the browser tests drive Chromium instead).
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface Account { sub: string; name: string; email: string; groups: string[]; disabled?: boolean }

export interface Idp {
  issuer: string;
  clientId: string;
  clientSecret: string;
  accounts: Map<string, Account>;
  close(): Promise<void>;
}

/** oidc-provider, configured as Cognito presents itself to the gateway (groups in `cognito:groups`). */
export async function startIdp(redirectUris: string[], postLogout: string[] = []): Promise<Idp> {
  // ESM-only package; Node 20.19+ loads it with require.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { default: Provider } = require("oidc-provider") as { default: new (issuer: string, conf: unknown) => { callback(): http.RequestListener; on(e: string, f: (...a: unknown[]) => void): void } };
  const accounts = new Map<string, Account>();
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = "comfyui-gateway";
  const clientSecret = "test-client-secret-not-a-real-one";
  const provider = new Provider(issuer, {
    clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris, post_logout_redirect_uris: postLogout, grant_types: ["authorization_code", "refresh_token"], response_types: ["code"] }],
    findAccount: async (_ctx: unknown, sub: string) => {
      const a = accounts.get(sub);
      if (!a || a.disabled) return undefined;
      return { accountId: sub, claims: async () => ({ sub, name: a.name, email: a.email, "cognito:groups": a.groups }) };
    },
    claims: { openid: ["sub", "cognito:groups"], email: ["email"], profile: ["name"] },
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    // The gateway is a first-party client: no consent screen, and refresh tokens without offline_access.
    loadExistingGrant: async (ctx: { oidc: { client: { clientId: string }; session: { accountId: string }; provider: { Grant: new (o: unknown) => { addOIDCScope(s: string): void; addOIDCClaims(c: string[]): void; save(): Promise<string> } } } }) => {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope("openid email profile");
      grant.addOIDCClaims(["cognito:groups"]);
      await grant.save();
      return grant;
    },
    issueRefreshToken: async () => true,
    cookies: { keys: ["test-only-cookie-signing-key"] },
  });
  if (process.env.IDP_DEBUG) provider.on("server_error", (_ctx: unknown, err: unknown) => console.error("IdP server_error", err));
  server.on("request", provider.callback());
  return {
    issuer, clientId, clientSecret, accounts,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

/** A cookie jar per host, as a browser keeps it (name → value; attributes beyond that are not needed here). */
export class Browser {
  private readonly jar = new Map<string, Map<string, string>>();

  cookies(url: string): Map<string, string> {
    const host = new URL(url).host;
    let m = this.jar.get(host);
    if (!m) this.jar.set(host, (m = new Map()));
    return m;
  }

  private header(url: string): string {
    return [...this.cookies(url)].map(([k, v]) => `${k}=${v}`).join("; ");
  }

  private keep(url: string, res: Response): void {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(";");
      const i = pair.indexOf("=");
      const [name, value] = [pair.slice(0, i).trim(), pair.slice(i + 1).trim()];
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || (/^\s*expires=/i.test(a) && Date.parse(a.split("=")[1]) < Date.now()));
      if (expired || value === "") this.cookies(url).delete(name);
      else this.cookies(url).set(name, value);
    }
  }

  /** One request with this browser's cookies and headers a browser would send (same-origin unless said). */
  async fetch(url: string, init: RequestInit & { site?: "same-origin" | "cross-site" | "none" } = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = this.header(url);
    if (cookie) headers.set("cookie", cookie);
    if (init.site) headers.set("sec-fetch-site", init.site);
    const res = await fetch(url, { ...init, headers, redirect: "manual" });
    this.keep(url, res);
    return res;
  }

  /** Follows redirects from `url` (GET), submitting oidc-provider's development login form for `login`. */
  async signIn(url: string, login: string): Promise<Response> {
    let next = url;
    for (let hop = 0; hop < 20; hop++) {
      const res = await this.fetch(next, { headers: { accept: "text/html" }, site: "none" });
      if (res.status >= 300 && res.status < 400) {
        next = new URL(res.headers.get("location")!, next).href;
        continue;
      }
      const body = await res.text();
      const form = /<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/.exec(body);
      if (res.status !== 200 || !form || !/\/interaction\//.test(next)) return new Response(body, { status: res.status, headers: res.headers });
      const fields = new URLSearchParams();
      for (const [tag] of form[2].matchAll(/<input[^>]*>/g)) {
        const name = /\bname="([^"]+)"/.exec(tag)?.[1];
        if (name) fields.set(name, /\bvalue="([^"]*)"/.exec(tag)?.[1] ?? "");
      }
      if (fields.has("login")) fields.set("login", login);
      if (fields.has("password")) fields.set("password", "any");
      const post = await this.fetch(new URL(form[1], next).href, { method: "POST", body: fields, headers: { "content-type": "application/x-www-form-urlencoded", origin: new URL(next).origin }, site: "same-origin" });
      if (post.status >= 300 && post.status < 400) next = new URL(post.headers.get("location")!, next).href;
      else return post;
    }
    throw new Error("too many redirects");
  }
}

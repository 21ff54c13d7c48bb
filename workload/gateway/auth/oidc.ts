/**
 * The IdP side of sign-in: OpenID Connect authorization code + PKCE with openid-client (discovery, the
 * authorization URL, the code exchange with ID token checks, refresh, the end-session URL). Works with any
 * OIDC issuer: Cognito's user pool (the stack's default, federating to the studio's IdP when configured),
 * Entra ID, Okta, Google, Keycloak …
 */
import * as oidc from "openid-client";

export interface OidcSettings {
  issuer: string;
  clientId: string;
  clientSecret?: string;
  /** The site's public origin, e.g. https://d123.cloudfront.net: redirect_uri = `${publicUrl}/auth/callback`. */
  publicUrl: string;
  /** @defaultValue "openid email profile" */
  scopes?: string;
  /** The ID token claim with the user's groups (Cognito: cognito:groups). @defaultValue "cognito:groups" */
  groupsClaim?: string;
  /** Members of this group are admins. @defaultValue "admin" */
  adminGroup?: string;
  /**
   * Where the browser goes after the gateway's session ends, to end the IdP's session too, for an issuer
   * whose discovery document names no end_session_endpoint (Cognito: `<login domain>/logout?client_id=…&
   * logout_uri=…`, Cognito Developer Guide "Logout endpoint"). Without either, signing in again may pass
   * straight through the IdP's own session.
   */
  logoutUrl?: string;
}

export interface SignedIn {
  userId: string;
  name: string;
  email?: string;
  admin: boolean;
  refreshToken?: string;
  idToken?: string;
}

/** Loopback issuers (tests, a local IdP) may be plain http; anything else must be https. */
function insecureOk(issuer: string): boolean {
  const h = new URL(issuer).hostname;
  return h === "127.0.0.1" || h === "localhost" || h === "::1" || h === "[::1]" || h.endsWith(".localhost");
}

export class OidcClient {
  private config: Promise<oidc.Configuration> | undefined;

  constructor(readonly s: OidcSettings) {}

  get redirectUri(): string {
    return `${this.s.publicUrl.replace(/\/$/, "")}/auth/callback`;
  }

  private configuration(): Promise<oidc.Configuration> {
    this.config ??= oidc
      // client_secret_basic: OIDC's default token endpoint authentication, which Cognito's token endpoint takes.
      .discovery(new URL(this.s.issuer), this.s.clientId, undefined, this.s.clientSecret ? oidc.ClientSecretBasic(this.s.clientSecret) : oidc.None(), insecureOk(this.s.issuer) ? { execute: [oidc.allowInsecureRequests] } : undefined)
      .catch((err: unknown) => {
        this.config = undefined; // try again next time
        throw err;
      });
    return this.config;
  }

  /** Where to send the browser, and what the callback must present. */
  async start(): Promise<{ url: string; state: string; verifier: string; nonce: string }> {
    const config = await this.configuration();
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.redirectUri, scope: this.s.scopes ?? "openid email profile",
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: "S256", state, nonce,
    });
    return { url: url.href, state, verifier, nonce };
  }

  /** The callback: exchange the code (PKCE, state and nonce checked), read who signed in. */
  async finish(callbackUrl: URL, expected: { state: string; verifier: string; nonce: string }): Promise<SignedIn> {
    const config = await this.configuration();
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: expected.verifier, expectedState: expected.state, expectedNonce: expected.nonce, idTokenExpected: true });
    return this.who(tokens.claims()!, tokens.refresh_token, tokens.id_token);
  }

  /** Asks the IdP again (a disabled or deleted user fails here); the new refresh token if it rotated. */
  async refresh(refreshToken: string): Promise<SignedIn> {
    const config = await this.configuration();
    const tokens = await oidc.refreshTokenGrant(config, refreshToken);
    const claims = tokens.claims();
    if (!claims) throw new Error("the IdP's refresh answer has no ID token");
    return this.who(claims, tokens.refresh_token ?? refreshToken, tokens.id_token);
  }

  async logoutUrl(idTokenHint: string | undefined, returnTo: string): Promise<string | undefined> {
    const config = await this.configuration();
    if (!config.serverMetadata().end_session_endpoint) return this.s.logoutUrl;
    return oidc.buildEndSessionUrl(config, { post_logout_redirect_uri: returnTo, client_id: this.s.clientId, ...(idTokenHint ? { id_token_hint: idTokenHint } : {}) }).href;
  }

  /** An IdP's error answer with its OAuth error code, for the log and the sign-in page. */
  static describe(err: unknown): string {
    const e = err as { message?: string; error?: string; error_description?: string };
    return [e.message, e.error, e.error_description].filter(Boolean).join(": ");
  }

  private who(claims: oidc.IDToken, refreshToken?: string, idToken?: string): SignedIn {
    const groups = claims[this.s.groupsClaim ?? "cognito:groups"];
    const admin = Array.isArray(groups) && groups.includes(this.s.adminGroup ?? "admin");
    const email = typeof claims.email === "string" ? claims.email : undefined;
    const name = typeof claims.name === "string" ? claims.name : typeof claims.preferred_username === "string" ? claims.preferred_username : (email ?? claims.sub);
    return { userId: claims.sub, name, ...(email ? { email } : {}), admin, ...(refreshToken ? { refreshToken } : {}), ...(idToken ? { idToken } : {}) };
  }
}

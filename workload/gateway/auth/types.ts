/**
 * Who is asking: every request the gateway serves has a caller — a signed-in person (an OpenID Connect
 * session), a pipeline (an API key), or, in local mode on loopback, the machine's own user.
 */

export type Scope = "submit" | "read";
export const SCOPES: readonly Scope[] = ["submit", "read"];

export interface Caller {
  /** How the caller proved who it is. */
  kind: "session" | "key" | "local";
  /** The owner of what it does: the IdP's subject for people, the key's owner for pipelines. */
  userId: string;
  /** A name for logs and the UI. */
  name: string;
  /** Sees and acts on everyone's prompts, history and files. */
  admin: boolean;
  scopes: ReadonlySet<Scope>;
  /** The session's id (its token's hash) or the key's id. */
  credentialId?: string;
}

export interface SessionRecord {
  /** sha256 of the cookie's token: the token itself is never stored. */
  id: string;
  userId: string;
  name: string;
  email?: string;
  admin: boolean;
  createdAt: number;
  lastSeenAt: number;
  /** Absolute end, whatever the activity. */
  endsAt: number;
  /** Ends after this long without a request. */
  idleMs: number;
  /** The IdP's refresh token (kept to learn at the next refresh that a user was disabled). */
  refreshToken?: string;
  /** When to ask the IdP again. */
  refreshAt: number;
}

export interface ApiKeyRecord {
  /** The public half of the key (`cgw_<id>.<secret>`). */
  id: string;
  /** sha256 of the secret half. */
  hash: string;
  /** The user (or service) the key acts for. */
  owner: string;
  name: string;
  scopes: Scope[];
  createdAt: number;
  /** Refused from then on. */
  validUntil: number;
  revokedAt?: number;
  admin: boolean;
}

/** A short-lived, single-use credential for `/ws` from clients that cannot set headers (browsers). */
export interface TicketRecord {
  id: string;
  caller: Caller;
  endsAt: number;
}

/** The browser side of an authorization-code flow in progress (PKCE verifier, nonce, where to return). */
export interface LoginState {
  state: string;
  verifier: string;
  nonce: string;
  returnTo: string;
  endsAt: number;
}

/** Sessions, keys, tickets and login states: in the gateway's table next to the prompts. */
export interface AuthStore {
  putSession(s: SessionRecord): Promise<void>;
  getSession(id: string): Promise<SessionRecord | undefined>;
  /** Conditional on the session still existing (a logout or revocation is never undone by a refresh). */
  updateSession(id: string, patch: Partial<Pick<SessionRecord, "lastSeenAt" | "refreshToken" | "refreshAt" | "name" | "email" | "admin">>): Promise<boolean>;
  deleteSession(id: string): Promise<void>;
  /** Sessions of `userId` created before `at` are invalid (per-user revocation; a disabled user). */
  revokeUser(userId: string, at: number): Promise<void>;
  userRevokedBefore(userId: string): Promise<number | undefined>;

  putKey(k: ApiKeyRecord): Promise<void>;
  getKey(id: string): Promise<ApiKeyRecord | undefined>;
  listKeys(): Promise<ApiKeyRecord[]>;
  revokeKey(id: string, at: number): Promise<boolean>;

  putTicket(t: TicketRecord): Promise<void>;
  /** Returns the ticket and deletes it in one step: a ticket opens one socket. */
  takeTicket(id: string): Promise<TicketRecord | undefined>;

  putLoginState(l: LoginState): Promise<void>;
  takeLoginState(state: string): Promise<LoginState | undefined>;
}

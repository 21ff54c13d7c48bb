/**
 * Who the artists are. By default a Cognito user pool of the stack with its managed login: users are
 * added by an admin (no self sign-up), belong to the groups `artist` or `admin` (admins see and act on
 * everyone's work), and can be federated to the studio's own IdP (OIDC: Google Workspace, Okta, Entra
 * ID …; SAML). Or any OpenID Connect issuer instead (signIn=oidc). Either way the gateway signs people in
 * with the authorization-code flow + PKCE against this issuer, as a confidential client whose callback
 * is the site's own `/auth/callback`.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import type { CognitoFederation } from "../config";

/** What the gateway is told (the JSON of its OIDC settings file; the secret stays a secret). */
export interface GatewayOidc {
  issuer: pulumi.Output<string>;
  clientId: pulumi.Output<string>;
  clientSecret: pulumi.Output<string>;
  publicUrl: pulumi.Output<string>;
  /** Where the browser ends the IdP's own session after signing out (Cognito's logout endpoint); none for an issuer that advertises end_session_endpoint. */
  logoutUrl?: pulumi.Output<string>;
}

export interface IdentityArgs {
  /** The site's public origin (https://<distribution>): the callback and the logout target live there. */
  publicUrl: pulumi.Input<string>;
  /** An external issuer instead of Cognito. */
  oidc?: { issuer: string; clientId: string; clientSecret: pulumi.Output<string> };
  /** The studio's IdP behind Cognito's login. */
  federation?: CognitoFederation;
  federationClientSecret?: pulumi.Output<string>;
  /**
   * Keep the user pool (its people and groups) on `pulumi destroy`, as the buckets are kept: deletion
   * protection on and the pool left in the account. false: `pulumi destroy` deletes it. @defaultValue true
   */
  retainOnDestroy?: boolean;
  tags: Record<string, string>;
}

/** The groups the gateway reads from `cognito:groups`. */
export const GROUPS = { artist: "artist", admin: "admin" } as const;

export class Identity extends pulumi.ComponentResource {
  readonly oidc: GatewayOidc;
  /** The user pool (Cognito only): `aws cognito-idp admin-create-user --user-pool-id <it> …` adds an artist. */
  readonly userPoolId: pulumi.Output<string> | undefined;
  /** Where artists sign in (Cognito's managed login), for the README's commands. */
  readonly loginDomain: pulumi.Output<string> | undefined;

  constructor(name: string, args: IdentityArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:edge:Identity", name, {}, opts);
    const parent = { parent: this };
    const publicUrl = pulumi.output(args.publicUrl).apply((u) => u.replace(/\/$/, ""));

    if (args.oidc) {
      this.oidc = { issuer: pulumi.output(args.oidc.issuer), clientId: pulumi.output(args.oidc.clientId), clientSecret: args.oidc.clientSecret, publicUrl };
      this.userPoolId = undefined;
      this.loginDomain = undefined;
      this.registerOutputs({});
      return;
    }

    const region = aws.getRegionOutput({}, parent).name;
    const pool = new aws.cognito.UserPool(
      `${name}-users`,
      {
        // Artists are invited by an admin (AdminCreateUser); nobody signs themselves up.
        adminCreateUserConfig: { allowAdminCreateUserOnly: true },
        usernameAttributes: ["email"],
        autoVerifiedAttributes: ["email"],
        passwordPolicy: { minimumLength: 12, requireLowercase: true, requireUppercase: true, requireNumbers: true, requireSymbols: false, temporaryPasswordValidityDays: 7 },
        mfaConfiguration: "OPTIONAL",
        softwareTokenMfaConfiguration: { enabled: true },
        accountRecoverySetting: { recoveryMechanisms: [{ name: "verified_email", priority: 1 }] },
        deletionProtection: (args.retainOnDestroy ?? true) ? "ACTIVE" : "INACTIVE",
        tags: args.tags,
      },
      // With deletion protection on, Cognito refuses the delete: the pool is left out of the destroy instead.
      { parent: this, retainOnDelete: args.retainOnDestroy ?? true },
    );
    for (const [key, group] of Object.entries(GROUPS)) {
      new aws.cognito.UserGroup(`${name}-group-${key}`, { userPoolId: pool.id, name: group, description: key === "admin" ? "Sees and acts on every artist's prompts, history and files" : "Works in their own scope" }, parent);
    }

    const providers: pulumi.Resource[] = [];
    const providerNames: pulumi.Input<string>[] = ["COGNITO"];
    if (args.federation) {
      const f = args.federation;
      const idp = new aws.cognito.IdentityProvider(
        `${name}-federation`,
        {
          userPoolId: pool.id,
          providerName: f.name,
          providerType: f.type,
          providerDetails:
            f.type === "OIDC"
              ? { client_id: f.clientId, client_secret: args.federationClientSecret!, attributes_request_method: "GET", oidc_issuer: f.issuer, authorize_scopes: f.scopes }
              : { MetadataURL: f.metadataUrl },
          attributeMapping: f.type === "OIDC" ? { email: "email", name: "name", username: "sub" } : { email: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress" },
        },
        parent,
      );
      providers.push(idp);
      providerNames.push(idp.providerName);
    }

    // Cognito's prefix domain (<prefix>.auth.<region>.amazoncognito.com) with the managed login (v2).
    const domain = new aws.cognito.UserPoolDomain(
      `${name}-login`,
      { userPoolId: pool.id, domain: pulumi.interpolate`comfyui-${pool.id.apply((id) => id.split("_")[1]?.toLowerCase() ?? id.toLowerCase())}`, managedLoginVersion: 2 },
      parent,
    );
    const client = new aws.cognito.UserPoolClient(
      `${name}-gateway`,
      {
        userPoolId: pool.id,
        generateSecret: true,
        allowedOauthFlowsUserPoolClient: true,
        allowedOauthFlows: ["code"],
        allowedOauthScopes: ["openid", "email", "profile"],
        callbackUrls: [pulumi.interpolate`${publicUrl}/auth/callback`],
        logoutUrls: [pulumi.interpolate`${publicUrl}/`],
        supportedIdentityProviders: providerNames,
        explicitAuthFlows: ["ALLOW_REFRESH_TOKEN_AUTH"],
        preventUserExistenceErrors: "ENABLED",
        enableTokenRevocation: true,
        // The gateway refreshes every few minutes: a disabled user is out at the next refresh.
        accessTokenValidity: 60,
        idTokenValidity: 60,
        refreshTokenValidity: 30,
        tokenValidityUnits: { accessToken: "minutes", idToken: "minutes", refreshToken: "days" },
      },
      { parent: this, dependsOn: providers },
    );
    new aws.cognito.ManagedLoginBranding(`${name}-login-style`, { userPoolId: pool.id, clientId: client.id, useCognitoProvidedValues: true }, { parent: this, dependsOn: [domain] });

    this.userPoolId = pool.id;
    this.loginDomain = pulumi.interpolate`https://${domain.domain}.auth.${region}.amazoncognito.com`;
    this.oidc = {
      // Cognito's OpenID Connect issuer for a user pool (Cognito Developer Guide, "ID token": iss).
      issuer: pulumi.interpolate`https://cognito-idp.${region}.amazonaws.com/${pool.id}`,
      clientId: client.id,
      clientSecret: pulumi.secret(client.clientSecret),
      publicUrl,
      // Cognito's discovery document names no end_session_endpoint; its logout endpoint ends the managed
      // login's session and returns to a logout URL the client lists (Cognito Developer Guide, "Logout endpoint").
      logoutUrl: pulumi.interpolate`${this.loginDomain}/logout?client_id=${client.id}&logout_uri=${publicUrl.apply((u) => encodeURIComponent(`${u}/`))}`,
    };
    this.registerOutputs({ userPoolId: this.userPoolId, loginDomain: this.loginDomain });
  }
}

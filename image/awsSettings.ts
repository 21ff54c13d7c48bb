/**
 * Which AWS credentials and region the image build's dynamic provider (image/provider.ts) uses: the
 * stack's own AWS settings, the ones @pulumi/aws applies to every other resource, not whatever the
 * default credential chain of the provider process finds.
 *
 * A Pulumi dynamic provider runs in its own process (@pulumi/pulumi cmd/dynamic-provider) and gets
 * nothing from the program but its resource's inputs and, through its optional `configure`, the
 * stack's configuration (ResourceProvider.configure in @pulumi/pulumi 3.276.0 dynamic/index.d.ts;
 * dynamic providers receive every config key with its namespace, pulumi/pulumi#17229, #17697). So:
 * - `aws:region` (through the program's aws.getRegion), `aws:profile` and `aws:assumeRoles` travel
 *   as the resource's inputs: names and role ARNs, no secret, visible in the state and the diff.
 * - static keys set with `pulumi config set --secret aws:accessKey/secretKey/token` never become
 *   inputs (they would sit in the state): `configure` reads them from the stack configuration the
 *   engine hands the provider process, decrypted in memory only.
 * - with none of these set, the SDK's default chain applies (environment, AWS_PROFILE, SSO, IMDS),
 *   as it does for @pulumi/aws.
 *
 * The functions used in the provider (durationSeconds, credentialChain) are plain and require the
 * SDK inside, so Pulumi can serialize them with the provider.
 */
import type { fromTemporaryCredentials } from "@aws-sdk/credential-providers";

/** Credentials or a provider of them, as the SDK v3 clients and STS's masterCredentials take them. */
export type Credentials = NonNullable<Parameters<typeof fromTemporaryCredentials>[0]["masterCredentials"]>;

/** One role of `aws:assumeRoles`, with @pulumi/aws's field names (types/input.d.ts ProviderAssumeRole, 7.48.0). */
export interface AwsAssumeRole {
  roleArn: string;
  sessionName?: string;
  externalId?: string;
  /** Go duration, 15m–12h ("1h", "90m"). */
  duration?: string;
  policy?: string;
  policyArns?: string[];
  tags?: Record<string, string>;
  transitiveTagKeys?: string[];
  sourceIdentity?: string;
}

/** The non-secret AWS settings of the stack that decide the build's credentials. */
export interface AwsSettings {
  /** `aws:profile`: a profile of the shared config/credentials files. */
  profile?: string;
  /** `aws:assumeRoles`: roles assumed in order, each with the credentials of the one before. */
  assumeRoles?: AwsAssumeRole[];
}

/** Static keys from the stack configuration, in memory only (see the header). */
export interface StaticKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** What the provider reads from a configuration (pulumi.Config, or the dynamic provider's Config). */
export interface ConfigReader {
  get(key: string): string | undefined;
}

const ROLE_KEYS = ["roleArn", "sessionName", "externalId", "duration", "policy", "policyArns", "tags", "transitiveTagKeys", "sourceIdentity"] as const;

/**
 * The stack's `aws:profile` and `aws:assumeRoles` (a JSON list, as `pulumi config set --path` or
 * Pulumi.<stack>.yaml writes it), checked: a role without roleArn, an unknown key or a bad duration
 * fails the preview, as @pulumi/aws itself would.
 */
export function stackAwsSettings(config: ConfigReader): AwsSettings {
  const out: AwsSettings = {};
  const profile = config.get("aws:profile");
  if (profile) out.profile = profile;
  const raw = config.get("aws:assumeRoles");
  if (raw !== undefined && raw !== "") {
    let roles: unknown;
    try {
      roles = JSON.parse(raw);
    } catch {
      throw new Error(`aws:assumeRoles must be a list of roles ({roleArn, sessionName?, externalId?, duration?, …}), got '${raw}'`);
    }
    if (!Array.isArray(roles)) throw new Error("aws:assumeRoles must be a list of roles");
    out.assumeRoles = roles.map((r: unknown, i) => {
      if (typeof r !== "object" || r === null || typeof (r as { roleArn?: unknown }).roleArn !== "string") {
        throw new Error(`aws:assumeRoles[${i}] needs a roleArn`);
      }
      const unknown = Object.keys(r).filter((k) => !(ROLE_KEYS as readonly string[]).includes(k));
      if (unknown.length > 0) throw new Error(`aws:assumeRoles[${i}]: unknown key(s) ${unknown.join(", ")} (known: ${ROLE_KEYS.join(", ")})`);
      const role = r as AwsAssumeRole;
      if (role.duration !== undefined) durationSeconds(role.duration);
      return role;
    });
  }
  return out;
}

/** Static keys from `aws:accessKey`/`aws:secretKey` (and `aws:token`), or undefined when not both set. */
export function staticKeysFrom(config: ConfigReader): StaticKeys | undefined {
  const accessKeyId = config.get("aws:accessKey");
  const secretAccessKey = config.get("aws:secretKey");
  if (!accessKeyId || !secretAccessKey) return undefined;
  const sessionToken = config.get("aws:token");
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

/** Seconds of a Go duration of hours, minutes and seconds ("1h", "1h30m", "900s"), 15 min to 12 h (STS AssumeRole DurationSeconds). */
export function durationSeconds(d: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(d);
  if (!m || d === "") throw new Error(`assume-role duration '${d}' is not a duration like 1h, 45m or 1h30m`);
  const s = Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
  if (s < 900 || s > 43200) throw new Error(`assume-role duration '${d}' must be between 15m and 12h`);
  return s;
}

/**
 * The credentials for the SDK clients: static keys, else the profile, else the default chain (the
 * SDK's own when this returns undefined); then each role of assumeRoles in order, each assumed
 * with the credentials before it (STS AssumeRole in the stack's region).
 */
export function credentialChain(
  region: string,
  settings: AwsSettings | undefined,
  keys: StaticKeys | undefined,
): Credentials | undefined {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cp = require("@aws-sdk/credential-providers") as typeof import("@aws-sdk/credential-providers");
  let creds: Credentials | undefined = keys
    ? { accessKeyId: keys.accessKeyId, secretAccessKey: keys.secretAccessKey, ...(keys.sessionToken ? { sessionToken: keys.sessionToken } : {}) }
    : settings?.profile
      ? cp.fromIni({ profile: settings.profile })
      : undefined;
  for (const role of settings?.assumeRoles ?? []) {
    creds = cp.fromTemporaryCredentials({
      ...(creds ? { masterCredentials: creds } : {}),
      params: {
        RoleArn: role.roleArn,
        RoleSessionName: role.sessionName ?? "comfyui-image-build",
        ...(role.externalId ? { ExternalId: role.externalId } : {}),
        ...(role.duration ? { DurationSeconds: durationSeconds(role.duration) } : {}),
        ...(role.policy ? { Policy: role.policy } : {}),
        ...(role.policyArns ? { PolicyArns: role.policyArns.map((arn) => ({ arn })) } : {}),
        ...(role.tags ? { Tags: Object.entries(role.tags).map(([Key, Value]) => ({ Key, Value })) } : {}),
        ...(role.transitiveTagKeys ? { TransitiveTagKeys: role.transitiveTagKeys } : {}),
        ...(role.sourceIdentity ? { SourceIdentity: role.sourceIdentity } : {}),
      },
      clientConfig: { region },
    });
  }
  return creds;
}

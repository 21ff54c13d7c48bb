/**
 * IAM simulation over the program's own policy documents, with @cloud-copilot/iam-simulate.
 *
 * The documents come from the whole program graph (runProgram()): every aws:iam/rolePolicy
 * input is grouped under the role it is attached to, and every queue and bucket policy is kept as
 * a resource policy, so a request is judged on exactly what `pulumi up` would send to IAM.
 *
 * Adding a principal (say, the gateway's or CodeBuild's role):
 *   1. Find the role's resource name in the graph (`aws:iam/role:Role`, e.g. `comfyui-dev-gateway-role`).
 *   2. Add a `PrincipalTable` to `principalTables()` in test/iam/principals.ts: the requests the
 *      principal really makes, with the request context its code (or AWS, for resource tags) sets,
 *      under `allowed`, and what must stay out of reach under `denied`.
 *   3. Nothing else: test/iam/principals.test.ts turns each row into one test named
 *      "<principal> <action> <resource>", and test/iam/actions.test.ts already checks every action
 *      and condition key of every document in the graph.
 */
import { runSimulation, runUnsafeSimulation, type Simulation } from "@cloud-copilot/iam-simulate";
import * as fs from "node:fs";
import * as path from "node:path";
import { MOCK_ACCOUNT } from "../support/mocks";
import { ProgramRun, runProgram } from "../support/program";

export interface PolicyDocument {
  Version?: string;
  Statement: PolicyStatement[];
}

export interface PolicyStatement {
  Sid?: string;
  Effect: "Allow" | "Deny";
  Principal?: unknown;
  Action?: string | string[];
  NotAction?: string | string[];
  Resource?: string | string[];
  NotResource?: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

/** One API call as the service authorizes it: one action on one resource with its context keys. */
export interface SimRequest {
  action: string;
  resource: string;
  /** Request context: tags on the request or the resource, service keys (ec2:CreateAction …). */
  context?: Record<string, string | string[]>;
  /**
   * Set (to the reason) only where the simulator's input validation rejects a request AWS really
   * authorizes; the request is then evaluated without that validation. Use the constants below.
   */
  unvalidated?: string;
  /** For a denied row: the denial must come from an explicit Deny (a resource policy's, say). */
  explicit?: boolean;
}

/**
 * AWS-owned ARNs have no account (public SSM parameters such as /aws/service/..., AWS-owned SSM
 * documents); the simulator's ARN check wants one.
 */
export const AWS_OWNED_ARN = "AWS-owned ARN without an account";

/**
 * The service reference lists Elastic Load Balancing v1 and v2 under one prefix; iam-data keeps
 * v1's AddTags/RemoveTags, whose only resource type is a classic load balancer, so a v2 target
 * group, listener or rule ARN fails validation although v2's AddTags authorizes them.
 */
export const ELB_V1_ADDTAGS = "iam-data keeps ELB v1's AddTags resource types";

export interface PrincipalTable {
  /** Short name used in test titles. */
  principal: string;
  /** Name of the aws:iam/role:Role in the graph whose inline policies are simulated. */
  role: string;
  /** Requests the principal really makes: each must be allowed. */
  allowed: SimRequest[];
  /** Requests that must stay denied. */
  denied: SimRequest[];
  /** AWS-managed policies attached to the role, simulated from their vendored default versions. */
  managedPolicies?: string[];
}

export type Decision = "Allowed" | "ExplicitlyDenied" | "ImplicitlyDenied";

export interface SimOutcome {
  decision: Decision | "Error";
  /** Validation errors of the simulator (unknown action, resource type that does not fit …). */
  errors?: string;
}

/** Where a document was found in the graph. */
export interface FoundDocument {
  kind: "role" | "queue" | "bucket";
  /** Resource name in the graph (RolePolicy, QueuePolicy or BucketPolicy). */
  source: string;
  /** For role policies: the role name. */
  role?: string;
  doc: PolicyDocument;
}

export interface ProgramPolicies {
  all: FoundDocument[];
  /** Inline policies by role name. */
  byRole: Map<string, PolicyDocument[]>;
  /** Managed policy ARNs attached by role name. */
  attachedByRole: Map<string, string[]>;
  /** The attached AWS-managed policies' documents, where vendored (test/upstream/iam/aws-managed/). */
  managedByRole: Map<string, PolicyDocument[]>;
  /** Attached managed policies with no vendored document: not simulated. */
  unreadByRole: Map<string, string[]>;
  resourcePolicies: FoundDocument[];
  run: ProgramRun;
}

function parse(policy: unknown, where: string): PolicyDocument {
  const doc = (typeof policy === "string" ? JSON.parse(policy) : policy) as PolicyDocument;
  if (!doc || !Array.isArray(doc.Statement)) throw new Error(`${where}: policy has no Statement array`);
  return doc;
}

let cached: Promise<ProgramPolicies> | undefined;

/** Every policy document of the program, resolved as the mocks record them. */
export function programPolicies(): Promise<ProgramPolicies> {
  cached ??= (async () => {
    const run = await runProgram();
    const { rec } = run;
    const all: FoundDocument[] = [];
    // A policy may name its role by name or by id (both resolve to the role's name in AWS).
    const roleNames = new Map<string, string>();
    for (const r of rec.ofType("aws:iam/role:Role")) {
      const name = String(r.inputs.name ?? r.name);
      roleNames.set(name, name).set(r.id, name);
    }
    const roleOf = (value: unknown) => roleNames.get(String(value)) ?? String(value);
    const byRole = new Map<string, PolicyDocument[]>();
    for (const r of rec.ofType("aws:iam/rolePolicy:RolePolicy")) {
      const role = roleOf(r.inputs.role);
      const doc = parse(r.inputs.policy, r.name);
      all.push({ kind: "role", source: r.name, role, doc });
      byRole.set(role, [...(byRole.get(role) ?? []), doc]);
    }
    const attachedByRole = new Map<string, string[]>();
    for (const r of rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")) {
      const role = roleOf(r.inputs.role);
      attachedByRole.set(role, [...(attachedByRole.get(role) ?? []), String(r.inputs.policyArn)]);
    }
    const managedByRole = new Map<string, PolicyDocument[]>();
    const unreadByRole = new Map<string, string[]>();
    for (const [role, arns] of attachedByRole) {
      for (const arn of arns) {
        const doc = awsManagedPolicy(arn);
        if (doc) managedByRole.set(role, [...(managedByRole.get(role) ?? []), doc]);
        else unreadByRole.set(role, [...(unreadByRole.get(role) ?? []), arn]);
      }
    }
    const resourcePolicies: FoundDocument[] = [
      ...rec.ofType("aws:sqs/queuePolicy:QueuePolicy").map((r) => ({ kind: "queue" as const, source: r.name, doc: parse(r.inputs.policy, r.name) })),
      ...rec.ofType("aws:s3/bucketPolicy:BucketPolicy").map((r) => ({ kind: "bucket" as const, source: r.name, doc: parse(r.inputs.policy, r.name) })),
    ];
    all.push(...resourcePolicies);
    return { all, byRole, attachedByRole, managedByRole, unreadByRole, resourcePolicies, run };
  })();
  return cached;
}

const AWS_MANAGED_DIR = path.join(__dirname, "..", "upstream", "iam", "aws-managed");

/** An AWS-managed policy's vendored default version (MAMIP's PolicyVersion object), if vendored. */
export function awsManagedPolicy(arn: string): PolicyDocument | undefined {
  const m = /^arn:aws:iam::aws:policy\/(?:.*\/)?([A-Za-z0-9_+=,.@-]+)$/.exec(arn);
  if (!m) return undefined;
  const file = path.join(AWS_MANAGED_DIR, `${m[1]}.json`);
  if (!fs.existsSync(file)) return undefined;
  const v = JSON.parse(fs.readFileSync(file, "utf8")) as { PolicyVersion: { Document: PolicyDocument; IsDefaultVersion: boolean } };
  if (!v.PolicyVersion.IsDefaultVersion) throw new Error(`${file}: not the default version`);
  return v.PolicyVersion.Document;
}

/** IAM's wildcard match: `*` any run of characters, `?` one character; case-sensitive like ARNs. */
export function globMatch(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "s");
  return re.test(value);
}

export function asList<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** The resource policy guarding an ARN: the one document whose statements name it (or its bucket). */
export function resourcePolicyFor(policies: FoundDocument[], resource: string): PolicyDocument | undefined {
  const found = policies.filter((p) => p.doc.Statement.some((s) => asList(s.Resource).some((r) => globMatch(r, resource))));
  if (found.length > 1) throw new Error(`more than one resource policy names ${resource}: ${found.map((f) => f.source).join(", ")}`);
  return found[0]?.doc;
}

export const REGION = "us-west-2";

/**
 * Context every signed request of these principals carries: TLS (each queue and bucket denies
 * plain HTTP), the region the SDK signs for, and who is calling.
 */
function baseContext(principalArn: string, resource: string): Record<string, string> {
  const region = resource.split(":")[3];
  return {
    "aws:SecureTransport": "true",
    "aws:RequestedRegion": region ? region : REGION,
    "aws:PrincipalArn": principalArn,
    "aws:PrincipalAccount": MOCK_ACCOUNT,
  };
}

/** Account that owns a resource ARN (AWS-owned ARNs without one count as ours: public, same-account read). */
function ownerOf(resource: string): string {
  const account = resource.split(":")[4];
  return account && account !== "*" && account !== "aws" ? account : MOCK_ACCOUNT;
}

/** Runs one request against identity policies (and the target's resource policy, if any). */
export async function simulate(
  identity: PolicyDocument[],
  req: SimRequest,
  opts: { principalArn: string; resourcePolicy?: PolicyDocument },
): Promise<SimOutcome> {
  const simulation: Simulation = {
    request: {
      principal: opts.principalArn,
      action: req.action,
      resource: { resource: req.resource, accountId: ownerOf(req.resource) },
      // The request's own keys win over the defaults (a test may sign for another region).
      contextVariables: { ...baseContext(opts.principalArn, req.resource), ...(req.context ?? {}) },
    },
    identityPolicies: identity.map((policy, i) => ({ name: `inline-${i}`, policy })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: opts.resourcePolicy,
  };
  if (req.unvalidated) return { decision: runUnsafeSimulation(simulation, {}) };
  const result = await runSimulation(simulation, {});
  if (result.resultType === "error") return { decision: "Error", errors: JSON.stringify(result.errors) };
  return { decision: result.overallResult as Decision };
}

export function roleArn(roleName: string): string {
  return `arn:aws:iam::${MOCK_ACCOUNT}:role/${roleName}`;
}

/** Simulates a request as a role of the program: its inline policies, plus the target's resource policy. */
export async function simulateAsRole(policies: ProgramPolicies, role: string, req: SimRequest): Promise<SimOutcome> {
  const inline = policies.byRole.get(role);
  if (!inline) throw new Error(`no inline policy attached to role '${role}' in the program graph (roles: ${[...policies.byRole.keys()].join(", ")})`);
  const identity = [...inline, ...(policies.managedByRole.get(role) ?? [])];
  return simulate(identity, req, { principalArn: roleArn(role), resourcePolicy: resourcePolicyFor(policies.resourcePolicies, req.resource) });
}

/**
 * A test title that names principal, action and resource, and the listing's prefix where one is
 * given: ListBucket rows differ only in s3:prefix, and each title must say which row failed.
 */
export function title(principal: string, req: SimRequest): string {
  const prefix = req.context?.["s3:prefix"];
  return `${principal} ${req.action} ${req.resource}${prefix === undefined ? "" : ` s3:prefix=${JSON.stringify(prefix)}`}`;
}

/** Tag context helpers: the keys IAM sees for tags on the request and on the resource. */
export function requestTags(tags: Record<string, string>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(tags)) out[`aws:RequestTag/${k}`] = v;
  out["aws:TagKeys"] = Object.keys(tags);
  return out;
}

export function resourceTags(tags: Record<string, string>, prefix = "aws:ResourceTag"): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(tags)) out[`${prefix}/${k}`] = v;
  return out;
}

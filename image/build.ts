/**
 * Start one CodeBuild build and wait for it: progress (phase, elapsed time) while it runs, the
 * pushed digest when it succeeds, and on failure or timeout an error that names the failing phase,
 * carries the last log lines (CloudWatch Logs) and links to the full log.
 *
 * Plain module with injected clients so it is tested without Pulumi or AWS. The dynamic provider
 * (image/provider.ts) serializes these functions into the Pulumi state, so nothing here may rely on
 * module-level state: the AWS SDK is only used through the clients handed in.
 */
import type { BatchGetBuildsCommandOutput, Build, StartBuildCommandInput } from "@aws-sdk/client-codebuild";

export interface BuildRequest {
  projectName: string;
  /** "bucket/key" of the context zip (StartBuild sourceLocationOverride for an S3 source). */
  sourceLocation: string;
  /** Registry/repository without tag or digest. */
  repositoryUrl: string;
  imageTag: string;
  dockerfile: string;
  contextDir: string;
  /** BUILD_ARGS value (image/buildspec.ts encodeBuildArgs). */
  buildArgs: string;
}

export interface BuildResult {
  imageUri: string;
  digest: string;
  buildId: string;
  logLink?: string;
}

/** The three calls this needs, in the shape of the SDK v3 clients' `send`. */
export interface BuildClients {
  startBuild(input: StartBuildCommandInput): Promise<{ build?: Build }>;
  batchGetBuilds(ids: string[]): Promise<Pick<BatchGetBuildsCommandOutput, "builds">>;
  stopBuild(id: string): Promise<unknown>;
  /** Last `limit` lines of a log stream, oldest first. */
  logTail(groupName: string, streamName: string, limit: number): Promise<string[]>;
}

export interface WaitOptions {
  /** Extra attempts for a build that fails before BUILD on missing permissions (see isEarlyAccessFailure). Default 2. */
  accessRetries?: number;
  pollMs: number;
  timeoutMs: number;
  logLines: number;
  log: (message: string) => void;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
  /** Called once CodeBuild has a build id, with the call that stops it (the provider's cancel hooks hold it). */
  onStarted?: (id: string, stop: () => Promise<unknown>) => void;
  /** Called when this module stops waiting for the build, whatever the outcome. */
  onFinished?: (id: string) => void;
  /** Why the update was cancelled, once it was (then the build is stopped and the wait ends). */
  cancelled?: () => string | undefined;
}

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** "12m05s" for an elapsed time in milliseconds. */
export function elapsed(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

/** The digest the buildspec exported (IMAGE_DIGEST), validated. */
export function exportedDigest(build: Build): string {
  const v = (build.exportedEnvironmentVariables ?? []).find((e) => e.name === "IMAGE_DIGEST")?.value ?? "";
  if (!DIGEST_PATTERN.test(v)) {
    throw new Error(`build ${build.id} succeeded but exported no image digest (IMAGE_DIGEST='${v}'); see ${build.logs?.deepLink ?? "its log"}`);
  }
  return v;
}

/** The phase that failed (the first whose status is not SUCCEEDED), with CodeBuild's messages. */
export function failingPhase(build: Build): { phase: string; status: string; message: string } {
  const bad = (build.phases ?? []).find((p) => p.phaseStatus !== undefined && p.phaseStatus !== "SUCCEEDED");
  const phase = bad?.phaseType ?? build.currentPhase ?? "UNKNOWN";
  const status = bad?.phaseStatus ?? build.buildStatus ?? "UNKNOWN";
  const message = (bad?.contexts ?? []).map((c) => [c.statusCode, c.message].filter(Boolean).join(": ")).filter(Boolean).join("; ");
  return { phase, status, message };
}

async function failure(build: Build, what: string, clients: BuildClients, opts: WaitOptions): Promise<Error> {
  const { phase, status, message } = failingPhase(build);
  let tail: string[] = [];
  const group = build.logs?.groupName;
  const stream = build.logs?.streamName;
  if (group && stream) {
    try {
      tail = await clients.logTail(group, stream, opts.logLines);
    } catch (e) {
      tail = [`(could not read the log: ${(e as Error).message})`];
    }
  }
  const lines = [
    `image build ${build.id} ${what} in phase ${phase} (${status})${message ? `: ${message}` : ""}`,
    ...(tail.length > 0 ? [`last ${tail.length} log lines:`, ...tail.map((l) => `  ${l.replace(/\n$/, "")}`)] : ["(no log lines available)"]),
    `full log: ${build.logs?.deepLink ?? "(no link: the build has no CloudWatch log)"}`,
  ];
  return new Error(lines.join("\n"));
}

/**
 * A build that failed before its own commands ran because CodeBuild could not yet use the role
 * (IAM changes made in the same `pulumi up` take a few seconds to propagate): worth starting again.
 */
export function isEarlyAccessFailure(build: Build): boolean {
  if (build.buildStatus !== "FAILED" && build.buildStatus !== "FAULT") return false;
  const { phase, message } = failingPhase(build);
  const codes = (build.phases ?? []).flatMap((p) => (p.contexts ?? []).map((c) => c.statusCode ?? ""));
  return ["SUBMITTED", "QUEUED", "PROVISIONING", "DOWNLOAD_SOURCE"].includes(phase) && (codes.includes("ACCESS_DENIED") || /AccessDenied|not authorized|is not authorized to perform/i.test(message));
}

/** Starts the build and resolves with the pushed image, or rejects with a readable failure. */
export async function buildAndWait(req: BuildRequest, clients: BuildClients, opts: WaitOptions): Promise<BuildResult> {
  const retries = opts.accessRetries ?? 2;
  for (let attempt = 0; ; attempt++) {
    const outcome = await runOnce(req, clients, opts);
    if ("result" in outcome) return outcome.result;
    if (attempt < retries && !opts.cancelled?.() && isEarlyAccessFailure(outcome.build)) {
      const { phase, message } = failingPhase(outcome.build);
      opts.log(`image build ${outcome.build.id} was refused in ${phase} (${message || "access denied"}); IAM may still be propagating, starting again`);
      await opts.sleep(opts.pollMs * (attempt + 1));
      continue;
    }
    throw outcome.error;
  }
}

async function runOnce(req: BuildRequest, clients: BuildClients, opts: WaitOptions): Promise<{ result: BuildResult } | { build: Build; error: Error }> {
  const started = opts.now();
  const env = (name: string, value: string) => ({ name, value, type: "PLAINTEXT" as const });
  const { build: first } = await clients.startBuild({
    projectName: req.projectName,
    sourceTypeOverride: "S3",
    sourceLocationOverride: req.sourceLocation,
    environmentVariablesOverride: [
      env("IMAGE_REPO", req.repositoryUrl),
      env("IMAGE_TAG", req.imageTag),
      env("DOCKERFILE", req.dockerfile),
      env("CONTEXT_DIR", req.contextDir),
      env("BUILD_ARGS", req.buildArgs),
    ],
  });
  if (!first?.id) throw new Error(`CodeBuild did not start a build for project ${req.projectName}`);
  const id = first.id;
  opts.onStarted?.(id, () => clients.stopBuild(id));
  try {
    return await waitFor(id, req, clients, opts, started);
  } finally {
    opts.onFinished?.(id);
  }
}

async function waitFor(id: string, req: BuildRequest, clients: BuildClients, opts: WaitOptions, started: number): Promise<{ result: BuildResult } | { build: Build; error: Error }> {
  opts.log(`image build ${id} started for ${req.repositoryUrl}:${req.imageTag}`);
  let lastPhase = "";
  for (;;) {
    const reason = opts.cancelled?.();
    if (reason !== undefined) {
      // Cancelled (Ctrl-C, Pulumi's cancel, a signal): nothing may keep building and pushing.
      const stopped = await clients.stopBuild(id).then(
        () => "StopBuild sent",
        (e: unknown) => `StopBuild failed: ${e instanceof Error ? e.message : String(e)}`,
      );
      opts.log(`image build ${id} cancelled (${reason}); ${stopped}`);
      return { build: { id, buildStatus: "STOPPED" }, error: new Error(`image build ${id} cancelled (${reason}) after ${elapsed(opts.now() - started)}; ${stopped}`) };
    }
    const { builds } = await clients.batchGetBuilds([id]);
    const build = builds?.[0];
    if (!build) throw new Error(`image build ${id} is no longer known to CodeBuild`);
    const t = opts.now() - started;
    if (build.currentPhase && build.currentPhase !== lastPhase) {
      lastPhase = build.currentPhase;
      opts.log(`image build ${id}: ${lastPhase} (${elapsed(t)} elapsed)`);
    }
    if (build.buildComplete || (build.buildStatus && build.buildStatus !== "IN_PROGRESS")) {
      if (build.buildStatus === "SUCCEEDED") {
        const digest = exportedDigest(build);
        opts.log(`image build ${id} succeeded in ${elapsed(t)}: ${req.repositoryUrl}@${digest}`);
        return { result: { imageUri: `${req.repositoryUrl}@${digest}`, digest, buildId: id, logLink: build.logs?.deepLink } };
      }
      const what = build.buildStatus === "TIMED_OUT" ? "timed out (CodeBuild's project timeout)" : `failed (${build.buildStatus})`;
      return { build, error: await failure(build, what, clients, opts) };
    }
    if (t >= opts.timeoutMs) {
      // Our own deadline: stop the build so nothing keeps pushing after `pulumi up` has given up.
      await clients.stopBuild(id).catch(() => undefined);
      return { build: { ...build, buildStatus: "STOPPED" }, error: await failure(build, `timed out after ${elapsed(t)} (stopped)`, clients, opts) };
    }
    await opts.sleep(opts.pollMs);
  }
}

/**
 * ImageBuild: a Pulumi dynamic resource whose create/update runs one CodeBuild build and records
 * the pushed digest. Pulumi serializes the provider object into the state (closure capture: every
 * captured function's source and the values it references; modules from node_modules become
 * `require` calls). So the provider captures only plain functions of image/build.ts,
 * image/awsSettings.ts, image/cancel.ts and this file, requires the AWS SDK and @pulumi/pulumi inside
 * its methods, and keeps per-process state (static keys, running builds) on globalThis.
 *
 * - diff: rebuild only when what the image is made of changed (context hash, build args,
 *   Dockerfile, context folder, repository, tag, project); each changed input is named.
 * - read (`pulumi refresh`): returns the recorded state; the image in ECR is immutable by digest.
 * - delete: nothing to undo; the image goes with its repository (forceDelete) or the lifecycle policy.
 * - credentials: the stack's AWS settings, never just the provider process's default chain
 *   (image/awsSettings.ts): region, profile and roles as inputs, static keys through `configure`.
 * - cancel: Pulumi's cancel, SIGINT or SIGTERM stop the running CodeBuild build (image/cancel.ts).
 */
import * as pulumi from "@pulumi/pulumi";
import { AwsSettings, ConfigReader, StaticKeys, credentialChain, staticKeysFrom } from "./awsSettings";
import { BuildClients, DIGEST_PATTERN, buildAndWait } from "./build";
import { cancelState, cancellableSleep, installCancelHooks } from "./cancel";

export interface ImageBuildInputs {
  /** The stack's region (aws:region): CodeBuild, CloudWatch Logs and STS are called there. */
  region: string;
  /** The stack's aws:profile and aws:assumeRoles (image/awsSettings.ts); no secret. */
  aws?: AwsSettings;
  projectName: string;
  sourceLocation: string;
  contextHash: string;
  repositoryUrl: string;
  imageTag: string;
  dockerfile: string;
  contextDir: string;
  buildArgs: string;
  timeoutMinutes: number;
}

export interface ImageBuildOutputs extends ImageBuildInputs {
  imageUri: string;
  digest: string;
  buildId: string;
  logLink?: string;
}

/** Inputs that decide the image; a change to any of them means a new build. */
export const REBUILD_INPUTS = ["contextHash", "buildArgs", "dockerfile", "contextDir", "repositoryUrl", "imageTag", "projectName"] as const;

/** Which of REBUILD_INPUTS differ, each as "name: old -> new" (build args are shown decoded). */
export function changedInputs(olds: Partial<ImageBuildInputs>, news: Partial<ImageBuildInputs>): string[] {
  const show = (k: string, v: unknown) => (k === "buildArgs" && typeof v === "string" ? Buffer.from(v, "base64").toString("utf8").split("\n").join(", ") : String(v));
  const out: string[] = [];
  for (const k of REBUILD_INPUTS) {
    if (olds[k] !== news[k]) out.push(`${k}: ${show(k, olds[k])} -> ${show(k, news[k])}`);
  }
  return out;
}

/** Input validation, as Pulumi's check failures (property + reason). */
export function checkInputs(news: Partial<ImageBuildInputs>): { property: string; reason: string }[] {
  const failures: { property: string; reason: string }[] = [];
  const need = (k: keyof ImageBuildInputs, ok: boolean, reason: string) => {
    if (!ok) failures.push({ property: k, reason });
  };
  need("region", typeof news.region === "string" && /^[a-z]{2}(-[a-z]+)+-\d$/.test(news.region), `region '${news.region}' is not an AWS region name`);
  need("projectName", typeof news.projectName === "string" && news.projectName.length > 0, "projectName is required");
  need("sourceLocation", typeof news.sourceLocation === "string" && /^[a-z0-9.-]{3,63}\/.+\.zip$/.test(news.sourceLocation), `sourceLocation '${news.sourceLocation}' is not bucket/key.zip`);
  need("contextHash", typeof news.contextHash === "string" && /^[0-9a-f]{64}$/.test(news.contextHash), "contextHash must be a sha256 hex digest");
  need("repositoryUrl", typeof news.repositoryUrl === "string" && /^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[a-z0-9._\/-]+$/.test(news.repositoryUrl), `repositoryUrl '${news.repositoryUrl}' is not a private ECR repository URL without tag`);
  need("imageTag", typeof news.imageTag === "string" && /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(news.imageTag), `imageTag '${news.imageTag}' is not a valid Docker tag`);
  need("dockerfile", typeof news.dockerfile === "string" && news.dockerfile.length > 0 && !news.dockerfile.startsWith("/"), "dockerfile must be a path relative to the context archive");
  need("timeoutMinutes", typeof news.timeoutMinutes === "number" && news.timeoutMinutes >= 5 && news.timeoutMinutes <= 2160, "timeoutMinutes must be 5..2160 (CodeBuild's build timeout range)");
  const roles = news.aws?.assumeRoles ?? [];
  need("aws", roles.every((r) => typeof r?.roleArn === "string" && /^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/.test(r.roleArn)), "every aws.assumeRoles entry needs an IAM role ARN (arn:aws:iam::<account>:role/<name>)");
  need("aws", news.aws?.profile === undefined || (typeof news.aws.profile === "string" && news.aws.profile.length > 0), "aws.profile must be a profile name");
  return failures;
}

/** Static keys the engine handed `configure` (process-wide, in memory only; see image/awsSettings.ts). */
export function configuredKeys(): { keys?: StaticKeys } {
  const g = globalThis as { __comfyuiImageBuildKeys?: { keys?: StaticKeys } };
  g.__comfyuiImageBuildKeys ??= {};
  return g.__comfyuiImageBuildKeys;
}

/**
 * SDK v3 clients behind the BuildClients interface (requires inside: this runs in the provider),
 * in the stack's region with the stack's credentials (credentialChain).
 */
export function awsBuildClients(region: string, settings?: AwsSettings, keys?: StaticKeys): BuildClients {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cb = require("@aws-sdk/client-codebuild") as typeof import("@aws-sdk/client-codebuild");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cwl = require("@aws-sdk/client-cloudwatch-logs") as typeof import("@aws-sdk/client-cloudwatch-logs");
  const credentials = credentialChain(region, settings, keys);
  const codebuild = new cb.CodeBuildClient({ region, ...(credentials ? { credentials } : {}) });
  const logs = new cwl.CloudWatchLogsClient({ region, ...(credentials ? { credentials } : {}) });
  return {
    startBuild: (input) => codebuild.send(new cb.StartBuildCommand(input)),
    batchGetBuilds: (ids) => codebuild.send(new cb.BatchGetBuildsCommand({ ids })),
    stopBuild: (id) => codebuild.send(new cb.StopBuildCommand({ id })),
    logTail: async (logGroupName, logStreamName, limit) => {
      const r = await logs.send(new cwl.GetLogEventsCommand({ logGroupName, logStreamName, limit, startFromHead: false }));
      return (r.events ?? []).map((e) => e.message ?? "");
    },
  };
}

async function runBuild(inputs: ImageBuildInputs, clients?: BuildClients): Promise<ImageBuildOutputs> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const log = (require("@pulumi/pulumi") as typeof import("@pulumi/pulumi")).log;
  const cancel = cancelState();
  installCancelHooks(cancel, (m) => log.warn(m));
  if (cancel.reason !== undefined) throw new Error(`image build not started: ${cancel.reason}`);
  const result = await buildAndWait(
    {
      projectName: inputs.projectName,
      sourceLocation: inputs.sourceLocation,
      repositoryUrl: inputs.repositoryUrl,
      imageTag: inputs.imageTag,
      dockerfile: inputs.dockerfile,
      contextDir: inputs.contextDir,
      buildArgs: inputs.buildArgs,
    },
    clients ?? awsBuildClients(inputs.region, inputs.aws, configuredKeys().keys),
    {
      pollMs: 15_000,
      // CodeBuild's own timeout ends the build first; ours only guards against a build that hangs in QUEUED.
      timeoutMs: (inputs.timeoutMinutes + 15) * 60_000,
      logLines: 40,
      log: (m) => log.info(m),
      sleep: (ms) => cancellableSleep(cancel, ms),
      now: () => Date.now(),
      onStarted: (id, stop) => void cancel.running.set(id, stop),
      onFinished: (id) => void cancel.running.delete(id),
      cancelled: () => cancel.reason,
    },
  );
  return { ...inputs, imageUri: result.imageUri, digest: result.digest, buildId: result.buildId, logLink: result.logLink };
}

/** Inputs that change who builds, not what: recorded without a build (region, timeout, the AWS settings). */
export function bookkeepingChanged(olds: Partial<ImageBuildInputs>, news: Partial<ImageBuildInputs>): boolean {
  return olds.region !== news.region || olds.timeoutMinutes !== news.timeoutMinutes || JSON.stringify(olds.aws ?? {}) !== JSON.stringify(news.aws ?? {});
}

/** The provider object Pulumi serializes. */
export const imageBuildProvider: pulumi.dynamic.ResourceProvider<ImageBuildInputs, ImageBuildOutputs> = {
  async configure(req: { config: ConfigReader }) {
    // The stack's static keys, if any: held in this process's memory, never an input or an output.
    configuredKeys().keys = staticKeysFrom(req.config);
  },
  async check(_olds, news) {
    return { inputs: news, failures: checkInputs(news) };
  },
  async diff(_id, olds, news) {
    const changed = changedInputs(olds, news);
    if (changed.length > 0) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      (require("@pulumi/pulumi") as typeof import("@pulumi/pulumi")).log.info(`image ${news.repositoryUrl} will be rebuilt: ${changed.join("; ")}`);
    }
    // Region, timeout and credentials alone do not change the image: recorded, no build.
    return { changes: changed.length > 0 || bookkeepingChanged(olds, news), replaces: [], deleteBeforeReplace: false };
  },
  async create(inputs) {
    const outs = await runBuild(inputs);
    return { id: outs.buildId, outs };
  },
  async update(_id, olds, news) {
    if (changedInputs(olds, news).length === 0 && DIGEST_PATTERN.test(olds.digest)) {
      // Only region/timeout/credential bookkeeping changed: keep the image that exists.
      return { outs: { ...olds, ...news, imageUri: olds.imageUri, digest: olds.digest, buildId: olds.buildId, logLink: olds.logLink } };
    }
    return { outs: await runBuild(news) };
  },
  async read(id, props) {
    return { id, props };
  },
  async delete() {
    // The pushed image needs no cleanup of its own (see the header).
  },
};

/** One image built by CodeBuild; `imageUri` is repo@sha256:… of the pushed image. */
export class ImageBuild extends pulumi.dynamic.Resource {
  declare readonly imageUri: pulumi.Output<string>;
  declare readonly digest: pulumi.Output<string>;
  declare readonly buildId: pulumi.Output<string>;
  declare readonly logLink: pulumi.Output<string | undefined>;

  constructor(name: string, args: { [K in keyof ImageBuildInputs]: pulumi.Input<ImageBuildInputs[K]> }, opts?: pulumi.CustomResourceOptions) {
    super(imageBuildProvider, name, { ...args, imageUri: undefined, digest: undefined, buildId: undefined, logLink: undefined }, opts, "comfyui-image", "ImageBuild");
  }
}

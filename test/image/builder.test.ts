/**
 * The in-region image build under mocks: the CodeBuild project (environment, compute, privileged,
 * S3 source, logs), its least-privilege role, the buildspec (linux/amd64, registry cache, digest,
 * layer sizes) and `build: "local"` keeping the awsx.ecr.Image graph.
 */
import { strict as assert } from "node:assert";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { ComfyImage, COMFYUI_CONTEXT_FILES, codeBuildPolicyStatements } from "../../image";
import { BUILD_ENV, CACHE_TAG, LAYER_REPORT_HEADER, PUBLIC_REGISTRY, PUBLIC_REGISTRY_AUTH_REGION, buildspecObject, buildspecYaml, encodeBuildArgs } from "../../image/buildspec";
import { MOCK_ACCOUNT, MOCK_IMAGE_DIGEST, Recorder, installMocks, quiesce, unwrap } from "../support/mocks";

const COMMIT = "a125cd84b054a57729b5eecab930ca9408719832";

describe("image: built in AWS (CodeBuild)", () => {
  const rec = new Recorder();
  let img: ComfyImage;
  before(async () => {
    installMocks(rec);
    img = new ComfyImage("cb", { comfyuiVersion: "v0.3.64", comfyuiCommit: COMMIT, tags: { app: "comfyui" } });
    await quiesce(rec);
  });

  it("defaults to the CodeBuild path: no awsx.ecr.Image, one project, one build per image", async () => {
    assert.equal(rec.ofType("awsx:ecr:Image").length, 0);
    rec.one("aws:codebuild/project:Project");
    const build = rec.one("pulumi-nodejs:dynamic/comfyui-image:ImageBuild");
    assert.equal(typeof build.inputs.__provider, "string", "the provider is serialized into the inputs");
    assert.equal(await unwrap(img.imageUri), `${MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/cb-repo@${MOCK_IMAGE_DIGEST}`);
  });

  it("project: AL2023 standard image, LARGE, privileged for Docker, S3 source with the inline buildspec, own log group", () => {
    const p = rec.one("aws:codebuild/project:Project").inputs;
    assert.equal(p.environment.type, "LINUX_CONTAINER");
    assert.equal(p.environment.image, "aws/codebuild/amazonlinux-x86_64-standard:5.0");
    assert.equal(p.environment.computeType, "BUILD_GENERAL1_LARGE");
    assert.equal(p.environment.privilegedMode, true);
    assert.equal(p.source.type, "S3");
    assert.match(p.source.location, /^cb-build-context-mock\/contexts\/comfyui\/[0-9a-f]{64}\.zip$/);
    assert.equal(p.source.buildspec, buildspecYaml());
    assert.equal(p.artifacts.type, "NO_ARTIFACTS");
    const lg = rec.one("aws:cloudwatch/logGroup:LogGroup").inputs;
    assert.equal(p.logsConfig.cloudwatchLogs.status, "ENABLED");
    assert.equal(p.logsConfig.cloudwatchLogs.groupName, lg.name);
    assert.equal(p.logsConfig.s3Logs.status, "DISABLED");
    assert.equal(p.name, "comfyui-eks-dev-cb-build");
    assert.ok(p.buildTimeout >= 60);
  });

  it("the build gets the context's hash and object, the ComfyUI tag + commit as build args", () => {
    const b = rec.one("pulumi-nodejs:dynamic/comfyui-image:ImageBuild").inputs;
    const obj = rec.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs;
    assert.equal(obj.key, `contexts/comfyui/${b.contextHash}.zip`);
    assert.equal(b.sourceLocation, `cb-build-context-mock/${obj.key}`);
    assert.equal(Buffer.from(b.buildArgs, "base64").toString(), `COMFYUI_COMMIT=${COMMIT}\nCOMFYUI_VERSION=v0.3.64`);
    assert.equal(b.dockerfile, "image/Dockerfile");
    assert.equal(b.contextDir, "image");
    assert.equal(b.region, "us-west-2");
    assert.deepEqual(COMFYUI_CONTEXT_FILES.sort(), ["image/Dockerfile", "image/constraints.txt", "image/custom-nodes.txt", "image/torch-pins.sh"]);
  });

  it("context bucket: encrypted, public access blocked, owner-enforced, TLS only", () => {
    const sse = rec.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "cb-build").inputs;
    assert.equal(sse.rules[0].applyServerSideEncryptionByDefault.sseAlgorithm, "AES256");
    const pab = rec.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "cb-build").inputs;
    for (const k of ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"]) assert.equal(pab[k], true, k);
    assert.equal(rec.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "cb-build").inputs.rule.objectOwnership, "BucketOwnerEnforced");
    const pol = JSON.parse(rec.one("aws:s3/bucketPolicy:BucketPolicy", "cb-build").inputs.policy);
    assert.equal(pol.Statement[0].Effect, "Deny");
    assert.equal(pol.Statement[0].Condition.Bool["aws:SecureTransport"], "false");
  });

  it("role: trusted by this project only, inline policy only (no managed policies)", () => {
    const role = rec.one("aws:iam/role:Role", "cb-build").inputs;
    const trust = JSON.parse(role.assumeRolePolicy).Statement[0];
    assert.equal(trust.Principal.Service, "codebuild.amazonaws.com");
    assert.equal(trust.Condition.StringEquals["aws:SourceAccount"], MOCK_ACCOUNT);
    assert.equal(trust.Condition.ArnLike["aws:SourceArn"], `arn:aws:codebuild:us-west-2:${MOCK_ACCOUNT}:project/comfyui-eks-dev-cb-build`);
    assert.equal(rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").length, 0);
    assert.equal(role.managedPolicyArns, undefined);
    const doc = JSON.parse(rec.one("aws:iam/rolePolicy:RolePolicy", "cb-build").inputs.policy);
    const repoArn = `arn:aws:ecr:us-west-2:${MOCK_ACCOUNT}:repository/cb-repo`;
    const lgArn = `arn:aws:logs:us-west-2:${MOCK_ACCOUNT}:log-group:/aws/codebuild/comfyui-eks-dev-cb-build`;
    assert.deepEqual(doc.Statement, codeBuildPolicyStatements({ repositoryArns: [repoArn], contextBucketArn: "arn:aws:s3:::cb-build-context-mock", imageNames: ["comfyui"], logGroupArn: lgArn }));
  });

  it("policy statements: '*' only for the registry logins (ECR, ECR Public); push to own repos, read own contexts, log to own group", () => {
    const st = codeBuildPolicyStatements({ repositoryArns: ["arn:aws:ecr:r:1:repository/a", "arn:aws:ecr:r:1:repository/b"], contextBucketArn: "arn:aws:s3:::ctx", imageNames: ["a", "b"], logGroupArn: "arn:aws:logs:r:1:log-group:g" });
    for (const s of st) {
      assert.equal(s.Effect, "Allow");
      for (const a of s.Action) assert.ok(!a.includes("*"), `wildcard action ${a}`);
      if (s.Resource.includes("*")) assert.ok([["ecr:GetAuthorizationToken"], ["ecr-public:GetAuthorizationToken"], ["sts:GetServiceBearerToken"]].some((a) => JSON.stringify(a) === JSON.stringify(s.Action)), s.Sid);
    }
    // The bearer token is ECR Public's only.
    assert.deepEqual(st.find((s) => s.Action.includes("sts:GetServiceBearerToken"))!.Condition, { StringEquals: { "sts:AWSServiceName": "ecr-public.amazonaws.com" } });
    const push = st.find((s) => s.Action.includes("ecr:PutImage"))!;
    assert.deepEqual(push.Resource, ["arn:aws:ecr:r:1:repository/a", "arn:aws:ecr:r:1:repository/b"]);
    assert.deepEqual(st.find((s) => s.Action.includes("s3:GetObject"))!.Resource, ["arn:aws:s3:::ctx/contexts/a/*", "arn:aws:s3:::ctx/contexts/b/*"]);
    assert.ok(!st.some((s) => s.Action.some((a) => /^s3:(Put|Delete)/.test(a))), "no S3 writes");
    assert.deepEqual(st.find((s) => s.Action.includes("logs:PutLogEvents"))!.Resource, ["arn:aws:logs:r:1:log-group:g", "arn:aws:logs:r:1:log-group:g:log-stream:*"]);
    assert.throws(() => codeBuildPolicyStatements({ repositoryArns: [], contextBucketArn: "x", imageNames: [], logGroupArn: "y" }), /no repositories/);
  });
});

describe("image: built locally (build: \"local\")", () => {
  const rec = new Recorder();
  before(async () => {
    installMocks(rec);
    new ComfyImage("loc", { comfyuiVersion: "v0.3.64", comfyuiCommit: COMMIT, build: "local", tags: {} });
    await quiesce(rec);
  });

  it("keeps today's graph: repository, lifecycle, awsx.ecr.Image; nothing of CodeBuild", () => {
    assert.deepEqual(
      rec.resources.filter((r) => r.custom || r.type.startsWith("awsx:")).map((r) => `${r.type}::${r.name}`).sort(),
      ["aws:ecr/lifecyclePolicy:LifecyclePolicy::loc-lifecycle", "aws:ecr/repository:Repository::loc-repo", "awsx:ecr:Image::loc-comfyui"],
    );
    const img = rec.one("awsx:ecr:Image").inputs;
    assert.equal(img.platform, "linux/amd64");
    assert.deepEqual(img.args, { COMFYUI_VERSION: "v0.3.64", COMFYUI_COMMIT: COMMIT });
  });

  it("rejects an unknown build mode", () => {
    assert.throws(() => new ComfyImage("bad", { comfyuiVersion: "v", comfyuiCommit: COMMIT, build: "docker" as never, tags: {} }), /build must be "aws" or "local"/);
  });

  it("builds an additional image locally too, into a repository of its own", async () => {
    const rec = new Recorder();
    installMocks(rec);
    const img = new ComfyImage("loc2", {
      comfyuiVersion: "v0.3.64", comfyuiCommit: COMMIT, build: "local",
      additionalImages: [{ name: "gateway", context: ["workload/gateway"], dockerfile: "workload/gateway/Dockerfile", imageTag: "latest" }], tags: {},
    });
    await unwrap(img.images["gateway"]);
    assert.deepEqual(rec.ofType("aws:ecr/repository:Repository").map((r) => r.name).sort(), ["loc2-gateway-repo", "loc2-repo"]);
    const gw = rec.ofType("awsx:ecr:Image").find((r) => r.name === "loc2-gateway")!.inputs;
    assert.ok(String(gw.dockerfile).endsWith("workload/gateway/Dockerfile"));
    assert.equal(gw.platform, "linux/amd64");
  });
});

describe("image buildspec", () => {
  const spec = yaml.load(buildspecYaml()) as ReturnType<typeof buildspecObject>;
  const all = Object.values(spec.phases).flatMap((p) => p.commands).join("\n");

  it("parses as buildspec 0.2 in bash and exports the digest", () => {
    assert.equal(spec.version, "0.2");
    assert.equal(spec.env.shell, "bash");
    assert.deepEqual(spec.env["exported-variables"], ["IMAGE_DIGEST"]);
    assert.ok(spec.phases.build.commands.some((c) => /^IMAGE_DIGEST="\$\(cat \/tmp\/image-digest\)"$/.test(c)));
    assert.ok(spec.phases.build.commands.includes("export IMAGE_DIGEST"));
  });

  it("builds linux/amd64 on dockerd's own BuildKit with an inline cache in the image's repository, pushes and reads the registry digest", () => {
    const build = spec.phases.build.commands[0];
    assert.match(build, /--platform linux\/amd64/);
    assert.match(build, /--builder default/);
    assert.match(build, new RegExp(`--cache-from "type=registry,ref=\\$\\{IMAGE_REPO\\}:${CACHE_TAG}"`));
    assert.match(build, /--cache-to type=inline/);
    assert.match(build, new RegExp(`--tag "\\$\\{IMAGE_REPO\\}:${CACHE_TAG}"`));
    assert.match(build, /docker push "\$\{IMAGE_REPO\}:\$\{IMAGE_TAG\}"/);
    assert.match(build, new RegExp(`docker push "\\$\\{IMAGE_REPO\\}:${CACHE_TAG}"`));
    assert.match(build, /RepoDigests/);
    for (const v of BUILD_ENV) assert.ok(all.includes(v), v);
  });

  it("pulls nothing from Docker Hub: no BuildKit container (moby/buildkit is on Docker Hub only), ECR Public logged in with the role, best effort", () => {
    const build = spec.phases.build.commands[0];
    // buildx's docker-container driver starts moby/buildkit from Docker Hub unless given another image.
    const code = all.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n");
    assert.doesNotMatch(code, /buildx create|docker-container|moby\/buildkit|docker\.io/);
    assert.doesNotMatch(code, /docker (pull|run) /);
    const login = build.split("\n").find((l) => l.includes("ecr-public get-login-password"));
    assert.equal(login, `if ! aws ecr-public get-login-password --region ${PUBLIC_REGISTRY_AUTH_REGION} | docker login --username AWS --password-stdin ${PUBLIC_REGISTRY}; then`);
    assert.ok(build.indexOf(login!) < build.indexOf("docker buildx build"), "logged in before the build pulls its base images");
  });

  it("the ECR Public login is best effort: a failing login is one line and the script goes on", () => {
    const build = spec.phases.build.commands[0];
    const block = build.slice(build.indexOf("if ! aws ecr-public"), build.indexOf("fi\n", build.indexOf("if ! aws ecr-public")) + 2);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ecr-public-login-"));
    try {
      for (const [name, body] of [["aws", 'echo "An error occurred (AccessDeniedException)" >&2; exit 254'], ["docker", "cat >/dev/null; exit 1"]]) {
        fs.writeFileSync(path.join(dir, name), `#!/bin/bash\n${body}\n`, { mode: 0o755 });
      }
      const r = spawnSync("bash", ["-c", `set -euo pipefail\n${block}\necho went-on`], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /went-on/);
      assert.match(r.stderr, /could not log in to public\.ecr\.aws; pulling base images anonymously/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("prints the pushed image's layer sizes into the log", () => {
    const post = spec.phases.post_build.commands.join("\n");
    assert.ok(post.includes(LAYER_REPORT_HEADER));
    assert.match(post, /imagetools inspect --raw "\$\{IMAGE_REPO\}@\$\{IMAGE_DIGEST\}"/);
    assert.match(post, /\.layers \| sort_by\(-\.size\)/);
  });

  it("every command is valid bash and clean under shellcheck", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "buildspec-"));
    try {
      Object.entries(spec.phases).forEach(([phase, p]) => {
        const file = path.join(dir, `${phase}.sh`);
        fs.writeFileSync(file, "#!/usr/bin/env bash\n" + p.commands.join("\n") + "\n");
        execFileSync("bash", ["-n", file]);
        execFileSync("shellcheck", ["-s", "bash", "-e", "SC2034", file]);
      });
      // The check catches broken shell: an unclosed quote is refused.
      const broken = path.join(dir, "broken.sh");
      fs.writeFileSync(broken, 'echo "unclosed\n');
      assert.throws(() => execFileSync("bash", ["-n", broken], { stdio: "pipe" }));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the build-arg decoding in the script reproduces encodeBuildArgs' input, spaces and quotes included", () => {
    const args = { A: "plain", B: "with space", C: `quo"te's`, D: "" };
    const out = execFileSync("bash", ["-c", 'build_args=(); while IFS= read -r kv || [ -n "$kv" ]; do if [ -n "$kv" ]; then build_args+=(--build-arg "$kv"); fi; done < <(printf \'%s\' "$BUILD_ARGS" | base64 -d); printf "%s\\n" "${build_args[@]}"'], {
      env: { ...process.env, BUILD_ARGS: encodeBuildArgs(args) },
    }).toString();
    assert.deepEqual(out.trimEnd().split("\n"), ["--build-arg", "A=plain", "--build-arg", "B=with space", "--build-arg", `C=quo"te's`, "--build-arg", "D="]);
    // The test's loop is the script's loop, character for character.
    assert.ok(spec.phases.build.commands[0].includes('while IFS= read -r kv || [ -n "$kv" ]; do\n  if [ -n "$kv" ]; then build_args+=(--build-arg "$kv"); fi\ndone < <(printf \'%s\' "${BUILD_ARGS:-}" | base64 -d)'));
    assert.throws(() => encodeBuildArgs({ "bad-name": "x" }), /not a valid variable name/);
    assert.throws(() => encodeBuildArgs({ A: "two\nlines" }), /line break/);
  });
});

/**
 * The one buildspec every image build runs (CodeBuild buildspec version 0.2). What differs per
 * image arrives as environment variables of StartBuild (see BUILD_ENV), so the project is shared:
 * - IMAGE_REPO   registry/repository to push to (…dkr.ecr.<region>.amazonaws.com/<name>)
 * - IMAGE_TAG    human-readable tag (the digest is what Deployments use)
 * - DOCKERFILE   path inside the unpacked source, relative to its root
 * - CONTEXT_DIR  folder of the unpacked source that is the Docker build context
 * - BUILD_ARGS   base64 of "KEY=VALUE" lines (base64 keeps values with spaces or quotes intact)
 * The build exports IMAGE_DIGEST (sha256:…) through `env.exported-variables`; BatchGetBuilds
 * returns it in build.exportedEnvironmentVariables once the build succeeds.
 */
import * as yaml from "js-yaml";

/** Names of the per-build environment variables (StartBuild environmentVariablesOverride). */
export const BUILD_ENV = ["IMAGE_REPO", "IMAGE_TAG", "DOCKERFILE", "CONTEXT_DIR", "BUILD_ARGS"] as const;

/** Tag of the last build in each image's own repository, which carries its layer cache (inline). */
export const CACHE_TAG = "buildcache";

/** Where base images come from: Amazon ECR Public (never Docker Hub, whose anonymous pull limit CodeBuild's shared addresses hit). */
export const PUBLIC_REGISTRY = "public.ecr.aws";

/**
 * ECR Public's authentication API lives in us-east-1 only ("Registry authentication in Amazon ECR
 * public": `aws ecr-public get-login-password --region us-east-1`); the token is valid for pulls
 * from any region.
 */
export const PUBLIC_REGISTRY_AUTH_REGION = "us-east-1";

/** Marker lines the build prints around the layer table, so tests and people can find it. */
export const LAYER_REPORT_HEADER = "== image layers (compressed bytes, largest first) ==";

const BUILD_SCRIPT = `set -euo pipefail
registry="\${IMAGE_REPO%%/*}"
aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$registry"
# Base images come from ECR Public. Logged in, its pulls count against this account's quota rather
# than the shared build host's address (Amazon ECR Public service quotas); anonymous pulls still
# work, so a failed login only costs that.
if ! aws ecr-public get-login-password --region ${PUBLIC_REGISTRY_AUTH_REGION} | docker login --username AWS --password-stdin ${PUBLIC_REGISTRY}; then
  echo "could not log in to ${PUBLIC_REGISTRY}; pulling base images anonymously" >&2
fi
build_args=()
# "|| [ -n ]": the last line has no newline after it and must not be dropped.
while IFS= read -r kv || [ -n "$kv" ]; do
  if [ -n "$kv" ]; then build_args+=(--build-arg "$kv"); fi
done < <(printf '%s' "\${BUILD_ARGS:-}" | base64 -d)
# dockerd's own BuildKit (buildx's "default" builder, docker driver): no BuildKit container, whose
# only published image (moby/buildkit) is on Docker Hub. Its cache is inline: the image carries the
# cache of its own stage, where every large layer (apt, torch's wheels, requirements) is built, and
# the CACHE_TAG copy of the last build is where the next one reads it. --provenance=false: one
# plain manifest, so the digest is the image's.
docker buildx build \\
  --builder default \\
  --platform linux/amd64 \\
  --provenance=false \\
  --file "$DOCKERFILE" \\
  "\${build_args[@]}" \\
  --cache-from "type=registry,ref=\${IMAGE_REPO}:${CACHE_TAG}" \\
  --cache-to type=inline \\
  --tag "\${IMAGE_REPO}:\${IMAGE_TAG}" \\
  --tag "\${IMAGE_REPO}:${CACHE_TAG}" \\
  --load \\
  "$CONTEXT_DIR"
docker push "\${IMAGE_REPO}:\${IMAGE_TAG}"
docker push "\${IMAGE_REPO}:${CACHE_TAG}"
# The registry's manifest digest, which docker records once the push has it.
digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "\${IMAGE_REPO}:\${IMAGE_TAG}" | sed -n "s|^\${IMAGE_REPO}@||p" | head -n 1)"
case "$digest" in sha256:*) ;; *) echo "no registry digest for \${IMAGE_REPO}:\${IMAGE_TAG} after the push" >&2; exit 1 ;; esac
printf '%s' "$digest" > /tmp/image-digest
echo "pushed \${IMAGE_REPO}@\${digest}"
`;

const REPORT_SCRIPT = `set -euo pipefail
echo "${LAYER_REPORT_HEADER}"
docker buildx imagetools inspect --raw "\${IMAGE_REPO}@\${IMAGE_DIGEST}" \\
  | jq -r '.layers | sort_by(-.size)[] | "\\(.size)\\t\\(.size / 1048576 | floor) MiB\\t\\(.digest)"'
docker buildx imagetools inspect --raw "\${IMAGE_REPO}@\${IMAGE_DIGEST}" \\
  | jq -r '"total \\([.layers[].size] | add / 1048576 | floor) MiB in \\(.layers | length) layers"'
`;

export interface Buildspec {
  version: string;
  env: { shell: string; "exported-variables": string[] };
  phases: Record<string, { commands: string[] }>;
}

/** The buildspec as an object (tests parse the YAML back into this). */
export function buildspecObject(): Buildspec {
  return {
    version: "0.2",
    // bash: the build script uses arrays and process substitution.
    env: { shell: "bash", "exported-variables": ["IMAGE_DIGEST"] },
    phases: {
      pre_build: { commands: ['(for v in IMAGE_REPO IMAGE_TAG DOCKERFILE CONTEXT_DIR; do [ -n "${!v:-}" ] || { echo "missing $v" >&2; exit 1; }; done)', "docker version", "docker buildx version"] },
      // Scripts run in subshells: their `set -euo pipefail` must not leak into CodeBuild's shell,
      // which keeps variables from one command to the next (that is how IMAGE_DIGEST is exported).
      build: { commands: [`(\n${BUILD_SCRIPT})`, 'IMAGE_DIGEST="$(cat /tmp/image-digest)"', "export IMAGE_DIGEST"] },
      post_build: { commands: [`if [ "$CODEBUILD_BUILD_SUCCEEDING" = "1" ]; then (\n${REPORT_SCRIPT}); fi`] },
    },
  };
}

/** The buildspec YAML the project carries inline. */
export function buildspecYaml(): string {
  return yaml.dump(buildspecObject(), { lineWidth: -1, noRefs: true });
}

/** BUILD_ARGS's value for a set of build arguments (sorted, so equal args give equal values). */
export function encodeBuildArgs(args: Record<string, string>): string {
  const lines = Object.keys(args)
    .sort()
    .map((k) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`build arg name '${k}' is not a valid variable name`);
      if (/[\r\n]/.test(args[k])) throw new Error(`build arg ${k} contains a line break`);
      return `${k}=${args[k]}`;
    });
  return Buffer.from(lines.join("\n"), "utf8").toString("base64");
}

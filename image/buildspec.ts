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

/** Tag of the BuildKit registry cache in each image's own repository. */
export const CACHE_TAG = "buildcache";

/** Marker lines the build prints around the layer table, so tests and people can find it. */
export const LAYER_REPORT_HEADER = "== image layers (compressed bytes, largest first) ==";

const BUILD_SCRIPT = `set -euo pipefail
registry="\${IMAGE_REPO%%/*}"
aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin "$registry"
# The docker-container driver is what can export a registry cache (the default driver cannot).
docker buildx create --name stackbuilder --driver docker-container --use >/dev/null
build_args=()
# "|| [ -n ]": the last line has no newline after it and must not be dropped.
while IFS= read -r kv || [ -n "$kv" ]; do
  if [ -n "$kv" ]; then build_args+=(--build-arg "$kv"); fi
done < <(printf '%s' "\${BUILD_ARGS:-}" | base64 -d)
# mode=max caches every stage's layers; image-manifest=true stores the cache as an OCI image
# manifest, the form ECR accepts. --provenance=false: one manifest, so the digest is the image's.
docker buildx build \\
  --platform linux/amd64 \\
  --provenance=false \\
  --file "$DOCKERFILE" \\
  "\${build_args[@]}" \\
  --cache-from "type=registry,ref=\${IMAGE_REPO}:${CACHE_TAG}" \\
  --cache-to "type=registry,ref=\${IMAGE_REPO}:${CACHE_TAG},mode=max,image-manifest=true,oci-mediatypes=true" \\
  --tag "\${IMAGE_REPO}:\${IMAGE_TAG}" \\
  --metadata-file /tmp/build-metadata.json \\
  --push \\
  "$CONTEXT_DIR"
digest="$(jq -r '."containerimage.digest"' /tmp/build-metadata.json)"
case "$digest" in sha256:*) ;; *) echo "no image digest in the build metadata" >&2; exit 1 ;; esac
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

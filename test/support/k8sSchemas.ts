/**
 * Validates a Kubernetes object against the published schemas: kubernetes-models for the core API,
 * and for the custom resources this program creates (Karpenter, KEDA) the real CRDs vendored under
 * test/upstream/crds/, CEL rules included (./crdSchema). An object whose kind has no schema here is an
 * error, not a pass.
 */
import { hasCustomResourceDefinition, validateCustomResource } from "./crdSchema";

/** API groups served by CRDs: never validated against a model package, only against the vendored CRD. */
const CRD_GROUPS = new Set(["karpenter.sh", "karpenter.k8s.aws", "keda.sh"]);

function groupOf(apiVersion: string): string {
  return apiVersion.includes("/") ? apiVersion.split("/")[0] : "";
}

export function schemaModule(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (CRD_GROUPS.has(group)) throw new Error(`${apiVersion} ${kind} is a custom resource: it is validated against its vendored CRD, not a model package`);
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

// The model packages are ESM-only; ts-node compiles `import()` to require(), so keep a real dynamic import.
const esmImport = new Function("specifier", "return import(specifier)") as (s: string) => Promise<Record<string, unknown>>;

export async function validateK8s(obj: Record<string, any>): Promise<void> {
  const { apiVersion, kind } = obj;
  if (typeof apiVersion !== "string" || typeof kind !== "string") throw new Error(`object without apiVersion/kind: ${JSON.stringify(obj).slice(0, 200)}`);
  if (hasCustomResourceDefinition(apiVersion, kind) || CRD_GROUPS.has(groupOf(apiVersion))) {
    await validateCustomResource(obj);
    return;
  }
  const mod = (await esmImport(schemaModule(apiVersion, kind))) as Record<string, new (o: unknown) => { validate(): void }>;
  const Model = mod[kind];
  if (!Model) throw new Error(`no schema for ${apiVersion} ${kind}`);
  new Model(obj).validate();
}

/** apiVersion/kind of a recorded resource: from its inputs, else from the Pulumi type token. */
export function objectOf(type: string, inputs: Record<string, any>): Record<string, any> {
  const m = /^kubernetes:(.+):(\w+)$/.exec(type);
  const apiVersion = inputs.apiVersion ?? (m ? m[1].replace(/^core\//, "") : undefined);
  const kind = inputs.kind ?? (m ? m[2] : undefined);
  return { ...(revealSecrets(inputs) as Record<string, any>), apiVersion, kind };
}

/** Pulumi's marker for a secret value on the wire (the mocks see inputs as serialized). */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";

/** The object as the API server receives it: Pulumi's secret wrappers replaced by their values. */
function revealSecrets(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revealSecrets);
  if (v === null || typeof v !== "object") return v;
  const o = v as Record<string, unknown>;
  if (o[SECRET_SIG] !== undefined) return revealSecrets(o.value);
  return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, revealSecrets(x)]));
}

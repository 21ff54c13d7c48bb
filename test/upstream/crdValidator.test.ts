/**
 * The CRD validator's handling of the Kubernetes schema extensions and CEL features, on a small CRD of
 * our own: the vendored CRDs use only some of them today, and an upgrade may bring the others.
 */
import { strict as assert } from "node:assert";
import { CustomResourceInvalid, Violation, validateWithCrd } from "../support/crdSchema";

const crd = (spec: Record<string, unknown>, scope = "Namespaced") => ({
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "widgets.example.com" },
  spec: {
    group: "example.com",
    names: { kind: "Widget", plural: "widgets" },
    scope,
    versions: [
      { name: "v1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", properties: { apiVersion: { type: "string" }, kind: { type: "string" }, metadata: { type: "object" }, spec } } } },
      { name: "v0", served: false, storage: false, schema: { openAPIV3Schema: { type: "object" } } },
    ],
  },
});

const SPEC = {
  type: "object",
  required: ["size"],
  properties: {
    size: { type: "integer", default: 1, minimum: 1, maximum: 10 },
    surge: { "x-kubernetes-int-or-string": true, anyOf: [{ type: "integer" }, { type: "string" }], pattern: "^[0-9]+%$" },
    free: { type: "object", "x-kubernetes-preserve-unknown-fields": true, properties: { known: { type: "string" } } },
    note: { type: "string", nullable: true, maxLength: 5 },
    plain: { type: "string" },
    since: { type: "string", format: "date-time" },
    tags: { type: "array", items: { type: "string" }, maxItems: 3, "x-kubernetes-list-type": "set" },
    ports: {
      type: "array",
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name", "protocol"],
      items: {
        type: "object",
        required: ["name"],
        properties: { name: { type: "string" }, protocol: { type: "string", default: "TCP" }, port: { type: "integer" } },
        "x-kubernetes-validations": [{ rule: "self.port > 1024", messageExpression: "'port ' + string(self.port) + ' is privileged'" }],
      },
    },
    limits: { type: "object", additionalProperties: { type: "integer" }, "x-kubernetes-validations": [{ rule: "self.all(k, self[k] <= 100)", message: "limits must be at most 100", fieldPath: ".limits" }] },
    mode: { type: "string", enum: ["a", "b"] },
  },
  "x-kubernetes-validations": [
    { rule: "!has(self.mode) || self.mode != 'b' || has(self.note)", message: "mode b needs a note" },
    { rule: "self.size >= oldSelf.size", message: "size may not shrink" },
  ],
};

const widget = (spec: Record<string, unknown>, metadata: Record<string, unknown> = { name: "w", namespace: "default" }) => ({ apiVersion: "example.com/v1", kind: "Widget", metadata, spec });

async function violations(spec: Record<string, unknown>, schema: Record<string, unknown> = SPEC): Promise<Violation[]> {
  try {
    await validateWithCrd(crd(schema), widget(spec));
  } catch (e) {
    if (e instanceof CustomResourceInvalid) return e.violations;
    throw e;
  }
  assert.fail(`accepted ${JSON.stringify(spec)}`);
}

async function expectViolation(spec: Record<string, unknown>, path: string, message: RegExp): Promise<void> {
  const vs = await violations(spec);
  assert.ok(vs.some((v) => v.path === path && message.test(v.message)), `expected ${path} ~ ${message}, got:\n${vs.map((v) => `  ${v.path}: ${v.message}`).join("\n")}`);
}

describe("CRD validator: Kubernetes schema extensions and CEL", () => {
  it("accepts a valid object, reports the transition rule as skipped and counts the rules it ran", async () => {
    const res = await validateWithCrd(crd(SPEC), widget({
      size: 2, surge: "25%", free: { known: "x", anything: { deep: [1] } }, note: null, since: "2026-01-02T03:04:05Z",
      tags: ["a", "b"], ports: [{ name: "http", protocol: "TCP", port: 8080 }, { name: "http", protocol: "UDP", port: 8081 }], limits: { a: 5 }, mode: "a",
    }));
    assert.deepEqual(res.skippedTransitionRules, [{ path: "spec", rule: "self.size >= oldSelf.size" }]);
    assert.equal(res.rulesEvaluated, 4);
    await validateWithCrd(crd(SPEC), widget({ size: 1, surge: 3 }));
  });

  it("x-kubernetes-int-or-string: int or string (pattern on the string), nothing else", async () => {
    await expectViolation({ size: 1, surge: true }, "spec.surge", /must be integer|must be string|must match a schema in anyOf/);
    await expectViolation({ size: 1, surge: "lots" }, "spec.surge", /must match pattern/);
  });

  it("x-kubernetes-preserve-unknown-fields keeps unknown fields, but known ones are still checked", async () => {
    await expectViolation({ size: 1, free: { known: 5 } }, "spec.free.known", /must be string/);
  });

  it("nullable allows null only where declared; null elsewhere would be pruned", async () => {
    await expectViolation({ size: 1, plain: null }, "spec.plain", /null where the schema is not nullable/);
  });

  it("defaults are not applied: a required field with a default must still be sent", async () => {
    await expectViolation({ surge: 1 }, "spec", /must have required property 'size'/);
  });

  it("integer is integer, bounds, maxLength, maxItems, enum", async () => {
    await expectViolation({ size: 1.5 }, "spec.size", /must be integer/);
    await expectViolation({ size: 11 }, "spec.size", /must be <= 10/);
    await expectViolation({ size: 1, note: "too long" }, "spec.note", /must NOT have more than 5 characters/);
    await expectViolation({ size: 1, tags: ["a", "b", "c", "d"] }, "spec.tags", /must NOT have more than 3 items/);
    await expectViolation({ size: 1, mode: "c" }, "spec.mode", /allowed values/);
  });

  it("format date-time is checked", async () => {
    await expectViolation({ size: 1, since: "yesterday" }, "spec.since", /must match format "date-time"/);
  });

  it("list-type set rejects duplicates, list-type map rejects duplicate keys", async () => {
    await expectViolation({ size: 1, tags: ["a", "a"] }, "spec.tags", /duplicate items/);
    await expectViolation({ size: 1, ports: [{ name: "h", protocol: "TCP", port: 2000 }, { name: "h", protocol: "TCP", port: 2001 }] }, "spec.ports[1]", /duplicate entry for list-map keys name,protocol/);
  });

  it("CEL runs at every level: on each list item (messageExpression), on maps (fieldPath), at the parent", async () => {
    await expectViolation({ size: 1, ports: [{ name: "ok", port: 2000 }, { name: "ssh", port: 22 }] }, "spec.ports[1]", /^port 22 is privileged/);
    await expectViolation({ size: 1, limits: { a: 101 } }, "spec.limits.limits", /limits must be at most 100/);
    await expectViolation({ size: 1, mode: "b" }, "spec", /mode b needs a note/);
  });

  it("unknown fields are reported at every depth, with their path", async () => {
    await expectViolation({ size: 1, ports: [{ name: "x", port: 2000, host: "h" }] }, "spec.ports[0].host", /unknown field/);
    await expectViolation({ size: 1, "weird/key": 1 }, 'spec["weird/key"]', /unknown field/);
  });

  it("a schema keyword, format or CEL function the validator does not implement fails loudly", async () => {
    await assert.rejects(validateWithCrd(crd({ type: "object", "x-kubernetes-new-thing": true }), widget({})), /x-kubernetes-new-thing, which this validator does not implement/);
    await assert.rejects(validateWithCrd(crd({ type: "string", format: "cidr" }), widget({})), /unknown format "cidr"/);
    await assert.rejects(
      validateWithCrd(crd({ type: "object", properties: { q: { type: "string" } }, "x-kubernetes-validations": [{ rule: "isQuantity(self.q)" }] }), widget({ q: "1Gi" })),
      /does not compile/,
    );
  });

  it("a version that is not served is not validated against", async () => {
    await assert.rejects(validateWithCrd(crd(SPEC), { apiVersion: "example.com/v0", kind: "Widget", metadata: { name: "w" }, spec: {} }), /does not serve example\.com\/v0 Widget/);
  });
});

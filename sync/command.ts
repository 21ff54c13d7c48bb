/**
 * The shell command an SSM Run Command executes on each node: the change lines, handed to the node's
 * model agent over its Unix socket (contracts/modelsAgent.ts nodeApplyCommand), which converges
 * each key it holds to the bucket as it is now. Keys never appear in it as text: the lines travel
 * base64-encoded inside single quotes (base64's alphabet has no quote), so no key can be
 * interpreted by the node's shell whatever it contains.
 */
import { NODE_MODELS_DIR } from "../contracts/node";
import { nodeApplyCommand } from "../contracts/modelsAgent";
import type { Change } from "./changes";

/**
 * Base64 characters per SendCommand. SSM documents no per-parameter limit that we could rely on, and
 * 100 messages of 1 KiB keys would encode to ~140 KB, so large change lists are split into parts well
 * below any plausible request limit.
 */
const MAX_PAYLOAD_CHARS = 32_000;

/** `put<TAB>key` / `delete<TAB>key`, one per line, newline-terminated, as the agent's apply reads (contract.ts parseChangeLines). */
export function changeLines(changes: readonly Change[]): string {
  return changes
    .map((c) => {
      // Defence in depth: keys are validated upstream, but a tab or newline here would forge a line.
      if (/[\p{Cc}]/u.test(c.key)) throw new Error("change key contains a control character");
      if (c.action !== "put" && c.action !== "delete") throw new Error(`unknown action ${String(c.action)}`);
      return `${c.action}\t${c.key}\n`;
    })
    .join("");
}

export function encodedLength(changes: readonly Change[]): number {
  return Math.ceil(Buffer.byteLength(changeLines(changes), "utf8") / 3) * 4;
}

/** `AWS-RunShellScript` `commands` for one part. */
export function buildCommands(changes: readonly Change[]): string[] {
  if (changes.length === 0) throw new Error("no changes to send");
  const payload = Buffer.from(changeLines(changes), "utf8").toString("base64");
  return [nodeApplyCommand(NODE_MODELS_DIR, payload)];
}

/** Split a change list into parts whose encoded payload stays within `maxChars`, order kept. */
export function splitChanges(changes: readonly Change[], maxChars = MAX_PAYLOAD_CHARS): Change[][] {
  const parts: Change[][] = [];
  let current: Change[] = [];
  let bytes = 0;
  for (const change of changes) {
    const lineBytes = Buffer.byteLength(changeLines([change]), "utf8");
    if (current.length > 0 && Math.ceil((bytes + lineBytes) / 3) * 4 > maxChars) {
      parts.push(current);
      current = [];
      bytes = 0;
    }
    current.push(change);
    bytes += lineBytes;
  }
  if (current.length > 0) parts.push(current);
  return parts;
}

// Exported as a list, not `export const`: TypeScript would compile in-module uses to `exports.X`,
// which Pulumi's closure serialization turns into the Lambda module's (empty) exports.
export { MAX_PAYLOAD_CHARS };

import { strict as assert } from "node:assert";
import { buildCommands, changeLines, encodedLength, splitChanges } from "../../sync/command";
import { decodeCommands } from "./helpers";

describe("sync/command", () => {
  const changes = [
    { action: "delete" as const, key: "loras/old style.safetensors" },
    { action: "put" as const, key: "checkpoints/日本語 'quoted' (v2).safetensors" },
  ];

  it("writes one tab-separated, newline-terminated line per change", () => {
    assert.equal(changeLines(changes), "delete\tloras/old style.safetensors\nput\tcheckpoints/日本語 'quoted' (v2).safetensors\n");
  });

  it("sends the lines base64-encoded to the node's model agent over its socket, with no key text in the command", () => {
    const commands = buildCommands(changes);
    assert.equal(commands.length, 1);
    assert.match(
      commands[0],
      /^printf '%s' '[A-Za-z0-9+/=]+' \| base64 -d \| curl -sS --fail-with-body --max-time 900 --unix-socket \/mnt\/k8s-disks\/0\/comfyui-models\/\.comfyui-agent\/agent\.sock -H 'content-type: text\/plain' --data-binary @- http:\/\/agent\/v1\/apply$/,
    );
    assert.ok(!commands[0].includes("loras/"));
    assert.equal(decodeCommands(commands), changeLines(changes));
  });

  it("refuses to build a line from a key with a control character, or an empty list", () => {
    assert.throws(() => buildCommands([{ action: "put", key: "loras/a\nput\tb" }]), /control character/);
    assert.throws(() => buildCommands([]), /no changes/);
  });

  it("splits large change lists into parts under the payload limit, order kept", () => {
    const many = Array.from({ length: 1000 }, (_, i) => ({ action: "put" as const, key: `loras/${"x".repeat(100)}-${i}.safetensors` }));
    const parts = splitChanges(many, 32_000);
    assert.ok(parts.length > 1);
    for (const part of parts) assert.ok(encodedLength(part) <= 32_000);
    assert.deepEqual(parts.flat(), many);
    assert.equal(parts.map((p) => decodeCommands(buildCommands(p))).join(""), changeLines(many));
    assert.deepEqual(splitChanges(many.slice(0, 3)), [many.slice(0, 3)]);
  });
});

import { strict as assert } from "node:assert";
import { MODEL_FOLDERS } from "../../contracts/node";
import { checkEventKey, checkKey, decodeEventKey, keyForLog } from "../../contracts/modelKeys";

function reason(raw: string): string {
  const c = checkEventKey(raw);
  return c.kind === "rejected" ? c.reason : c.kind;
}

describe("contracts/modelKeys", () => {
  describe("decodeEventKey", () => {
    it("turns + into a space and %2B into a plus", () => {
      assert.equal(decodeEventKey("checkpoints/My+Model+v2.safetensors"), "checkpoints/My Model v2.safetensors");
      assert.equal(decodeEventKey("loras/a%2Bb.safetensors"), "loras/a+b.safetensors");
    });
    it("decodes percent-encoded UTF-8", () => {
      assert.equal(decodeEventKey("loras/%E6%97%A5%E6%9C%AC%E8%AA%9E+%C3%A9t%C3%A9.safetensors"), "loras/日本語 été.safetensors");
    });
    it("returns undefined for broken escapes and invalid UTF-8", () => {
      assert.equal(decodeEventKey("loras/%E6%97.safetensors"), undefined);
      assert.equal(decodeEventKey("loras/%zz.safetensors"), undefined);
      assert.equal(decodeEventKey("loras/%C0%AF.safetensors"), undefined);
    });
  });

  describe("checkKey", () => {
    it("accepts ordinary and unicode model names in every model folder", () => {
      for (const folder of MODEL_FOLDERS) assert.equal(checkKey(`${folder}/model.safetensors`).kind, "valid", folder);
      for (const key of [
        "checkpoints/sd_xl_base_1.0.safetensors",
        "checkpoints/My Model v2 (fp16).safetensors",
        "loras/日本語 été.safetensors",
        "loras/Ελληνικά/नमस्ते.safetensors",
        "embeddings/a+b[neg],@v=1'.pt",
        "diffusers/stable-diffusion-xl/unet/config.json",
        "loras/...triple.safetensors",
      ]) {
        assert.deepEqual(checkKey(key), { kind: "valid", key }, key);
      }
    });

    it("ignores folder markers", () => {
      assert.deepEqual(checkKey("embeddings/"), { kind: "ignored", key: "embeddings/", reason: "folder-marker" });
      assert.equal(checkKey("loras/sub/").kind, "ignored");
    });

    const rejected: [string, string][] = [
      ["", "empty"],
      ["checkpoints/../../etc/passwd", "dot-segment"],
      ["checkpoints/./model.safetensors", "dot-segment"],
      ["loras/$(reboot).safetensors", "shell-metacharacter"],
      ["loras/`id`.safetensors", "shell-metacharacter"],
      ["loras/a;b.safetensors", "shell-metacharacter"],
      ["loras/a|b", "shell-metacharacter"],
      ["loras/a&b", "shell-metacharacter"],
      ["loras/a>b", "shell-metacharacter"],
      ["loras/a<b", "shell-metacharacter"],
      ['loras/a"b', "shell-metacharacter"],
      ["loras/*.safetensors", "shell-metacharacter"],
      ["loras/a?.safetensors", "shell-metacharacter"],
      ["loras/a!.safetensors", "shell-metacharacter"],
      ["loras/#a.safetensors", "shell-metacharacter"],
      ["loras/~a.safetensors", "shell-metacharacter"],
      ["loras/x.safetensors\ndelete\tcheckpoints/a", "control-character"],
      ["loras/x\r.safetensors", "control-character"],
      ["loras/x\u0000.safetensors", "control-character"],
      ["loras/x\u007f.safetensors", "control-character"],
      ["loras\\x.safetensors", "backslash"],
      ["loras/a:b.safetensors", "disallowed-character"],
      ["loras/a%b.safetensors", "disallowed-character"],
      ["loras/non\u00a0breaking.safetensors", "disallowed-character"],
      ["loras/evil\u202egnp.safetensors", "disallowed-character"],
      ["loras/😀.safetensors", "disallowed-character"],
      ["/abs/checkpoints/model.safetensors", "absolute-path"],
      ["/checkpoints/model.safetensors", "absolute-path"],
      ["checkpoints//model.safetensors", "empty-segment"],
      ["outputs/ComfyUI_00001_.png", "outside-model-folders"],
      ["Checkpoints/model.safetensors", "outside-model-folders"],
      ["checkpoints", "outside-model-folders"],
      ["model.safetensors", "outside-model-folders"],
      [`loras/${"a".repeat(256)}`, "segment-too-long"],
      [`loras/${"a/".repeat(600)}b`, "too-long"],
    ];
    for (const [key, expected] of rejected) {
      it(`rejects ${JSON.stringify(key.slice(0, 40))} as ${expected}`, () => {
        const c = checkKey(key);
        assert.equal(c.kind, "rejected");
        assert.equal(c.kind === "rejected" && c.reason, expected);
        assert.ok(c.kind === "rejected" && c.detail.length > 0);
      });
    }

    it("counts the 1024-byte limit in UTF-8 bytes, not characters", () => {
      const name = "日".repeat(80); // 240 bytes per segment
      const ok = `loras/${[name, name, name, name].join("/")}`; // 6 + 4*240 + 3 = 969 bytes
      assert.equal(checkKey(ok).kind, "valid");
      const tooLong = `${ok}/${"日".repeat(20)}`; // +61 bytes
      assert.equal(reason(encodeURIComponent(tooLong)), "too-long");
    });
  });

  it("checkEventKey decodes before checking and reports broken encodings", () => {
    assert.equal(reason("loras/%24%28reboot%29.safetensors"), "shell-metacharacter");
    assert.equal(reason("loras/x.safetensors%0Adelete"), "control-character");
    assert.equal(reason("checkpoints/My+Model.safetensors"), "valid");
    assert.equal(reason("loras/%E6%97"), "malformed-encoding");
  });

  it("keyForLog shortens very long keys", () => {
    assert.equal(keyForLog("loras/a"), "loras/a");
    assert.match(keyForLog("x".repeat(1000)), /^x{200}…\(1000 chars\)$/);
  });
});

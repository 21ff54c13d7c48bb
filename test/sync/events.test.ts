import { strict as assert } from "node:assert";
import { compareSequencers, netChanges } from "../../sync/changes";
import { parseBatch } from "../../sync/events";
import { BUCKET, loadEvent, messageFromTemplate } from "./helpers";

describe("sync/events and sync/changes", () => {
  it("parses an ObjectCreated event into a put", () => {
    const event = loadEvent("sqs-object-created.json");
    const parsed = parseBatch(event, BUCKET);
    assert.deepEqual(parsed.rejected, []);
    assert.deepEqual(parsed.buckets, [BUCKET]);
    assert.deepEqual(
      parsed.events.map((e) => [e.action, e.key, e.messageId]),
      [["put", "checkpoints/sd_xl_base_1.0.safetensors", event.Records[0].messageId]],
    );
  });

  it("parses an ObjectRemoved event into a delete", () => {
    const parsed = parseBatch(loadEvent("sqs-object-removed.json"), BUCKET);
    assert.deepEqual(parsed.events.map((e) => [e.action, e.key]), [["delete", "loras/old-style.safetensors"]]);
  });

  it("ignores the s3:TestEvent", () => {
    const parsed = parseBatch(loadEvent("sqs-test-event.json"), BUCKET);
    assert.deepEqual(parsed.events, []);
    assert.deepEqual(parsed.rejected, []);
    assert.deepEqual(parsed.ignored.map((i) => i.reason), ["test-event"]);
  });

  it("decodes spaces, unicode and literal plus signs, and ignores folder markers", () => {
    const parsed = parseBatch(loadEvent("sqs-special-keys.json"), BUCKET);
    assert.deepEqual(parsed.rejected, []);
    assert.deepEqual(parsed.events.map((e) => e.key), [
      "checkpoints/My Model v2 (fp16).safetensors",
      "loras/日本語 été.safetensors",
      "embeddings/a+b[neg],@v=1'.pt",
    ]);
    assert.deepEqual(parsed.ignored.map((i) => [i.reason, i.key]), [["folder-marker", "embeddings/"]]);
  });

  it("rejects malicious keys and other buckets with a reason each, keeping the valid event", () => {
    const event = loadEvent("sqs-malicious-keys.json");
    const parsed = parseBatch(event, BUCKET);
    assert.deepEqual(parsed.events.map((e) => e.key), ["vae/sdxl_vae.safetensors"]);
    assert.deepEqual(
      parsed.rejected.map((r) => [r.messageId, r.reason]),
      [
        [event.Records[0].messageId, "dot-segment"],
        [event.Records[1].messageId, "shell-metacharacter"],
        [event.Records[2].messageId, "shell-metacharacter"],
        [event.Records[3].messageId, "control-character"],
        [event.Records[4].messageId, "absolute-path"],
        [event.Records[5].messageId, "outside-model-folders"],
        [event.Records[6].messageId, "wrong-bucket"],
      ],
    );
    assert.deepEqual(parsed.buckets, [BUCKET, "someone-elses-bucket"]);
    assert.equal(parsed.rejected[6].bucket, "someone-elses-bucket");
  });

  it("rejects bodies that are not S3 notifications", () => {
    const base = loadEvent("sqs-object-created.json").Records[0];
    const bodies = ["not json", JSON.stringify({ hello: 1 }), JSON.stringify({ Records: [{ eventName: "ObjectCreated:Put" }] })];
    const parsed = parseBatch({ Records: bodies.map((body, i) => ({ ...base, messageId: `m${i}`, body })) }, BUCKET);
    assert.deepEqual(parsed.rejected.map((r) => r.reason), ["unparseable-body", "not-an-s3-event", "malformed-record"]);
  });

  it("rejects events without a sequencer and ignores event types it does not handle", () => {
    const noSeq = messageFromTemplate("m1", [{ eventName: "ObjectCreated:Put", key: "loras/a.safetensors", sequencer: "" }]);
    const restore = messageFromTemplate("m2", [{ eventName: "ObjectRestore:Completed", key: "loras/b.safetensors", sequencer: "01" }]);
    const parsed = parseBatch({ Records: [noSeq, restore] }, BUCKET);
    assert.deepEqual(parsed.rejected.map((r) => r.reason), ["missing-sequencer"]);
    assert.deepEqual(parsed.ignored.map((i) => i.reason), ["unhandled-event-type"]);
  });

  describe("compareSequencers", () => {
    it("compares hex strings of unequal length after left-padding", () => {
      assert.equal(compareSequencers("FF", "0100"), -1);
      assert.equal(compareSequencers("0100", "FF"), 1);
      assert.equal(compareSequencers("0055AED6DCD90281E5", "55AED6DCD90281E5"), 0);
      assert.equal(compareSequencers("0065F2A1B3C4D5E79F", "0065F2A1B3C4D5E7A0"), -1);
      assert.equal(compareSequencers("00ab", "00AC"), -1);
    });
  });

  describe("netChanges", () => {
    it("keeps the latest event per key by sequencer, not by position in the batch", () => {
      const event = loadEvent("sqs-latest-wins.json");
      const net = netChanges(parseBatch(event, BUCKET).events);
      assert.deepEqual(net.changes, [
        { action: "delete", key: "checkpoints/flux1-dev.safetensors" },
        { action: "put", key: "loras/detail.safetensors" },
        { action: "put", key: "vae/old.safetensors" },
      ]);
      assert.equal(net.superseded, 3);
      // Every message with a valid event is listed, superseded ones too.
      assert.deepEqual(net.messageIds, event.Records.map((r) => r.messageId));
    });

    it("treats a duplicate delivery (same sequencer) as one event", () => {
      const m = messageFromTemplate("m1", [{ eventName: "ObjectCreated:Put", key: "loras/a.safetensors", sequencer: "0A" }]);
      const net = netChanges(parseBatch({ Records: [m, { ...m, messageId: "m2" }] }, BUCKET).events);
      assert.deepEqual(net.changes, [{ action: "put", key: "loras/a.safetensors" }]);
      assert.deepEqual(net.messageIds, ["m1", "m2"]);
    });

    it("orders deletes before puts, each by key", () => {
      const m = messageFromTemplate("m1", [
        { eventName: "ObjectCreated:Put", key: "vae/b", sequencer: "01" },
        { eventName: "ObjectRemoved:Delete", key: "loras/z", sequencer: "01" },
        { eventName: "ObjectCreated:Put", key: "checkpoints/a", sequencer: "01" },
        { eventName: "ObjectRemoved:Delete", key: "checkpoints/y", sequencer: "01" },
      ]);
      assert.deepEqual(netChanges(parseBatch({ Records: [m] }, BUCKET).events).changes.map((c) => `${c.action} ${c.key}`), [
        "delete checkpoints/y",
        "delete loras/z",
        "put checkpoints/a",
        "put vae/b",
      ]);
    });
  });
});

// Every shared fixture workflow through the gateway: it runs (over two stand-ins) when its models exist,
// and the gateway itself refuses it with ComfyUI's value_not_in_list when one is missing — nothing stored,
// nothing run. Which inputs are model choices comes from the object info the pods serve: a V1 combo (a list
// of options) is checked by ComfyUI 0.3.64's validate_inputs; V3 "COMBO" inputs are not (execution.py @ v0.3.64).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { DEFAULT_MODELS, startStandIn, type StandIn } from "./standin";
import { get, post, startGateway, until } from "./helpers";

const FIXTURES = path.resolve(__dirname, "../../../shared/fixtures/workflows");
const files = fs.existsSync(FIXTURES) ? fs.readdirSync(FIXTURES).filter((f) => f.endsWith(".json")).sort() : [];
const load = (f: string): Record<string, { class_type: string; inputs: Record<string, unknown> }> => JSON.parse(fs.readFileSync(path.join(FIXTURES, f), "utf8"));

type Info = Record<string, { input: { required?: Record<string, unknown[]>; optional?: Record<string, unknown[]> }; output_node?: boolean }>;

/** Nodes an output node depends on (only those are validated). */
function reachable(wf: ReturnType<typeof load>, info: Info): Set<string> {
  const seen = new Set<string>();
  const visit = (id: string) => {
    if (seen.has(id) || !wf[id]) return;
    seen.add(id);
    for (const v of Object.values(wf[id].inputs)) if (Array.isArray(v)) visit(String(v[0]));
  };
  for (const [id, n] of Object.entries(wf)) if (info[n.class_type]?.output_node) visit(id);
  return seen;
}

/** [node id, input, model folder, file] for every checked model choice a reachable node makes. */
function modelUses(wf: ReturnType<typeof load>, info: Info): [string, string, string, string][] {
  const uses: [string, string, string, string][] = [];
  for (const id of reachable(wf, info)) {
    const n = wf[id];
    const spec = { ...info[n.class_type]?.input.required, ...info[n.class_type]?.input.optional };
    for (const [input, v] of Object.entries(n.inputs)) {
      if (typeof v !== "string" || !Array.isArray(spec[input]?.[0])) continue;
      const folder = Object.keys(DEFAULT_MODELS).find((k) => DEFAULT_MODELS[k].includes(v));
      if (folder) uses.push([id, input, folder, v]);
    }
  }
  return uses;
}

describe("fixture workflows through the gateway", function () {
  this.timeout(120000);
  let pods: StandIn[] = [];
  let gw: Awaited<ReturnType<typeof startGateway>>;
  let info: Info;

  before(async () => {
    pods = await Promise.all([startStandIn({ stepMs: 0 }), startStandIn({ stepMs: 0 })]);
    gw = await startGateway(pods.map((p) => p.url));
    await until(async () => (await get(gw.adminUrl, "/gateway/pods")).json.ready === 2);
    info = await until(async () => {
      const r = await get(gw.url, "/object_info");
      return r.status === 200 && r.json.KSampler ? r.json : undefined;
    });
  });
  after(async () => {
    await gw?.close();
    await Promise.all(pods.map((p) => p.close()));
  });

  it("has the shared fixtures", () => assert.ok(files.length >= 5, `fixtures under ${FIXTURES}`));

  for (const f of files) {
    it(`${f}: runs to its saved images, each retrievable through /view`, async () => {
      const r = await post(gw.url, "/prompt", { prompt: load(f), client_id: "fixtures" });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.node_errors, {});
      const id = r.json.prompt_id;
      const e = await until(async () => (await get(gw.url, `/history/${id}`)).json[id], 30000, 100);
      assert.equal(e.status.status_str, "success", JSON.stringify(e.status));
      const images = Object.values(e.outputs).flatMap((o: any) => o.images ?? []);
      assert.ok(images.length >= 1, "at least one saved image");
      for (const img of images) {
        assert.ok(img.subfolder === id || img.subfolder.startsWith(`${id}/`), `under the prompt's subfolder: ${img.subfolder}`);
        const v = await get(gw.url, `/view?filename=${encodeURIComponent(img.filename)}&subfolder=${encodeURIComponent(img.subfolder)}&type=${img.type}`);
        assert.equal(v.status, 200);
        assert.equal(v.buf.subarray(1, 4).toString("latin1"), "PNG");
      }
      assert.equal(pods.flatMap((p) => p.executed()).filter((x) => x === id).length, 1, "ran once");
    });

    it(`${f}: each model it loads, when missing on the pods, is refused by the gateway with value_not_in_list`, async () => {
      const wf = load(f);
      const uses = modelUses(wf, info);
      assert.ok(uses.length > 0, "the workflow loads at least one checked model");
      for (const [id, input, folder, file] of uses) {
        const models = { ...DEFAULT_MODELS, [folder]: DEFAULT_MODELS[folder].filter((m) => m !== file) };
        const pod = await startStandIn({ models, stepMs: 0 });
        const g = await startGateway([pod.url]);
        try {
          // The gateway validates against the object info it caches from the pod.
          await until(async () => (await get(g.url, "/object_info/CheckpointLoaderSimple")).json.CheckpointLoaderSimple);
          const r = await post(g.url, "/prompt", { prompt: wf });
          assert.equal(r.status, 400, `${f} without ${folder}/${file}: ${r.text}`);
          assert.equal(r.json.error.type, "prompt_outputs_failed_validation");
          const err = r.json.node_errors[id]?.errors.find((x: any) => x.extra_info.input_name === input);
          assert.ok(err, `node ${id} reports ${input}: ${JSON.stringify(r.json.node_errors)}`);
          assert.equal(err.type, "value_not_in_list");
          assert.equal(err.extra_info.received_value, file);
          const cls = wf[id].class_type;
          const served = (await get(g.url, `/object_info/${encodeURIComponent(cls)}`)).json[cls].input;
          assert.deepEqual(err.extra_info.input_config[0], ({ ...served.required, ...served.optional })[input][0], "the options the pod lists");
          assert.ok(!err.extra_info.input_config[0].includes(file));
          assert.deepEqual((await get(g.url, "/queue")).json, { queue_running: [], queue_pending: [] }, "nothing queued");
          assert.deepEqual((await get(g.url, "/history")).json, {}, "nothing in history");
          assert.deepEqual(pod.executed(), [], "nothing ran");
        } finally {
          await g.close();
          await pod.close();
        }
      }
    });
  }
});
